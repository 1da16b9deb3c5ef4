import IOTCPCommon
import Testing
@testable import IOTCPHost

extension Script {
    /// Timestamp options from the peer, echoing `echo`.
    func peerTimestamps(_ value: UInt32, echo: UInt32 = 0) -> TCPOptions {
        TCPOptions(timestamps: TCPTimestamps(value: value, echoReply: echo))
    }

    mutating func writeFile(_ handle: TCPHandle, length: Int, offset: UInt64 = 0) throws -> Int {
        try engine.writeFile(handle, file: OffloadedFileID(slot: 1, generation: 1), offset: offset, length: length,
                             now: now, output: &output)
    }
}

@Suite("Receiving (RFC 9293 §3.10.7.4, RFC 5681 §4.2, RFC 2018)")
struct ReceiveTests {
    @Test("in-order data: every second full segment is acknowledged at once, a lone one after 40 ms")
    func delayedAcknowledgments() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        let full = [UInt8](repeating: 1, count: 1448)
        var sequence: UInt32 = 1001
        let first = script.inject(sequence: sequence, acknowledgment: iss &+ 1, flags: .ack, options: script.peerTimestamps(2000), payload: full)
        #expect(first.segments.isEmpty, "the first full segment's ACK is delayed")
        sequence += 1448
        let second = script.inject(sequence: sequence, acknowledgment: iss &+ 1, flags: .ack, options: script.peerTimestamps(2001), payload: full)
        let ack = try #require(second.segments.first)
        #expect(ack.flags == .ack && ack.acknowledgment == SequenceNumber(sequence + 1448))
        #expect(ack.tcp.options.timestamps?.echoReply == 2001)
        sequence += 1448
        #expect(script.inject(sequence: sequence, acknowledgment: iss &+ 1, flags: .ack, options: script.peerTimestamps(2002), payload: [9]).segments.isEmpty)
        #expect(script.advance(milliseconds: 39).segments.isEmpty)
        let delayed = try #require(script.advance(milliseconds: 1).segments.first)
        #expect(delayed.acknowledgment == SequenceNumber(sequence + 1))

