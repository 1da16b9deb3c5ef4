import Foundation
import IOTCPCommon
import IOTCPHost
import IOTCPNIC
import Testing

/// Collects what the data plane does, parsing packets back.
struct CollectingNICOutput: NICOutput {
    var packets: [[UInt8]] = []
    var replies: [String] = []
    var echoes: [(FlowID, SequenceNumber, UInt64)] = []
    var errors: [(CommandErrorCode, UInt8, UInt64, String)] = []
    var opened: [(UInt32, OffloadedFileID, UInt64)] = []
    /// Per packet: the segment size the wire is to cut it at (0: an ordinary packet).
    var segmentSizes: [Int] = []

    mutating func transmit(length: Int, segmentSize: Int, _ build: (UnsafeMutableRawBufferPointer) -> Void) {
        var bytes = [UInt8](repeating: 0, count: length)
        bytes.withUnsafeMutableBytes { build($0) }
        packets.append(bytes)
        segmentSizes.append(segmentSize)
    }

    mutating func reply(_ command: Command) {
        switch command {
        case .echo(let flow, let end, let delay): echoes.append((flow, end, delay))
        case .error(_, let report): errors.append((report.code, report.failedKind, report.reference, report.textString))
        case .opened(let request, let file, let size): opened.append((request, file, size))
        default: replies.append(String(describing: command.kind))
        }
    }
}

func parseSegment(_ packet: [UInt8]) -> (TCPRepr, [UInt8], Bool)? {
    packet.withUnsafeBytes { raw in
        guard let ip = try? IPv4PacketView(raw), let view = try? TCPSegmentView(ip.payload), let tcp = try? TCPRepr(view) else { return nil }
        return (tcp, Array(view.payload), view.checksumVerifies(source: ip.source, destination: ip.destination))
    }
}

let flowEndpoints = FlowEndpoints(localAddress: IPv4Address(10, 77, 0, 2), remoteAddress: IPv4Address(10, 77, 0, 1),
                                  localPort: 80, remotePort: 40000, remoteHardwareAddress: .zero, maximumSegmentSize: 1448)

func openFile(_ nic: NICDataPlane, _ path: String, request: UInt32 = 1) -> (CollectingNICOutput, OffloadedFileID?) {
    var output = CollectingNICOutput()
    Array(path.utf8).withUnsafeBytes { nic.handle(.open(requestID: request, flags: 0, path: $0), received: .zero, now: .zero, output: &output) }
    return (output, output.opened.first?.1)
}

