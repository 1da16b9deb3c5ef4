import IOTCPCommon
import IOTCPNIC
import Testing

/// Splicing on the NIC: the head, the relay both ways field by field, and every way a splice ends,
/// scripted segment by segment on a virtual clock.
@Suite("Splicing on the NIC (SPLICE): the head, the relay, FIN, RST, idleness, bounds")
struct NICSpliceTests {
    static let proxy = IPv4Address(10, 77, 0, 2)
    static let client = IPv4Address(10, 77, 0, 1)
    static let backend = IPv4Address(10, 77, 0, 9)
    let clientFlow = FlowID(index: 3, generation: 1)
    let backendFlow = FlowID(index: 4, generation: 1)
    let start = Instant(nanoseconds: 50 * Nanoseconds.second)
    let head = Array("GET /x HTTP/1.1\r\nHost: backend\r\nUser-Agent: test\r\nX-Forwarded-For: 10.77.0.1\r\nAccept: */*\r\n\r\n".utf8)

    // Our SND.NXT and RCV.NXT on each connection, and TSvals: ours and the peer's.
    let clientSendNext = SequenceNumber(5_000), clientReceiveNext = SequenceNumber(1_000)
    let backendSendNext = SequenceNumber(70_000), backendReceiveNext = SequenceNumber(90_000)

    func parameters(timestamps: Bool = true) -> SpliceParameters {
        SpliceParameters(
            client: SpliceConnectionState(
                remoteAddress: IPAddress(Self.client), remotePort: 40_000, localPort: 80, sendNext: clientSendNext, receiveNext: clientReceiveNext,
                timestamps: timestamps, timestampValue: 100_000, timestampEcho: 7_000, window: 500, localWindowShift: 7,
                peerWindowShift: 7, peerSegmentSize: 1448, selectiveAcknowledgments: true),
            backend: SpliceConnectionState(
                remoteAddress: IPAddress(Self.backend), remotePort: 8080, localPort: 33_000, sendNext: backendSendNext,
                receiveNext: backendReceiveNext, timestamps: timestamps, timestampValue: 200_000, timestampEcho: 3_000, window: 600,
                localWindowShift: 7, peerWindowShift: 9, peerSegmentSize: 64, selectiveAcknowledgments: true),
            backendFlow: backendFlow, localAddress: IPAddress(Self.proxy), retransmissionTimeoutMilliseconds: 200, maximumRetransmissions: 2,
            idleTimeoutMilliseconds: 30_000, lingerMilliseconds: 5_000)
    }

    func spliced(_ parameters: SpliceParameters? = nil, limits: NICDataPlane.Limits = NICDataPlane.Limits(),
                 output: inout CollectingNICOutput) -> NICDataPlane {
        let files = MemoryFiles()
        let nic = NICDataPlane(files: files, disk: MemoryDisk(files: files), limits: limits)
        head.withUnsafeBytes { nic.handle(.splice(clientFlow, parameters ?? self.parameters(), head: $0), received: start, now: start, output: &output) }
        return nic
    }

    func fromClient(_ nic: NICDataPlane, flags: TCPFlags = .ack, sequence: SequenceNumber, acknowledgment: SequenceNumber,
                    payload: [UInt8] = [], timestamp: UInt32 = 7_005, echo: UInt32 = 100_000, window: UInt16 = 300,
                    sack: [SACKBlock] = [], offload: ReceivedOffload? = nil, at time: Instant, output: inout CollectingNICOutput) {
        let segment = TCPRepr(sourcePort: 40_000, destinationPort: 80, sequenceNumber: sequence, acknowledgmentNumber: acknowledgment,
                              flags: flags, window: window,
                              options: TCPOptions(sackBlocks: SACKBlockList(sack), timestamps: TCPTimestamps(value: timestamp, echoReply: echo)))
        deliver(tcpPacket(segment, from: Self.client, to: Self.proxy, payload: payload), to: nic, offload: offload, at: time, output: &output)
    }

    func fromBackend(_ nic: NICDataPlane, flags: TCPFlags = .ack, sequence: SequenceNumber, acknowledgment: SequenceNumber,
                     payload: [UInt8] = [], timestamp: UInt32 = 3_010, echo: UInt32 = 200_000, window: UInt16 = 100,
                     corrupt: Bool = false, offload: ReceivedOffload? = nil, at time: Instant, output: inout CollectingNICOutput) {
        let segment = TCPRepr(sourcePort: 8080, destinationPort: 33_000, sequenceNumber: sequence, acknowledgmentNumber: acknowledgment,
                              flags: flags, window: window, options: TCPOptions(timestamps: TCPTimestamps(value: timestamp, echoReply: echo)))
        deliver(tcpPacket(segment, from: Self.backend, to: Self.proxy, payload: payload, corrupt: corrupt), to: nic, offload: offload, at: time,
                output: &output)
    }