        var buffer = [UInt8](repeating: 0, count: 4000)
        let read = try buffer.withUnsafeMutableBytes { try script.engine.read(handle, into: $0, now: script.now, output: &script.output) }
        #expect(read == 2897)
        let intact = Array(buffer[0..<2896]) == full + full && buffer[2896] == 9
        #expect(intact)
    }

    @Test("a read that opens the window leaves the update to the response, unless the peer is nearly out of window")
    func windowUpdateRidesTheResponse() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        // A request: its ACK is delayed; reading it opens the window from the SYN-ACK's unscaled 65,535 to the
        // whole 256 KiB buffer, but the peer still has room for dozens of segments, so nothing goes at once.
        let request = [UInt8](repeating: 7, count: 100)
        #expect(script.inject(sequence: 1001, acknowledgment: iss &+ 1, flags: [.ack, .psh], options: script.peerTimestamps(2000),
                              payload: request).segments.isEmpty)
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        let read = try buffer.withUnsafeMutableBytes { try script.engine.read(handle, into: $0, now: script.now, output: &script.output) }
        #expect(read == 100 && script.output.take().segments.isEmpty, "no pure window update for a peer with room to send")
        // The response carries the ACK and the opened window; the delayed ACK is then not sent as well.
        let response = [UInt8](repeating: 8, count: 200)
        _ = try response.withUnsafeBytes { try script.engine.write(handle, $0, now: script.now, output: &script.output) }
        let sent = script.output.takeSegments()
        let carrier = try #require(sent.first)
        #expect(sent.count == 1 && carrier.payload == response)
        #expect(carrier.acknowledgment == SequenceNumber(1101) && Int(carrier.tcp.window) << 3 >= 256 * 1024 - 1448)
        #expect(script.advance(milliseconds: 50).segments.isEmpty, "the response took the delayed ACK's place")

        // Without a response the update still goes, on the delayed-ACK timer.
        #expect(script.inject(sequence: 1101, acknowledgment: iss &+ 201, flags: [.ack, .psh], options: script.peerTimestamps(2001),
                              payload: request).segments.isEmpty)
        _ = try buffer.withUnsafeMutableBytes { try script.engine.read(handle, into: $0, now: script.now, output: &script.output) }
        #expect(script.output.take().segments.isEmpty)
        let late = try #require(script.advance(milliseconds: 40).segments.first)
        #expect(late.acknowledgment == SequenceNumber(1201) && late.payload.isEmpty)

        // The peer fills the window to under four segments of room: reading then announces the window at once.
        var sequence: UInt32 = 1201
        let full = [UInt8](repeating: 1, count: 1448)
        for index in 0..<180 {
            script.inject(sequence: sequence, acknowledgment: iss &+ 201, flags: .ack, options: script.peerTimestamps(3000 + UInt32(index)), payload: full)
            sequence += 1448
        }
        var drained = 0
        var immediate: [Segment] = []
        while drained < 180 * 1448 {
            let count = try buffer.withUnsafeMutableBytes { try script.engine.read(handle, into: $0, now: script.now, output: &script.output) }
            drained += count
            if immediate.isEmpty { immediate = script.output.takeSegments() }
        }
        let update = try #require(immediate.first, "a peer with under four segments of window hears of the opened window at once")
        #expect(immediate.count == 1 && update.payload.isEmpty && update.acknowledgment == SequenceNumber(sequence))
        #expect(Int(update.tcp.window) << 3 > 4 * 1448)
    }

    @Test("out-of-order data is ACKed at once with a SACK block; the fill is ACKed cumulatively")
    func outOfOrderWithSACK() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        let a = [UInt8](repeating: 0xA, count: 1000), b = [UInt8](repeating: 0xB, count: 1000), c = [UInt8](repeating: 0xC, count: 1000)
        let gap = script.inject(sequence: 2001, acknowledgment: iss &+ 1, flags: .ack, options: script.peerTimestamps(3000), payload: b)
        let dup = try #require(gap.segments.first)
        #expect(dup.acknowledgment == SequenceNumber(1001))
        #expect(Array(dup.tcp.options.sackBlocks) == [SACKBlock(left: SequenceNumber(2001), right: SequenceNumber(3001))])
        let later = script.inject(sequence: 3001, acknowledgment: iss &+ 1, flags: .ack, options: script.peerTimestamps(3001), payload: c)
        let second = try #require(later.segments.first)
        #expect(Array(second.tcp.options.sackBlocks) == [SACKBlock(left: SequenceNumber(2001), right: SequenceNumber(4001))],
                "adjacent ranges merge")
        #expect(second.tcp.options.timestamps?.echoReply == 1001, "RFC 7323 §4.3: out-of-order segments do not update TS.Recent")
        let fill = script.inject(sequence: 1001, acknowledgment: iss &+ 1, flags: .ack, options: script.peerTimestamps(3002), payload: a)
        let cumulative = try #require(fill.segments.first)
        #expect(cumulative.acknowledgment == SequenceNumber(4001))
        #expect(cumulative.tcp.options.sackBlocks.isEmpty)
        var buffer = [UInt8](repeating: 0, count: 3000)
        _ = try buffer.withUnsafeMutableBytes { try script.engine.read(handle, into: $0, now: script.now, output: &script.output) }
        let intact = buffer == a + b + c
        #expect(intact, "the reassembled bytes are the three segments in order")
    }

    @Test("a segment outside the window is answered with an ACK and dropped (RFC 9293 §3.10.7.4 step 1)")
    func outsideWindow() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        let old = script.inject(sequence: 500, acknowledgment: iss &+ 1, flags: .ack, options: script.peerTimestamps(4000), payload: [1, 2, 3])
        #expect(try #require(old.segments.first).acknowledgment == SequenceNumber(1001))
        let far = script.inject(sequence: 1001 + 10_000_000, acknowledgment: iss &+ 1, flags: .ack, options: script.peerTimestamps(4001), payload: [1])
        #expect(try #require(far.segments.first).acknowledgment == SequenceNumber(1001))
        #expect(script.engine.readableBytes(handle) == 0)
    }

    @Test("PAWS drops a segment with an old timestamp and ACKs (RFC 7323 §5.3)")
    func paws() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        script.inject(sequence: 1001, acknowledgment: iss &+ 1, flags: .ack, options: script.peerTimestamps(5000), payload: [1])
        script.advance(milliseconds: 50)
        let replay = script.inject(sequence: 1002, acknowledgment: iss &+ 1, flags: .ack, options: script.peerTimestamps(4999), payload: [2])
        #expect(try #require(replay.segments.first).acknowledgment == SequenceNumber(1002))
        #expect(script.engine.readableBytes(handle) == 1)
    }

    @Test("a RST that is in the window but not exact gets a challenge ACK; an exact one resets (RFC 5961 §3.2)")
    func resetRules() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        let challenge = script.inject(sequence: 1500, acknowledgment: iss &+ 1, flags: .rst)
        let ack = try #require(challenge.segments.first)
        #expect(ack.flags == .ack && ack.acknowledgment == SequenceNumber(1001))
        #expect(script.engine.state(of: handle) == .established)
        script.inject(sequence: 1001, flags: .rst)
        #expect(script.engine.state(of: handle) == .closed)
        #expect(script.engine.error(of: handle) == .connectionReset)
    }

    @Test("a SYN on an established connection gets a challenge ACK (RFC 5961 §4.2)")
    func synChallenge() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        let answer = script.inject(sequence: 1200, flags: .syn, options: Script.linuxSynOptions(timestamp: 6000))
        let ack = try #require(answer.segments.first)
        #expect(ack.flags == .ack && ack.acknowledgment == SequenceNumber(1001) && ack.sequence == SequenceNumber(iss &+ 1))
        #expect(script.engine.state(of: handle) == .established)
    }
}

