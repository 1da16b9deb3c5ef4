import Testing
@testable import IOTCPCommon

extension SeededGenerator {
    mutating func tcpOptions() -> TCPOptions {
        var options = TCPOptions()
        if Bool.random(using: &self) { options.maximumSegmentSize = next16() }
        if Bool.random(using: &self) { options.windowScale = UInt8.random(in: 0...14, using: &self) }
        options.sackPermitted = Bool.random(using: &self)
        if Bool.random(using: &self) { options.timestamps = TCPTimestamps(value: next32(), echoReply: next32()) }
        // Room is left for SACK blocks as Linux does: three with timestamps, four without.
        let room = (40 - options.encodedLength - 4) / 8
        var blocks = SACKBlockList()
        for _ in 0..<Int.random(in: 0...max(0, min(4, room)), using: &self) {
            let left = SequenceNumber(next32())
            blocks.append(SACKBlock(left: left, right: left + Int(next16())))
        }
        options.sackBlocks = blocks
        return options
    }

    mutating func tcpRepr() -> TCPRepr {
        TCPRepr(
            sourcePort: next16(), destinationPort: next16(), sequenceNumber: SequenceNumber(next32()),
            acknowledgmentNumber: SequenceNumber(next32()), flags: TCPFlags(rawValue: next8()), window: next16(),
            urgentPointer: next16(), options: tcpOptions())
    }
}

@Suite("Wire formats: round trips and hostile bytes")
struct WireRoundTripTests {
    @Test("random TCP headers with options and data round-trip through emit and parse")
    func tcpRoundTrip() throws {
        var random = SeededGenerator(seed: 10)
        for _ in 0..<5000 {
            let repr = random.tcpRepr()
            let source = IPv4Address(rawValue: random.next32()), destination = IPv4Address(rawValue: random.next32())
            let data = (0..<Int.random(in: 0...64, using: &random)).map { _ in random.next8() }
            var segment = [UInt8](repeating: 0, count: repr.headerLength + data.count)
            try segment.withUnsafeMutableBytes { buffer in
                let length = try repr.emitHeader(into: buffer)
                for (k, byte) in data.enumerated() { buffer[length + k] = byte }
                TCPRepr.fillChecksum(segment: buffer, source: source, destination: destination)
            }
            try segment.withUnsafeBytes { bytes in
                let view = try TCPSegmentView(bytes)
                #expect(view.checksumVerifies(source: source, destination: destination))
                #expect(try TCPRepr(view) == repr)
                #expect(Array(view.payload) == data)
            }
        }
    }

    @Test("random IPv4, ARP, ICMP and Ethernet headers round-trip")
    func otherLayersRoundTrip() throws {
        var random = SeededGenerator(seed: 11)
        for _ in 0..<2000 {
            let ip = IPv4Repr(
                source: IPv4Address(rawValue: random.next32()), destination: IPv4Address(rawValue: random.next32()),
                protocol: IPProtocol(rawValue: random.next8()), payloadLength: Int(random.next16() % 1480),
                timeToLive: random.next8(), typeOfService: random.next8(), identification: random.next16(),
                dontFragment: Bool.random(using: &random))
            var packet = [UInt8](repeating: 0, count: 20 + ip.payloadLength)
            try packet.withUnsafeMutableBytes { try ip.emit(into: $0) }
            let parsedIP = try packet.withUnsafeBytes { raw throws(WireError) in IPv4Repr(try IPv4PacketView(raw)) }
            #expect(parsedIP == ip)

            let arp = ARPRepr(
                operation: .init(rawValue: random.next16()), senderHardwareAddress: MACAddress(rawValue: random.next()),
                senderProtocolAddress: IPv4Address(rawValue: random.next32()),
                targetHardwareAddress: MACAddress(rawValue: random.next()),
                targetProtocolAddress: IPv4Address(rawValue: random.next32()))
            var arpBytes = [UInt8](repeating: 0, count: 28)
            try arpBytes.withUnsafeMutableBytes { try arp.emit(into: $0) }
            let parsedARP = try arpBytes.withUnsafeBytes { raw throws(WireError) in try ARPRepr(parsing: raw) }
            #expect(parsedARP == arp)

            let messages: [ICMPv4Repr.Message] = [
                .echoRequest(identifier: random.next16(), sequence: random.next16()),
                .echoReply(identifier: random.next16(), sequence: random.next16()),
                .destinationUnreachable(code: random.next8() % 16),
                .other(type: 13, code: random.next8(), rest: random.next32()),
            ]
            for message in messages {
                let data = (0..<Int.random(in: 0...56, using: &random)).map { _ in random.next8() }
                var bytes = [UInt8](repeating: 0, count: 8 + data.count)
                try bytes.withUnsafeMutableBytes { out in try data.withUnsafeBytes { _ = try ICMPv4Repr(message: message).emit(into: out, data: $0) } }
                try bytes.withUnsafeBytes { raw in
                    let (parsed, parsedData) = try ICMPv4Repr.parse(raw)
                    #expect(parsed.message == message)
                    #expect(Array(parsedData) == data)
                }
            }

            let ethernet = EthernetRepr(
                destination: MACAddress(rawValue: random.next()), source: MACAddress(rawValue: random.next()),
                etherType: EtherType(rawValue: random.next16()))
            var frame = [UInt8](repeating: 0, count: 14)
            try frame.withUnsafeMutableBytes { try ethernet.emit(into: $0) }
            let parsedEthernet = try frame.withUnsafeBytes { raw throws(WireError) in EthernetRepr(try EthernetFrameView(raw)) }
            #expect(parsedEthernet == ethernet)
        }
    }