    /// A packet into the NIC: finished, or (with `offload`) as the kernel hands over one it built, its TCP
    /// checksum field holding only the pseudo-header sum.
    func deliver(_ packet: [UInt8], to nic: NICDataPlane, offload: ReceivedOffload?, at time: Instant, output: inout CollectingNICOutput) {
        guard let offload else {
            packet.withUnsafeBytes { nic.receive(packet: $0, now: time, output: &output) }
            return
        }
        var bytes = unsummed(packet)
        bytes.withUnsafeMutableBytes { nic.receive(packet: $0, offload: offload, now: time, output: &output) }
    }

    /// Segments sent since the last call: the TCP header, payload, whether the checksum verifies, and the
    /// IPv4 source and destination.
    func sent(_ output: inout CollectingNICOutput) -> [(segment: TCPRepr, payload: [UInt8], checksumGood: Bool, from: IPv4Address, to: IPv4Address)] {
        defer {
            output.packets.removeAll()
            output.segmentSizes.removeAll()
            output.checksumOffloaded.removeAll()
        }
        return output.packets.compactMap { packet in
            guard let (segment, payload, good) = parseSegment(packet) else { return nil }
            let addresses = packet.withUnsafeBytes { raw in (try? IPv4PacketView(raw)).map { ($0.source, $0.destination) } }
            guard let addresses else { return nil }
            return (segment, payload, good, addresses.0, addresses.1)
        }
    }

    var headEnd: SequenceNumber { backendSendNext + head.count }

    @Test("SPLICE sends the head to the backend in segments of its MSS, its timestamps and window continuing ours")
    func headGoesFirst() throws {
        var output = CollectingNICOutput()
        let nic = spliced(output: &output)
        #expect(nic.spliceCount == 1 && nic.counters.splices == 1)
        let segments = sent(&output)
        #expect(head.count > 64 && segments.count == (head.count + 63) / 64, "64-byte segments: the backend's MSS")
        var expected = backendSendNext
        var carried: [UInt8] = []
        for (index, sent) in segments.enumerated() {
            #expect(sent.from == Self.proxy && sent.to == Self.backend && sent.checksumGood)
            #expect(sent.segment.sourcePort == 33_000 && sent.segment.destinationPort == 8080)
            #expect(sent.segment.sequenceNumber == expected && sent.segment.acknowledgmentNumber == backendReceiveNext)
            #expect(sent.segment.window == 600 && sent.segment.options.timestamps == TCPTimestamps(value: 200_000, echoReply: 3_000))
            #expect(sent.segment.flags == (index == segments.count - 1 ? [.ack, .psh] : .ack))
            expected = expected + sent.payload.count
            carried += sent.payload
        }
        #expect(carried == head)
    }

    @Test("each peer's segments reach the other rewritten: addresses, ports, sequence, ACK, SACK, timestamps, window; payload untouched")
    func relayBothWays() throws {
        var output = CollectingNICOutput()
        let nic = spliced(output: &output)
        _ = sent(&output)
        let response = Array(repeating: UInt8(ascii: "r"), count: 1000)
        // The backend acknowledges the head with its first bytes of the response.
        fromBackend(nic, flags: [.ack, .psh], sequence: backendReceiveNext, acknowledgment: headEnd, payload: response,
                    at: start + Nanoseconds.millisecond, output: &output)
        let toClient = try #require(sent(&output).first)
        #expect(toClient.from == Self.proxy && toClient.to == Self.client && toClient.checksumGood)
        #expect(toClient.segment.sourcePort == 80 && toClient.segment.destinationPort == 40_000)
        #expect(toClient.segment.sequenceNumber == clientSendNext, "the backend's first byte is the next we owe the client")
        #expect(toClient.segment.acknowledgmentNumber == clientReceiveNext, "the head's end is where the client's stream stood")
        #expect(toClient.segment.options.timestamps == TCPTimestamps(value: 3_010 &+ (100_000 &- 3_000), echoReply: 7_000))
        #expect(toClient.segment.window == 400, "100 << 9 bytes, as the client's shift 7 carries it")
        #expect(toClient.payload == response && toClient.segment.flags == [.ack, .psh])
        // The client acknowledges, SACKs a later block, and sends bytes of its own.
        let upload = Array("more".utf8)
        fromClient(nic, sequence: clientReceiveNext, acknowledgment: clientSendNext + 1000, payload: upload, echo: 100_010,
                   sack: [SACKBlock(left: clientSendNext + 2000, right: clientSendNext + 3000)],
                   at: start + 2 * Nanoseconds.millisecond, output: &output)
        let toBackend = try #require(sent(&output).first)
        #expect(toBackend.from == Self.proxy && toBackend.to == Self.backend && toBackend.checksumGood)
        #expect(toBackend.segment.sourcePort == 33_000 && toBackend.segment.destinationPort == 8080)
        #expect(toBackend.segment.sequenceNumber == headEnd, "the client's bytes follow the head")
        #expect(toBackend.segment.acknowledgmentNumber == backendReceiveNext + 1000)
        #expect(Array(toBackend.segment.options.sackBlocks) == [SACKBlock(left: backendReceiveNext + 2000, right: backendReceiveNext + 3000)])
        #expect(toBackend.segment.options.timestamps == TCPTimestamps(value: 7_005 &+ (200_000 &- 7_000), echoReply: 3_010))
        #expect(toBackend.segment.window == 300 && toBackend.payload == upload)
        #expect(nic.counters.splicedSegments == 2 && nic.counters.splicedBytes == 1000 + upload.count)
        #expect(nic.counters.spliceHeadResends == 0)
        nic.poll(now: start + Nanoseconds.second, output: &output)
        #expect(sent(&output).isEmpty, "the head was acknowledged: nothing sent again")
    }

