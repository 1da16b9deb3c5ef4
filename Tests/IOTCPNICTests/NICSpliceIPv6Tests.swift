import IOTCPCommon
import IOTCPNIC
import Testing

/// Splicing two IPv6 connections on the NIC (SPLICE6): the head, the relay both ways field by field, the
/// ending by FINs and by RST, and a packet the host gives back, as `NICSpliceTests` checks them over IPv4.
@Suite("Splicing on the NIC over IPv6 (SPLICE6)")
struct NICSpliceIPv6Tests {
    static let proxy = IPAddress("fd77::2")!
    static let client = IPAddress("fd77::1")!
    static let backend = IPAddress("fd77::9")!
    let clientFlow = FlowID(index: 3, generation: 1)
    let backendFlow = FlowID(index: 4, generation: 1)
    let start = Instant(nanoseconds: 50 * Nanoseconds.second)
    let head = Array("GET /x HTTP/1.1\r\nHost: backend\r\nX-Forwarded-For: fd77::1\r\nAccept: */*\r\n\r\n".utf8)
    let clientSendNext = SequenceNumber(5_000), clientReceiveNext = SequenceNumber(1_000)
    let backendSendNext = SequenceNumber(70_000), backendReceiveNext = SequenceNumber(90_000)
    var headEnd: SequenceNumber { backendSendNext + head.count }

    func parameters() -> SpliceParameters {
        SpliceParameters(
            client: SpliceConnectionState(
                remoteAddress: Self.client, remotePort: 40_000, localPort: 80, sendNext: clientSendNext, receiveNext: clientReceiveNext,
                timestamps: true, timestampValue: 100_000, timestampEcho: 7_000, window: 500, localWindowShift: 7,
                peerWindowShift: 7, peerSegmentSize: 1428, selectiveAcknowledgments: true),
            backend: SpliceConnectionState(
                remoteAddress: Self.backend, remotePort: 8080, localPort: 33_000, sendNext: backendSendNext,
                receiveNext: backendReceiveNext, timestamps: true, timestampValue: 200_000, timestampEcho: 3_000, window: 600,
                localWindowShift: 7, peerWindowShift: 9, peerSegmentSize: 1428, selectiveAcknowledgments: true),
            backendFlow: backendFlow, localAddress: Self.proxy, retransmissionTimeoutMilliseconds: 200, maximumRetransmissions: 2,
            idleTimeoutMilliseconds: 30_000, lingerMilliseconds: 5_000)
    }

    func spliced(output: inout CollectingNICOutput) -> NICDataPlane {
        let files = MemoryFiles()
        let nic = NICDataPlane(files: files, disk: MemoryDisk(files: files))
        head.withUnsafeBytes { nic.handle(.splice(clientFlow, parameters(), head: $0), received: start, now: start, output: &output) }
        return nic
    }

    func segment(from peer: IPAddress, flags: TCPFlags, sequence: SequenceNumber, acknowledgment: SequenceNumber, payload: [UInt8] = [],
                 timestamp: UInt32, echo: UInt32, sack: [SACKBlock] = []) -> [UInt8] {
        let fromClient = peer == Self.client
        let tcp = TCPRepr(sourcePort: fromClient ? 40_000 : 8080, destinationPort: fromClient ? 80 : 33_000, sequenceNumber: sequence,
                          acknowledgmentNumber: acknowledgment, flags: flags, window: fromClient ? 300 : 100,
                          options: TCPOptions(sackBlocks: SACKBlockList(sack), timestamps: TCPTimestamps(value: timestamp, echoReply: echo)))
        return tcpPacket(tcp, from: peer, to: Self.proxy, payload: payload)
    }

    /// Segments sent since the last call, each an IPv6 packet: TCP header, payload, checksum good, addresses.
    func sent(_ output: inout CollectingNICOutput) -> [(segment: TCPRepr, payload: [UInt8], checksumGood: Bool, from: IPAddress, to: IPAddress)] {
        defer { output.packets.removeAll() }
        return output.packets.compactMap { packet in
            guard let (segment, payload, good) = parseSegment(packet),
                  let ip = packet.withUnsafeBytes({ raw in (try? IPv6PacketView(raw)).map { (IPAddress($0.source), IPAddress($0.destination)) } })
            else { return nil }
            return (segment, payload, good, ip.0, ip.1)
        }
    }

