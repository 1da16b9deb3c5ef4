import IOTCPCommon
import Testing
@testable import IOTCPHost

@Suite("Closing (RFC 9293 §3.6) and TIME-WAIT")
struct CloseTests {
    @Test("active close: FIN-WAIT-1, FIN-WAIT-2, TIME-WAIT for its full duration, then the slot is freed")
    func activeClose() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        try script.engine.close(handle, now: script.now, output: &script.output)
        let emitted = script.output.take()
        let fin = try #require(emitted.segments.first)
        #expect(fin.flags == [.fin, .ack] && fin.sequence == SequenceNumber(iss &+ 1))
        #expect(script.engine.state(of: handle) == .finWait1)
        script.inject(sequence: 1001, acknowledgment: iss &+ 2, flags: .ack, options: script.peerTimestamps(2000))
        #expect(script.engine.state(of: handle) == .finWait2)
        let last = script.inject(sequence: 1001, acknowledgment: iss &+ 2, flags: [.fin, .ack], options: script.peerTimestamps(2001))
        let ack = try #require(last.segments.first)
        #expect(ack.flags == .ack && ack.acknowledgment == SequenceNumber(1002))
        #expect(script.engine.state(of: handle) == .timeWait)
        #expect(last.contains { if case .flowClose = $0 { true } else { false } }, "the NIC forgets the flow at TIME-WAIT")
        // A retransmitted FIN in TIME-WAIT is ACKed again.
        let again = script.inject(sequence: 1001, acknowledgment: iss &+ 2, flags: [.fin, .ack], options: script.peerTimestamps(2002))
        #expect(try #require(again.segments.first).acknowledgment == SequenceNumber(1002))
        script.advance(milliseconds: 59_999)
        #expect(script.engine.state(of: handle) == .timeWait)
        script.advance(milliseconds: 1)
        #expect(script.engine.state(of: handle) == nil, "closed by the application and out of TIME-WAIT: freed")
        #expect(script.engine.connectionCount == 0)
    }

    @Test("passive close: CLOSE-WAIT, then LAST-ACK, then closed")
    func passiveClose() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        let finAck = script.inject(sequence: 1001, acknowledgment: iss &+ 1, flags: [.fin, .ack], options: script.peerTimestamps(2000))
        #expect(try #require(finAck.segments.first).acknowledgment == SequenceNumber(1002))
        #expect(script.engine.state(of: handle) == .closeWait)
        var buffer = [UInt8](repeating: 0, count: 16)
        let read = try buffer.withUnsafeMutableBytes { try script.engine.read(handle, into: $0, now: script.now, output: &script.output) }
        #expect(read == 0, "end of stream")
        try script.engine.close(handle, now: script.now, output: &script.output)
        let fin = try #require(script.output.take().segments.first)
        #expect(fin.flags == [.fin, .ack])
        #expect(script.engine.state(of: handle) == .lastAck)
        script.inject(sequence: 1002, acknowledgment: iss &+ 2, flags: .ack, options: script.peerTimestamps(2001))
        #expect(script.engine.state(of: handle) == nil)
    }

    @Test("simultaneous close goes through CLOSING to TIME-WAIT")
    func simultaneousClose() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        try script.engine.shutdownWrite(handle, now: script.now, output: &script.output)
        _ = script.output.take()
        script.inject(sequence: 1001, acknowledgment: iss &+ 1, flags: [.fin, .ack], options: script.peerTimestamps(2000))
        #expect(script.engine.state(of: handle) == .closing)
        script.inject(sequence: 1002, acknowledgment: iss &+ 2, flags: .ack, options: script.peerTimestamps(2001))
        #expect(script.engine.state(of: handle) == .timeWait)
    }

    @Test("a connection this host opened has a NIC flow from its first data (FLOW_OPEN just before it) to TIME-WAIT, and none if it sends none")
    func activeFlowFromFirstData() throws {
        var configuration = TCPConfiguration()
        configuration.acknowledgeConnectWithData = false
        var script = Script(configuration: configuration)
        let handle = try script.engine.connect(to: Script.remote, port: 8080, now: script.now, output: &script.output)
        let opening = script.output.take()
        let syn = try #require(opening.segments.first)
        #expect(!opening.contains { if case .flowOpen = $0 { true } else { false } }, "no flow for the SYN")
        script.remotePort = 8080
        script.localPort = syn.tcp.sourcePort
        let iss = syn.sequence.rawValue
        let established = script.inject(sequence: 5000, acknowledgment: iss &+ 1, flags: [.syn, .ack], options: Script.linuxSynOptions(timestamp: 77))
        #expect(script.engine.state(of: handle) == .established)
        #expect(!established.contains { if case .flowOpen = $0 { true } else { false } }, "none for the handshake's ACK")
        _ = try Array("GET / HTTP/1.1\r\n\r\n".utf8).withUnsafeBytes { try script.engine.write(handle, $0, now: script.now, output: &script.output) }
        var emitted = script.output.take()
        let opened = emitted.firstIndex { if case .flowOpen(handle.flow, let endpoints) = $0 { endpoints.remotePort == 8080 } else { false } }
        let request = emitted.firstIndex { if case .segment(let segment) = $0 { segment.payload.count == 18 } else { false } }
        #expect(opened != nil && request != nil && opened! < request!, "the first data packet opens the flow, before it leaves")
        script.inject(sequence: 5001, acknowledgment: iss &+ 19, flags: .ack, options: script.peerTimestamps(78))
        _ = try script.writeFile(handle, length: 3000)
        emitted = script.output.take()
        #expect(emitted.sends.count == 1 && !emitted.contains { if case .flowOpen = $0 { true } else { false } }, "opened once")
        script.engine.handleEcho(flow: handle.flow, sequenceEnd: SequenceNumber(iss &+ 19 &+ 3000), nicDelayNanoseconds: 0, now: script.now,
                                 output: &script.output)
        script.inject(sequence: 5001, acknowledgment: iss &+ 19 &+ 3000, flags: .ack, options: script.peerTimestamps(79))
        try script.engine.close(handle, now: script.now, output: &script.output)
        script.inject(sequence: 5001, acknowledgment: iss &+ 19 &+ 3001, flags: .ack, options: script.peerTimestamps(80))
        #expect(script.engine.state(of: handle) == .finWait2)
        let last = script.inject(sequence: 5001, acknowledgment: iss &+ 19 &+ 3001, flags: [.fin, .ack], options: script.peerTimestamps(81))
        #expect(script.engine.state(of: handle) == .timeWait)
        #expect(last.filter { if case .flowClose(handle.flow) = $0 { true } else { false } }.count == 1, "the NIC forgets the flow at TIME-WAIT")

        // A second connection sends nothing: no flow, no FLOW_CLOSE, and still closed and freed.
        let quiet = try script.engine.connect(to: Script.remote, port: 8080, now: script.now, output: &script.output)
        let quietSyn = try #require(script.output.take().segments.first)
        script.localPort = quietSyn.tcp.sourcePort
        script.inject(sequence: 9000, acknowledgment: quietSyn.sequence.rawValue &+ 1, flags: [.syn, .ack], options: Script.linuxSynOptions(timestamp: 90))
        script.engine.drainEvents { _, _ in }
        let reset = script.inject(sequence: 9001, acknowledgment: quietSyn.sequence.rawValue &+ 1, flags: [.rst, .ack])
        #expect(script.engine.state(of: quiet) == .closed)
        #expect(!reset.contains { if case .flowClose = $0 { true } else { false } }, "no flow was opened")
        var events: TCPEvents = []
        script.engine.drainEvents { handle, new in if handle == quiet { events.formUnion(new) } }
        #expect(events.contains(.closed), "reported closed without a flow")
    }

    @Test("the FIN follows queued data, and a lost FIN is retransmitted")
    func finAfterData() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        _ = try script.writeFile(handle, length: 3000)
        try script.engine.shutdownWrite(handle, now: script.now, output: &script.output)
        let emitted = script.output.take()
        #expect(emitted.sends.map(\.1.length) == [3000])
        let fin = try #require(emitted.segments.first { $0.flags.contains(.fin) })
        #expect(fin.sequence == SequenceNumber(iss &+ 1 &+ 3000))
        script.engine.handleEcho(flow: handle.flow, sequenceEnd: SequenceNumber(iss &+ 1 &+ 3000), nicDelayNanoseconds: 0, now: script.now, output: &script.output)
        script.inject(sequence: 1001, acknowledgment: iss &+ 1 &+ 3000, flags: .ack, options: script.peerTimestamps(2000))
        let retry = script.advance(milliseconds: 1000).segments
        #expect(retry.contains { $0.flags.contains(.fin) && $0.sequence == SequenceNumber(iss &+ 1 &+ 3000) })
    }

    @Test("writeFile(shutdownAfter:): the FIN rides on the range's last segment, no bare FIN; a lost one comes back bare")
    func finOnLastSend() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        let taken = try script.engine.writeFile(handle, file: OffloadedFileID(slot: 1, generation: 1), offset: 0, length: 3000,
                                                shutdownAfter: true, now: script.now, output: &script.output)
        #expect(taken == 3000 && script.engine.state(of: handle) == .finWait1)
        let emitted = script.output.take()
        let send = try #require(emitted.sends.first)
        #expect(emitted.sends.count == 1 && send.1.length == 3000 && send.1.sequence == SequenceNumber(iss &+ 1))
        #expect(send.1.template.lastSegmentFlags == [.psh, .fin])
        #expect(!emitted.segments.contains { $0.flags.contains(.fin) }, "no FIN of its own")
        // Closing now changes nothing on the wire.
        try script.engine.close(handle, now: script.now, output: &script.output)
        #expect(!script.output.take().segments.contains { $0.flags.contains(.fin) })
        // The peer took the data but not the FIN: it goes again, bare, at its place.
        script.engine.handleEcho(flow: handle.flow, sequenceEnd: SequenceNumber(iss &+ 1 &+ 3000), nicDelayNanoseconds: 0, now: script.now, output: &script.output)
        script.inject(sequence: 1001, acknowledgment: iss &+ 1 &+ 3000, flags: .ack, options: script.peerTimestamps(2000))
        let retry = script.advance(milliseconds: 1000).segments
        #expect(retry.contains { $0.flags.contains(.fin) && $0.sequence == SequenceNumber(iss &+ 1 &+ 3000) })
        script.inject(sequence: 1001, acknowledgment: iss &+ 1 &+ 3001, flags: .ack, options: script.peerTimestamps(2001))
        #expect(script.engine.state(of: handle) == .finWait2)
    }

    @Test("writeFile(shutdownAfter:) with only part of the range taken shuts nothing down")
    func partialShutdownAfter() throws {
        var configuration = TCPConfiguration()
        configuration.fileQueueBytes = 2000
        var script = Script(configuration: configuration)
        let (handle, _) = try establishPassive(&script)
        let taken = try script.engine.writeFile(handle, file: OffloadedFileID(slot: 1, generation: 1), offset: 0, length: 3000,
                                                shutdownAfter: true, now: script.now, output: &script.output)
        #expect(taken == 2000 && script.engine.state(of: handle) == .established)
        #expect(script.output.take().sends.allSatisfy { !$0.1.template.lastSegmentFlags.contains(.fin) })
    }

    @Test("writing after shutdown, or on a stale handle, fails with a clear error")
    func misuse() throws {
        var script = Script()
        let (handle, _) = try establishPassive(&script)
        try script.engine.shutdownWrite(handle, now: script.now, output: &script.output)
        #expect(script.output.take().segments.first?.flags == [.fin, .ack])
        #expect(throws: TCPError.alreadyClosing) { try script.writeFile(handle, length: 1) }
        try script.engine.abort(handle, output: &script.output)
        #expect(script.output.take().segments.first?.flags == [.rst, .ack])
        #expect(throws: TCPError.invalidHandle) { try script.writeFile(handle, length: 1) }
    }

    @Test("keepalive probes an idle peer and gives up after the configured count")
    func keepalive() throws {
        var configuration = TCPConfiguration()
        configuration.keepalive = (idle: 10 * Nanoseconds.second, interval: Nanoseconds.second, probes: 3)
        var script = Script(configuration: configuration)
        let (handle, iss) = try establishPassive(&script)
        var probes: [Segment] = []
        for _ in 0..<140 { probes += script.advance(milliseconds: 100).segments }
        #expect(probes.count == 3)
        #expect(probes.allSatisfy { $0.sequence == SequenceNumber(iss) && $0.payload.isEmpty })
        #expect(script.engine.error(of: handle) == .timedOut)
    }

    @Test("SO_KEEPALIVE on one connection probes it with Linux's timing, though the stack has no keepalive")
    func keepaliveOnOneConnection() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        try script.engine.setOptions(handle, keepalive: true, now: script.now, output: &script.output)
        _ = script.output.take()
        // Quiet for just under two hours, then the first probe; the next 75 s later.
        #expect(script.advance(milliseconds: 7_199_000).segments.isEmpty)
        let first = script.advance(milliseconds: 1_000).segments
        #expect(first.count == 1 && first.first?.sequence == SequenceNumber(iss) && first.first?.payload.isEmpty == true)
        #expect(script.advance(milliseconds: 74_000).segments.isEmpty)
        #expect(script.advance(milliseconds: 1_000).segments.count == 1)
        // Turned off again: no more probes.
        try script.engine.setOptions(handle, keepalive: false, now: script.now, output: &script.output)
        #expect(script.advance(milliseconds: 600_000).segments.isEmpty)
        #expect(script.engine.error(of: handle) == nil)
    }

    @Test("TCP_NODELAY sends the short write Nagle holds, at once and from then on")
    func noDelay() throws {
        var script = Script()
        let (handle, _) = try establishPassive(&script)
        func write(_ text: String) throws -> [[UInt8]] {
            _ = try Array(text.utf8).withUnsafeBytes { try script.engine.write(handle, $0, now: script.now, output: &script.output) }
            return script.output.take().segments.map(\.payload).filter { !$0.isEmpty }
        }
        #expect(try write("head") == [Array("head".utf8)])
        #expect(try write("tail").isEmpty, "Nagle holds a short segment while one is unacknowledged")
        try script.engine.setOptions(handle, noDelay: true, now: script.now, output: &script.output)
        #expect(script.output.take().segments.map(\.payload).filter { !$0.isEmpty } == [Array("tail".utf8)])
        #expect(try write("more") == [Array("more".utf8)])
    }
}