    @Test("an ACK of part of the head is kept from the client; a lost head is sent again, and a backend that never answers is reset")
    func headRetransmission() throws {
        var output = CollectingNICOutput()
        let nic = spliced(output: &output)
        let first = sent(&output)
        fromBackend(nic, sequence: backendReceiveNext, acknowledgment: backendSendNext + 64, at: start + Nanoseconds.millisecond, output: &output)
        #expect(sent(&output).isEmpty, "half the head acknowledged: nothing for the client")
        nic.poll(now: start + 199 * Nanoseconds.millisecond, output: &output)
        #expect(sent(&output).isEmpty)
        nic.poll(now: start + 201 * Nanoseconds.millisecond, output: &output)
        let again = sent(&output)
        #expect(again.map(\.payload) == first.map(\.payload) && nic.counters.spliceHeadResends == 1)
        nic.poll(now: start + 602 * Nanoseconds.millisecond, output: &output)
        #expect(sent(&output).count == first.count, "the second time after twice the timeout")
        nic.poll(now: start + 1_403 * Nanoseconds.millisecond, output: &output)
        let resets = sent(&output)
        #expect(resets.count == 2 && resets.allSatisfy { $0.segment.flags.contains(.rst) })
        #expect(Set(resets.map(\.to)) == [Self.client, Self.backend])
        let toClient = try #require(resets.first { $0.to == Self.client })
        #expect(toClient.segment.sequenceNumber == clientSendNext, "at the client's RCV.NXT, so it takes it")
        #expect(nic.spliceCount == 0 && output.spliceEnds.map(\.1.reason) == [.headLost])
        #expect(output.spliceEnds.first?.0 == clientFlow && output.spliceEnds.first?.1.backendFlow == backendFlow)
    }

    @Test("both FINs acknowledged: the splice lingers, relaying a retransmitted FIN, then ends with SPLICE_ENDED")
    func finishes() throws {
        var output = CollectingNICOutput()
        let nic = spliced(output: &output)
        _ = sent(&output)
        let body = Array(repeating: UInt8(7), count: 300)
        var now = start + Nanoseconds.millisecond
        fromBackend(nic, flags: [.ack, .fin], sequence: backendReceiveNext, acknowledgment: headEnd, payload: body, at: now, output: &output)
        let fin = try #require(sent(&output).first)
        #expect(fin.segment.flags.contains(.fin) && fin.segment.sequenceNumber == clientSendNext)
        now = now + Nanoseconds.millisecond
        fromClient(nic, flags: [.ack, .fin], sequence: clientReceiveNext, acknowledgment: clientSendNext + 301, at: now, output: &output)
        #expect(sent(&output).first?.segment.acknowledgmentNumber == backendReceiveNext + 301)
        #expect(nic.spliceCount == 1, "the client's FIN is not yet acknowledged")
        now = now + Nanoseconds.millisecond
        fromBackend(nic, sequence: backendReceiveNext + 301, acknowledgment: headEnd + 1, at: now, output: &output)
        #expect(sent(&output).first?.segment.acknowledgmentNumber == clientReceiveNext + 1)
        // The last ACK was lost: the client's FIN again, passed on (the backend answers it from TIME-WAIT).
        fromClient(nic, flags: [.ack, .fin], sequence: clientReceiveNext, acknowledgment: clientSendNext + 301, at: now + Nanoseconds.second,
                   output: &output)
        #expect(sent(&output).count == 1 && nic.spliceCount == 1)
        nic.poll(now: now + 4 * Nanoseconds.second, output: &output)
        #expect(nic.spliceCount == 1, "lingering 5 s")
        nic.poll(now: now + 5 * Nanoseconds.second + 2 * Nanoseconds.millisecond, output: &output)
        #expect(nic.spliceCount == 0 && nic.counters.splicesFinished == 1)
        let report = try #require(output.spliceEnds.first?.1)
        #expect(report.reason == .finished && report.backendBytes == 300 && report.clientBytes == 0)
        #expect(report.backendAddress == IPAddress(Self.backend) && report.backendPort == 8080 && report.backendLocalPort == 33_000)
        #expect(!report.clientClosedFirst, "the backend closed first: TIME-WAIT is the backend's")
    }

