import IOTCPCommon
import IOTCPHost
import IOTCPNIC
import Testing

/// Endings handed over with their data (TEARDOWN with data): the response and the FIN are the NIC's to
/// deliver. Scripted segment by segment on a virtual clock, over IPv4 and IPv6, with the store keeping the
/// file's bytes and without (read again for a retransmission).
@Suite("Endings with data on the NIC (TEARDOWN with data, FLOW_RELEASED)")
struct NICEndingWithDataTests {
    let flow = FlowID(index: 5, generation: 2)
    let start = Instant(nanoseconds: 80 * Nanoseconds.second)
    let first = SequenceNumber(1_000_000)
    let peerNext = SequenceNumber(9_000)
    let head = Array("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n".utf8)
    let content: [UInt8] = (0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }

    struct Setup {
        let nic: NICDataPlane
        var output = CollectingNICOutput()
        let endpoints: FlowEndpoints
    }

    enum Store: CaseIterable, CustomStringConvertible {
        case buffered, bufferless
        var description: String { self == .buffered ? "buffered" : "bufferless" }
        var mode: RetransmitStore.Mode { self == .buffered ? .buffered : .bufferless }
    }

    /// A flow open with `length` bytes of the file sent after the head (the FIN on the last segment) and the
    /// ending handed over with all of it unacknowledged; the segments that left are returned, then forgotten
    /// (the wire lost them).
    func handedOver(length: Int, endpoints: FlowEndpoints, store: Store = .buffered, retransmissions: UInt16 = 3) throws -> (Setup, [TCPRepr], [UInt8]) {
        let files = MemoryFiles()
        files.add("page.bin", content)
        var setup = Setup(nic: NICDataPlane(files: files, disk: MemoryDisk(files: files), retransmitMode: store.mode), endpoints: endpoints)
        Array("page.bin".utf8).withUnsafeBytes {
            setup.nic.handle(.open(requestID: 1, flags: 0, path: $0), received: start, now: start, output: &setup.output)
        }
        let file = try #require(setup.output.opened.first?.1)
        setup.nic.handle(.flowOpen(flow, endpoints), received: start, now: start, output: &setup.output)
        let fin = first + head.count + length
        let template = SegmentTemplate(acknowledgmentNumber: peerNext, window: 500, lastSegmentFlags: [.psh, .fin],
                                       maximumSegmentSize: endpoints.maximumSegmentSize, timestamps: TCPTimestamps(value: 1_000_000, echoReply: 4_444))
        let parameters = TeardownParameters(finSequence: fin, receiveNext: peerNext, window: 500, state: .finWait1, timestamps: true,
                                            timestampValue: 1_000_000, timestampEcho: 4_444, retransmissionTimeoutMilliseconds: 200,
                                            maximumRetransmissions: retransmissions, timeWaitMilliseconds: 60_000, finWait2Milliseconds: 30_000)
        head.withUnsafeBytes { bytes in
            setup.nic.handle(.sendWithHead(flow, SendRange(sequence: first, length: UInt32(length), file: file, offset: 0, template: template),
                                           head: bytes), received: start, now: start, output: &setup.output)
            setup.nic.handle(.teardownWithData(flow, parameters, unacknowledged: first, hostBytes: bytes), received: start, now: start,
                             output: &setup.output)
        }
        for _ in 0..<4 { setup.nic.poll(now: start, output: &setup.output) }
        let sent = setup.output.packets.compactMap { parseSegment($0) }
        let checksummed = sent.allSatisfy { $0.2 }
        #expect(checksummed, "checksums")
        #expect(setup.output.echoes.isEmpty, "no ECHO: the host has forgotten the connection")
        let quiet = setup.output.errors.isEmpty && setup.output.released.isEmpty
        #expect(quiet, "no ERROR, no release yet")
        #expect(setup.nic.flowCount == 1 && setup.nic.closingCount == 1 && setup.nic.counters.endingsWithData == 1)
        setup.output.packets.removeAll()
        return (setup, sent.map(\.0), sent.flatMap(\.1))
    }