@Suite("Sending file data as NIC commands (IO-TCP)")
struct SendCommandTests {
    @Test("a file range leaves as one SEND with the header template the NIC copies into each segment")
    func sendCommand() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        let taken = try script.writeFile(handle, length: 10_000, offset: 4096)
        #expect(taken == 10_000)
        let emitted = script.output.take()
        let (flow, range) = try #require(emitted.sends.first)
        #expect(emitted.sends.count == 1)
        #expect(flow == handle.flow)
        #expect(range.sequence == SequenceNumber(iss &+ 1) && range.length == 10_000 && range.offset == 4096)
        #expect(range.file == OffloadedFileID(slot: 1, generation: 1))
        #expect(range.template.acknowledgmentNumber == SequenceNumber(1001))
        #expect(range.template.maximumSegmentSize == 1448, "1,460 less the 12 bytes of timestamps")
        #expect(range.template.window == UInt16((256 * 1024) >> 3), "the whole buffer, scaled by 3")
        #expect(range.template.lastSegmentFlags == .psh)
        #expect(range.template.timestamps?.echoReply == 1001)
        #expect(emitted.segments.isEmpty, "no byte of the file passes through the host")
    }

    @Test("bytes written with more and the file range after them leave as one SEND with a head; the head is resent by the host")
    func headWithFile() throws {
        var script = Script()
        script.engine.nicOffersHeads(true)
        let (handle, iss) = try establishPassive(&script)
        let head = Array("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n".utf8)
        let written = try head.withUnsafeBytes { try script.engine.write(handle, $0, more: true, now: script.now, output: &script.output) }
        #expect(written == head.count && script.output.take().isEmpty, "with more, the bytes wait for what follows")
        _ = try script.writeFile(handle, length: 5000, offset: 100)
        let emitted = script.output.take()
        #expect(emitted.segments.isEmpty && emitted.sends.isEmpty, "the head does not go alone")
        let (flow, range, sentHead) = try #require(emitted.compactMap { item -> (FlowID, SendRange, [UInt8])? in
            if case .sendWithHead(let flow, let range, let head) = item { (flow, range, head) } else { nil }
        }.first)
        #expect(flow == handle.flow && sentHead == head)
        #expect(range.sequence == SequenceNumber(iss &+ 1) && range.length == 5000 && range.offset == 100)
        #expect(range.template.lastSegmentFlags == .psh && range.template.acknowledgmentNumber == SequenceNumber(1001))
        let info = try #require(script.engine.info(of: handle))
        #expect(info.sendNext == SequenceNumber(iss &+ 1) + head.count + 5000)

        // The whole lot is lost. From the ECHO, a tail loss probe (just over 2 ms: the handshake's RTT is ~0) asks
        // the NIC for the last segment again (RFC 8985 §7.3); nothing answers it.
        script.engine.handleEcho(flow: handle.flow, sequenceEnd: range.sequence + head.count + 5000, nicDelayNanoseconds: 0,
                                 now: script.now, output: &script.output)
        #expect(script.advance(milliseconds: 2).isEmpty)
        let probe = script.advance(milliseconds: 1)
        let dataEnd = SequenceNumber(iss &+ 1) + head.count + 5000
        #expect(probe.segments.isEmpty && probe.retransmits.map(\.0) == [dataEnd - 1448] && probe.retransmits.map(\.1) == [1448],
                "the probe is the last segment, from the NIC's file range")
        #expect(script.engine.info(of: handle)?.lossProbes == 1)
        // Then the RTO (its 200 ms floor, from the probe): the host sends the head again itself, the NIC the file range.
        #expect(script.advance(milliseconds: 199).isEmpty, "one probe only until something is acknowledged")
        let fired = script.advance(milliseconds: 1)
        let resent = try #require(fired.segments.first)
        #expect(resent.sequence == SequenceNumber(iss &+ 1) && resent.payload == head, "the head, from the host's own queue")
        let fileStart = SequenceNumber(iss &+ 1) + head.count
        #expect(fired.segments.count == 1 && fired.retransmits.map(\.0) == [fileStart] && fired.retransmits.map(\.1) == [1448 - UInt32(head.count)],
                "a timeout resends one segment's worth: the head from here, the rest of it from the NIC's file range")
        let acknowledged = script.inject(sequence: 1001, acknowledgment: fileStart.rawValue &+ 1407, flags: .ack,
                                         options: script.peerTimestamps(3000))
        #expect(acknowledged.retransmits.first?.0 == fileStart + 1407, "then the file range goes on from the NIC")

        // Without the NIC's offer the head goes on its own, when flushed.
        var plain = Script()
        let (other, _) = try establishPassive(&plain)
        _ = try head.withUnsafeBytes { try plain.engine.write(other, $0, more: true, now: plain.now, output: &plain.output) }
        _ = try plain.writeFile(other, length: 5000)
        let separate = plain.output.take()
        #expect(separate.segments.map(\.payload) == [head] && separate.sends.map(\.1.length) == [5000])
        // A write with more and nothing after it leaves at the flush the stack makes before it waits.
        var alone = Script()
        alone.engine.nicOffersHeads(true)
        let (third, _) = try establishPassive(&alone)
        _ = try head.withUnsafeBytes { try alone.engine.write(third, $0, more: true, now: alone.now, output: &alone.output) }
        #expect(alone.output.take().isEmpty)
        alone.engine.flush(third, now: alone.now, output: &alone.output)
        #expect(alone.output.takeSegments().map(\.payload) == [head])
    }

    @Test("the initial window (RFC 6928) and the peer's window bound what is sent")
    func windowsBoundSending() throws {
        var script = Script()
        let (handle, _) = try establishPassive(&script, window: 502)
        _ = try script.writeFile(handle, length: 1_000_000)
        let sends = script.output.take().sends
        #expect(sends.map(\.1.length) == [UInt32(10 * 1448)], "ten segments; the peer offers 502 << 7 = 64,256")
    }

    @Test("the retransmission timer starts at the ECHO, not at the SEND (NIC delay is not network delay)")
    func echoArmsTimer() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        _ = try script.writeFile(handle, length: 1448)
        _ = script.output.take()
        // The NIC takes 900 ms (a slow disk) to put it on the wire.
        script.advance(milliseconds: 900)
        script.engine.handleEcho(flow: handle.flow, sequenceEnd: SequenceNumber(iss &+ 1 &+ 1448), nicDelayNanoseconds: 900_000_000, now: script.now, output: &script.output)
        // The handshake's RTT sample was ~0, so the timeout is its 200 ms floor, counted from the ECHO.
        #expect(script.advance(milliseconds: 199).retransmits.isEmpty, "no false timeout from the NIC's 900 ms")
        let fired = script.advance(milliseconds: 1)
        #expect(fired.retransmits.map(\.0) == [SequenceNumber(iss &+ 1)])
        #expect(fired.retransmits.map(\.1) == [1448])
    }

    @Test("after timeouts, an ACK echoing the retransmission's timestamp ends the RTO's backoff (RFC 7323 §4.1)")
    func timestampSampleEndsBackoff() throws {
        for echoRetransmission in [true, false] {
            // Timeouts alone: no tail loss probe before them.
            var configuration = TCPConfiguration()
            configuration.tailLossProbes = false
            var script = Script(configuration: configuration)
            let (handle, iss) = try establishPassive(&script)
            _ = try script.writeFile(handle, length: 2 * 1448)
            for (_, range) in script.output.take().sends {
                script.engine.handleEcho(flow: handle.flow, sequenceEnd: range.sequence + Int(range.length), nicDelayNanoseconds: 0,
                                         now: script.now, output: &script.output)
            }
            // Three timeouts (200, 400, 800 ms): the RTO has backed off to 1.6 s.
            var retransmissionTimestamp: UInt32 = 0
            var timeouts = 0
            for _ in 0..<1400 {
                for case .retransmit(_, _, _, let template) in script.advance(milliseconds: 1) {
                    retransmissionTimestamp = try #require(template.timestamps?.value)
                    timeouts += 1
                }
            }
            #expect(timeouts == 3)
            let backedOff = try #require(script.engine.info(of: handle)).retransmissionTimeout
            #expect(backedOff == 1_600 * Nanoseconds.millisecond)
            // The first segment arrives and is acknowledged 10 ms after the last retransmission left.
            script.advance(milliseconds: 10)
            let echo = echoRetransmission ? retransmissionTimestamp : retransmissionTimestamp &- 1_500
            script.inject(sequence: 1001, acknowledgment: iss &+ 1 &+ 1448, flags: .ack,
                          options: TCPOptions(timestamps: TCPTimestamps(value: 5000, echoReply: echo)))
            let timeout = try #require(script.engine.info(of: handle)).retransmissionTimeout
            if echoRetransmission {
                #expect(timeout == 200 * Nanoseconds.millisecond, "a valid sample of the retransmission: back to the floor")
            } else {
                #expect(timeout == backedOff, "an echo older than the first timeout is the original's: Karn keeps the backoff")
            }
        }
    }

    @Test("without an ECHO the timer still fires, after the allowance for the NIC")
    func missingEcho() throws {
        var script = Script()
        let (handle, _) = try establishPassive(&script)
        _ = try script.writeFile(handle, length: 1448)
        _ = script.output.take()
        #expect(script.advance(milliseconds: 1199).retransmits.isEmpty)
        #expect(script.advance(milliseconds: 1).retransmits.count == 1)
    }

    @Test("file data handed to the NIC stops at the un-ECHOed limit (TCP small queues) and resumes with each ECHO")
    func smallQueuesOnTheNIC() throws {
        var configuration = TCPConfiguration()
        configuration.maximumUnechoedBytes = 100_000
        configuration.initialWindowSegments = 1000  // the congestion window is not what limits here
        var script = Script(configuration: configuration)
        let (handle, _) = try establishPassive(&script, window: 65535)
        _ = try script.writeFile(handle, length: 1_000_000)
        let first = script.output.take().sends
        #expect(first.reduce(0) { $0 + Int($1.1.length) } == 100_000, "\(first.map(\.1.length))")
        #expect(script.advance(milliseconds: 10).sends.isEmpty, "nothing more until the NIC says it is on the wire")
        let range = try #require(first.first?.1)
        script.engine.handleEcho(flow: handle.flow, sequenceEnd: range.sequence + Int(range.length), nicDelayNanoseconds: 0,
                                 now: script.now, output: &script.output)
        let next = script.output.take().sends
        #expect(next.reduce(0) { $0 + Int($1.1.length) } == Int(range.length), "the ECHOed bytes' worth follows at once")
        #expect(next.first?.1.sequence == range.sequence + Int(range.length))
    }

    @Test("bytes written after file data that filled the NIC's share go out whole, not a byte at a time")
    func bytesAfterAFullSmallQueue() throws {
        var configuration = TCPConfiguration()
        configuration.maximumUnechoedBytes = 100_000
        configuration.initialWindowSegments = 1000
        var script = Script(configuration: configuration)
        let (handle, _) = try establishPassive(&script, window: 65535)
        _ = try script.writeFile(handle, length: 100_000)
        #expect(script.output.take().sends.reduce(0) { $0 + Int($1.1.length) } == 100_000)
        // The next response's head, while all of the file is still waiting for its ECHO.
        let head = [UInt8](repeating: 0x48, count: 500)
        _ = try head.withUnsafeBytes { try script.engine.write(handle, $0, now: script.now, output: &script.output) }
        let segments = script.output.take().segments.filter { !$0.payload.isEmpty }
        #expect(segments.map(\.payload.count) == [500], "\(segments.map(\.payload.count))")
    }

    @Test("ACKD goes to the NIC every 64 KiB acknowledged and when everything queued is acknowledged")
    func acknowledgedBatching() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script, window: 65535)
        _ = try script.writeFile(handle, length: 200_000)
        var reported: [SequenceNumber] = []
        var acked = iss &+ 1
        var sentEnd = acked
        let end = iss &+ 1 &+ 200_000
        var rounds = 0
        var emitted = script.output.take()
        while acked != end && rounds < 1000 {
            rounds += 1
            for (_, range) in emitted.sends {
                script.engine.handleEcho(flow: handle.flow, sequenceEnd: range.sequence + Int(range.length), nicDelayNanoseconds: 0, now: script.now, output: &script.output)
                sentEnd = (range.sequence + Int(range.length)).rawValue
            }
            reported += emitted.acknowledgedCommands
            // The peer acknowledges every second segment of what was sent.
            acked = SequenceNumber(sentEnd) - SequenceNumber(acked) > 2896 ? acked &+ 2896 : sentEnd
            emitted = script.advance(milliseconds: 1)
            emitted += script.inject(sequence: 1001, acknowledgment: acked, flags: .ack, window: 65535, options: script.peerTimestamps(7000 + UInt32(rounds)))
        }
        reported += emitted.acknowledgedCommands
        #expect(acked == end)
        #expect(reported.last == SequenceNumber(end))
        #expect(reported.count == 4, "three at 64 KiB steps and one at the end: \(reported.map { $0 - SequenceNumber(iss &+ 1) })")
        for (a, b) in zip(reported, reported.dropFirst()) { #expect(b - a >= 64 * 1024 || b == SequenceNumber(end)) }
    }

    @Test("three duplicate ACKs trigger a fast retransmit of the first unacknowledged segment (RFC 5681 §3.2)")
    func fastRetransmit() throws {
        var configuration = TCPConfiguration()
        configuration.selectiveAcknowledgments = false
        var script = Script(configuration: configuration)
        let (handle, iss) = try establishPassive(&script, options: TCPOptions(maximumSegmentSize: 1460, windowScale: 7, timestamps: TCPTimestamps(value: 1000, echoReply: 0)))
        _ = try script.writeFile(handle, length: 14_480)
        let send = try #require(script.output.take().sends.first)
        script.engine.handleEcho(flow: handle.flow, sequenceEnd: send.1.sequence + Int(send.1.length), nicDelayNanoseconds: 0, now: script.now, output: &script.output)
        let una = iss &+ 1 &+ 1448
        script.inject(sequence: 1001, acknowledgment: una, flags: .ack, window: 502, options: script.peerTimestamps(8000))
        _ = script.output.take()
        var retransmitted: [(SequenceNumber, UInt32)] = []
        for n in 1...3 {
            retransmitted += script.inject(sequence: 1001, acknowledgment: una, flags: .ack, window: 502, options: script.peerTimestamps(8000 + UInt32(n))).retransmits
            if n < 3 { #expect(retransmitted.isEmpty) }
        }
        #expect(retransmitted.map(\.0) == [SequenceNumber(una)])
        #expect(retransmitted.map(\.1) == [1448])
    }

    @Test("a fast retransmit never asks for more than was sent (less than an MSS outstanding)")
    func retransmitOnlyWhatWasSent() throws {
        var configuration = TCPConfiguration()
        configuration.selectiveAcknowledgments = false
        var script = Script(configuration: configuration)
        let (handle, iss) = try establishPassive(&script, options: TCPOptions(maximumSegmentSize: 1460, windowScale: 7, timestamps: TCPTimestamps(value: 1000, echoReply: 0)))
        _ = try script.writeFile(handle, length: 3 * 1448 + 182)
        let send = try #require(script.output.take().sends.first)
        #expect(send.1.length == 3 * 1448 + 182)
        script.engine.handleEcho(flow: handle.flow, sequenceEnd: send.1.sequence + Int(send.1.length), nicDelayNanoseconds: 0, now: script.now, output: &script.output)
        // Everything but the last 182 bytes is acknowledged, then three duplicate ACKs.
        let una = iss &+ 1 &+ 3 * 1448
        script.inject(sequence: 1001, acknowledgment: una, flags: .ack, window: 502, options: script.peerTimestamps(8000))
        var retransmitted: [(SequenceNumber, UInt32)] = []
        for n in 1...3 {
            retransmitted += script.inject(sequence: 1001, acknowledgment: una, flags: .ack, window: 502, options: script.peerTimestamps(8000 + UInt32(n))).retransmits
        }
        #expect(retransmitted.map(\.0) == [SequenceNumber(una)])
        #expect(retransmitted.map(\.1) == [182])
        #expect(script.engine.info(of: handle)?.sendMaximum == SequenceNumber(una &+ 182))
    }

    @Test("with SACK, the holes the scoreboard calls lost are retransmitted (RFC 6675)")
    func sackRecovery() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        _ = try script.writeFile(handle, length: 14_480)
        let send = try #require(script.output.take().sends.first)
        script.engine.handleEcho(flow: handle.flow, sequenceEnd: send.1.sequence + Int(send.1.length), nicDelayNanoseconds: 0, now: script.now, output: &script.output)
        let base = iss &+ 1
        // Segments 0 and 2 are lost; the peer SACKs 1 and 3...9.
        func sack(_ blocks: [(Int, Int)]) -> TCPOptions {
            var options = script.peerTimestamps(9000)
            options.sackBlocks = SACKBlockList(blocks.map { SACKBlock(left: SequenceNumber(base &+ UInt32($0.0 * 1448)), right: SequenceNumber(base &+ UInt32($0.1 * 1448))) })
            return options
        }
        var retransmitted: [SequenceNumber] = []
        retransmitted += script.inject(sequence: 1001, acknowledgment: base, flags: .ack, window: 502, options: sack([(1, 2)])).retransmits.map(\.0)
        retransmitted += script.inject(sequence: 1001, acknowledgment: base, flags: .ack, window: 502, options: sack([(3, 5), (1, 2)])).retransmits.map(\.0)
        retransmitted += script.inject(sequence: 1001, acknowledgment: base, flags: .ack, window: 502, options: sack([(3, 10), (1, 2)])).retransmits.map(\.0)
        #expect(retransmitted.contains(SequenceNumber(base)), "segment 0 is lost")
        #expect(retransmitted.contains(SequenceNumber(base &+ 2 * 1448)), "segment 2 is lost: three segments SACKed above it")
        #expect(!retransmitted.contains(SequenceNumber(base &+ 1448)), "SACKed data is not sent again")
    }

    @Test("a zero window is probed with backoff and sending resumes when it opens (RFC 9293 §3.8.6.1)")
    func zeroWindow() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script, window: 0)
        _ = try script.writeFile(handle, length: 5000)
        #expect(script.output.take().sends.isEmpty)
        var probes: [Segment] = []
        for _ in 0..<30 { probes += script.advance(milliseconds: 100).segments }
        #expect(probes.count >= 2)
        for probe in probes {
            #expect(probe.sequence == SequenceNumber(iss), "a probe carries an old sequence number the peer must answer")
            #expect(probe.payload.isEmpty)
        }
        let opened = script.inject(sequence: 1001, acknowledgment: iss &+ 1, flags: .ack, window: 502, options: script.peerTimestamps(9500))
        #expect(opened.sends.map(\.1.length) == [5000])
    }
}
