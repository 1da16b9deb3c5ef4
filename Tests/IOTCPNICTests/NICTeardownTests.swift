import IOTCPCommon
import IOTCPHost
import IOTCPNIC
import Testing

/// Connections' endings on the NIC: every closing path, scripted segment by segment on a virtual clock, over
/// IPv4 and over IPv6.
@Suite("Teardown on the NIC (TEARDOWN): FIN, its retransmission, LAST-ACK, TIME-WAIT, RST")
struct NICTeardownTests {
    let flow = FlowID(index: 3, generation: 1)
    let start = Instant(nanoseconds: 50 * Nanoseconds.second)
    let fin = SequenceNumber(700_000)
    let peerNext = SequenceNumber(9_000)

    func parameters(state: TeardownState = .finWait1, timestamps: Bool = true) -> TeardownParameters {
        TeardownParameters(finSequence: fin, receiveNext: peerNext, window: 500, state: state, timestamps: timestamps,
                           timestampValue: 1_000_000, timestampEcho: 4_444, retransmissionTimeoutMilliseconds: 200, maximumRetransmissions: 3,
                           timeWaitMilliseconds: 60_000, finWait2Milliseconds: 30_000)
    }

    /// A data plane with the flow open and then handed over (the host sent the FIN: nothing leaves now).
    func handedOver(_ parameters: TeardownParameters, over endpoints: FlowEndpoints = flowEndpoints,
                    output: inout CollectingNICOutput) throws -> NICDataPlane {
        let files = MemoryFiles()
        let nic = NICDataPlane(files: files, disk: MemoryDisk(files: files))
        nic.handle(.flowOpen(flow, endpoints), received: start, now: start, output: &output)
        nic.handle(.teardown(flow, parameters), received: start, now: start, output: &output)
        #expect(nic.flowCount == 0 && nic.closingCount == 1 && nic.counters.teardowns == 1)
        #expect(output.packets.isEmpty, "the host sent the FIN")
        return nic
    }

    func peer(_ nic: NICDataPlane, over endpoints: FlowEndpoints, flags: TCPFlags, sequence: SequenceNumber? = nil, acknowledgment: SequenceNumber? = nil,
              payload: [UInt8] = [], timestamp: UInt32? = 5_000, at time: Instant, output: inout CollectingNICOutput) {
        let segment = TCPRepr(sourcePort: 40000, destinationPort: 80, sequenceNumber: sequence ?? peerNext,
                              acknowledgmentNumber: acknowledgment ?? fin + 1, flags: flags, window: 1000,
                              options: TCPOptions(timestamps: timestamp.map { TCPTimestamps(value: $0, echoReply: 1_000_000) }))
        tcpPacket(segment, from: endpoints.remoteAddress, to: endpoints.localAddress, payload: payload).withUnsafeBytes { nic.receive(packet: $0, now: time, output: &output) }
    }

    func sent(_ output: inout CollectingNICOutput) -> [TCPRepr] {
        defer { output.packets.removeAll() }
        return output.packets.compactMap { parseSegment($0)?.0 }
    }

    @Test("the peer ACKs our FIN and sends its own: ACKed, TIME-WAIT held exactly its time, then forgotten", arguments: [flowEndpoints, flowEndpoints6])
    func activeClose(endpoints: FlowEndpoints) throws {
        var output = CollectingNICOutput()
        let nic = try handedOver(parameters(), over: endpoints, output: &output)
        peer(nic, over: endpoints, flags: .ack, at: start + 5 * Nanoseconds.millisecond, output: &output)
        #expect(sent(&output).isEmpty, "FIN-WAIT-2: nothing to say")
        let finTime = start + 10 * Nanoseconds.millisecond
        peer(nic, over: endpoints, flags: [.fin, .ack], timestamp: 5_010, at: finTime, output: &output)
        let ack = try #require(sent(&output).first)
        #expect(ack.flags == .ack && ack.sequenceNumber == fin + 1 && ack.acknowledgmentNumber == peerNext + 1)
        #expect(ack.options.timestamps == TCPTimestamps(value: 1_000_010, echoReply: 5_010), "TSval moved on by the 10 ms since")
        nic.poll(now: finTime + (60 * Nanoseconds.second - Nanoseconds.millisecond), output: &output)
        #expect(nic.closingCount == 1, "still in TIME-WAIT 1 ms before its end")
        nic.poll(now: finTime + (60 * Nanoseconds.second + 2 * Nanoseconds.millisecond), output: &output)
        #expect(nic.closingCount == 0 && nic.counters.closingFinished == 1)
    }

