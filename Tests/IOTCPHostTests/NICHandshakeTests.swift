import Testing
@testable import IOTCPCommon
@testable import IOTCPHost

extension Script {
    /// Hands the engine an ESTABLISHED from the NIC: `parameters` and the client's ACK built from the rest.
    @discardableResult
    mutating func established(
        _ parameters: HandshakeParameters, acknowledgment: SequenceNumber? = nil, window: UInt16 = 502, timestamps: TCPTimestamps? = nil,
        payload: [UInt8] = []
    ) -> [Emitted] {
        let tcp = TCPRepr(
            sourcePort: remotePort, destinationPort: localPort, sequenceNumber: parameters.peerInitialSequence + 1,
            acknowledgmentNumber: acknowledgment ?? parameters.localInitialSequence + 1, flags: payload.isEmpty ? .ack : [.ack, .psh],
            window: window, options: TCPOptions(timestamps: timestamps))
        var packet = [UInt8](repeating: 0, count: 20 + tcp.headerLength + payload.count)
        packet.withUnsafeMutableBytes { buffer in
            try! IPv4Repr(source: Self.remote, destination: Self.local, protocol: .tcp, payloadLength: tcp.headerLength + payload.count).emit(into: buffer)
            let segment = UnsafeMutableRawBufferPointer(rebasing: buffer[20...])
            let length = try! tcp.emitHeader(into: segment)
            for (index, byte) in payload.enumerated() { segment[length + index] = byte }
            TCPRepr.fillChecksum(segment: segment, source: Self.remote, destination: Self.local)
        }
        packet.withUnsafeBytes { engine.handleEstablished(parameters, packet: $0, now: now, output: &output) }
        return output.take()
    }
}

@Suite("Handshakes completed on the NIC (ESTABLISHED)")
struct NICHandshakeTests {
    let parameters = HandshakeParameters(
        localInitialSequence: SequenceNumber(0x7000_0000), peerInitialSequence: SequenceNumber(90_000), peerSegmentSize: 1400,
        peerWindowShift: 7, selectiveAcknowledgments: true, timestamps: true, synAckTimestamp: 3_000_000)