    func peer(_ setup: inout Setup, flags: TCPFlags = .ack, acknowledgment: SequenceNumber, sequence: SequenceNumber? = nil, at time: Instant) {
        let segment = TCPRepr(sourcePort: setup.endpoints.remotePort, destinationPort: setup.endpoints.localPort, sequenceNumber: sequence ?? peerNext,
                              acknowledgmentNumber: acknowledgment, flags: flags, window: 1000,
                              options: TCPOptions(timestamps: TCPTimestamps(value: 5_000, echoReply: 1_000_000)))
        tcpPacket(segment, from: setup.endpoints.remoteAddress, to: setup.endpoints.localAddress).withUnsafeBytes {
            setup.nic.receive(packet: $0, now: time, output: &setup.output)
        }
    }

    func sent(_ setup: inout Setup) -> [(TCPRepr, [UInt8])] {
        defer { setup.output.packets.removeAll() }
        return setup.output.packets.compactMap { parseSegment($0) }.map { ($0.0, $0.1) }
    }

    @Test("a response lost whole: after the RTO the head, the file's bytes and the FIN go again; the peer's ACK releases the flow",
          arguments: [flowEndpoints, flowEndpoints6], Store.allCases)
    func lostResponse(endpoints: FlowEndpoints, store: Store) throws {
        var (setup, segments, payload) = try handedOver(length: 1000, endpoints: endpoints, store: store)
        let fin = self.first + head.count + 1000
        #expect(payload == head + content[0..<1000] && segments.last?.flags.contains(.fin) == true, "the response went once, FIN on it")
        setup.nic.poll(now: start + 199 * Nanoseconds.millisecond, output: &setup.output)
        #expect(sent(&setup).isEmpty, "nothing before the timeout")
        for _ in 0..<4 { setup.nic.poll(now: start + 201 * Nanoseconds.millisecond, output: &setup.output) }
        let again = sent(&setup)
        let data = again.filter { !$0.1.isEmpty }
        #expect(data.first?.0.sequenceNumber == self.first && data.flatMap(\.1) == head + content[0..<1000], "head and file bytes again, in order")
        #expect(data.allSatisfy { $0.0.acknowledgmentNumber == peerNext && $0.0.window == 500 })
        #expect(data.first?.0.options.timestamps == TCPTimestamps(value: 1_000_201, echoReply: 4_444), "TSval moved on by the 201 ms since")
        let finSegment = try #require(again.last)
        #expect(finSegment.0.flags == [.fin, .ack] && finSegment.0.sequenceNumber == fin && finSegment.1.isEmpty)
        #expect(setup.nic.counters.endingDataResends == 1 && setup.nic.store.heldBytes == 1000)
        // The peer takes it all and its FIN comes later: released at once, the ending goes on as FIN-WAIT-2.
        peer(&setup, acknowledgment: fin + 1, at: start + 210 * Nanoseconds.millisecond)
        #expect(setup.output.released.map(\.0) == [flow] && setup.output.released.map(\.1) == [.acknowledged])
        #expect(setup.nic.flowCount == 0 && setup.nic.closingCount == 1 && setup.nic.store.heldBytes == 0)
        peer(&setup, flags: [.fin, .ack], acknowledgment: fin + 1, at: start + 220 * Nanoseconds.millisecond)
        let ack = try #require(sent(&setup).first)
        #expect(ack.0.flags == .ack && ack.0.sequenceNumber == fin + 1 && ack.0.acknowledgmentNumber == peerNext + 1, "TIME-WAIT as for any TEARDOWN")
        #expect(setup.output.packetsIn.isEmpty, "nothing went up to the host")
    }

    @Test("acknowledged as sent: the flow is released on the peer's ACK, nothing is sent again", arguments: [flowEndpoints, flowEndpoints6])
    func acknowledgedAtOnce(endpoints: FlowEndpoints) throws {
        var (setup, _, _) = try handedOver(length: 1000, endpoints: endpoints)
        let fin = first + head.count + 1000
        // Part of it first (a delayed ACK), then the rest with the peer's own FIN.
        peer(&setup, acknowledgment: first + 500, at: start + Nanoseconds.millisecond)
        #expect(setup.output.released.isEmpty && setup.nic.store.heldBytes == 1000 - (500 - head.count))
        peer(&setup, flags: [.fin, .ack], acknowledgment: fin + 1, at: start + 2 * Nanoseconds.millisecond)
        #expect(setup.output.released.map(\.1) == [.acknowledged] && setup.nic.counters.endingDataAcknowledged == 1)
        let ack = try #require(sent(&setup).first)
        #expect(ack.0.acknowledgmentNumber == peerNext + 1, "the peer's FIN ACKed")
        setup.nic.poll(now: start + 2 * Nanoseconds.second, output: &setup.output)
        #expect(sent(&setup).isEmpty && setup.nic.counters.endingDataResends == 0)
    }