    @Test("handed over in TIME-WAIT: a retransmitted FIN (our ACK was lost) is ACKed again and the wait starts again", arguments: [flowEndpoints, flowEndpoints6])
    func retransmittedFinInTimeWait(endpoints: FlowEndpoints) throws {
        var output = CollectingNICOutput()
        var waiting = parameters(state: .timeWait)
        waiting.receiveNext = peerNext + 1  // the peer's FIN was taken by the host
        let nic = try handedOver(waiting, over: endpoints, output: &output)
        let finTime = start
        let again = finTime + 30 * Nanoseconds.second
        peer(nic, over: endpoints, flags: [.fin, .ack], timestamp: 5_020, at: again, output: &output)
        let ack = try #require(sent(&output).first)
        #expect(ack.flags == .ack && ack.acknowledgmentNumber == peerNext + 1 && ack.options.timestamps?.echoReply == 5_020)
        nic.poll(now: finTime + (60 * Nanoseconds.second + 2 * Nanoseconds.millisecond), output: &output)
        #expect(nic.closingCount == 1, "the wait started again at the retransmitted FIN")
        nic.poll(now: again + (60 * Nanoseconds.second + 2 * Nanoseconds.millisecond), output: &output)
        #expect(nic.closingCount == 0 && nic.counters.closingFinished == 1)
    }