    @Test("the connection starts established from the parameters: ISN, MSS, window scale, SACK, and TSvals after the SYN-ACK's")
    func establishes() throws {
        var script = Script()
        _ = try script.engine.listen(port: 80)
        let request = Array("GET / HTTP/1.1\r\n\r\n".utf8)
        let emitted = script.established(parameters, window: 100, timestamps: TCPTimestamps(value: 777, echoReply: 3_000_000), payload: request)
        #expect(emitted.contains { if case .flowOpen = $0 { true } else { false } }, "the NIC is told the flow")
        let handle = try #require(script.engine.accept(TCPListenerID(port: 80)))
        #expect(script.engine.state(of: handle) == .established && script.engine.readableBytes(handle) == request.count,
                "the request is readable at the accept")
        #expect(script.engine.statistics.handshakesFromNIC == 1 && script.engine.statistics.synCookiesSent == 0)
        let info = try #require(script.engine.info(of: handle))
        #expect(info.segmentSize == 1400 - 12, "the cookie's MSS less the timestamp option")
        // 500 ms later, a reply: its TSval continues from the SYN-ACK's, its sequence from the cookie.
        script.now = script.now + 500 * Nanoseconds.millisecond
        let reply = Array("HTTP/1.1 200 OK\r\n\r\n".utf8)
        _ = try reply.withUnsafeBytes { try script.engine.write(handle, $0, now: script.now, output: &script.output) }
        let segment = try #require(script.output.take().segments.first { !$0.payload.isEmpty })
        #expect(segment.sequence == parameters.localInitialSequence + 1)
        #expect(segment.acknowledgment == parameters.peerInitialSequence + 1 + request.count)
        #expect(segment.tcp.options.timestamps == TCPTimestamps(value: 3_000_500, echoReply: 777))
        #expect(segment.tcp.options.sackBlocks.isEmpty)
        #expect(script.engine.info(of: handle)?.sendWindow == 100 << 7, "the client's window, scaled by its shift")
    }

    @Test("the handshake's round trip the NIC measured is the first RTT sample: the first flight's RTO is 200 ms, not 1 s")
    func handshakeRoundTripSample() throws {
        for roundTrip: UInt32 in [0, 5_000] {
            var script = Script()
            _ = try script.engine.listen(port: 80)
            var measured = parameters
            measured.handshakeRoundTripMicroseconds = roundTrip
            script.established(measured, timestamps: TCPTimestamps(value: 777, echoReply: 3_000_000))
            let handle = try #require(script.engine.accept(TCPListenerID(port: 80)))
            let info = try #require(script.engine.info(of: handle))
            if roundTrip == 0 {
                #expect(info.smoothedRTT == 0 && info.retransmissionTimeout == Nanoseconds.second, "unknown: RFC 6298's initial 1 s")
            } else {
                #expect(info.smoothedRTT == 5 * Nanoseconds.millisecond && info.retransmissionTimeout == 200 * Nanoseconds.millisecond)
            }
        }
        // An ACK the client sent again (its first was dropped at a full accept queue, say) dates the SYN-ACK
        // at least a retransmission timeout back: a sample as long as the shortest RTO is not taken.
        var late = Script()
        _ = try late.engine.listen(port: 80)
        var resent = parameters
        resent.handshakeRoundTripMicroseconds = 200_000
        late.established(resent, timestamps: TCPTimestamps(value: 777, echoReply: 3_000_000))
        let lateHandle = try #require(late.engine.accept(TCPListenerID(port: 80)))
        #expect(late.engine.info(of: lateHandle)?.retransmissionTimeout == Nanoseconds.second)
        #expect(late.engine.info(of: lateHandle)?.smoothedRTT == 0)
        // Without timestamps the NIC cannot measure it, and a value is not believed.
        var script = Script()
        _ = try script.engine.listen(port: 80)
        var untimed = parameters
        untimed.timestamps = false
        untimed.handshakeRoundTripMicroseconds = 5_000
        script.established(untimed)
        let handle = try #require(script.engine.accept(TCPListenerID(port: 80)))
        #expect(script.engine.info(of: handle)?.retransmissionTimeout == Nanoseconds.second)
    }

    @Test("refused: an ACK that is not the parameters' and a port no longer listening (that one is reset)")
    func refusals() throws {
        var script = Script()
        _ = try script.engine.listen(port: 80)
        var emitted = script.established(parameters, acknowledgment: parameters.localInitialSequence + 2)
        #expect(emitted.isEmpty && script.engine.connectionCount == 0 && script.engine.statistics.refusedHandshakes == 1)
        script.localPort = 81
        emitted = script.established(parameters)
        #expect(emitted.segments.first?.flags == .rst && script.engine.connectionCount == 0)
        #expect(script.engine.statistics.refusedHandshakes == 2)
    }

    @Test("a second ESTABLISHED for the same connection is its next segment; a full accept queue drops it for the client to resend")
    func duplicatesAndOverflow() throws {
        var script = Script()
        _ = try script.engine.listen(port: 80, backlog: 1)
        script.established(parameters)
        script.established(parameters, payload: Array("abc".utf8))
        #expect(script.engine.connectionCount == 1 && script.engine.statistics.handshakesFromNIC == 1)
        let handle = try #require(script.engine.accept(TCPListenerID(port: 80)))
        #expect(script.engine.readableBytes(handle) == 3)
        // The application has not accepted the next one, and the backlog is 1.
        script.remotePort = 40001
        script.established(parameters)
        script.remotePort = 40002
        let dropped = script.established(parameters)
        #expect(dropped.isEmpty && script.engine.statistics.acceptQueueOverflows == 1 && script.engine.connectionCount == 2)
    }

    @Test("an ESTABLISHED or a segment for a connection just handed to the NIC for its ending goes back to the NIC (REDELIVER), never a second connection or a RST")
    func afterHandOver() throws {
        var script = Script()
        script.engine.endingsOnNIC = true
        _ = try script.engine.listen(port: 80)
        script.established(parameters, timestamps: TCPTimestamps(value: 777, echoReply: 3_000_000))
        let handle = try #require(script.engine.accept(TCPListenerID(port: 80)))
        try script.engine.close(handle, now: script.now, output: &script.output)
        let handedOver = script.output.take()
        #expect(handedOver.contains { if case .other(let text) = $0 { text.hasPrefix("TEARDOWN") } else { false } })
        #expect(script.engine.connectionCount == 0 && script.engine.statistics.endingsHandedOver == 1)
        // The NIC forwarded a duplicate of the handshake's ACK before it took the TEARDOWN.
        let emitted = script.established(parameters, timestamps: TCPTimestamps(value: 778, echoReply: 3_000_000), payload: Array("GET".utf8))
        #expect(emitted.malformed == ["REDELIVER"] && script.engine.connectionCount == 0 && script.engine.statistics.segmentsAfterHandOver == 1,
                "given back to the NIC, which has the connection now")
        // So is a plain segment (the client's FIN, say): no RST for a connection the NIC is ending.
        let segment = script.inject(sequence: parameters.peerInitialSequence.rawValue + 1, acknowledgment: parameters.localInitialSequence.rawValue + 2,
                                    flags: [.fin, .ack])
        #expect(segment.malformed == ["REDELIVER"] && script.engine.statistics.segmentsAfterHandOver == 2)
        // And the client's RST: the NIC's side must hear it (dropping it here would leave the NIC waiting).
        let reset = script.inject(sequence: parameters.peerInitialSequence.rawValue + 2, acknowledgment: 0, flags: [.rst])
        #expect(reset.malformed == ["REDELIVER"] && script.engine.statistics.segmentsAfterHandOver == 3)
        // A new connection on the same port (the NIC ended the old one's TIME-WAIT for its SYN): another ISN.
        var reused = parameters
        reused.peerInitialSequence = parameters.peerInitialSequence + 5_000_000
        script.established(reused, timestamps: TCPTimestamps(value: 900, echoReply: 3_000_000), payload: Array("GET".utf8))
        let second = try #require(script.engine.accept(TCPListenerID(port: 80)), "a new incarnation is a new connection")
        #expect(script.engine.readableBytes(second) == 3 && script.engine.statistics.handshakesFromNIC == 2)
    }

    @Test("into TIME-WAIT: a delayed duplicate of the old handshake's ACK does not reopen it; a newer TSval does (RFC 6191)")
    func timeWaitNeedsEvidence() throws {
        var script = Script()
        _ = try script.engine.listen(port: 80)
        script.established(parameters, timestamps: TCPTimestamps(value: 777, echoReply: 3_000_000))
        let handle = try #require(script.engine.accept(TCPListenerID(port: 80)))
        try script.engine.close(handle, now: script.now, output: &script.output)
        let fin = try #require(script.output.take().segments.first { $0.flags.contains(.fin) })
        script.inject(sequence: parameters.peerInitialSequence.rawValue + 1, acknowledgment: fin.sequence.rawValue + 1, flags: [.fin, .ack],
                      options: TCPOptions(timestamps: TCPTimestamps(value: 800, echoReply: fin.tcp.options.timestamps!.value)))
        #expect(script.engine.state(of: handle) == .timeWait)
        let duplicate = script.established(parameters, timestamps: TCPTimestamps(value: 777, echoReply: 3_000_000))
        #expect(script.engine.state(of: handle) == .timeWait && script.engine.statistics.timeWaitReopened == 0)
        #expect(duplicate.segments.allSatisfy { !$0.flags.contains(.rst) })
        var fresh = parameters
        fresh.peerInitialSequence = fresh.peerInitialSequence + 1_000_000
        script.established(fresh, timestamps: TCPTimestamps(value: 900, echoReply: 3_000_000))
        #expect(script.engine.statistics.timeWaitReopened == 1 && script.engine.statistics.handshakesFromNIC == 2)
        #expect(script.engine.state(of: handle) == nil, "the old incarnation is gone")
    }
}
