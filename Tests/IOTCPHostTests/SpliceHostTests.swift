import IOTCPCommon
import Testing
@testable import IOTCPHost

/// The host's half of splicing: when two connections may be joined, what SPLICE says of them, and that
/// the host lets go of both (segments racing the hand-over go back to the NIC; the backend's 4-tuple is not
/// reused until SPLICE_ENDED).
@Suite("Splicing on the host (TCPEngine.splice)")
struct SpliceHostTests {
    static let request = Array("GET /big HTTP/1.1\r\nHost: proxy\r\n\r\n".utf8)

    /// A client connection (port 40000 → 80) that has sent a request the application read `readCount` of,
    /// and a backend connection (→ 8080) established by active open.
    func pair(_ script: inout Script, readCount: Int) throws -> (client: TCPHandle, clientISS: UInt32, backend: TCPHandle, backendPort: UInt16, backendISS: UInt32) {
        script.engine.splicingOnNIC = true
        let (client, iss) = try establishPassive(&script)
        script.inject(sequence: 1001, acknowledgment: iss &+ 1, flags: [.ack, .psh], window: 502,
                      options: TCPOptions(timestamps: TCPTimestamps(value: 1002, echoReply: 0)), payload: Self.request)
        var buffer = [UInt8](repeating: 0, count: readCount)
        let read = try buffer.withUnsafeMutableBytes { try script.engine.read(client, into: $0, now: script.now, output: &script.output) }
        #expect(read == readCount)
        let backend = try script.engine.connect(to: script.remoteAddress, port: 8080, now: script.now, output: &script.output)
        let syn = try #require(script.output.takeSegments().first { $0.flags == .syn })
        script.remotePort = 8080
        script.localPort = syn.tcp.sourcePort
        script.inject(sequence: 5000, acknowledgment: syn.sequence.rawValue &+ 1, flags: [.syn, .ack],
                      options: Script.linuxSynOptions(timestamp: 77))
        #expect(script.engine.state(of: backend) == .established)
        script.remotePort = 40000
        script.localPort = 80
        return (client, iss, backend, syn.tcp.sourcePort, syn.sequence.rawValue)
    }

