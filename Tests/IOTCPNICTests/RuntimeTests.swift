import Foundation
import IOTCPChannels
import IOTCPCommon
import IOTCPNIC
import Testing

/// The NIC runtime on a wire in memory, driven turn by turn on a virtual clock: no root, no TAP.
@Suite("NIC runtime on a memory wire")
struct RuntimeTests {
    static let peer = IPv4Address(10, 77, 0, 1)
    static let peerHardware = MACAddress(0x02, 0, 0, 0, 0, 0x01)

    /// Opens the file and a flow, SENDs 100,000 bytes, runs the runtime 200 virtual milliseconds, and
    /// returns the frames on the wire, with how many ECHOs came back.
    func run(
        wire: MemoryWire, outbound: FaultSettings, root: ExportRoot, refuseUntil: UInt64 = 0, head: [UInt8] = []
    ) throws -> (runtime: NICRuntime, echoes: Int) {
        var link = EthernetLink(hardwareAddress: MACAddress(0x02, 0, 0, 0x77, 0, 2), address: IPv4Address(10, 77, 0, 2))
        link.learn(neighbour: Self.peer, at: Self.peerHardware)
        let runtime = NICRuntime(wire: wire, link: link, dataPlane: memoryPlane(root))
        runtime.outbound = FaultyWire(settings: outbound, seed: 21)
        let (host, nic) = try InProcessChannel.makePair()
        runtime.attach(nic)
        let sender = ChannelSender(channel: host)
        var file: OffloadedFileID?, echoes = 0
        func turn(_ millisecond: UInt64) throws {
            wire.refuseWrites = millisecond < refuseUntil
            _ = runtime.runOnce(now: Instant.milliseconds(1000 + millisecond))
            _ = try host.receive(limit: 64) { message in
                guard var reader = try? CommandReader(message: message) else { return }
                while let command = try? reader.next() {
                    if case .opened(_, let id, _) = command { file = id }
                    if case .echo = command { echoes += 1 }
                }
            }
        }
        "sub/data.bin".withCString { path in
            sender.append(.open(requestID: 1, flags: 0, path: UnsafeRawBufferPointer(start: path, count: strlen(path))))
        }
        sender.append(.flowOpen(FlowID(4), FlowEndpoints(localAddress: IPv4Address(10, 77, 0, 2), remoteAddress: Self.peer,
                                                         localPort: 80, remotePort: 40000, remoteHardwareAddress: Self.peerHardware,
                                                         maximumSegmentSize: 1448)))
        sender.flush()
        try turn(0)
        let opened = try #require(file)
        let range = SendRange(sequence: SequenceNumber(1000), length: 100_000, file: opened, offset: 0,
                              template: SegmentTemplate(acknowledgmentNumber: SequenceNumber(1), window: 65535, maximumSegmentSize: 1448))
        if head.isEmpty {
            sender.append(.send(FlowID(4), range))
        } else {
            head.withUnsafeBytes { sender.append(.sendWithHead(FlowID(4), range, head: $0)) }
        }
        sender.flush()
        for millisecond in 1...200 {
            try turn(UInt64(millisecond))
            if millisecond < refuseUntil { #expect(echoes == 0, "nothing is echoed while the wire refuses it") }
        }
        return (runtime, echoes)
    }

    /// The payload bytes the frames carry, by sequence number (duplicates must agree).
    func reassemble(_ frames: [[UInt8]]) throws -> [UInt8] {
        var pieces: [UInt32: [UInt8]] = [:]
        for frame in frames {
            try frame.withUnsafeBytes { raw in
                let ethernet = try EthernetFrameView(raw)
                #expect(ethernet.destination == Self.peerHardware)
                let ip = try IPv4PacketView(ethernet.payload)
                let segment = try TCPSegmentView(ip.payload)
                let payload = Array(segment.payload)
                let sequence = try TCPRepr(segment).sequenceNumber.rawValue
                if let earlier = pieces[sequence] { #expect(earlier == payload, "a duplicate carries the same bytes") }
                pieces[sequence] = payload
            }
        }
        return pieces.keys.sorted().flatMap { pieces[$0]! }
    }

    @Test("frames held back for reordering are released by later turns, and every byte reaches the wire once ECHOed")
    func reorderingOnTheWire() throws {
        let root = try ExportRoot()
        let wire = MemoryWire()
        let (runtime, echoes) = try run(wire: wire, outbound: FaultSettings(duplication: 0.1, reordering: 0.3), root: root)
        #expect(echoes == 1)
        #expect(runtime.outbound.reordered > 5 && runtime.outbound.duplicated > 0)
        #expect(wire.sent.count == 70 + runtime.outbound.duplicated, "70 segments, and the duplicates")
        let arrivedOutOfOrder = try wire.sent.map { frame in
            try frame.withUnsafeBytes { try TCPRepr(TCPSegmentView(IPv4PacketView(EthernetFrameView($0).payload).payload)).sequenceNumber.rawValue }
        }
        #expect(arrivedOutOfOrder != arrivedOutOfOrder.sorted(), "the wire saw them out of order")
        let bytes = try reassemble(wire.sent)
        let intact = bytes == root.content
        #expect(intact)
    }

    @Test("a SEND's head of up to the largest allowed leaves in the first frame, with super-segments and without")
    func longHeadOnTheWire() throws {
        let root = try ExportRoot()
        // 1,400 bytes: under the MSS, far past what a frame's header space held before heads.
        let head = (0..<1400).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ 3) }
        for takesSuperSegments in [true, false] {
            let wire = MemoryWire(takesSuperSegments: takesSuperSegments)
            let (runtime, echoes) = try run(wire: wire, outbound: FaultSettings(), root: root, head: head)
            #expect(echoes >= 1 && runtime.dataPlane.counters.errors == 0)
            let frames = takesSuperSegments ? wire.sent.flatMap { frame -> [[UInt8]] in
                // Cut as the wire would: the first frame's payload at 1,448 per segment, headers repeated.
                frame.withUnsafeBytes { raw in
                    let headerLength = 14 + 40
                    let payload = Array(raw[headerLength...])
                    return stride(from: 0, to: payload.count, by: 1448).map { start in
                        var piece = Array(raw[0..<headerLength]) + Array(payload[start..<min(start + 1448, payload.count)])
                        let length = piece.count
                        piece.withUnsafeMutableBytes { out in
                            out.storeBigEndian(UInt16(length - 14), at: 14 + 2)
                            out.storeBigEndian(raw.bigEndianUInt32(at: 14 + 20 + 4) &+ UInt32(start), at: 14 + 20 + 4)
                            IPv4Repr.fillChecksum(header: UnsafeMutableRawBufferPointer(rebasing: out[14..<34]))
                        }
                        return piece
                    }
                }
            } : wire.sent
            let bytes = try reassemble(frames)
            #expect(bytes.count == head.count + root.content.count, "super-segments \(takesSuperSegments): \(bytes.count) bytes")
            let intact = bytes == head + root.content
            #expect(intact, "the head, then the file, whole (super-segments \(takesSuperSegments))")
        }
    }

