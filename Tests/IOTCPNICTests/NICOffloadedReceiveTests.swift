import IOTCPCommon
import IOTCPNIC
import Testing

/// Frames as the kernel built them (checksum unsummed, TSO super-segments uncut), for everything that is
/// not a splice's: the host and the NIC's own paths must see ordinary segments.
@Suite("Frames the wire left unfinished: summed and cut before anything else sees them")
struct NICOffloadedReceiveTests {
    static let client = IPv4Address(10, 77, 0, 1)
    static let nic = IPv4Address(10, 77, 0, 2)

    func dataPlane() -> NICDataPlane {
        let files = MemoryFiles()
        return NICDataPlane(files: files, disk: MemoryDisk(files: files))
    }

    @Test("a super-segment for the host is cut at the sender's MSS like TSO: sequence, IP ID, lengths, FIN and PSH on the last, CWR on the first, checksums")
    func cutForTheHost() throws {
        let plane = dataPlane()
        var output = CollectingNICOutput()
        let body = (0..<2_500).map { UInt8(truncatingIfNeeded: $0 &* 13 &+ 1) }
        let segment = TCPRepr(sourcePort: 40_000, destinationPort: 80, sequenceNumber: SequenceNumber(1_000), acknowledgmentNumber: SequenceNumber(9),
                              flags: [.ack, .psh, .fin, .cwr], window: 500, options: TCPOptions(timestamps: TCPTimestamps(value: 5, echoReply: 6)))
        var packet = unsummed(tcpPacket(segment, from: Self.client, to: Self.nic, payload: body))
        packet.withUnsafeMutableBytes {
            plane.receive(packet: $0, offload: ReceivedOffload(checksumPartial: true, segmentSize: 1_000), now: Instant(nanoseconds: 1), output: &output)
        }
        let pieces = output.packetsIn.map(\.1)
        #expect(pieces.count == 3 && plane.counters.superSegmentsCut == 1)
        var joined: [UInt8] = []
        for (index, piece) in pieces.enumerated() {
            let (tcp, payload, good) = try #require(parseSegment(piece))
            let ip = try piece.withUnsafeBytes { try IPv4PacketView($0) }  // verifies the header checksum
            #expect(good, "piece \(index): its checksum is whole")
            #expect(ip.totalLength == piece.count && ip.identification == packet.withUnsafeBytes { $0.bigEndianUInt16(at: 4) } &+ UInt16(index))
            #expect(tcp.sequenceNumber == SequenceNumber(1_000) + joined.count && tcp.acknowledgmentNumber == SequenceNumber(9))
            #expect(payload.count == (index < 2 ? 1_000 : 500) && tcp.options.timestamps == TCPTimestamps(value: 5, echoReply: 6))
            #expect(tcp.flags.contains(.fin) == (index == 2) && tcp.flags.contains(.psh) == (index == 2))
            #expect(tcp.flags.contains(.cwr) == (index == 0) && tcp.flags.contains(.ack))
            joined += payload
        }
        #expect(joined == body)
    }

    @Test("a single unsummed segment is summed in place; one the wire verified goes on as it is; a bad sum with no offload is dropped")
    func summed() throws {
        let plane = dataPlane()
        var output = CollectingNICOutput()
        let segment = TCPRepr(sourcePort: 40_000, destinationPort: 80, sequenceNumber: SequenceNumber(7), acknowledgmentNumber: SequenceNumber(9),
                              flags: .ack, window: 500)
        var packet = unsummed(tcpPacket(segment, from: Self.client, to: Self.nic, payload: Array("GET / HTTP/1.1\r\n\r\n".utf8)))
        packet.withUnsafeMutableBytes {
            plane.receive(packet: $0, offload: ReceivedOffload(checksumPartial: true), now: Instant(nanoseconds: 1), output: &output)
        }
        let handed = try #require(output.packetsIn.first?.1)
        #expect(parseSegment(handed)?.2 == true && plane.counters.superSegmentsCut == 0)
        #expect(handed == tcpPacket(segment, from: Self.client, to: Self.nic, payload: Array("GET / HTTP/1.1\r\n\r\n".utf8)))
    }
}