    @Test("impossible headers and options are rejected with the right error")
    func malformedInputs() throws {
        func ipv4(_ mutate: (inout [UInt8]) -> Void) -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: 40)
            bytes.withUnsafeMutableBytes { try! IPv4Repr(source: .any, destination: .any, protocol: .tcp, payloadLength: 20).emit(into: $0) }
            mutate(&bytes)
            return bytes
        }
        func ipError(_ bytes: [UInt8], verify: Bool = false) -> WireError? {
            bytes.withUnsafeBytes { raw -> WireError? in
                do throws(WireError) { _ = try IPv4PacketView(raw, verifyChecksum: verify); return nil } catch { return error }
            }
        }
        #expect(ipError(Array(ipv4 { _ in }.prefix(19))) == .truncated(layer: .ipv4, needed: 20, available: 19))
        #expect(ipError(ipv4 { $0[0] = 0x65 }) == .unsupportedVersion(6))
        #expect(ipError(ipv4 { $0[0] = 0x44 }) == .badHeaderLength(layer: .ipv4, value: 16))
        #expect(ipError(ipv4 { $0[0] = 0x4F }) == .truncated(layer: .ipv4, needed: 60, available: 40))
        #expect(ipError(ipv4 { $0[3] = 10 }) == .badTotalLength(10))
        #expect(ipError(ipv4 { $0[3] = 41 }) == .truncated(layer: .ipv4, needed: 41, available: 40))
        #expect(ipError(ipv4 { $0[6] = 0x20 }) == .fragmented)
        #expect(ipError(ipv4 { $0[7] = 0x01 }) == .fragmented)
        #expect(ipError(ipv4 { $0[8] ^= 1 }, verify: true) == .badChecksum(layer: .ipv4))
        #expect(ipError(ipv4 { $0[8] ^= 1 }, verify: false) == nil)
        // IPv4 options are skipped: a 24-byte header's payload starts after them.
        let withOptions = ipv4 { bytes in
            bytes[0] = 0x46
            bytes.withUnsafeMutableBytes { raw in
                raw.storeBigEndian(UInt16(0), at: 10)
                raw.storeBigEndian(InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<24])), at: 10)
            }
        }
        let optionsPayload = try withOptions.withUnsafeBytes { raw throws(WireError) in try IPv4PacketView(raw).payload.count }
        #expect(optionsPayload == 16)

        func optionsError(_ options: [UInt8]) -> WireError? {
            options.withUnsafeBytes { raw -> WireError? in
                do throws(WireError) { _ = try TCPOptions(parsing: raw); return nil } catch { return error }
            }
        }
        #expect(optionsError([2, 3, 5, 0]) == .malformedOption(kind: 2))     // MSS of length 3
        #expect(optionsError([3, 2, 0, 0]) == .malformedOption(kind: 3))     // window scale of length 2
        #expect(optionsError([8, 10, 0, 0]) == .malformedOption(kind: 8))    // timestamps running past the end
        #expect(optionsError([5, 6, 0, 0, 0, 0]) == .malformedOption(kind: 5))  // SACK blocks not a multiple of 8
        #expect(optionsError([5, 2]) == .malformedOption(kind: 5))              // SACK with no block
        #expect(optionsError([1, 1, 99, 0]) == .malformedOption(kind: 99))   // zero length would loop for ever
        #expect(optionsError([1, 1, 99]) == .malformedOption(kind: 99))      // no length byte at all
        #expect(optionsError([1, 99, 4, 7, 7, 2, 4, 1, 2]) == nil)           // unknown option skipped, MSS read
        let parsed = try [UInt8]([1, 99, 4, 7, 7, 2, 4, 1, 2, 0, 2, 4, 9, 9]).withUnsafeBytes { try TCPOptions(parsing: $0) }
        #expect(parsed.maximumSegmentSize == 0x0102, "parsing stops at end-of-list")

        let shortTCP = [UInt8](repeating: 0, count: 19)
        shortTCP.withUnsafeBytes { raw in
            _ = #expect(throws: WireError.truncated(layer: .tcp, needed: 20, available: 19)) { try TCPSegmentView(raw) }
        }
        var badOffset = [UInt8](repeating: 0, count: 24)
        badOffset[12] = 0x40
        badOffset.withUnsafeBytes { raw in
            _ = #expect(throws: WireError.badHeaderLength(layer: .tcp, value: 16)) { try TCPSegmentView(raw) }
        }
        badOffset[12] = 0x70
        badOffset.withUnsafeBytes { raw in
            _ = #expect(throws: WireError.truncated(layer: .tcp, needed: 28, available: 24)) { try TCPSegmentView(raw) }
        }
        var arp = [UInt8](repeating: 0, count: 28)
        arp[1] = 6  // IEEE 802 hardware type
        arp.withUnsafeBytes { raw in _ = #expect(throws: WireError.unsupportedAddressFamily) { try ARPRepr(parsing: raw) } }
        let tooMany = TCPOptions(maximumSegmentSize: 1, windowScale: 1, sackPermitted: true,
                                 sackBlocks: SACKBlockList(Array(repeating: SACKBlock(left: .init(0), right: .init(1)), count: 4)),
                                 timestamps: TCPTimestamps(value: 1, echoReply: 2))
        var out = [UInt8](repeating: 0, count: 80)
        out.withUnsafeMutableBytes { raw in _ = #expect(throws: WireError.optionsTooLong(56)) { try tooMany.emit(into: raw) } }
    }

    /// Random bytes and mutations of real frames through every parser: none may trap, whatever they hold.
    @Test("random and mutated bytes never crash a parser")
    func hostileBytes() throws {
        var random = SeededGenerator(seed: 12)
        let frames = try PcapFile.frames(at: PcapFile.fixture("linux-tcp.pcap"))
        var accepted = 0
        for round in 0..<40_000 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<Int.random(in: 0...120, using: &random)).map { _ in random.next8() }
            } else {
                bytes = frames[Int.random(in: 0..<frames.count, using: &random)]
                for _ in 0..<Int.random(in: 1...6, using: &random) where !bytes.isEmpty {
                    bytes[Int.random(in: 0..<bytes.count, using: &random)] = random.next8()
                }
                if Bool.random(using: &random) { bytes.removeLast(Int.random(in: 0...bytes.count, using: &random)) }
            }
            bytes.withUnsafeBytes { raw in
                if let ethernet = try? EthernetFrameView(raw) {
                    _ = try? ARPRepr(parsing: ethernet.payload)
                    if let ip = try? IPv4PacketView(ethernet.payload, verifyChecksum: false) {
                        _ = try? ICMPv4Repr.parse(ip.payload)
                        if let tcp = try? TCPSegmentView(ip.payload), (try? TCPRepr(tcp)) != nil { accepted += 1 }
                    }
                }
                _ = try? TCPRepr(try TCPSegmentView(raw))
                _ = try? TCPOptions(parsing: raw)
                _ = try? IPv4PacketView(raw)
                _ = try? ICMPv4Repr.parse(raw)
            }
        }
        #expect(accepted > 1000, "mutated real frames mostly still parse, so the deep layers were exercised")
    }
}