    @Test("a lost FIN is sent again with backoff; a peer that never answers is given up after the retries", arguments: [flowEndpoints, flowEndpoints6])
    func lostFin(endpoints: FlowEndpoints) throws {
        var output = CollectingNICOutput()
        let nic = try handedOver(parameters(), over: endpoints, output: &output)
        var time = start
        for (index, wait) in [200, 400, 800].enumerated() {
            time = time + UInt64(wait) * Nanoseconds.millisecond
            nic.poll(now: Instant(nanoseconds: time.nanoseconds - Nanoseconds.millisecond), output: &output)
            #expect(sent(&output).isEmpty, "nothing before the timeout")
            nic.poll(now: time + Nanoseconds.millisecond, output: &output)
            let again = try #require(sent(&output).first)
            #expect(again.flags == [.fin, .ack] && again.sequenceNumber == fin && again.acknowledgmentNumber == peerNext,
                    "retransmission \(index + 1)")
            #expect(again.window == 500 && again.sourcePort == 80 && again.destinationPort == 40000)
            if index == 0 {
                #expect(again.options.timestamps == TCPTimestamps(value: 1_000_201, echoReply: 4_444), "TSval moved on by the 201 ms since")
            }
            time = time + Nanoseconds.millisecond
        }
        nic.poll(now: time + 1700 * Nanoseconds.millisecond, output: &output)
        #expect(sent(&output).isEmpty && nic.closingCount == 0 && nic.counters.closingAbandoned == 1)
        #expect(nic.counters.finRetransmissions == 3)
    }

    @Test("the peer closed first: LAST-ACK, and its ACK ends it at once", arguments: [flowEndpoints, flowEndpoints6])
    func passiveClose(endpoints: FlowEndpoints) throws {
        var output = CollectingNICOutput()
        let nic = try handedOver(parameters(state: .lastAck), over: endpoints, output: &output)
        peer(nic, over: endpoints, flags: .ack, at: start + Nanoseconds.millisecond, output: &output)
        #expect(nic.closingCount == 0 && nic.counters.closingFinished == 1 && sent(&output).isEmpty)
    }

    @Test("both FINs cross: CLOSING, then TIME-WAIT on the ACK; FIN-WAIT-2 that never ends is given up", arguments: [flowEndpoints, flowEndpoints6])
    func simultaneousAndFinWait2(endpoints: FlowEndpoints) throws {
        var output = CollectingNICOutput()
        let nic = try handedOver(parameters(), over: endpoints, output: &output)
        peer(nic, over: endpoints, flags: [.fin, .ack], acknowledgment: fin, at: start + Nanoseconds.millisecond, output: &output)
        #expect(sent(&output).first?.acknowledgmentNumber == peerNext + 1)
        peer(nic, over: endpoints, flags: .ack, sequence: peerNext + 1, at: start + 2 * Nanoseconds.millisecond, output: &output)
        nic.poll(now: start + 59 * Nanoseconds.second, output: &output)
        #expect(nic.closingCount == 1)
        nic.poll(now: start + 61 * Nanoseconds.second, output: &output)
        #expect(nic.closingCount == 0 && nic.counters.closingFinished == 1)

        var second = CollectingNICOutput()
        let waiting = try handedOver(parameters(state: .finWait2), over: endpoints, output: &second)
        waiting.poll(now: start + 29 * Nanoseconds.second, output: &second)
        #expect(waiting.closingCount == 1)
        waiting.poll(now: start + 31 * Nanoseconds.second, output: &second)
        #expect(waiting.closingCount == 0 && waiting.counters.closingAbandoned == 1, "FIN-WAIT-2 over")
    }

    @Test("RST: at RCV.NXT it ends the connection, elsewhere in the window it is challenged, outside dropped; data after the close is reset", arguments: [flowEndpoints, flowEndpoints6])
    func resets(endpoints: FlowEndpoints) throws {
        var output = CollectingNICOutput()
        let nic = try handedOver(parameters(), over: endpoints, output: &output)
        peer(nic, over: endpoints, flags: .rst, sequence: peerNext + 100, at: start, output: &output)
        #expect(sent(&output).first?.flags == .ack && nic.closingCount == 1, "a challenge ACK (RFC 5961)")
        peer(nic, over: endpoints, flags: .rst, sequence: peerNext + 200, at: start + Nanoseconds.millisecond, output: &output)
        #expect(sent(&output).isEmpty && nic.counters.challengesSuppressed == 1, "at most one challenge per 100 ms")
        peer(nic, over: endpoints, flags: .rst, sequence: peerNext + 100_000, at: start + Nanoseconds.second, output: &output)
        #expect(sent(&output).isEmpty && nic.closingCount == 1, "a RST outside the window (500 bytes) is dropped silently")
        // Data outside the window is not new data: an ACK, and the ending goes on.
        peer(nic, over: endpoints, flags: [.ack, .psh], sequence: peerNext + 100_000, payload: Array("far".utf8), at: start + 2 * Nanoseconds.second, output: &output)
        #expect(sent(&output).first?.flags == .ack && nic.closingCount == 1 && nic.counters.closingReset == 0)
        peer(nic, over: endpoints, flags: .rst, at: start + 3 * Nanoseconds.second, output: &output)
        #expect(nic.closingCount == 0 && nic.counters.closingReset == 1)

        var second = CollectingNICOutput()
        let reading = try handedOver(parameters(), over: endpoints, output: &second)
        peer(reading, over: endpoints, flags: [.ack, .psh], payload: Array("more".utf8), at: start, output: &second)
        let reset = try #require(sent(&second).first)
        #expect(reset.flags == [.rst, .ack] && reset.sequenceNumber == fin + 1 && reading.closingCount == 0)
    }

    @Test("TIME-WAIT (RFC 6191 as Linux applies it): a newer TSval, or an equal one with a later ISN, opens a new connection; an older one, or an earlier ISN, gets an ACK", arguments: [flowEndpoints, flowEndpoints6])
    func timeWaitReuse(endpoints: FlowEndpoints) throws {
        /// A plane with the connection in TIME-WAIT (the peer's last TSval 6,000) and port 80 listening.
        func inTimeWait(_ output: inout CollectingNICOutput) throws -> NICDataPlane {
            let nic = try handedOver(parameters(), over: endpoints, output: &output)
            nic.handle(.listen(ListenerOptions(port: 80, maximumSegmentSize: 1460, window: 65535, windowShift: 7)), received: start, now: start, output: &output)
            peer(nic, over: endpoints, flags: .ack, at: start, output: &output)
            peer(nic, over: endpoints, flags: [.fin, .ack], timestamp: 6_000, at: start, output: &output)
            _ = sent(&output)
            return nic
        }
        func syn(timestamp: UInt32?, sequence: SequenceNumber, flags: TCPFlags = .syn) -> [UInt8] {
            tcpPacket(TCPRepr(sourcePort: 40000, destinationPort: 80, sequenceNumber: sequence, flags: flags, window: 1000,
                              options: TCPOptions(maximumSegmentSize: 1460, timestamps: timestamp.map { TCPTimestamps(value: $0, echoReply: 0) })),
                      from: endpoints.remoteAddress, to: endpoints.localAddress)
        }
        var output = CollectingNICOutput()
        let nic = try inTimeWait(&output)
        let later = peerNext + 1_000_000
        syn(timestamp: 5_999, sequence: later).withUnsafeBytes { nic.receive(packet: $0, now: start, output: &output) }
        #expect(sent(&output).first?.flags == .ack && nic.closingCount == 1, "an older TSval is refused whatever the ISN (PAWS)")
        syn(timestamp: 7_000, sequence: later, flags: [.syn, .ack]).withUnsafeBytes { nic.receive(packet: $0, now: start + Nanoseconds.second, output: &output) }
        #expect(sent(&output).first?.flags == .ack && nic.closingCount == 1, "a SYN-ACK, however new, is no new connection")
        syn(timestamp: 6_000, sequence: SequenceNumber(1)).withUnsafeBytes { nic.receive(packet: $0, now: start + 2 * Nanoseconds.second, output: &output) }
        #expect(nic.closingCount == 1, "an equal TSval with an earlier ISN keeps TIME-WAIT")
        _ = sent(&output)
        syn(timestamp: 6_000, sequence: later).withUnsafeBytes { nic.receive(packet: $0, now: start + 3 * Nanoseconds.second, output: &output) }
        #expect(sent(&output).first?.flags == [.syn, .ack], "a port reused within the same millisecond: equal TSval, later ISN")
        #expect(nic.closingCount == 0 && nic.counters.timeWaitReused == 1)

        var second = CollectingNICOutput()
        let other = try inTimeWait(&second)
        syn(timestamp: 6_001, sequence: SequenceNumber(1)).withUnsafeBytes { other.receive(packet: $0, now: start, output: &second) }
        #expect(sent(&second).first?.flags == [.syn, .ack] && other.closingCount == 0, "a newer TSval, whatever the ISN")
    }

    @Test("REDELIVER: the peer's FIN the host got just after the hand-over is taken by the ending; for no ending it is dropped, not bounced",
          arguments: [flowEndpoints, flowEndpoints6])
    func redelivered(endpoints: FlowEndpoints) throws {
        var output = CollectingNICOutput()
        let nic = try handedOver(parameters(state: .finWait2), over: endpoints, output: &output)
        let fin = TCPRepr(sourcePort: 40000, destinationPort: 80, sequenceNumber: peerNext, acknowledgmentNumber: self.fin + 1,
                          flags: [.fin, .ack], window: 1000, options: TCPOptions(timestamps: TCPTimestamps(value: 5_000, echoReply: 1_000_000)))
        let packet = tcpPacket(fin, from: endpoints.remoteAddress, to: endpoints.localAddress)
        packet.withUnsafeBytes { nic.handle(.redeliver(packet: $0), received: start, now: start, output: &output) }
        let ack = try #require(sent(&output).first)
        #expect(ack.flags == .ack && ack.acknowledgmentNumber == peerNext + 1 && nic.counters.redelivered == 1)
        #expect(nic.closingCount == 1 && output.packetsIn.isEmpty, "TIME-WAIT, on the NIC")
        var stranger = fin
        stranger.sourcePort = 40001
        tcpPacket(stranger, from: endpoints.remoteAddress, to: endpoints.localAddress).withUnsafeBytes {
            nic.handle(.redeliver(packet: $0), received: start, now: start, output: &output)
        }
        #expect(sent(&output).isEmpty && output.packetsIn.isEmpty && nic.counters.redelivered == 2, "no ending of its own: dropped")
    }

    @Test("bounded: past maximumClosingConnections a handed-over connection is reset, not held")
    func bounded() throws {
        let files = MemoryFiles()
        var limits = NICDataPlane.Limits()
        limits.maximumClosingConnections = 2
        let nic = NICDataPlane(files: files, disk: MemoryDisk(files: files), limits: limits)
        var output = CollectingNICOutput()
        for port: UInt16 in 1...3 {
            var endpoints = flowEndpoints
            endpoints.remotePort = 50000 + port
            let id = FlowID(index: UInt32(port), generation: 0)
            nic.handle(.flowOpen(id, endpoints), received: start, now: start, output: &output)
            nic.handle(.teardown(id, parameters()), received: start, now: start, output: &output)
        }
        let segments = sent(&output)
        #expect(segments.map(\.flags) == [[.rst, .ack]] && nic.closingCount == 2 && nic.counters.teardownOverflows == 1)
        #expect(segments.last?.sequenceNumber == fin + 1, "the RST stands after the FIN the host sent: SND.NXT")
        nic.reset()
        #expect(nic.closingCount == 0)
    }
}