    @Test("the client's FIN reaching the backend before the backend's: SPLICE_ENDED says so (our side's TIME-WAIT is the host's)")
    func clientClosesFirst() throws {
        var output = CollectingNICOutput()
        let nic = spliced(output: &output)
        _ = sent(&output)
        var now = start + Nanoseconds.millisecond
        fromBackend(nic, sequence: backendReceiveNext, acknowledgment: headEnd, payload: Array(repeating: 7, count: 300), at: now, output: &output)
        _ = sent(&output)
        now = now + Nanoseconds.millisecond
        fromClient(nic, flags: [.ack, .fin], sequence: clientReceiveNext, acknowledgment: clientSendNext + 300, at: now, output: &output)
        let fin = try #require(sent(&output).first)
        #expect(fin.to == Self.backend && fin.segment.flags.contains(.fin) && fin.segment.sequenceNumber == headEnd)
        now = now + Nanoseconds.millisecond
        fromBackend(nic, flags: [.ack, .fin], sequence: backendReceiveNext + 300, acknowledgment: headEnd + 1, at: now, output: &output)
        fromClient(nic, sequence: clientReceiveNext + 1, acknowledgment: clientSendNext + 301, at: now, output: &output)
        #expect(sent(&output).count == 2 && nic.spliceCount == 1, "both passed on; lingering")
        nic.poll(now: now + 5 * Nanoseconds.second + 2 * Nanoseconds.millisecond, output: &output)
        let report = try #require(output.spliceEnds.first?.1)
        #expect(report.reason == .finished && report.clientClosedFirst && report.backendBytes == 300)
    }

    @Test("a RST where the peer's stream stands is passed on and ends the splice; one elsewhere is passed on only")
    func resets() throws {
        var output = CollectingNICOutput()
        let nic = spliced(output: &output)
        _ = sent(&output)
        fromBackend(nic, flags: .rst, sequence: backendReceiveNext + 5000, acknowledgment: SequenceNumber(0), at: start, output: &output)
        #expect(sent(&output).first?.segment.flags == .rst && nic.spliceCount == 1, "a blind RST does not end it here")
        fromBackend(nic, flags: [.rst, .ack], sequence: backendReceiveNext, acknowledgment: headEnd, at: start, output: &output)
        let passed = try #require(sent(&output).first)
        #expect(passed.to == Self.client && passed.segment.flags.contains(.rst) && passed.segment.sequenceNumber == clientSendNext)
        #expect(nic.spliceCount == 0 && nic.counters.splicesReset == 1 && output.spliceEnds.map(\.1.reason) == [.reset])
    }

    @Test("the client sending again bytes the host had received is answered with an ACK, and the backend never sees them")
    func oldClientBytes() throws {
        var output = CollectingNICOutput()
        let nic = spliced(output: &output)
        _ = sent(&output)
        fromClient(nic, flags: [.ack, .psh], sequence: clientReceiveNext - 40, acknowledgment: clientSendNext, payload: Array(repeating: 1, count: 40),
                   at: start + Nanoseconds.millisecond, output: &output)
        let answer = try #require(sent(&output).first)
        #expect(answer.to == Self.client && answer.payload.isEmpty && answer.segment.flags == .ack)
        #expect(answer.segment.acknowledgmentNumber == clientReceiveNext && answer.segment.sequenceNumber == clientSendNext)
        #expect(answer.checksumGood && nic.counters.spliceDrops == 1 && nic.counters.splicedSegments == 0)
    }