    @Test("SPLICE describes both connections as they stand, carries the head and the unread request, and both handles go")
    func handsOverBoth() throws {
        var script = Script()
        let (client, iss, backend, backendPort, _) = try pair(&script, readCount: 10)
        let head = Array("GET /big HTTP/1.1\r\nX-Via: iotcp\r\n".utf8)
        try head.withUnsafeBytes { try script.engine.splice(client, to: backend, head: $0, now: script.now, output: &script.output) }
        let emitted = script.output.take()
        var spliced: (FlowID, SpliceParameters, [UInt8])?
        for item in emitted { if case .splice(let flow, let parameters, let bytes) = item { spliced = (flow, parameters, bytes) } }
        let (flow, parameters, carried) = try #require(spliced)
        #expect(flow == client.flow && parameters.backendFlow == backend.flow)
        #expect(carried == head + Self.request[10...], "the head, then what the application had not read")
        let ack = try #require(emitted.segments.last)
        #expect(ack.flags == .ack && ack.acknowledgment == SequenceNumber(1001 + UInt32(Self.request.count)),
                "the client hears everything it sent is taken, before the hand-over")
        #expect(emitted.segments.count == 1 && ack.tcp.destinationPort == 40000,
                "no ACK of its own to the backend: the head the NIC sends completes its handshake")
        #expect(parameters.client.remotePort == 40000 && parameters.client.localPort == 80)
        #expect(parameters.client.sendNext == SequenceNumber(iss &+ 1))
        #expect(parameters.client.receiveNext == SequenceNumber(1001 + UInt32(Self.request.count)))
        #expect(parameters.client.timestamps && parameters.client.timestampEcho == 1002)
        #expect(parameters.client.peerWindowShift == 7 && parameters.client.localWindowShift == 3)
        #expect(parameters.client.peerSegmentSize == 1448 && parameters.client.selectiveAcknowledgments)
        #expect(parameters.backend.remotePort == 8080 && parameters.backend.localPort == backendPort)
        #expect(parameters.backend.receiveNext == SequenceNumber(5001) && parameters.backend.timestampEcho == 77)
        #expect(parameters.localAddress == IPAddress(Script.local) && parameters.lingerMilliseconds == 5_000)
        #expect(script.engine.state(of: client) == nil && script.engine.state(of: backend) == nil && script.engine.connectionCount == 0)
        #expect(script.engine.statistics.splicesHandedOver == 1 && script.engine.activeSplices == 1)

        // A segment of the client's that crossed the hand-over goes back to the NIC, unanswered here.
        let racing = script.inject(sequence: 1001 + UInt32(Self.request.count), acknowledgment: iss &+ 1, flags: .ack, window: 502,
                                   options: TCPOptions(timestamps: TCPTimestamps(value: 1003, echoReply: 0)))
        #expect(racing.segments.isEmpty && racing.contains { if case .other("REDELIVER") = $0 { true } else { false } })

        // The backend's 4-tuple stays taken until the NIC lets go of the splice.
        #expect(throws: TCPError.portInUse(backendPort)) {
            _ = try script.engine.connect(to: Script.remote, port: 8080, localPort: backendPort, now: script.now, output: &script.output)
        }
        script.engine.spliceEnded(SpliceReport(backendFlow: backend.flow, reason: .finished, clientBytes: 0, backendBytes: 1000,
                                               backendAddress: IPAddress(Script.remote), backendPort: 8080, backendLocalPort: backendPort),
                                   now: script.now)
        #expect(script.engine.activeSplices == 0 && script.engine.statistics.splicedBytes == 1000)
        #expect(script.engine.backendsInTimeWait == 0, "the backend closed first: its TIME-WAIT is its own")
        _ = try script.engine.connect(to: Script.remote, port: 8080, localPort: backendPort, now: script.now, output: &script.output)
    }

    @Test("to a NIC that acknowledges the client itself: the SPLICE alone, flagged, its window and RCV.NXT what the host's ACK would have said")
    func nicAcknowledgesClient() throws {
        var script = Script()
        let (client, _, backend, _, _) = try pair(&script, readCount: 10)
        script.engine.spliceAcknowledgmentOnNIC = true
        _ = script.output.take()
        let head = Array("GET /big HTTP/1.1\r\n".utf8)
        try head.withUnsafeBytes { try script.engine.splice(client, to: backend, head: $0, now: script.now, output: &script.output) }
        let emitted = script.output.take()
        #expect(emitted.segments.isEmpty, "no ACK to the client (nor to the backend: the head carries its handshake's)")
        #expect(!emitted.contains { if case .flowClose = $0 { true } else { false } }, "the SPLICE releases the client's open flow itself")
        #expect(emitted.count == 1)
        guard case .splice(let flow, let parameters, let carried) = try #require(emitted.first) else {
            Issue.record("expected SPLICE, got \(emitted)")
            return
        }
        #expect(flow == client.flow && parameters.acknowledgeClient && carried == head + Self.request[10...])
        #expect(parameters.client.receiveNext == SequenceNumber(1001 + UInt32(Self.request.count)), "everything the client sent")
        #expect(parameters.client.window > 0 && script.engine.connectionCount == 0)
    }

    @Test("a splice its client closed first: the backend's 4-tuple stays out of use for TIME-WAIT, then is free; a stray report holds nothing")
    func backendTimeWait() throws {
        var script = Script()
        let (client, _, backend, backendPort, _) = try pair(&script, readCount: Self.request.count)
        try script.engine.splice(client, to: backend, head: UnsafeRawBufferPointer(start: nil, count: 0), now: script.now, output: &script.output)
        _ = script.output.take()
        func report(localPort: UInt16) -> SpliceReport {
            SpliceReport(backendFlow: backend.flow, reason: .finished, clientBytes: 10, backendBytes: 1000, backendAddress: IPAddress(Script.remote),
                         backendPort: 8080, backendLocalPort: localPort, clientClosedFirst: true)
        }
        script.engine.spliceEnded(report(localPort: 40_123), now: script.now)
        #expect(script.engine.backendsInTimeWait == 0 && script.engine.activeSplices == 1, "not a 4-tuple this engine handed over")
        let ended = script.now
        script.engine.spliceEnded(report(localPort: backendPort), now: ended)
        #expect(script.engine.activeSplices == 0 && script.engine.backendsInTimeWait == 1 && script.engine.statistics.backendTimeWaits == 1)
        let almost = ended + (script.engine.configuration.timeWaitDuration - Nanoseconds.millisecond)
        #expect(throws: TCPError.portInUse(backendPort)) {
            _ = try script.engine.connect(to: Script.remote, port: 8080, localPort: backendPort, now: almost, output: &script.output)
        }
        // Another backend port, or another backend, is not held.
        _ = try script.engine.connect(to: Script.remote, port: 8081, localPort: backendPort, now: almost, output: &script.output)
        let over = ended + script.engine.configuration.timeWaitDuration
        _ = try script.engine.connect(to: Script.remote, port: 8080, localPort: backendPort, now: over, output: &script.output)
        #expect(script.engine.backendsInTimeWait == 0, "forgotten once over (the connect walked the holds)")
    }

    @Test("with no head and nothing unread, the backend's handshake ACK goes before the SPLICE (nothing else would carry it)")
    func emptyHeadAcknowledgesBackend() throws {
        var script = Script()
        let (client, _, backend, backendPort, backendISS) = try pair(&script, readCount: Self.request.count)
        _ = script.output.take()
        try [UInt8]().withUnsafeBytes { try script.engine.splice(client, to: backend, head: $0, now: script.now, output: &script.output) }
        let emitted = script.output.take()
        let toBackend = emitted.segments.filter { $0.tcp.destinationPort == 8080 }
        #expect(toBackend.count == 1)
        #expect(toBackend.first.map { $0.flags == .ack && $0.payload.isEmpty && $0.tcp.sourcePort == backendPort } == true)
        #expect(toBackend.first?.sequence == SequenceNumber(backendISS &+ 1) && toBackend.first?.acknowledgment == SequenceNumber(5001))
        let ackIndex = emitted.firstIndex { if case .segment(let segment) = $0 { segment.tcp.destinationPort == 8080 } else { false } }
        let spliceIndex = emitted.firstIndex { if case .splice = $0 { true } else { false } }
        #expect(ackIndex != nil && spliceIndex != nil && ackIndex! < spliceIndex!)
    }

    @Test("refused, changing nothing: no NIC splicing, a backend that already sent data, data in flight, a head too long")
    func refusals() throws {
        var script = Script()
        let (client, iss, backend, backendPort, backendISS) = try pair(&script, readCount: Self.request.count)
        _ = script.output.take()
        func attempt(_ head: [UInt8] = []) -> TCPError? {
            do {
                try head.withUnsafeBytes { try script.engine.splice(client, to: backend, head: $0, now: script.now, output: &script.output) }
                return nil
            } catch let error as TCPError { return error } catch { return nil }
        }
        script.engine.splicingOnNIC = false
        #expect(attempt() == .cannotSplice("the NIC does not offer splicing"))
        script.engine.splicingOnNIC = true
        #expect(attempt(Array(repeating: 1, count: SpliceParameters.maximumHeadLength + 1)).map { "\($0)" }?.contains("head") == true)
        // A channel whose messages are smaller than the protocol's limit: the head must fit one.
        do {
            try Array(repeating: UInt8(1), count: 600).withUnsafeBytes {
                try script.engine.splice(client, to: backend, head: $0, now: script.now, output: &script.output, maximumHeadLength: 512)
            }
            Issue.record("a head larger than the channel's room was taken")
        } catch let error as TCPError {
            #expect(error == .cannotSplice("600 bytes of head, more than 512"))
        }
        // Data on its way to the client: the NIC could not send it again.
        _ = try Array("x".utf8).withUnsafeBytes { try script.engine.write(client, $0, now: script.now, output: &script.output) }
        #expect(attempt().map { "\($0)" }?.contains("unacknowledged") == true)
        script.inject(sequence: 1001 + UInt32(Self.request.count), acknowledgment: iss &+ 2, flags: .ack, window: 502,
                      options: TCPOptions(timestamps: TCPTimestamps(value: 1003, echoReply: 0)))
        // The backend speaks first.
        script.remotePort = 8080
        script.localPort = backendPort
        script.inject(sequence: 5001, acknowledgment: backendISS &+ 1, flags: [.ack, .psh], options: TCPOptions(timestamps: TCPTimestamps(value: 78, echoReply: 0)),
                      payload: Array("hello".utf8))
        script.remotePort = 40000
        script.localPort = 80
        #expect(attempt().map { "\($0)" }?.contains("backend has already sent") == true)
        #expect(!script.output.take().contains { if case .splice = $0 { true } else { false } })
        #expect(script.engine.state(of: client) == .established && script.engine.state(of: backend) == .established)
    }

    @Test("two IPv6 connections: SPLICE6 from the engine's IPv6 address, with a NIC that offers it; IPv6's MSS is full-sized")
    func overIPv6() throws {
        var script = Script(ipv6: true)
        // Linux over IPv6 advertises 1440 (the MTU less 60 bytes of headers).
        script.engine.splicingOnNIC = true
        let (client, _) = try establishPassive(&script, options: TCPOptions(maximumSegmentSize: 1440, windowScale: 7, sackPermitted: true,
                                                                             timestamps: TCPTimestamps(value: 1000, echoReply: 0)))
        let backend = try script.engine.connect(to: script.remoteAddress, port: 8080, now: script.now, output: &script.output)
        let syn = try #require(script.output.takeSegments().first { $0.flags == .syn })
        #expect(syn.ipv6 != nil && syn.tcp.options.maximumSegmentSize == 1440)
        script.remotePort = 8080
        script.localPort = syn.tcp.sourcePort
        script.inject(sequence: 5000, acknowledgment: syn.sequence.rawValue &+ 1, flags: [.syn, .ack],
                      options: TCPOptions(maximumSegmentSize: 1440, windowScale: 7, sackPermitted: true, timestamps: TCPTimestamps(value: 77, echoReply: 0)))
        script.remotePort = 40000
        script.localPort = 80
        func attempt() -> TCPError? {
            do {
                try Self.request.withUnsafeBytes { try script.engine.splice(client, to: backend, head: $0, now: script.now, output: &script.output) }
                return nil
            } catch let error as TCPError { return error } catch { return nil }
        }
        #expect(attempt() == .cannotSplice("the NIC does not splice IPv6 connections"), "a NIC without SPLICE6")
        script.engine.ipv6SplicingOnNIC = true
        #expect(attempt() == nil)
        var spliced: SpliceParameters?
        for item in script.output.take() { if case .splice(_, let parameters, _) = item { spliced = parameters } }
        let parameters = try #require(spliced)
        #expect(parameters.localAddress == IPAddress(Script.local6) && parameters.client.remoteAddress == IPAddress(Script.remote6))
        #expect(parameters.backend.remoteAddress == IPAddress(Script.remote6) && parameters.backend.remotePort == 8080)
        #expect(!parameters.isIPv4 && Command.splice(client.flow, parameters, head: UnsafeRawBufferPointer(start: nil, count: 0)).kind == .spliceIPv6)
        #expect(script.engine.connectionCount == 0 && script.engine.activeSplices == 1)
    }

    @Test("a client over IPv6 and a backend over IPv4 are not spliced (the proxy copies them)")
    func mixedFamilies() throws {
        var script = Script(ipv6: true)
        script.engine.splicingOnNIC = true
        script.engine.ipv6SplicingOnNIC = true
        let (client, _) = try establishPassive(&script)
        let backend = try script.engine.connect(to: IPAddress(Script.remote), port: 8080, now: script.now, output: &script.output)
        #expect(throws: TCPError.cannotSplice("the client and the backend are of two address families")) {
            try Self.request.withUnsafeBytes { try script.engine.splice(client, to: backend, head: $0, now: script.now, output: &script.output) }
        }
    }
}