@Suite("Teardown on the NIC, through the host stack")
struct NICTeardownStackTests {
    /// A stack whose NIC's HELLO offers `features` (the runtime sends one; this harness drives the data plane
    /// directly), a client connected to port 80 and accepted, and the export root's data file open.
    func serving(_ root: ExportRoot, features: UInt64) throws -> (StackHarness, TCPHandle, Socket, OffloadedFile) {
        let harness = try StackHarness(root: root.path)
        harness.nicSender.append(.hello(Hello(role: .nic, maxMessageBytes: 1 << 16, maxFlows: 1 << 20, maxOpenFiles: 1 << 16,
                                              features: features)))
        harness.nicSender.flush()
        try harness.step()
        let listener = try harness.stack.listen(port: 80)
        let client = try harness.connectClient(port: 80)
        var accepted: Socket?
        try harness.run { accepted = try? harness.stack.accept(listener); return accepted != nil }
        let socket = try #require(accepted)
        let request = try harness.stack.offloadOpen("/sub/data.bin", token: 7)
        var opened: OffloadedFile?
        try harness.run {
            for case .offloadOpened(request, .success(let file), 7) in harness.events { opened = file }
            return opened != nil
        }
        return (harness, client, socket, try #require(opened))
    }

    @Test("a response sent with offloadWrite(shutdownAfter:): its FIN on the last data segment, then handed over as usual")
    func finOnTheResponse() throws {
        let root = try ExportRoot()
        let (harness, client, socket, file) = try serving(root, features: NICFeatures.connectionSetup | NICFeatures.connectionTeardown)
        harness.keepsClientFrames = true
        #expect(try harness.stack.offloadWrite(socket, file: file.id, offset: 0, length: 30_000, shutdownAfter: true) == 30_000)
        #expect(harness.stack.info(of: socket)?.state == .finWait1, "shut down with the range")
        try harness.stack.offloadClose(file.id)
        try harness.stack.close(socket)
        var received: [UInt8] = []
        try harness.run {
            received += harness.clientRead(client)
            return harness.client.isReadClosed(client)
        }
        #expect(received == Array(root.content[0..<30_000]))
        // The frames the client got: the FIN came on the segment with the last data byte, and on no other.
        let fins = harness.clientFrames.compactMap { frame -> (SequenceNumber, Int)? in
            frame.withUnsafeBytes { raw in
                guard let ip = try? IPv4PacketView(raw), let tcp = try? TCPSegmentView(ip.payload), tcp.flags.contains(.fin) else { return nil }
                return (tcp.sequenceNumber, tcp.payload.count)
            }
        }
        #expect(fins.count == 1 && fins.first.map { $0.1 > 0 } == true, "one FIN, carried by data: \(fins)")
        try harness.run(limit: 50) { harness.stack.engine.connectionCount == 0 }
        #expect(harness.stack.engine.statistics.endingsHandedOver == 1, "handed to the NIC for its ending all the same")
        try harness.run(limit: 50) { harness.nic.files.openCount == 0 }
        #expect(harness.nic.files.openCount == 0 && harness.nicErrors.isEmpty)
    }

    @Test("a response handed over with its ending (TEARDOWN with data): lost on the wire, the NIC sends it again; every byte and the FIN arrive, the file stays open until FLOW_RELEASED gives the slot back")
    func endingWithResponse() throws {
        let root = try ExportRoot()
        let (harness, client, socket, file) = try serving(root, features: NICFeatures.connectionSetup | NICFeatures.connectionTeardown
                                                              | NICFeatures.sendHeads | NICFeatures.endingsWithData)
        #expect(harness.stack.engine.endingsWithDataOnNIC)
        let length = 3000
        let head = Array("HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n".utf8)
        _ = try head.withUnsafeBytes { try harness.stack.write(socket, $0, more: true) }
        #expect(try harness.stack.offloadWrite(socket, file: file.id, offset: 0, length: length, shutdownAfter: true) == length)
        try harness.stack.close(socket)
        try harness.stack.offloadClose(file.id)
        #expect(harness.stack.engine.statistics.endingsHandedOverWithData == 1 && harness.stack.engine.connectionCount == 0,
                "the host forgot the connection at the close")
        // The wire loses the response's first flight whole.
        var lost = 0
        harness.losesToClient = { frame in
            guard let (segment, payload, _) = parseSegment(frame), !payload.isEmpty || segment.flags.contains(.fin), lost < 3 else { return false }
            lost += 1
            return true
        }
        var received: [UInt8] = []
        let complete = try harness.run(limit: 3000) {
            received += harness.clientRead(client)
            return received.count == head.count + length && harness.client.isReadClosed(client)
        }
        #expect(complete && lost > 0 && received == head + Array(root.content[0..<length]), "every byte, then the FIN")
        #expect(harness.nic.counters.endingDataResends >= 1)
        #expect(harness.nic.files.openCount == 1, "the NIC may need the file until the client has taken everything")
        _ = try harness.run(limit: 1000) { harness.stack.engine.statistics.flowsReleased == 1 }
        #expect(harness.stack.engine.statistics.flowsReleased == 1 && harness.stack.engine.statistics.flowsReleasedUnacknowledged == 0)
        try harness.run(limit: 200) { harness.nic.files.openCount == 0 }
        #expect(harness.nic.files.openCount == 0 && harness.nic.flowCount == 0, "the file closed once the flow was released")
        #expect(harness.nicErrors.isEmpty, "\(harness.nicErrors)")
        #expect(harness.client.state(of: client) == .closeWait || harness.client.state(of: client) == .lastAck || harness.client.state(of: client) == .closed)
    }