@Suite("TCP options as a receiver reads them")
struct LenientOptionTests {
    func lenient(_ bytes: [UInt8]) -> TCPOptions { bytes.withUnsafeBytes { TCPOptions(leniently: $0) } }

    @Test("a malformed option is skipped or ends the list; what was understood is kept (as Linux)")
    func lenientParsing() {
        // An MSS of the wrong length skipped by its length; the timestamps after it still read.
        let wrongLength = lenient([2, 3, 5, 8, 10, 0, 0, 0, 7, 0, 0, 0, 9, 1, 1])
        #expect(wrongLength.maximumSegmentSize == nil && wrongLength.timestamps == TCPTimestamps(value: 7, echoReply: 9))
        // An impossible length ends the list: the MSS before it is kept.
        let impossible = lenient([2, 4, 5, 180, 99, 0, 8, 10])
        #expect(impossible.maximumSegmentSize == 1460 && impossible.timestamps == nil)
        // Running past the end, and a kind with no length byte: nothing more, nothing thrown.
        #expect(lenient([3, 3, 7, 8, 10, 0, 0]).windowScale == 7)
        #expect(lenient([1, 1, 99]) == TCPOptions())
        // The strict parser still names the problem (for tests of what the NIC emits and fuzzing).
        #expect(throws: WireError.malformedOption(kind: 2)) { try [2, 3, 5, 0].withUnsafeBytes { try TCPOptions(parsing: $0) } }
    }
}
