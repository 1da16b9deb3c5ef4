import IOTCPCommon
import IOTCPNIC
import Testing

/// The splice's per-segment rewrite: every field it moves, checked against the two connections it joins,
/// and both checksums checked by a full recomputation.
@Suite("Splicing: one direction's rewrite of a segment (sequence, ACK, SACK, timestamps, window, checksums)")
struct SpliceRewriteTests {
    static let client = IPv4Address(10, 77, 0, 1)
    static let proxy = IPv4Address(10, 77, 0, 2)
    static let backend = IPv4Address(10, 77, 0, 9)
    /// The client's connection to the proxy, and the proxy's to the backend, when the splice starts.
    let clientSide = SpliceSide(localAddress: IPAddress(proxy), remoteAddress: IPAddress(client), localPort: 8080, remotePort: 40000,
                                sendNext: SequenceNumber(0xFFFF_FF00), receiveNext: SequenceNumber(5_000),
                                timestamps: (value: 900_000, recent: 77_000), peerWindowShift: 7, localWindowShift: 3)
    let backendSide = SpliceSide(localAddress: IPAddress(proxy), remoteAddress: IPAddress(backend), localPort: 50123, remotePort: 80,
                                 sendNext: SequenceNumber(123_456_789), receiveNext: SequenceNumber(3_000_000_000),
                                 timestamps: (value: 1_200_000, recent: 4_000_000_000), peerWindowShift: 9, localWindowShift: 2)

    func packet(from source: IPv4Address, to destination: IPv4Address, _ tcp: TCPRepr, payload: [UInt8]) -> [UInt8] {
        tcpPacket(tcp, from: source, to: destination, payload: payload)
    }

    func parsed(_ bytes: [UInt8]) throws -> (ip: IPv4Repr, tcp: TCPRepr, payload: [UInt8], checksumGood: Bool) {
        try bytes.withUnsafeBytes { raw in
            let ip = try IPv4PacketView(raw)  // verifies the header checksum
            let view = try TCPSegmentView(ip.payload)
            return (IPv4Repr(ip), try TCPRepr(view), Array(view.payload), view.checksumVerifies(source: ip.source, destination: ip.destination))
        }
    }

    @Test("a client segment becomes the backend connection's: every field moved by the deltas, checksums right")
    func clientToBackend() throws {
        let rewrite = try #require(SpliceRewrite.joining(from: clientSide, to: backendSide))
        let payload = (0..<300).map { UInt8($0 & 0xFF) }
        var sack = SACKBlockList()
        _ = sack.append(SACKBlock(left: clientSide.sendNext + 60, right: clientSide.sendNext + 80))
        let segment = TCPRepr(sourcePort: 40000, destinationPort: 8080, sequenceNumber: clientSide.receiveNext + 100,
                              acknowledgmentNumber: clientSide.sendNext + 50, flags: [.ack, .psh], window: 500,
                              options: TCPOptions(sackBlocks: sack, timestamps: TCPTimestamps(value: 77_005, echoReply: 899_997)))
        var bytes = packet(from: Self.client, to: Self.proxy, segment, payload: payload)
        #expect(bytes.withUnsafeMutableBytes { rewrite.apply(to: $0) })
        let out = try parsed(bytes)
        #expect(out.checksumGood, "the incrementally updated TCP checksum is the one a full sum gives")
        #expect(out.ip.source == Self.proxy && out.ip.destination == Self.backend)
        #expect(out.tcp.sourcePort == 50123 && out.tcp.destinationPort == 80)
        #expect(out.tcp.sequenceNumber == backendSide.sendNext + 100, "the client's bytes continue what we owe the backend")
        #expect(out.tcp.acknowledgmentNumber == backendSide.receiveNext + 50)
        #expect(Array(out.tcp.options.sackBlocks) == [SACKBlock(left: backendSide.receiveNext + 60, right: backendSide.receiveNext + 80)])
        #expect(out.tcp.options.timestamps == TCPTimestamps(value: 1_200_005, echoReply: 4_000_000_000 &- 3))
        #expect(out.tcp.window == UInt16((500 << 7) >> 2 > 65535 ? 65535 : (500 << 7) >> 2))
        #expect(out.tcp.flags == [.ack, .psh] && out.payload == payload)
    }