    @Test("the application's close hands the connection over once its data is acknowledged: the host's block is freed, the NIC ends it")
    func handOver() throws {
        let root = try ExportRoot()
        var configuration = TCPConfiguration()
        configuration.timeWaitDuration = 2 * Nanoseconds.second
        let harness = try StackHarness(root: root.path, configuration: configuration)
        // The NIC's HELLO offers endings (the runtime sends it; this harness drives the data plane directly).
        harness.nicSender.append(.hello(Hello(role: .nic, maxMessageBytes: 1 << 16, maxFlows: 1 << 20, maxOpenFiles: 1 << 16,
                                              features: NICFeatures.connectionSetup | NICFeatures.connectionTeardown)))
        harness.nicSender.flush()
        try harness.step()
        #expect(harness.stack.engine.endingsOnNIC, "the feature bit turned endings on")
        let listener = try harness.stack.listen(port: 80)
        let client = try harness.connectClient(port: 80)
        var accepted: Socket?
        try harness.run { accepted = try? harness.stack.accept(listener); return accepted != nil }
        let socket = try #require(accepted)
        let reply = Array(repeating: UInt8(ascii: "y"), count: 30_000)
        #expect(try reply.withUnsafeBytes { try harness.stack.write(socket, $0) } == reply.count)
        try harness.stack.close(socket)
        #expect(harness.stack.engine.connectionCount == 1, "data in flight: the host keeps the connection until it is acknowledged")
        var received: [UInt8] = []
        try harness.run {
            received += harness.clientRead(client)
            return harness.client.isReadClosed(client)
        }
        let same = received == reply
        #expect(same, "\(received.count) of \(reply.count) bytes before the FIN (the host's, right after the data)")
        // The client's ACK of the data reaches the host: the connection goes to the NIC, its block is freed.
        try harness.run(limit: 50) { harness.stack.engine.connectionCount == 0 }
        #expect(harness.stack.engine.connectionCount == 0 && harness.stack.engine.statistics.endingsHandedOver == 1)
        try harness.step()  // the TEARDOWN reaches the NIC
        #expect(harness.nic.counters.teardowns == 1 && harness.nic.counters.finsSent == 0 && harness.nic.closingCount == 1)
        // The client closes its side: the NIC takes its FIN into TIME-WAIT, and forgets it 2 s later.
        var output = harness.clientOutput
        try harness.client.close(client, now: harness.time, output: &output)
        try harness.run(limit: 100) { harness.client.state(of: client) == .timeWait || harness.client.state(of: client) == nil }
        #expect(harness.nic.closingCount == 1)
        try harness.run(limit: 2500) { harness.nic.closingCount == 0 }
        #expect(harness.nic.counters.closingFinished == 1 && harness.nic.counters.finRetransmissions == 0)
    }
}