    @Test("a larger response lost after a timeout goes again one segment, then a window growing with each ACK (slow start), then the FIN",
          arguments: Store.allCases)
    func slowStartAfterTimeout(store: Store) throws {
        var (setup, _, _) = try handedOver(length: 5000, endpoints: flowEndpoints, store: store)
        let segment = Int(flowEndpoints.maximumSegmentSize)
        let fin = first + head.count + 5000
        let expected = head + content
        for _ in 0..<4 { setup.nic.poll(now: start + 201 * Nanoseconds.millisecond, output: &setup.output) }
        var resent = sent(&setup)
        // One segment's worth after the timeout (the host's bytes and the file's leave as two pieces here).
        #expect(resent.reduce(0) { $0 + $1.1.count } == segment && resent.first?.1 == head)
        var received = resent.flatMap(\.1)
        var time = start + 210 * Nanoseconds.millisecond
        var windows: [Int] = []
        while received.count < expected.count {
            peer(&setup, acknowledgment: first + received.count, at: time)
            for _ in 0..<4 { setup.nic.poll(now: time, output: &setup.output) }
            resent = sent(&setup)
            let data = resent.filter { !$0.1.isEmpty }
            #expect(!data.isEmpty, "each ACK lets more go")
            #expect(data.first?.0.sequenceNumber == first + received.count, "in order, from where the peer is")
            windows.append(data.reduce(0) { $0 + $1.1.count })
            received += data.flatMap(\.1)
            time = time + Nanoseconds.millisecond
            if data.isEmpty { break }
        }
        #expect(received == expected)
        #expect(windows.first == 2 * segment, "an ACK of one segment lets two go: \(windows)")
        #expect(resent.last?.0.flags == [.fin, .ack] && resent.last?.0.sequenceNumber == fin, "the FIN after the last byte")
        peer(&setup, acknowledgment: fin + 1, at: time)
        #expect(setup.output.released.map(\.1) == [.acknowledged] && setup.nic.flowCount == 0)
    }

    @Test("the peer resets, or sends data after the close: the flow is released (reset) and the ending forgotten", arguments: [flowEndpoints, flowEndpoints6])
    func resets(endpoints: FlowEndpoints) throws {
        var (setup, _, _) = try handedOver(length: 1000, endpoints: endpoints)
        peer(&setup, flags: .rst, acknowledgment: SequenceNumber(0), at: start + Nanoseconds.millisecond)
        #expect(setup.output.released.map(\.1) == [.reset] && setup.nic.flowCount == 0 && setup.nic.closingCount == 0)

        var (late, _, _) = try handedOver(length: 1000, endpoints: endpoints)
        let segment = TCPRepr(sourcePort: endpoints.remotePort, destinationPort: endpoints.localPort, sequenceNumber: peerNext,
                              acknowledgmentNumber: first, flags: [.ack, .psh], window: 1000,
                              options: TCPOptions(timestamps: TCPTimestamps(value: 5_000, echoReply: 1_000_000)))
        tcpPacket(segment, from: endpoints.remoteAddress, to: endpoints.localAddress, payload: Array("more".utf8)).withUnsafeBytes {
            late.nic.receive(packet: $0, now: start + Nanoseconds.millisecond, output: &late.output)
        }
        let reset = try #require(sent(&late).first)
        #expect(reset.0.flags.contains(.rst) && reset.0.sequenceNumber == first, "nobody will read it; at what the peer expects next")
        #expect(late.output.released.map(\.1) == [.reset] && late.nic.flowCount == 0 && late.nic.closingCount == 0)
    }

    @Test("never acknowledged: sent again with backoff, then given up, the flow released (abandoned)")
    func abandoned() throws {
        var (setup, _, _) = try handedOver(length: 1000, endpoints: flowEndpoints, retransmissions: 2)
        var time = start
        for wait in [200, 400] {
            time = time + UInt64(wait + 1) * Nanoseconds.millisecond
            for _ in 0..<4 { setup.nic.poll(now: time, output: &setup.output) }
            #expect(sent(&setup).contains { $0.0.sequenceNumber == first }, "resent after \(wait) ms")
        }
        time = time + 801 * Nanoseconds.millisecond
        setup.nic.poll(now: time, output: &setup.output)
        #expect(setup.output.released.map(\.1) == [.abandoned] && setup.nic.flowCount == 0 && setup.nic.closingCount == 0)
        #expect(setup.nic.counters.endingDataResends == 2 && setup.nic.store.heldBytes == 0)
    }