    @Test("a backend segment becomes the client connection's, with the opposite deltas")
    func backendToClient() throws {
        let rewrite = try #require(SpliceRewrite.joining(from: backendSide, to: clientSide))
        let segment = TCPRepr(sourcePort: 80, destinationPort: 50123, sequenceNumber: backendSide.receiveNext + 1448,
                              acknowledgmentNumber: backendSide.sendNext + 10, flags: .ack, window: 40,
                              options: TCPOptions(timestamps: TCPTimestamps(value: 4_000_000_010, echoReply: 1_199_990)))
        var bytes = packet(from: Self.backend, to: Self.proxy, segment, payload: Array(repeating: 7, count: 1448))
        #expect(bytes.withUnsafeMutableBytes { rewrite.apply(to: $0) })
        let out = try parsed(bytes)
        #expect(out.checksumGood && out.ip.source == Self.proxy && out.ip.destination == Self.client)
        #expect(out.tcp.sourcePort == 8080 && out.tcp.destinationPort == 40000)
        #expect(out.tcp.sequenceNumber == clientSide.sendNext + 1448, "wraps past 2^32 like any sequence number")
        #expect(out.tcp.acknowledgmentNumber == clientSide.receiveNext + 10)
        #expect(out.tcp.options.timestamps == TCPTimestamps(value: 900_010, echoReply: 77_000 &- 10))
        #expect(out.tcp.window == UInt16((40 << 9) >> 3))
    }