@Suite("SYN cookies (RFC 4987)")
struct SynCookieTests {
    @Test("past the backlog, SYNs get stateless cookies and a valid ACK still makes a connection")
    func cookies() throws {
        var script = Script()
        _ = try script.engine.listen(port: 80, backlog: 1)
        script.inject(sequence: 100, flags: .syn, options: Script.linuxSynOptions(), from: 1111)
        let before = script.engine.connectionCount
        script.remotePort = 2222
        let emitted = script.inject(sequence: 5000, flags: .syn, options: Script.linuxSynOptions(timestamp: 500))
        let synAck = try #require(emitted.segments.first)
        #expect(script.engine.connectionCount == before, "a cookie costs no connection state")
        #expect(script.engine.statistics.synCookiesSent == 1)
        #expect(synAck.flags == [.syn, .ack] && synAck.acknowledgment == SequenceNumber(5001))
        #expect(synAck.tcp.options.windowScale == 3 && synAck.tcp.options.sackPermitted)

        // A forged ACK is refused (and answered with a RST); the real one is accepted.
        let forged = script.inject(sequence: 5001, acknowledgment: synAck.sequence.rawValue &+ 2, flags: .ack,
                                   options: script.peerTimestamps(501, echo: synAck.tcp.options.timestamps!.value))
        #expect(forged.segments.first?.flags == .rst)
        #expect(script.engine.statistics.synCookiesRejected == 1)
        script.inject(sequence: 5001, acknowledgment: synAck.sequence.rawValue &+ 1, flags: .ack,
                      options: script.peerTimestamps(502, echo: synAck.tcp.options.timestamps!.value))
        #expect(script.engine.statistics.synCookiesAccepted == 1)
        var accepted: [TCPHandle] = []
        while let handle = script.engine.accept(TCPListenerID(port: 80)) { accepted.append(handle) }
        let cookieHandle = try #require(accepted.last)
        #expect(script.engine.state(of: cookieHandle) == .established)

        // The connection works: window scale and SACK came back from the timestamp.
        _ = try script.writeFile(cookieHandle, length: 3000)
        let send = try #require(script.output.take().sends.first)
        #expect(send.1.sequence == synAck.sequence + 1)
        #expect(send.1.template.maximumSegmentSize == 1448)
    }