@Suite("NIC data plane")
struct NICDataPlaneTests {
    @Test("SEND becomes segments built from the template, with the file's bytes, then an ECHO with the NIC's delay")
    func sendBuildsSegments() throws {
        let root = try ExportRoot()
        let nic = NICDataPlane(files: try FileTable(root: root.path))
        let (opening, fileID) = openFile(nic, "sub/data.bin", request: 7)
        let file = try #require(fileID)
        #expect(opening.opened.first?.0 == 7 && opening.opened.first?.2 == 100_000)
        var output = CollectingNICOutput()
        nic.handle(.flowOpen(FlowID(3), flowEndpoints), received: .zero, now: .zero, output: &output)
        let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(5555), window: 1234, lastSegmentFlags: .psh,
                                       maximumSegmentSize: 1448, timestamps: TCPTimestamps(value: 1000, echoReply: 77))
        nic.handle(.send(FlowID(3), SendRange(sequence: SequenceNumber(1_000_000), length: 5000, file: file, offset: 2000, template: template)),
                   received: Instant.milliseconds(10), now: Instant.milliseconds(13), output: &output)
        #expect(output.packets.count == 4)
        var offset = 2000
        for (index, packet) in output.packets.enumerated() {
            let (tcp, payload, checksumOK) = try #require(parseSegment(packet))
            #expect(checksumOK)
            #expect(tcp.sequenceNumber == SequenceNumber(1_000_000) + (offset - 2000))
            #expect(tcp.acknowledgmentNumber == SequenceNumber(5555) && tcp.window == 1234)
            #expect(tcp.sourcePort == 80 && tcp.destinationPort == 40000)
            #expect(tcp.flags == (index == 3 ? [.ack, .psh] : .ack))
            #expect(tcp.options.timestamps == TCPTimestamps(value: 1003, echoReply: 77), "TSval plus the 3 ms the SEND waited")
            let same = payload == Array(root.content[offset..<(offset + payload.count)])
            #expect(same)
            offset += payload.count
        }
        #expect(offset == 7000)
        #expect(output.echoes.count == 1)
        #expect(output.echoes.first?.1 == SequenceNumber(1_005_000) && output.echoes.first?.2 == 3_000_000)
        #expect(nic.store.heldBytes == 5000)
    }

    @Test("with a wire that cuts super-segments, a SEND leaves in packets of 45 segments that cut into exactly the ordinary ones")
    func sendBuildsSuperSegments() throws {
        let root = try ExportRoot()
        let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(5555), window: 1234, lastSegmentFlags: [.psh, .fin],
                                       maximumSegmentSize: 1448, timestamps: TCPTimestamps(value: 1000, echoReply: 77))
        func run(superSegmentLimit: Int) throws -> CollectingNICOutput {
            let nic = NICDataPlane(files: try FileTable(root: root.path))
            nic.superSegmentLimit = superSegmentLimit
            let (_, fileID) = openFile(nic, "sub/data.bin")
            var output = CollectingNICOutput()
            nic.handle(.flowOpen(FlowID(3), flowEndpoints), received: .zero, now: .zero, output: &output)
            nic.handle(.send(FlowID(3), SendRange(sequence: SequenceNumber(1_000_000), length: 100_000, file: try #require(fileID),
                                                  offset: 0, template: template)), received: .zero, now: .zero, output: &output)
            #expect(output.errors.isEmpty && output.echoes.count == 1)
            return output
        }
        let plain = try run(superSegmentLimit: 0)
        let offloaded = try run(superSegmentLimit: 65535)
        #expect(plain.packets.count == 70 && plain.segmentSizes.allSatisfy { $0 == 0 })
        // 52 header bytes (IPv4 20, TCP 20, timestamps 12): 45 segments of 1448 fit in 65,535.
        #expect(offloaded.packets.map(\.count) == [52 + 65160, 52 + 34840])
        #expect(offloaded.segmentSizes == [1448, 1448])

        var cut: [[UInt8]] = []
        for (index, packet) in offloaded.packets.enumerated() {
            #expect(packet.withUnsafeBytes { Int($0.bigEndianUInt16(at: 2)) } == packet.count, "IPv4 total length")
            let tcp = try #require(parseSegment(packet)).0
            #expect(tcp.sequenceNumber == SequenceNumber(1_000_000) + index * 65160)
            #expect(tcp.flags == (index == 1 ? [.ack, .psh, .fin] : .ack), "FIN and PSH on the last super-segment only")
            // The checksum field holds the pseudo-header sum over the whole TCP length, for the wire to finish.
            var pseudo = InternetChecksum()
            pseudo.addPseudoHeader(source: flowEndpoints.localAddress, destination: flowEndpoints.remoteAddress,
                                   protocol: .tcp, length: packet.count - 20)
            #expect(packet.withUnsafeBytes { $0.bigEndianUInt16(at: 20 + 16) } == pseudo.foldedSum)
            // Cut it as the kernel does: the same headers, sequence advanced, FIN/PSH kept on the last piece
            // only, lengths and checksums recomputed.
            let payload = packet[52...]
            for start in stride(from: 0, to: payload.count, by: 1448) {
                let piece = Array(payload.dropFirst(start).prefix(1448))
                var segment = Array(packet[0..<52]) + piece
                let last = start + piece.count == payload.count
                segment.withUnsafeMutableBytes { raw in
                    raw.storeBigEndian(UInt16(raw.count), at: 2)
                    raw.storeBigEndian(UInt16(0), at: 10)
                    raw.storeBigEndian(InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<20])), at: 10)
                    raw.storeBigEndian(tcp.sequenceNumber.rawValue &+ UInt32(start), at: 20 + 4)
                    if !last { raw[20 + 13] &= ~UInt8(0x09) }
                    TCPRepr.fillChecksum(segment: UnsafeMutableRawBufferPointer(rebasing: raw[20...]),
                                         source: flowEndpoints.localAddress, destination: flowEndpoints.remoteAddress)
                }
                cut.append(segment)
            }
        }
        #expect(cut.count == plain.packets.count)
        let identical = cut == plain.packets
        #expect(identical, "the wire's cuts are byte for byte the segments built without offload")
    }

    @Test("errors are answered with ERROR naming the command, never a trap", arguments: RetransmitStore.Mode.allCases)
    func errors(mode: RetransmitStore.Mode) throws {
        let root = try ExportRoot()
        let nic = NICDataPlane(files: try FileTable(root: root.path), retransmitMode: mode, storeLimitBytes: 10_000)
        let (missing, _) = openFile(nic, "nope.txt", request: 11)
        #expect(missing.errors.first?.0 == .fileNotFound && missing.errors.first?.1 == CommandKind.open.rawValue && missing.errors.first?.2 == 11)
        let (escape, _) = openFile(nic, "../secret.txt", request: 12)
        #expect(escape.errors.first?.0 == .pathOutsideRoot)
        let (_, fileID) = openFile(nic, "sub/data.bin")
        let file = try #require(fileID)
        let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(1), window: 100, maximumSegmentSize: 1448)
        var output = CollectingNICOutput()
        nic.handle(.send(FlowID(9), SendRange(sequence: SequenceNumber(0), length: 10, file: file, offset: 0, template: template)),
                   received: .zero, now: .zero, output: &output)
        nic.handle(.flowOpen(FlowID(9), flowEndpoints), received: .zero, now: .zero, output: &output)
        nic.handle(.send(FlowID(9), SendRange(sequence: SequenceNumber(0), length: 10, file: OffloadedFileID(slot: 40, generation: 1), offset: 0, template: template)),
                   received: .zero, now: .zero, output: &output)
        nic.handle(.send(FlowID(9), SendRange(sequence: SequenceNumber(0), length: 1000, file: file, offset: 99_500, template: template)),
                   received: .zero, now: .zero, output: &output)
        nic.handle(.retransmit(FlowID(9), sequence: SequenceNumber(500), length: 10, template: template), received: .zero, now: .zero, output: &output)
        let codes = output.errors.map(\.0)
        #expect(codes == [.unknownFlow, .unknownFile, .fileShrank, .malformedCommand])
        #expect(output.packets.isEmpty, "nothing half-sent")
        #expect(nic.store.heldBytes == 0)
    }

    @Test("past the buffered store's limit a SEND still goes out, kept as its file range; its retransmission re-reads the file")
    func storeLimitSpillsToFileRanges() throws {
        let root = try ExportRoot()
        let nic = NICDataPlane(files: try FileTable(root: root.path), retransmitMode: .buffered, storeLimitBytes: 10_000)
        let (_, fileID) = openFile(nic, "sub/data.bin")
        let file = try #require(fileID)
        let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(1), window: 100, maximumSegmentSize: 1448)
        var output = CollectingNICOutput()
        nic.handle(.flowOpen(FlowID(9), flowEndpoints), received: .zero, now: .zero, output: &output)
        // 8,000 bytes fit and are kept; the next 20,000 do not and are kept as a file range.
        nic.handle(.send(FlowID(9), SendRange(sequence: SequenceNumber(0), length: 8_000, file: file, offset: 0, template: template)),
                   received: .zero, now: .zero, output: &output)
        nic.handle(.send(FlowID(9), SendRange(sequence: SequenceNumber(8_000), length: 20_000, file: file, offset: 8_000, template: template)),
                   received: .zero, now: .zero, output: &output)
        #expect(output.errors.isEmpty && output.echoes.count == 2, "both went out, no ERROR")
        #expect(nic.store.heldBytes == 28_000 && nic.store.bufferedBytes == 8_000 && nic.counters.storeSpills == 1)
        let sent = output.packets.count
        // A retransmission across both: the kept bytes and the re-read ones, identical to the file.
        nic.handle(.retransmit(FlowID(9), sequence: SequenceNumber(7_000), length: 3_000, template: template),
                   received: .zero, now: .zero, output: &output)
        #expect(output.errors.isEmpty)
        let resent = try output.packets[sent...].map { try #require(parseSegment($0)) }
        #expect(resent.allSatisfy { $0.2 }, "checksums verify")
        let bytes = resent.flatMap { $0.1 }
        #expect(bytes == Array(root.content[7_000..<10_000]))
        nic.handle(.acknowledged(FlowID(9), through: SequenceNumber(28_000)), received: .zero, now: .zero, output: &output)
        #expect(nic.store.heldBytes == 0 && nic.store.bufferedBytes == 0)
    }

    @Test("buffered and bufferless retransmissions send identical bytes")
    func retransmitModesAgree() throws {
        let root = try ExportRoot()
        var results: [[[UInt8]]] = []
        for mode in RetransmitStore.Mode.allCases {
            let nic = NICDataPlane(files: try FileTable(root: root.path), retransmitMode: mode)
            let (_, fileID) = openFile(nic, "sub/data.bin")
            var output = CollectingNICOutput()
            nic.handle(.flowOpen(FlowID(2), flowEndpoints), received: .zero, now: .zero, output: &output)
            let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(9), window: 512, maximumSegmentSize: 1000)
            for (index, start) in [0, 3000, 7000].enumerated() {
                nic.handle(.send(FlowID(2), SendRange(sequence: SequenceNumber(UInt32(start)), length: UInt32([3000, 4000, 2500][index]),
                                                      file: fileID!, offset: UInt64(10 * start), template: template)),
                           received: .zero, now: .zero, output: &output)
            }
            output.packets.removeAll()
            nic.handle(.acknowledged(FlowID(2), through: SequenceNumber(1500)), received: .zero, now: .zero, output: &output)
            nic.handle(.retransmit(FlowID(2), sequence: SequenceNumber(1500), length: 8000, template: template), received: .zero, now: .zero, output: &output)
            #expect(output.errors.isEmpty)
            results.append(output.packets)
        }
        #expect(results[0].count == 9)
        let same = results[0] == results[1]
        #expect(same)
    }

    /// Random SEND, ACKD, RETRANSMIT and FLOW_CLOSE sequences: the store never holds what was acknowledged,
    /// and holds nothing at the end.
    @Test("random command sequences end with zero bytes held", arguments: RetransmitStore.Mode.allCases)
    func randomSequences(mode: RetransmitStore.Mode) throws {
        let root = try ExportRoot()
        let nic = NICDataPlane(files: try FileTable(root: root.path), retransmitMode: mode)
        let (_, fileID) = openFile(nic, "sub/data.bin")
        let file = try #require(fileID)
        var random = SeededGenerator(seed: 77)
        let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(1), window: 512, maximumSegmentSize: 1448)
        var output = CollectingNICOutput()
        for round in 0..<200 {
            let flow = FlowID(UInt32(round % 7) + 1)
            nic.handle(.flowOpen(flow, flowEndpoints), received: .zero, now: .zero, output: &output)
            var next = UInt32.random(in: 0...UInt32.max, using: &random)
            let base = next
            var acked = next
            for _ in 0..<Int.random(in: 1...20, using: &random) {
                switch Int.random(in: 0..<4, using: &random) {
                case 0, 1:
                    let length = UInt32.random(in: 1...20_000, using: &random)
                    nic.handle(.send(flow, SendRange(sequence: SequenceNumber(next), length: length, file: file,
                                                     offset: UInt64(next &- base) % 50_000, template: template)),
                               received: .zero, now: .zero, output: &output)
                    next &+= length
                case 2 where next != acked:
                    acked = acked &+ UInt32.random(in: 1...(next &- acked), using: &random)
                    nic.handle(.acknowledged(flow, through: SequenceNumber(acked)), received: .zero, now: .zero, output: &output)
                    #expect(nic.store.heldBytes(flow: flow) == Int(next &- acked))
                case 3 where next != acked:
                    let start = acked &+ UInt32.random(in: 0..<(next &- acked), using: &random)
                    nic.handle(.retransmit(flow, sequence: SequenceNumber(start), length: min(next &- start, 5000), template: template),
                               received: .zero, now: .zero, output: &output)
                default:
                    break
                }
                output.packets.removeAll(keepingCapacity: true)
            }
            if Bool.random(using: &random) {
                nic.handle(.acknowledged(flow, through: SequenceNumber(next)), received: .zero, now: .zero, output: &output)
                #expect(nic.store.heldBytes(flow: flow) == 0)
            }
            nic.handle(.flowClose(flow, reason: 0), received: .zero, now: .zero, output: &output)
        }
        #expect(output.errors.isEmpty, "\(output.errors.prefix(3))")
        #expect(nic.store.heldBytes == 0 && nic.store.bufferedBytes == 0)
    }
}