    @Test("random segments both ways: the checksums always verify, every number moved by its delta")
    func randomSegments() throws {
        var random = SeededGenerator(seed: 15)
        let forward = try #require(SpliceRewrite.joining(from: clientSide, to: backendSide))
        for _ in 0..<400 {
            let sequence = SequenceNumber(UInt32.random(in: 0...UInt32.max, using: &random))
            let acknowledgment = SequenceNumber(UInt32.random(in: 0...UInt32.max, using: &random))
            var sack = SACKBlockList()
            for _ in 0..<Int.random(in: 0...3, using: &random) {
                let left = acknowledgment + Int.random(in: 1...10_000, using: &random)
                _ = sack.append(SACKBlock(left: left, right: left + Int.random(in: 1...3_000, using: &random)))
            }
            let timestamps = Bool.random(using: &random)
                ? TCPTimestamps(value: UInt32.random(in: 0...UInt32.max, using: &random), echoReply: UInt32.random(in: 1...UInt32.max, using: &random))
                : nil
            let flags: TCPFlags = [[.ack], [.ack, .psh], [.ack, .fin], [.rst], [.rst, .ack]][Int.random(in: 0...4, using: &random)]
            let segment = TCPRepr(sourcePort: 40000, destinationPort: 8080, sequenceNumber: sequence, acknowledgmentNumber: acknowledgment,
                                  flags: flags, window: UInt16.random(in: 0...UInt16.max, using: &random),
                                  options: TCPOptions(sackBlocks: sack, timestamps: timestamps))
            let payload = (0..<Int.random(in: 0...1400, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            var bytes = packet(from: Self.client, to: Self.proxy, segment, payload: payload)
            #expect(bytes.withUnsafeMutableBytes { forward.apply(to: $0) })
            let out = try parsed(bytes)
            #expect(out.checksumGood)
            #expect(out.tcp.sequenceNumber.rawValue == sequence.rawValue &+ forward.sequenceDelta)
            // Without the ACK flag the field means nothing and is left as it came.
            #expect(out.tcp.acknowledgmentNumber.rawValue == (flags.contains(.ack) ? acknowledgment.rawValue &+ forward.acknowledgmentDelta : acknowledgment.rawValue))
            #expect(out.tcp.options.sackBlocks.map { $0.left.rawValue } == sack.map { $0.left.rawValue &+ forward.acknowledgmentDelta })
            #expect(out.tcp.options.timestamps?.value == timestamps.map { $0.value &+ forward.timestampValueDelta })
            #expect(out.payload == payload)
        }
    }

    @Test("options at odd offsets (a single NOP before them): fields straddling checksum words, checksum still right")
    func oddOffsets() throws {
        let rewrite = try #require(SpliceRewrite.joining(from: clientSide, to: backendSide))
        // NOP, timestamps (10), SACK with one block (10): TSval, TSecr and the edges at odd offsets.
        var options: [UInt8] = [1, 8, 10]
        for value in [UInt32(77_005), 899_997] { options += withUnsafeBytes(of: value.bigEndian, Array.init) }
        options += [5, 10]
        for edge in [clientSide.sendNext + 60, clientSide.sendNext + 80] { options += withUnsafeBytes(of: edge.rawValue.bigEndian, Array.init) }
        options += [1, 0, 0]  // NOP, end of options, padding
        #expect(options.count == 24)
        let payload: [UInt8] = [1, 2, 3, 4, 5]
        var bytes = [UInt8](repeating: 0, count: 20 + 20 + options.count + payload.count)
        bytes.withUnsafeMutableBytes { raw in
            try! IPv4Repr(source: Self.client, destination: Self.proxy, protocol: .tcp, payloadLength: 20 + options.count + payload.count).emit(into: raw)
            let tcp = UnsafeMutableRawBufferPointer(rebasing: raw[20...])
            tcp.storeBigEndian(UInt16(40000), at: 0)
            tcp.storeBigEndian(UInt16(8080), at: 2)
            tcp.storeBigEndian((clientSide.receiveNext + 7).rawValue, at: 4)
            tcp.storeBigEndian((clientSide.sendNext + 3).rawValue, at: 8)
            tcp[12] = UInt8((20 + options.count) / 4) << 4
            tcp[13] = TCPFlags.ack.rawValue
            tcp.storeBigEndian(UInt16(300), at: 14)
            for (index, byte) in (options + payload).enumerated() { tcp[20 + index] = byte }
            TCPRepr.fillChecksum(segment: tcp, source: Self.client, destination: Self.proxy)
        }
        #expect(try parsed(bytes).checksumGood)
        #expect(bytes.withUnsafeMutableBytes { rewrite.apply(to: $0) })
        let out = try parsed(bytes)
        #expect(out.checksumGood, "the TSval, TSecr and SACK edges at odd offsets moved, the checksum with them")
        #expect(out.tcp.options.timestamps == TCPTimestamps(value: 77_005 &+ rewrite.timestampValueDelta, echoReply: 899_997 &+ rewrite.timestampEchoDelta))
        #expect(Array(out.tcp.options.sackBlocks) == [SACKBlock(left: backendSide.receiveNext + 60, right: backendSide.receiveNext + 80)])
        #expect(out.payload == payload)
    }

    @Test("refused and untouched: truncated options, another protocol, a fragment; connections that differ on timestamps")
    func refusals() throws {
        let rewrite = try #require(SpliceRewrite.joining(from: clientSide, to: backendSide))
        let segment = TCPRepr(sourcePort: 40000, destinationPort: 8080, sequenceNumber: SequenceNumber(1), acknowledgmentNumber: SequenceNumber(2),
                              flags: .ack, window: 1, options: TCPOptions(timestamps: TCPTimestamps(value: 1, echoReply: 2)))
        let good = packet(from: Self.client, to: Self.proxy, segment, payload: [])
        var damaged = good
        damaged[20 + 20 + 3] = 40  // the timestamp option's length runs past the header
        var copy = damaged
        #expect(!copy.withUnsafeMutableBytes { rewrite.apply(to: $0) } && copy == damaged)
        var udp = good
        udp[9] = 17
        copy = udp
        #expect(!copy.withUnsafeMutableBytes { rewrite.apply(to: $0) } && copy == udp)
        var fragment = good
        fragment[6] = 0x20
        copy = fragment
        #expect(!copy.withUnsafeMutableBytes { rewrite.apply(to: $0) } && copy == fragment)
        var untimed = backendSide
        untimed.timestamps = nil
        #expect(SpliceRewrite.joining(from: clientSide, to: untimed) == nil)
        // A window too big for the leaving shift is clamped, not wrapped.
        var wide = try #require(SpliceRewrite.joining(from: clientSide, to: backendSide))
        wide.incomingWindowShift = 14
        wide.outgoingWindowShift = 0
        var open = segment
        open.window = 1000
        var big = packet(from: Self.client, to: Self.proxy, open, payload: [])
        #expect(big.withUnsafeMutableBytes { wide.apply(to: $0) })
        #expect(try parsed(big).tcp.window == 65535 && (try parsed(big).checksumGood))
    }
    @Test("over IPv6: the same fields moved, the 16-byte addresses in the pseudo-header adjusted, the payload length kept; mixed families never joined")
    func overIPv6() throws {
        let client = try #require(IPAddress("fd77::1")), proxy = try #require(IPAddress("fd77::2")), backend = try #require(IPAddress("fd77:0:0:9::9"))
        var clientSide6 = clientSide, backendSide6 = backendSide
        (clientSide6.localAddress, clientSide6.remoteAddress) = (proxy, client)
        (backendSide6.localAddress, backendSide6.remoteAddress) = (proxy, backend)
        let rewrite = try #require(SpliceRewrite.joining(from: clientSide6, to: backendSide6))
        let payload = (0..<777).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        var sack = SACKBlockList()
        _ = sack.append(SACKBlock(left: clientSide.sendNext + 60, right: clientSide.sendNext + 80))
        let segment = TCPRepr(sourcePort: 40000, destinationPort: 8080, sequenceNumber: clientSide.receiveNext + 100,
                              acknowledgmentNumber: clientSide.sendNext + 50, flags: [.ack, .psh], window: 500,
                              options: TCPOptions(sackBlocks: sack, timestamps: TCPTimestamps(value: 77_005, echoReply: 899_997)))
        var bytes = tcpPacket(segment, from: client, to: proxy, payload: payload)
        #expect(bytes.withUnsafeMutableBytes { rewrite.apply(to: $0) })
        try bytes.withUnsafeBytes { raw in
            let ip = try IPv6PacketView(raw)
            #expect(IPAddress(ip.source) == proxy && IPAddress(ip.destination) == backend && ip.payloadLength == segment.headerLength + 777)
            let view = try TCPSegmentView(ip.upperLayer)
            #expect(view.checksumVerifies(source: ip.source, destination: ip.destination), "the incremental sum equals a full one")
            let out = try TCPRepr(view)
            #expect(out.sourcePort == 50123 && out.destinationPort == 80)
            #expect(out.sequenceNumber == backendSide.sendNext + 100 && out.acknowledgmentNumber == backendSide.receiveNext + 50)
            #expect(Array(out.options.sackBlocks) == [SACKBlock(left: backendSide.receiveNext + 60, right: backendSide.receiveNext + 80)])
            #expect(out.options.timestamps == TCPTimestamps(value: 1_200_005, echoReply: 4_000_000_000 &- 3))
            #expect(Array(view.payload) == payload)
        }
        // An IPv4 packet is not this rewrite's; a packet with an extension header before TCP is left alone.
        var ipv4 = tcpPacket(segment, from: Self.client, to: Self.proxy, payload: payload)
        #expect(!ipv4.withUnsafeMutableBytes { rewrite.apply(to: $0) })
        var extended = tcpPacket(segment, from: client, to: proxy, payload: payload)
        extended[6] = 0  // Next Header: Hop-by-Hop Options
        let before = extended
        #expect(!extended.withUnsafeMutableBytes { rewrite.apply(to: $0) } && extended == before)
        // A client over IPv6 and a backend over IPv4 cannot be joined in place.
        #expect(SpliceRewrite.joining(from: clientSide6, to: backendSide) == nil && SpliceRewrite.joining(from: backendSide, to: clientSide6) == nil)
    }
}