    @Test("a SPLICE asking the NIC to acknowledge the client: both flows the host left open are closed, and the client's ACK goes before the head")
    func acknowledgesClientAndClosesFlows() throws {
        var output = CollectingNICOutput()
        let files = MemoryFiles()
        let nic = NICDataPlane(files: files, disk: MemoryDisk(files: files))
        let backendEndpoints = FlowEndpoints(localAddress: Self.proxy, remoteAddress: Self.backend, localPort: 33_000, remotePort: 8080,
                                             remoteHardwareAddress: .zero, maximumSegmentSize: 64)
        nic.handle(.flowOpen(clientFlow, flowEndpoints), received: start, now: start, output: &output)
        nic.handle(.flowOpen(backendFlow, backendEndpoints), received: start, now: start, output: &output)
        #expect(nic.flowCount == 2)
        var parameters = parameters()
        parameters.acknowledgeClient = true
        head.withUnsafeBytes { nic.handle(.splice(clientFlow, parameters, head: $0), received: start, now: start, output: &output) }
        #expect(nic.flowCount == 0 && nic.spliceCount == 1, "both flow ids released with the splice, no FLOW_CLOSE needed")
        let segments = sent(&output)
        let acknowledgment = try #require(segments.first)
        #expect(acknowledgment.to == Self.client && acknowledgment.from == Self.proxy && acknowledgment.checksumGood)
        #expect(acknowledgment.segment.flags == .ack && acknowledgment.payload.isEmpty)
        #expect(acknowledgment.segment.sourcePort == 80 && acknowledgment.segment.destinationPort == 40_000)
        #expect(acknowledgment.segment.sequenceNumber == clientSendNext && acknowledgment.segment.acknowledgmentNumber == clientReceiveNext)
        #expect(acknowledgment.segment.window == 500 && acknowledgment.segment.options.timestamps == TCPTimestamps(value: 100_000, echoReply: 7_000),
                "our window field and TSval as the host gave them, the client's TS.Recent echoed")
        #expect(segments.dropFirst().allSatisfy { $0.to == Self.backend } && segments.count == 1 + (head.count + 63) / 64,
                "then the head, and nothing else to the client")

        // Without the flag the NIC says nothing to the client (the host did), though the flows still go.
        var quiet = CollectingNICOutput()
        let other = spliced(output: &quiet)
        #expect(sent(&quiet).allSatisfy { $0.to == Self.backend } && other.flowCount == 0)
    }

    @Test("a client stream far past the splice (over 2 GiB) still reaches the backend: bytes from before it are told apart only near it")
    func longClientStream() throws {
        var output = CollectingNICOutput()
        let nic = spliced(output: &output)
        _ = sent(&output)
        let step = 900 << 20  // within a largest window each time
        for k in 1...2 {
            fromClient(nic, flags: [.ack, .psh], sequence: clientReceiveNext + k * step, acknowledgment: clientSendNext,
                       payload: Array(repeating: 2, count: 100), at: start + UInt64(k) * Nanoseconds.millisecond, output: &output)
            #expect(sent(&output).first?.to == Self.backend)
        }
        // 2 GiB and more past the start: "before the start" by signed distance, yet new bytes.
        let far = clientReceiveNext + (1 << 31) + 4096
        fromClient(nic, flags: [.ack, .psh], sequence: far, acknowledgment: clientSendNext, payload: Array(repeating: 3, count: 100),
                   at: start + 3 * Nanoseconds.millisecond, output: &output)
        let passed = try #require(sent(&output).first)
        #expect(passed.to == Self.backend && passed.payload == Array(repeating: 3, count: 100) && passed.checksumGood)
        #expect(nic.counters.spliceDrops == 0 && nic.counters.splicedSegments == 3)
    }

    @Test("a segment with a bad checksum changes nothing (not even a RST in the window), and an ACK beyond what was sent does not take the head")
    func untrustedSegments() throws {
        var output = CollectingNICOutput()
        let nic = spliced(output: &output)
        let first = sent(&output)
        fromBackend(nic, flags: [.rst, .ack], sequence: backendReceiveNext, acknowledgment: headEnd, corrupt: true, at: start, output: &output)
        #expect(sent(&output).isEmpty && nic.spliceCount == 1 && nic.counters.malformedIn == 1)
        fromBackend(nic, sequence: backendReceiveNext, acknowledgment: headEnd + 5_000, at: start + Nanoseconds.millisecond, output: &output)
        #expect(sent(&output).isEmpty, "an ACK of bytes never sent is not the head's")
        nic.poll(now: start + 201 * Nanoseconds.millisecond, output: &output)
        #expect(sent(&output).map(\.payload) == first.map(\.payload) && nic.counters.spliceHeadResends == 1, "the head is still outstanding")
    }

    @Test("a super-segment the kernel left unsummed crosses whole: rewritten in place, its pseudo-header sum redone, cut at the smaller MSS")
    func superSegments() throws {
        var output = CollectingNICOutput()
        let nic = spliced(output: &output)
        _ = sent(&output)
        // The backend's TSO: 3,000 bytes meant as 1,000-byte segments. The client takes 1,448.
        let body = (0..<3_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        fromBackend(nic, flags: [.ack, .psh], sequence: backendReceiveNext, acknowledgment: headEnd, payload: body,
                    offload: ReceivedOffload(checksumPartial: true, segmentSize: 1_000), at: start, output: &output)
        nic.flushRelayed(output: &output)  // held for joining until the batch ends
        #expect(output.packets.count == 1 && output.segmentSizes == [1_000] && output.checksumOffloaded == [true])
        let (pseudoSumRight, finished) = finishedByWire(try #require(output.packets.first))
        #expect(pseudoSumRight, "the field holds the pseudo-header sum of the new addresses and length")
        let (toClient, payload, good) = try #require(parseSegment(finished))
        #expect(good && payload == body && toClient.sequenceNumber == clientSendNext && toClient.destinationPort == 40_000)
        #expect(toClient.acknowledgmentNumber == clientReceiveNext && nic.counters.superSegmentsRelayed == 1)
        // The client's upload, meant as 1,448-byte segments: the backend takes 64.
        _ = sent(&output)
        fromClient(nic, sequence: clientReceiveNext, acknowledgment: clientSendNext + 3_000, payload: Array(body[0..<2_000]),
                   offload: ReceivedOffload(checksumPartial: true, segmentSize: 1_448), at: start, output: &output)
        #expect(output.packets.isEmpty, "held in case the next continues it")
        nic.flushRelayed(output: &output)
        #expect(output.segmentSizes == [64])
        let (_, toBackend) = finishedByWire(try #require(output.packets.first))
        let parsed = try #require(parseSegment(toBackend))
        #expect(parsed.2 && parsed.1 == Array(body[0..<2_000]) && parsed.0.sequenceNumber == headEnd)
        // The endings, in place too (the rewrite works in the very bytes the segment is read from): both FINs,
        // both acknowledged, and the splice lingers, then finishes.
        let unsummedFrame = ReceivedOffload(checksumPartial: true)
        fromBackend(nic, flags: [.ack, .fin], sequence: backendReceiveNext + 3_000, acknowledgment: headEnd + 2_000, timestamp: 3_011,
                    offload: unsummedFrame, at: start, output: &output)
        fromClient(nic, flags: [.ack, .fin], sequence: clientReceiveNext + 2_000, acknowledgment: clientSendNext + 3_001, timestamp: 7_006,
                   echo: 100_001, offload: unsummedFrame, at: start, output: &output)
        fromBackend(nic, sequence: backendReceiveNext + 3_001, acknowledgment: headEnd + 2_001, timestamp: 3_011, offload: unsummedFrame,
                    at: start, output: &output)
        nic.poll(now: start + 5 * Nanoseconds.second + 2 * Nanoseconds.millisecond, output: &output)
        #expect(nic.spliceCount == 0 && output.spliceEnds.map(\.1.reason) == [.finished])
    }

    @Test("small relayed packets of one direction in order are joined into one super-segment; the latest ACK, window and TSval speak for the run, PSH kept; a gap ends it")
    func joined() throws {
        var output = CollectingNICOutput()
        let nic = spliced(output: &output)
        _ = sent(&output)
        let body = (0..<6_000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 5) }
        func fromBackend(_ range: Range<Int>, flags: TCPFlags = .ack, timestamp: UInt32 = 3_010) {
            self.fromBackend(nic, flags: flags, sequence: backendReceiveNext + range.lowerBound, acknowledgment: headEnd,
                             payload: Array(body[range]), timestamp: timestamp, offload: ReceivedOffload(checksumPartial: true),
                             at: start, output: &output)
        }
        fromBackend(0..<1_000)
        fromBackend(1_000..<2_000)
        fromBackend(2_000..<3_000, flags: [.ack, .psh])  // Linux marks most TSO frames PSH: joined all the same
        fromBackend(3_000..<4_000)
        fromBackend(4_000..<5_000, timestamp: 3_011)  // a millisecond later: joined, its TSval the run's
        #expect(output.packets.isEmpty)
        fromBackend(5_500..<6_000, timestamp: 3_011)  // a gap: the run goes first
        nic.flushRelayed(output: &output)
        let packets = output.packets.map { finishedByWire($0) }
        #expect(packets.allSatisfy(\.pseudoSumRight) && output.checksumOffloaded.allSatisfy { $0 })
        let segments = try packets.map { try #require(parseSegment($0.finished)) }
        #expect(segments.map(\.1.count) == [5_000, 500])
        #expect(output.segmentSizes == [1_448, 0], "the joined one is cut at the client's MSS")
        #expect(segments.map(\.0.sequenceNumber) == [clientSendNext, clientSendNext + 5_500])
        #expect(segments.allSatisfy(\.2) && segments[0].1 == Array(body[0..<5_000]) && segments[0].0.flags == [.ack, .psh])
        let latest = try #require(segments[1].0.options.timestamps)
        #expect(segments[0].0.options.timestamps == latest && latest.echoReply == 7_000, "TSval of the latest, TSecr the client's")
        #expect(nic.counters.relayedSegmentsJoined == 4 && nic.counters.splicedSegments == 6)
    }

    @Test("pure ACKs of one batch: only the latest crosses; a duplicate is never thinned")
    func thinnedAcknowledgments() throws {
        var output = CollectingNICOutput()
        let nic = spliced(output: &output)
        _ = sent(&output)
        func acknowledge(_ count: Int, timestamp: UInt32 = 7_005) {
            fromClient(nic, sequence: clientReceiveNext, acknowledgment: clientSendNext + count, timestamp: timestamp,
                       offload: ReceivedOffload(checksumPartial: true), at: start, output: &output)
        }
        // (The client acknowledges bytes the backend sent: the relay's count of what it sent the client.)
        fromBackend(nic, sequence: backendReceiveNext, acknowledgment: headEnd, payload: Array(repeating: 9, count: 3_000), at: start, output: &output)
        _ = sent(&output)
        acknowledge(1_000)
        acknowledge(2_000, timestamp: 7_006)
        acknowledge(3_000, timestamp: 7_006)
        acknowledge(3_000, timestamp: 7_006)  // a duplicate: the run goes first, then it
        nic.flushRelayed(output: &output)
        let acks = output.packets.map { finishedByWire($0).finished }.compactMap(parseSegment)
        #expect(acks.map(\.0.acknowledgmentNumber) == [backendReceiveNext + 3_000, backendReceiveNext + 3_000] && acks.allSatisfy(\.2))
        #expect(nic.counters.acknowledgmentsThinned == 2)
    }

    @Test("a linger longer than the idle timeout runs its course: the splice finishes, nobody is reset")
    func lingerOutlastsIdleness() throws {
        var shortIdle = parameters()
        shortIdle.idleTimeoutMilliseconds = 1_000
        var output = CollectingNICOutput()
        let nic = spliced(shortIdle, output: &output)
        fromBackend(nic, flags: [.ack, .fin], sequence: backendReceiveNext, acknowledgment: headEnd, at: start, output: &output)
        fromClient(nic, flags: [.ack, .fin], sequence: clientReceiveNext, acknowledgment: clientSendNext + 1, at: start, output: &output)
        fromBackend(nic, sequence: backendReceiveNext + 1, acknowledgment: headEnd + 1, at: start, output: &output)
        _ = sent(&output)
        nic.poll(now: start + 2 * Nanoseconds.second, output: &output)
        #expect(nic.spliceCount == 1 && sent(&output).isEmpty, "past the idle timeout, still lingering")
        nic.poll(now: start + 5 * Nanoseconds.second + 2 * Nanoseconds.millisecond, output: &output)
        #expect(nic.spliceCount == 0 && output.spliceEnds.map(\.1.reason) == [.finished] && nic.counters.spliceIdleResets == 0)
        #expect(sent(&output).isEmpty, "no RST for a finished splice")
    }

    @Test("nothing across a splice for its idle timeout: both peers reset, SPLICE_ENDED idle")
    func idle() throws {
        var output = CollectingNICOutput()
        let nic = spliced(output: &output)
        fromBackend(nic, sequence: backendReceiveNext, acknowledgment: headEnd, at: start + Nanoseconds.millisecond, output: &output)
        _ = sent(&output)
        nic.poll(now: start + 29 * Nanoseconds.second, output: &output)
        #expect(nic.spliceCount == 1)
        nic.poll(now: start + 31 * Nanoseconds.second, output: &output)
        let resets = sent(&output)
        #expect(resets.count == 2 && resets.allSatisfy { $0.segment.flags.contains(.rst) && $0.checksumGood })
        #expect(nic.spliceCount == 0 && nic.counters.spliceIdleResets == 1 && output.spliceEnds.map(\.1.reason) == [.idle])
    }

    @Test("no room, or one connection with timestamps and one without: both reset at once, SPLICE_ENDED refused")
    func refused() throws {
        var limits = NICDataPlane.Limits()
        limits.maximumSplices = 0
        var output = CollectingNICOutput()
        let nic = spliced(limits: limits, output: &output)
        let resets = sent(&output)
        #expect(resets.count == 2 && resets.allSatisfy { $0.segment.flags.contains(.rst) })
        #expect(nic.spliceCount == 0 && nic.counters.spliceRefusals == 1 && output.spliceEnds.map(\.1.reason) == [.refused])
        var mixed = parameters()
        mixed.backend.timestamps = false
        var second = CollectingNICOutput()
        let other = spliced(mixed, output: &second)
        #expect(other.spliceCount == 0 && second.spliceEnds.map(\.1.reason) == [.refused])
    }

    @Test("a SYN from the client's port during the linger ends the old splice and goes on as a new connection")
    func portReused() throws {
        var output = CollectingNICOutput()
        let nic = spliced(output: &output)
        fromBackend(nic, flags: [.ack, .fin], sequence: backendReceiveNext, acknowledgment: headEnd, at: start, output: &output)
        fromClient(nic, flags: [.ack, .fin], sequence: clientReceiveNext, acknowledgment: clientSendNext + 1, at: start, output: &output)
        fromBackend(nic, sequence: backendReceiveNext + 1, acknowledgment: headEnd + 1, at: start, output: &output)
        _ = sent(&output)
        fromClient(nic, flags: .syn, sequence: SequenceNumber(123_456), acknowledgment: SequenceNumber(0), at: start + Nanoseconds.second,
                   output: &output)
        #expect(nic.spliceCount == 0 && output.spliceEnds.map(\.1.reason) == [.reused])
        #expect(output.packetsIn.count == 1, "the SYN went on to the host")
    }

    @Test("a standing queue in front of the NIC: relayed data read past 100 frames of a turn is dropped; ACKs, FINs and RSTs never; a short queue drops nothing")
    func standingQueueDrops() throws {
        var output = CollectingNICOutput()
        let nic = spliced(output: &output)
        _ = sent(&output)
        var now = start + Nanoseconds.millisecond
        func readFrames(_ count: Int) { for _ in 0..<count { nic.standingQueue.frameRead() } }
        func turn(_ frames: Int) {
            readFrames(frames)
            nic.standingQueue.turnRead(now: now)
        }
        // Every turn finds more than 64 frames waiting: standing once that has lasted 100 ms.
        turn(256)
        now = now + 99 * Nanoseconds.millisecond
        turn(65)
        #expect(!nic.standingQueue.isStanding, "99 ms above target is a burst")
        now = now + Nanoseconds.millisecond
        turn(256)
        #expect(nic.standingQueue.isStanding)
        let body = Array(repeating: UInt8(9), count: 1000)
        // The 100th frame of the turn is relayed; the 101st, data, is dropped and nothing leaves.
        readFrames(100)
        fromBackend(nic, sequence: backendReceiveNext, acknowledgment: headEnd, payload: body, at: now, output: &output)
        let first = try #require(sent(&output).first)
        #expect(first.to == Self.client && first.payload == body && nic.counters.spliceQueueDrops == 0)
        readFrames(1)
        fromBackend(nic, sequence: backendReceiveNext + 1000, acknowledgment: headEnd, payload: body, at: now, output: &output)
        #expect(sent(&output).isEmpty && nic.counters.spliceQueueDrops == 1 && nic.counters.splicedSegments == 1)
        // Deep in the same turn: the client's pure ACK, and data with a FIN, still cross.
        readFrames(50)
        fromClient(nic, sequence: clientReceiveNext, acknowledgment: clientSendNext + 1000, at: now, output: &output)
        let acknowledgment = try #require(sent(&output).first)
        #expect(acknowledgment.to == Self.backend && acknowledgment.payload.isEmpty
                && acknowledgment.segment.acknowledgmentNumber == backendReceiveNext + 1000)
        fromBackend(nic, flags: [.ack, .fin], sequence: backendReceiveNext + 2000, acknowledgment: headEnd, payload: body, at: now,
                    output: &output)
        let fin = try #require(sent(&output).first)
        #expect(fin.segment.flags.contains(.fin) && fin.segment.sequenceNumber == clientSendNext + 2000 && fin.payload == body)
        // A RST (here one away from where the client's stream stands, so it does not end the splice) crosses too.
        fromClient(nic, flags: .rst, sequence: clientReceiveNext + 5000, acknowledgment: SequenceNumber(0), at: now, output: &output)
        let reset = try #require(sent(&output).first)
        #expect(reset.to == Self.backend && reset.segment.flags == .rst && nic.spliceCount == 1)
        #expect(nic.counters.spliceQueueDrops == 1)
        // A turn that finds 64 frames or fewer: the queue is short again, and the dropped bytes sent again cross.
        nic.standingQueue.turnRead(now: now)  // ends the turn above (151 frames)
        now = now + Nanoseconds.millisecond
        turn(64)
        #expect(!nic.standingQueue.isStanding)
        readFrames(200)
        fromBackend(nic, sequence: backendReceiveNext + 1000, acknowledgment: headEnd, payload: body, at: now, output: &output)
        let resent = try #require(sent(&output).first)
        #expect(resent.segment.sequenceNumber == clientSendNext + 1000 && resent.payload == body && nic.counters.spliceQueueDrops == 1)
        // With a limit of 0 (`--relay-queue-frames 0`) a standing queue drops nothing.
        var never = StandingQueueControl(limitFrames: 0)
        for turnStart in [now, now + StandingQueueControl.interval] {
            for _ in 0..<256 { never.frameRead() }
            never.turnRead(now: turnStart)
        }
        for _ in 0..<256 { never.frameRead() }
        #expect(never.isStanding && !never.dropsRelayedData)
    }

    @Test("the backend sending its SYN-ACK again before the head is acknowledged gets the head again at once")
    func synAckAgainResendsHead() throws {
        var output = CollectingNICOutput()
        let nic = spliced(output: &output)
        let first = sent(&output)
        #expect(Array(first.map(\.payload).joined()) == head, "the head, in segments of the backend's MSS (64)")
        fromBackend(nic, flags: [.syn, .ack], sequence: backendReceiveNext - 1, acknowledgment: backendSendNext, at: start + Nanoseconds.millisecond,
                    output: &output)
        let again = sent(&output)
        #expect(again.count == first.count && Array(again.map(\.payload).joined()) == head)
        #expect(again.allSatisfy { $0.to == Self.backend && $0.checksumGood && $0.segment.acknowledgmentNumber == backendReceiveNext })
        #expect(again.first?.segment.sequenceNumber == backendSendNext)
        #expect(nic.counters.spliceHeadResends == 1)
        // Once the head is acknowledged, a stray SYN-ACK is dropped.
        fromBackend(nic, sequence: backendReceiveNext, acknowledgment: headEnd, at: start + 2 * Nanoseconds.millisecond, output: &output)
        _ = sent(&output)
        fromBackend(nic, flags: [.syn, .ack], sequence: backendReceiveNext - 1, acknowledgment: backendSendNext, at: start + 3 * Nanoseconds.millisecond,
                    output: &output)
        #expect(sent(&output).isEmpty && nic.counters.spliceHeadResends == 1)
    }
}