    @Test("a wire that takes super-segments gets two for 100,000 bytes; one that does not gets 70 segments")
    func superSegmentsOnlyWhereTaken() throws {
        let root = try ExportRoot()
        let cutting = MemoryWire(takesSuperSegments: true)
        _ = try run(wire: cutting, outbound: FaultSettings(), root: root)
        #expect(cutting.sent.count == 2)
        #expect(cutting.sentOffloads.map { $0?.segmentSize } == [1448, 1448])
        #expect(cutting.sentOffloads.first??.checksumStart == 34 && cutting.sentOffloads.first??.headerLength == 54)
        let plain = MemoryWire(takesSuperSegments: false)
        _ = try run(wire: plain, outbound: FaultSettings(), root: root)
        #expect(plain.sent.count == 70 && plain.sentOffloads.allSatisfy { $0 == nil })
        let intact = try reassemble(plain.sent) == root.content
        #expect(intact)
    }

    @Test("a wire that refuses frames for 50 ms: the data waits, leaves whole once taken, and its ECHO says how long it waited")
    func refusingWire() throws {
        let root = try ExportRoot()
        let wire = MemoryWire(takesSuperSegments: true)
        let (runtime, echoes) = try run(wire: wire, outbound: FaultSettings(), root: root, refuseUntil: 50)
        #expect(echoes == 1 && wire.refused > 0)
        #expect(runtime.dataPlane.counters.echoDelayMaximum >= 48_000_000, "\(runtime.dataPlane.counters.echoDelayMaximum) ns")
        let bytes = try reassemble(wire.sent.enumerated().map { index, frame in
            // Cut the super-segments as the kernel would, to read them back.
            guard let offload = wire.sentOffloads[index], offload.segmentSize > 0 else { return [frame] }
            let header = Int(offload.headerLength)
            return stride(from: header, to: frame.count, by: Int(offload.segmentSize)).map { start in
                var piece = Array(frame[0..<header]) + Array(frame[start..<min(start + Int(offload.segmentSize), frame.count)])
                piece.withUnsafeMutableBytes { raw in
                    raw.storeBigEndian(UInt16(raw.count - 14), at: 14 + 2)
                    raw.storeBigEndian(UInt16(0), at: 14 + 10)
                    raw.storeBigEndian(InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: raw[14..<34])), at: 14 + 10)
                    raw.storeBigEndian(UnsafeRawBufferPointer(raw).bigEndianUInt32(at: 14 + 20 + 4) &+ UInt32(start - header), at: 14 + 20 + 4)
                }
                return piece
            }
        }.flatMap { $0 })
        let intact = bytes == root.content
        #expect(intact)
    }

    @Test("a host packet of a full segment (1,500 bytes) leaves whole, gathered behind its Ethernet header")
    func fullSizeHostPacket() throws {
        let root = try ExportRoot()
        var link = EthernetLink(hardwareAddress: MACAddress(0x02, 0, 0, 0x77, 0, 2), address: IPv4Address(10, 77, 0, 2))
        link.learn(neighbour: Self.peer, at: Self.peerHardware)
        for takesOffloads in [false, true] {
            let wire = MemoryWire(takesSuperSegments: takesOffloads)
            let runtime = NICRuntime(wire: wire, link: link, dataPlane: memoryPlane(root))
            let (host, nic) = try InProcessChannel.makePair()
            runtime.attach(nic)
            let sender = ChannelSender(channel: host)
            let payload = (0..<1448).map { UInt8(truncatingIfNeeded: $0 &* 7) }
            let tcp = TCPRepr(sourcePort: 80, destinationPort: 40000, sequenceNumber: SequenceNumber(1), acknowledgmentNumber: SequenceNumber(2),
                              flags: [.ack, .psh], window: 100, options: TCPOptions())
            var packet = [UInt8](repeating: 0, count: 20 + 20 + payload.count)
            try packet.withUnsafeMutableBytes { raw in
                try IPv4Repr(source: IPv4Address(10, 77, 0, 2), destination: Self.peer, protocol: .tcp, payloadLength: 20 + payload.count).emit(into: raw)
                let segment = UnsafeMutableRawBufferPointer(rebasing: raw[20...])
                _ = try tcp.emitHeader(into: segment)
                UnsafeMutableRawBufferPointer(rebasing: segment[20...]).copyBytes(from: payload)
                TCPRepr.fillChecksum(segment: segment, source: IPv4Address(10, 77, 0, 2), destination: Self.peer)
            }
            packet.withUnsafeBytes { sender.append(.packetOut(FlowID(0), packet: $0)) }
            sender.flush()
            _ = runtime.runOnce(now: Instant.milliseconds(1))
            #expect(wire.sent.count == 1)
            #expect(wire.sent.first.map { Array($0[14...]) } == packet, "the packet behind its Ethernet header, byte for byte")
            #expect(wire.sent.first.map { Array($0[0..<6]) } == [0x02, 0, 0, 0, 0, 0x01])
        }
    }
}