    @Test("a resend that cannot be made (the file closed under a bufferless store) resets the peer, sends no FIN, and releases the flow (failed)")
    func resendFails() throws {
        var (setup, _, _) = try handedOver(length: 1000, endpoints: flowEndpoints, store: .bufferless)
        let file = try #require(setup.output.opened.first?.1)
        setup.nic.handle(.closeFile(file), received: start, now: start, output: &setup.output)
        for _ in 0..<4 { setup.nic.poll(now: start + 201 * Nanoseconds.millisecond, output: &setup.output) }
        let out = sent(&setup)
        #expect(!out.contains { $0.0.flags.contains(.fin) }, "no FIN with the data missing before it")
        let reset = try #require(out.last)
        #expect(reset.0.flags.contains(.rst) && reset.0.sequenceNumber == first)
        #expect(setup.output.released.map(\.1) == [.failed] && setup.nic.flowCount == 0 && setup.nic.closingCount == 0)
    }

    @Test("a peer that acknowledges some of the data gets the retries back; one that crosses FINs and then acknowledges both goes to TIME-WAIT")
    func progressAndCrossedFins() throws {
        var (setup, _, _) = try handedOver(length: 5000, endpoints: flowEndpoints, retransmissions: 1)
        let fin = first + head.count + 5000
        var time = start + 201 * Nanoseconds.millisecond
        for _ in 0..<4 { setup.nic.poll(now: time, output: &setup.output) }
        #expect(!sent(&setup).isEmpty && setup.nic.counters.endingDataResends == 1, "the one retry spent")
        // Some of it taken: the retry comes back, so the next loss is resent rather than given up.
        peer(&setup, acknowledgment: first + 1000, at: time + Nanoseconds.millisecond)
        _ = sent(&setup)
        time = time + 202 * Nanoseconds.millisecond
        for _ in 0..<4 { setup.nic.poll(now: time, output: &setup.output) }
        #expect(sent(&setup).first?.0.sequenceNumber == first + 1000 && setup.output.released.isEmpty && setup.nic.counters.endingDataResends == 2)
        // The peer's FIN with part of the data: CLOSING; its FIN again acknowledging everything, ours included.
        peer(&setup, flags: [.fin, .ack], acknowledgment: first + 3000, at: time + Nanoseconds.millisecond)
        #expect(sent(&setup).contains { $0.0.acknowledgmentNumber == peerNext + 1 }, "the peer's FIN ACKed")
        peer(&setup, flags: [.fin, .ack], acknowledgment: fin + 1, at: time + 2 * Nanoseconds.millisecond)
        #expect(setup.output.released.map(\.1) == [.acknowledged] && setup.nic.flowCount == 0 && setup.nic.closingCount == 1)
        setup.nic.poll(now: time + 60 * Nanoseconds.second + 10 * Nanoseconds.millisecond, output: &setup.output)
        #expect(setup.nic.closingCount == 0 && setup.nic.counters.closingFinished == 1, "TIME-WAIT held its time and ended")
    }

    @Test("refused, and released at once: a TEARDOWN with data for a flow not open")
    func unknownFlow() {
        let files = MemoryFiles()
        let nic = NICDataPlane(files: files, disk: MemoryDisk(files: files))
        var output = CollectingNICOutput()
        let parameters = TeardownParameters(finSequence: first + 10, receiveNext: peerNext, window: 500, state: .finWait1, timestamps: false,
                                            timestampValue: 0, timestampEcho: 0, retransmissionTimeoutMilliseconds: 200, maximumRetransmissions: 3,
                                            timeWaitMilliseconds: 60_000, finWait2Milliseconds: 30_000)
        nic.handle(.teardownWithData(flow, parameters, unacknowledged: first, hostBytes: UnsafeRawBufferPointer(start: nil, count: 0)),
                   received: start, now: start, output: &output)
        #expect(output.errors.map(\.0) == [.unknownFlow] && output.released.map(\.1) == [.failed] && nic.closingCount == 0)
    }
}