    @Test("the head goes to the backend over IPv6, then each peer's segments reach the other rewritten field by field")
    func headAndRelay() throws {
        var output = CollectingNICOutput()
        let nic = spliced(output: &output)
        #expect(nic.spliceCount == 1 && output.errors.isEmpty)
        let heads = sent(&output)
        #expect(heads.count == 1 && heads.first?.payload == head && heads.first?.checksumGood == true)
        #expect(heads.first?.from == Self.proxy && heads.first?.to == Self.backend && heads.first?.segment.sequenceNumber == backendSendNext)
        let response = Array(repeating: UInt8(ascii: "r"), count: 1000)
        segment(from: Self.backend, flags: [.ack, .psh], sequence: backendReceiveNext, acknowledgment: headEnd, payload: response,
                timestamp: 3_010, echo: 200_000)
            .withUnsafeBytes { nic.receive(packet: $0, now: start + Nanoseconds.millisecond, output: &output) }
        let toClient = try #require(sent(&output).first)
        #expect(toClient.from == Self.proxy && toClient.to == Self.client && toClient.checksumGood)
        #expect(toClient.segment.sourcePort == 80 && toClient.segment.destinationPort == 40_000)
        #expect(toClient.segment.sequenceNumber == clientSendNext && toClient.segment.acknowledgmentNumber == clientReceiveNext)
        #expect(toClient.segment.options.timestamps == TCPTimestamps(value: 3_010 &+ (100_000 &- 3_000), echoReply: 7_000))
        #expect(toClient.segment.window == 400 && toClient.payload == response)
        let upload = Array("more".utf8)
        segment(from: Self.client, flags: .ack, sequence: clientReceiveNext, acknowledgment: clientSendNext + 1000, payload: upload,
                timestamp: 7_005, echo: 100_010, sack: [SACKBlock(left: clientSendNext + 2000, right: clientSendNext + 3000)])
            .withUnsafeBytes { nic.receive(packet: $0, now: start + 2 * Nanoseconds.millisecond, output: &output) }
        let toBackend = try #require(sent(&output).first)
        #expect(toBackend.from == Self.proxy && toBackend.to == Self.backend && toBackend.checksumGood)
        #expect(toBackend.segment.sourcePort == 33_000 && toBackend.segment.destinationPort == 8080)
        #expect(toBackend.segment.sequenceNumber == headEnd && toBackend.segment.acknowledgmentNumber == backendReceiveNext + 1000)
        #expect(Array(toBackend.segment.options.sackBlocks) == [SACKBlock(left: backendReceiveNext + 2000, right: backendReceiveNext + 3000)])
        #expect(toBackend.segment.options.timestamps == TCPTimestamps(value: 7_005 &+ (200_000 &- 7_000), echoReply: 3_010))
        #expect(toBackend.payload == upload && output.packetsIn.isEmpty, "the host hears nothing of either")
        #expect(nic.counters.splicedSegments == 2 && nic.counters.splicedBytes == 1000 + upload.count)
    }

    @Test("a client segment behind a Destination Options header reaches the backend without it, rewritten and summed")
    func extensionHeadersLeftOut() throws {
        var output = CollectingNICOutput()
        let nic = spliced(output: &output)
        _ = sent(&output)
        let upload = Array("behind options".utf8)
        var packet = segment(from: Self.client, flags: [.ack, .psh], sequence: clientReceiveNext, acknowledgment: clientSendNext,
                             payload: upload, timestamp: 7_005, echo: 100_000)
        // Next header TCP, length 0 (8 bytes), a PadN option of four bytes; the TCP checksum is unchanged (its
        // pseudo-header counts the segment's length, not the packet's).
        let options: [UInt8] = [6, 0, 1, 4, 0, 0, 0, 0]
        packet.insert(contentsOf: options, at: 40)
        packet[6] = 60
        let payloadLength = Int(packet[4]) << 8 | Int(packet[5])
        packet[4] = UInt8((payloadLength + 8) >> 8)
        packet[5] = UInt8((payloadLength + 8) & 0xFF)
        packet.withUnsafeBytes { nic.receive(packet: $0, now: start + Nanoseconds.millisecond, output: &output) }
        let raw = try #require(output.packets.first)
        #expect(raw[6] == 6 && raw.count == packet.count - 8, "the relayed packet has TCP straight after the fixed header")
        #expect(Int(raw[4]) << 8 | Int(raw[5]) == payloadLength)
        let toBackend = try #require(sent(&output).first)
        #expect(toBackend.from == Self.proxy && toBackend.to == Self.backend && toBackend.checksumGood)
        #expect(toBackend.segment.sourcePort == 33_000 && toBackend.segment.destinationPort == 8080)
        #expect(toBackend.segment.sequenceNumber == headEnd && toBackend.segment.acknowledgmentNumber == backendReceiveNext)
        #expect(toBackend.segment.options.timestamps == TCPTimestamps(value: 7_005 &+ (200_000 &- 7_000), echoReply: 3_000))
        #expect(toBackend.payload == upload && output.packetsIn.isEmpty && nic.counters.splicedSegments == 1)
    }