    @Test("a genuine cookie ACK while the accept queue is full is dropped unanswered, and its retransmission gets in")
    func acceptQueueOverflow() throws {
        var script = Script()
        _ = try script.engine.listen(port: 80, backlog: 1)
        // One connection completes its handshake and waits for accept: the queue is full.
        let first = try #require(script.inject(sequence: 100, flags: .syn, options: Script.linuxSynOptions(), from: 1111).segments.first)
        script.inject(sequence: 101, acknowledgment: first.sequence.rawValue &+ 1, flags: .ack,
                      options: script.peerTimestamps(1001, echo: first.tcp.options.timestamps!.value), from: 1111)
        script.remotePort = 2222
        let synAck = try #require(script.inject(sequence: 5000, flags: .syn, options: Script.linuxSynOptions(timestamp: 500)).segments.first)
        #expect(script.engine.statistics.synCookiesSent == 1)
        let ack = { (timestamp: UInt32) in
            script.inject(sequence: 5001, acknowledgment: synAck.sequence.rawValue &+ 1, flags: .ack,
                          options: script.peerTimestamps(timestamp, echo: synAck.tcp.options.timestamps!.value))
        }
        #expect(ack(501).segments.isEmpty, "no reset: Linux drops it too, and the client sends it again")
        #expect(script.engine.statistics.acceptQueueOverflows == 1 && script.engine.statistics.synCookiesAccepted == 0)
        #expect(script.engine.accept(TCPListenerID(port: 80)) != nil)
        _ = ack(502)
        #expect(script.engine.statistics.synCookiesAccepted == 1)
        let handle = try #require(script.engine.accept(TCPListenerID(port: 80)))
        #expect(script.engine.endpoints(of: handle)?.remotePort == 2222 && script.engine.state(of: handle) == .established)
    }

    @Test("a cookie from an ACK nobody asked for is not accepted")
    func unsolicitedAck() throws {
        var script = Script()
        _ = try script.engine.listen(port: 80, backlog: 1)
        let reply = script.inject(sequence: 5001, acknowledgment: 12345, flags: .ack)
        #expect(reply.segments.first?.flags == .rst)
        #expect(script.engine.statistics.synCookiesAccepted == 0)
    }
}
