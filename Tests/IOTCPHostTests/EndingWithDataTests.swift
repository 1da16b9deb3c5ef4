import Testing
@testable import IOTCPCommon
@testable import IOTCPHost

/// Endings handed over with their data (TEARDOWN with data): a connection that makes one request and gets one
/// response leaves the host at the application's close, and its slot waits for the NIC's FLOW_RELEASED.
@Suite("Endings handed over with the response (TEARDOWN with data, FLOW_RELEASED)")
struct EndingWithDataTests {
    let parameters = HandshakeParameters(
        localInitialSequence: SequenceNumber(0x7000_0000), peerInitialSequence: SequenceNumber(90_000), peerSegmentSize: 1460,
        peerWindowShift: 7, selectiveAcknowledgments: true, timestamps: true, synAckTimestamp: 3_000_000)
    let request = Array("GET /page HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
    let head = Array("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n".utf8)
    let file = OffloadedFileID(rawValue: 0x1_0000_0007)

    /// An engine whose NIC takes endings with data and SEND heads, listening on port 80.
    func script(configuration: TCPConfiguration = TCPConfiguration(), nicTakesData: Bool = true) throws -> Script {
        let script = Script(configuration: configuration)
        script.engine.endingsOnNIC = true
        script.engine.endingsWithDataOnNIC = nicTakesData
        script.engine.nicOffersHeads(true)
        _ = try script.engine.listen(port: 80)
        return script
    }

    /// A client's connection from the NIC with its request, accepted and read; then the response (a head and
    /// 1,000 bytes of a file, the FIN after them) and the close, as the file server does it. Returns the handle
    /// and what the engine emitted for the response and the close.
    func serve(_ script: inout Script, port: UInt16 = 40000, trailer: [UInt8] = []) throws -> (TCPHandle, [Emitted]) {
        script.remotePort = port
        let opened = script.established(parameters, timestamps: TCPTimestamps(value: 777, echoReply: 3_000_000), payload: request)
        #expect(opened.contains { if case .flowOpen = $0 { true } else { false } })
        let handle = try #require(script.engine.accept(TCPListenerID(port: 80)))
        var buffer = [UInt8](repeating: 0, count: 256)
        let read = try buffer.withUnsafeMutableBytes { try script.engine.read(handle, into: $0, now: script.now, output: &script.output) }
        #expect(read == request.count)
        _ = try head.withUnsafeBytes { try script.engine.write(handle, $0, more: true, now: script.now, output: &script.output) }
        _ = try script.engine.writeFile(handle, file: file, offset: 0, length: 1000, shutdownAfter: trailer.isEmpty, now: script.now,
                                        output: &script.output)
        if !trailer.isEmpty {
            _ = try trailer.withUnsafeBytes { try script.engine.write(handle, $0, now: script.now, output: &script.output) }
        }
        try script.engine.close(handle, now: script.now, output: &script.output)
        return (handle, script.output.take())
    }

    func flowOpened(_ emitted: [Emitted]) -> FlowID? {
        emitted.lazy.compactMap { if case .flowOpen(let flow, _) = $0 { flow } else { nil } }.first
    }

    @Test("closed right after its response: one SEND with the head and the FIN, then TEARDOWN with data carrying the head; no control block is left")
    func handedOverWithResponse() throws {
        var script = try script()
        let (handle, emitted) = try serve(&script)
        let sends = emitted.compactMap { if case .sendWithHead(let flow, let range, let head) = $0 { (flow, range, head) } else { nil } }
        let send = try #require(sends.first)
        #expect(sends.count == 1 && send.2 == head && send.1.length == 1000 && send.1.template.lastSegmentFlags.contains(.fin))
        let endings = emitted.compactMap {
            if case .teardownWithData(let flow, let parameters, let unacknowledged, let hostBytes) = $0 { (flow, parameters, unacknowledged, hostBytes) } else { nil }
        }
        let ending = try #require(endings.first)
        let first = parameters.localInitialSequence + 1
        #expect(endings.count == 1 && ending.0 == send.0 && ending.0 == handle.flow)
        #expect(ending.2 == first && ending.3 == head, "everything from the first byte is unacknowledged; the host's bytes are the head")
        #expect(ending.1.finSequence == first + head.count + 1000 && ending.1.state == .finWait1)
        #expect(ending.1.receiveNext == parameters.peerInitialSequence + 1 + request.count && ending.1.timestamps)
        #expect(ending.1.timestampEcho == 777 && ending.1.retransmissionTimeoutMilliseconds >= 200)
        #expect(!emitted.malformed.contains("TEARDOWN"), "no plain TEARDOWN as well")
        #expect(emitted.segments.isEmpty, "no packet of the host's: the head rode in the SEND, the FIN in its template")
        #expect(script.engine.connectionCount == 0 && script.engine.state(of: handle) == nil)
        #expect(script.engine.statistics.endingsHandedOver == 1 && script.engine.statistics.endingsHandedOverWithData == 1)
    }

    @Test("the slot waits for FLOW_RELEASED: no other connection gets its flow id before, the next one may after, and its files are settled then")
    func slotWaitsForRelease() throws {
        var script = try script()
        let (handle, _) = try serve(&script)
        var settled: [TCPHandle] = []
        script.engine.drainEvents({ _, _ in }, settled: { settled.append($0) })
        #expect(settled.isEmpty, "the NIC may still read the file again")
        // A second client while the NIC holds the first one's flow: another id.
        script.remotePort = 40001
        let second = try #require(flowOpened(script.established(parameters, timestamps: TCPTimestamps(value: 800, echoReply: 3_000_000),
                                                                 payload: request)))
        #expect(second.index != handle.flow.index)
        // Released: the slot is free again, and whoever held files for the connection hears it is settled.
        script.engine.flowReleased(handle.flow, reason: .acknowledged)
        script.engine.drainEvents({ _, _ in }, settled: { settled.append($0) })
        #expect(settled == [handle])
        #expect(script.engine.statistics.flowsReleased == 1 && script.engine.statistics.flowsReleasedUnacknowledged == 0)
        script.engine.flowReleased(handle.flow, reason: .acknowledged)
        #expect(script.engine.statistics.flowsReleased == 1, "a repeated release names no retired slot")
        script.remotePort = 40002
        let third = try #require(flowOpened(script.established(parameters, timestamps: TCPTimestamps(value: 900, echoReply: 3_000_000),
                                                                payload: request)))
        #expect(third.index == handle.flow.index && third.generation != handle.flow.generation, "the id's index again, a new generation")
    }

    @Test("a release for another reason is counted; a NIC that starts again releases every slot it held")
    func releasesOnRestart() throws {
        var script = try script()
        let (first, _) = try serve(&script)
        let (second, _) = try serve(&script, port: 40001)
        script.engine.flowReleased(first.flow, reason: .abandoned)
        #expect(script.engine.statistics.flowsReleasedUnacknowledged == 1)
        var settled: [TCPHandle] = []
        script.engine.nicStarted()
        script.engine.drainEvents({ _, _ in }, settled: { settled.append($0) })
        #expect(settled == [first, second])
        script.engine.flowReleased(second.flow, reason: .acknowledged)
        #expect(script.engine.statistics.flowsReleased == 1, "the restart gave the slot back already")
    }

    @Test("kept until acknowledged (then a plain TEARDOWN): with the option off, with a NIC that does not offer it, or with host bytes after the file's")
    func notHandedOverEarly() throws {
        var off = TCPConfiguration()
        off.endingsWithDataOnNIC = false
        var cases = [try script(configuration: off), try script(nicTakesData: false)]
        for index in cases.indices {
            let (handle, emitted) = try serve(&cases[index])
            #expect(!emitted.contains { if case .teardownWithData = $0 { true } else { false } })
            #expect(cases[index].engine.state(of: handle) == .finWait1 && cases[index].engine.connectionCount == 1, "the control block waits for the ACK")
            let fin = parameters.localInitialSequence + 1 + head.count + 1000
            let acked = cases[index].inject(sequence: parameters.peerInitialSequence.rawValue + 1 + UInt32(request.count),
                                            acknowledgment: fin.rawValue + 1, flags: .ack,
                                            options: TCPOptions(timestamps: TCPTimestamps(value: 780, echoReply: 3_000_000)))
            #expect(acked.malformed.contains("TEARDOWN") && cases[index].engine.connectionCount == 0)
        }
        var trailing = try script()
        let (_, emitted) = try serve(&trailing, trailer: Array("\r\n".utf8))
        #expect(!emitted.contains { if case .teardownWithData = $0 { true } else { false } },
                "host bytes after the file's: the NIC's copy would not be contiguous")
        #expect(trailing.engine.connectionCount == 1)
    }
}