    @Test("both FINs acknowledged: lingers, then SPLICE_ENDED names the IPv6 backend; a RST at the stream's place ends another at once")
    func endings() throws {
        var output = CollectingNICOutput()
        let nic = spliced(output: &output)
        _ = sent(&output)
        var now = start + Nanoseconds.millisecond
        segment(from: Self.backend, flags: [.ack, .fin], sequence: backendReceiveNext, acknowledgment: headEnd, payload: [1, 2, 3],
                timestamp: 3_010, echo: 200_000)
            .withUnsafeBytes { nic.receive(packet: $0, now: now, output: &output) }
        #expect(sent(&output).first?.segment.flags.contains(.fin) == true)
        now = now + Nanoseconds.millisecond
        segment(from: Self.client, flags: [.ack, .fin], sequence: clientReceiveNext, acknowledgment: clientSendNext + 4, timestamp: 7_005,
                echo: 100_010)
            .withUnsafeBytes { nic.receive(packet: $0, now: now, output: &output) }
        #expect(sent(&output).first?.segment.acknowledgmentNumber == backendReceiveNext + 4)
        // The backend's ACK of the client's FIN comes back through the host (it reached it just after the splice).
        segment(from: Self.backend, flags: .ack, sequence: backendReceiveNext + 4, acknowledgment: headEnd + 1, timestamp: 3_011, echo: 200_002)
            .withUnsafeBytes { nic.handle(.redeliver(packet: $0), received: now, now: now, output: &output) }
        #expect(sent(&output).first?.segment.acknowledgmentNumber == clientReceiveNext + 1 && nic.counters.redelivered == 1)
        nic.poll(now: now + 5 * Nanoseconds.second + 2 * Nanoseconds.millisecond, output: &output)
        let report = try #require(output.spliceEnds.first?.1)
        #expect(nic.spliceCount == 0 && report.reason == .finished && report.backendBytes == 3)
        #expect(report.backendAddress == Self.backend && report.backendPort == 8080 && report.backendLocalPort == 33_000)
        #expect(Command.spliceEnded(clientFlow, report).kind == .spliceEndedIPv6)

        var second = CollectingNICOutput()
        let other = spliced(output: &second)
        _ = sent(&second)
        segment(from: Self.client, flags: [.rst, .ack], sequence: clientReceiveNext, acknowledgment: clientSendNext, timestamp: 7_005, echo: 100_000)
            .withUnsafeBytes { other.receive(packet: $0, now: start, output: &second) }
        let passed = try #require(sent(&second).first)
        #expect(passed.to == Self.backend && passed.segment.flags.contains(.rst) && passed.segment.sequenceNumber == headEnd)
        #expect(other.spliceCount == 0 && second.spliceEnds.map(\.1.reason) == [.reset])
    }

    @Test("a splice across families (which no host encodes) is refused: the peer of our family reset, SPLICE_ENDED refused")
    func mixedFamiliesRefused() throws {
        var mixed = parameters()
        mixed.backend.remoteAddress = IPAddress(IPv4Address(10, 77, 0, 9))
        let files = MemoryFiles()
        let nic = NICDataPlane(files: files, disk: MemoryDisk(files: files))
        var output = CollectingNICOutput()
        head.withUnsafeBytes { nic.handle(.splice(clientFlow, mixed, head: $0), received: start, now: start, output: &output) }
        #expect(nic.spliceCount == 0 && output.spliceEnds.map(\.1.reason) == [.refused] && nic.counters.spliceRefusals == 1)
        #expect(output.packets.count == 1 && sent(&output).map(\.to) == [Self.client] && output.packets.isEmpty)
    }
}
