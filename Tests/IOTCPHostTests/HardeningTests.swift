import IOTCPCommon
import Testing
@testable import IOTCPHost

/// RFC corners and bounded state, each seen wrong on the wire once and each checked here against what
/// the RFC (and Linux, on the same probe) does.
@Suite("TCP corners and bounded state (RFC 9293, 6298, 5961)")
struct TCPHardeningTests {
    @Test("a segment with neither SYN nor ACK to a listening port is dropped unanswered (§3.10.7.2, LISTEN, fourth)")
    func listenStepFour() throws {
        var script = Script()
        _ = try script.engine.listen(port: 80)
        let plain = script.inject(sequence: 500, flags: [], payload: Array("hello".utf8))
        let push = script.inject(sequence: 500, flags: .psh)
        #expect(plain.segments.isEmpty && push.segments.isEmpty)
        #expect(script.engine.statistics.droppedAtListener == 2)
        // An ACK to a listener still gets its RST (§3.10.7.2, second).
        #expect(script.inject(sequence: 500, acknowledgment: 77, flags: .ack).segments.first?.flags == .rst)
    }

    @Test("a SYN-ACK is sent again at most maximumSynRetransmissions times, then the half-open entry is dropped")
    func synAckRetries() throws {
        var script = Script()
        _ = try script.engine.listen(port: 80)
        let synAck = try #require(script.inject(sequence: 1000, flags: .syn, options: Script.linuxSynOptions()).segments.first)
        var resent = 0
        for _ in 0..<300 {
            resent += script.advance(milliseconds: 1000).segments.filter { $0.flags == [.syn, .ack] && $0.sequence == synAck.sequence }.count
        }
        #expect(resent == 5, "Linux sends 5 more; \(resent) here")
        #expect(script.engine.connectionCount == 0, "and the backlog slot is free again")
    }

    @Test("after a SYN-ACK had to be sent again, data starts with a 3 s RTO (RFC 6298 §5.7), not the backed-off one")
    func threeSecondRTOAfterSynTimeout() throws {
        var script = Script()
        _ = try script.engine.listen(port: 80)
        let synAck = try #require(script.inject(sequence: 1000, flags: .syn, options: Script.linuxSynOptions()).segments.first)
        script.advance(milliseconds: 1000)  // the SYN-ACK again (RTO 1 s, now backed off to 2 s)
        let iss = synAck.sequence.rawValue
        script.inject(sequence: 1001, acknowledgment: iss &+ 1, flags: .ack, window: 502, options: script.peerTimestamps(1001, echo: synAck.tcp.options.timestamps!.value))
        let handle = try #require(script.engine.accept(TCPListenerID(port: 80)))
        #expect(script.engine.info(of: handle)?.retransmissionTimeout == 3 * Nanoseconds.second)
    }

    @Test("a connection made from a SYN cookie takes the client's first request: its window is what the SYN-ACK offered")
    func cookieConnectionWindow() throws {
        var script = Script()
        _ = try script.engine.listen(port: 80, backlog: 1)
        script.inject(sequence: 100, flags: .syn, options: Script.linuxSynOptions(), from: 1111)
        script.remotePort = 2222
        let synAck = try #require(script.inject(sequence: 5000, flags: .syn, options: Script.linuxSynOptions(timestamp: 500)).segments.first)
        #expect(synAck.tcp.window == 65535)
        let echo = synAck.tcp.options.timestamps!.value
        script.inject(sequence: 5001, acknowledgment: synAck.sequence.rawValue &+ 1, flags: .ack, options: script.peerTimestamps(501, echo: echo))
        let request = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        let answer = script.inject(sequence: 5001, acknowledgment: synAck.sequence.rawValue &+ 1, flags: [.ack, .psh],
                                   options: script.peerTimestamps(502, echo: echo), payload: request)
        var accepted: TCPHandle?
        while let handle = script.engine.accept(TCPListenerID(port: 80)) { accepted = handle }
        let handle = try #require(accepted)
        #expect(script.engine.readableBytes(handle) == request.count, "the request was taken, not dropped outside a zero window")
        #expect(!answer.segments.contains { $0.acknowledgment == SequenceNumber(5001) }, "no duplicate ACK asking for it again")
    }

    @Test("data arriving after the application closed is answered with a RST (§3.6), not silently dropped")
    func dataAfterClose() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        try script.engine.close(handle, now: script.now, output: &script.output)
        _ = script.output.take()
        let reply = script.inject(sequence: 1001, acknowledgment: iss &+ 1, flags: [.ack, .psh], options: script.peerTimestamps(2000),
                                  payload: Array("more".utf8))
        #expect(reply.segments.contains { $0.flags.contains(.rst) })
        #expect(script.engine.state(of: handle) == nil)
    }

    @Test("an orphaned FIN-WAIT-2 (the peer ACKed our FIN and never closes) ends after finWait2Timeout")
    func orphanedFinWait2() throws {
        var configuration = TCPConfiguration()
        configuration.finWait2Timeout = 5 * Nanoseconds.second
        var script = Script(configuration: configuration)
        let (handle, iss) = try establishPassive(&script)
        try script.engine.close(handle, now: script.now, output: &script.output)
        script.inject(sequence: 1001, acknowledgment: iss &+ 2, flags: .ack, options: script.peerTimestamps(2000))
        #expect(script.engine.state(of: handle) == .finWait2)
        script.advance(milliseconds: 4_900)
        #expect(script.engine.state(of: handle) == .finWait2)
        script.advance(milliseconds: 200)
        #expect(script.engine.state(of: handle) == nil && script.engine.connectionCount == 0)
        // A half-closed connection the application still holds may stay in FIN-WAIT-2 (it can still read).
        let (open, openIss) = try establishPassive(&script)
        try script.engine.shutdownWrite(open, now: script.now, output: &script.output)
        script.inject(sequence: 1001, acknowledgment: openIss &+ 2, flags: .ack, options: script.peerTimestamps(3000))
        script.advance(milliseconds: 10_000)
        #expect(script.engine.state(of: open) == .finWait2)
    }

    @Test("the window closes with data in flight: probes after the RTO, the data again once it opens (MUST-36/37)")
    func zeroWindowWithDataInFlight() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script, window: 65535)
        _ = try script.writeFile(handle, length: 100_000)
        let sends = script.output.take().sends
        let sent = sends.reduce(0) { $0 + Int($1.1.length) }
        for (_, range) in sends {
            script.engine.handleEcho(flow: handle.flow, sequenceEnd: range.sequence + Int(range.length), nicDelayNanoseconds: 0,
                                     now: script.now, output: &script.output)
        }
        // Part of the flight acknowledged, with a zero window: the rest is beyond it.
        script.inject(sequence: 1001, acknowledgment: iss &+ 1 &+ 4000, flags: .ack, window: 0, options: script.peerTimestamps(2000))
        var probes = 0
        for _ in 0..<20 {
            probes += script.advance(milliseconds: 100).segments.filter { $0.sequence == SequenceNumber(iss &+ 4000) && $0.payload.isEmpty }.count
        }
        #expect(probes >= 1, "a zero-window probe went out within 2 s")
        #expect(sent > 4000)
        let opened = script.inject(sequence: 1001, acknowledgment: iss &+ 1 &+ 4000, flags: .ack, window: 502, options: script.peerTimestamps(2001))
        let again = opened.retransmits + script.output.take().retransmits
        #expect(again.first?.0 == SequenceNumber(iss &+ 1 &+ 4000), "what was in flight is sent again once the window opens")
    }

    @Test("a peer that closes its window and then vanishes is given up after maximumRetransmissions unanswered probes")
    func vanishedZeroWindowPeer() throws {
        var configuration = TCPConfiguration()
        configuration.maximumRetransmissions = 4
        var script = Script(configuration: configuration)
        let (handle, iss) = try establishPassive(&script, window: 65535)
        _ = try script.writeFile(handle, length: 1000)
        let sends = script.output.take().sends
        for (_, range) in sends {
            script.engine.handleEcho(flow: handle.flow, sequenceEnd: range.sequence + Int(range.length), nicDelayNanoseconds: 0,
                                     now: script.now, output: &script.output)
        }
        script.inject(sequence: 1001, acknowledgment: iss &+ 1 &+ 1000, flags: .ack, window: 0, options: script.peerTimestamps(2000))
        _ = try script.writeFile(handle, length: 5000)
        var elapsed = 0
        while script.engine.state(of: handle) == .established && elapsed < 600_000 {
            script.advance(milliseconds: 1000)
            elapsed += 1000
        }
        #expect(script.engine.error(of: handle) == .timedOut, "given up after \(elapsed / 1000) s")
    }

    @Test("a closed connection whose peer shut its window and vanished is given up after the orphan limit of probes")
    func vanishedZeroWindowOrphan() throws {
        var configuration = TCPConfiguration()
        configuration.maximumRetransmissions = 15
        configuration.maximumOrphanRetransmissions = 3
        var script = Script(configuration: configuration)
        let (handle, iss) = try establishPassive(&script, window: 65535)
        _ = try script.writeFile(handle, length: 1000)
        for (_, range) in script.output.take().sends {
            script.engine.handleEcho(flow: handle.flow, sequenceEnd: range.sequence + Int(range.length), nicDelayNanoseconds: 0,
                                     now: script.now, output: &script.output)
        }
        script.inject(sequence: 1001, acknowledgment: iss &+ 1 &+ 1000, flags: .ack, window: 0, options: script.peerTimestamps(2000))
        _ = try script.writeFile(handle, length: 5000)
        try script.engine.close(handle, now: script.now, output: &script.output)
        var probes = 0
        var elapsed = 0
        while script.engine.state(of: handle) != nil && script.engine.state(of: handle) != .closed && elapsed < 600_000 {
            probes += script.advance(milliseconds: 100).segments.filter { $0.sequence == SequenceNumber(iss &+ 1000) && $0.payload.isEmpty }.count
            elapsed += 100
        }
        #expect(probes == 3, "three probes, the orphan limit, not fifteen")
        #expect(elapsed < 60_000, "given up after \(elapsed / 1000) s, not minutes")
    }

    @Test("a usable window under a segment and under half the largest offered is not used at once (MUST-38)")
    func senderSillyWindowAvoidance() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)  // window 502 << 7 = 64,256 bytes
        _ = try script.writeFile(handle, length: 2_000_000)
        let first = script.output.take().sends
        let sent = first.reduce(0) { $0 + Int($1.1.length) }
        #expect(sent > 0)
        for (_, range) in first {
            script.engine.handleEcho(flow: handle.flow, sequenceEnd: range.sequence + Int(range.length), nicDelayNanoseconds: 0,
                                     now: script.now, output: &script.output)
        }
        _ = script.output.take()
        // Everything acknowledged, but the window is now 256 bytes (2 << 7): a 256-byte SEND would be silly.
        let small = script.inject(sequence: 1001, acknowledgment: iss &+ 1 &+ UInt32(sent), flags: .ack, window: 2,
                                  options: script.peerTimestamps(2000))
        #expect(small.sends.isEmpty, "no segment for a 256-byte window with 2 MB queued")
        // Nothing in flight, so no ACK will come by itself: the persist timer sends what fits.
        var late: [(FlowID, SendRange)] = []
        for _ in 0..<30 where late.isEmpty { late += script.advance(milliseconds: 100).sends }
        #expect(late.map(\.1.length) == [256], "the override timeout sends what fits")
        #expect(late.first?.1.sequence == SequenceNumber(iss &+ 1 &+ UInt32(sent)))
        // A window that opens to half the largest is used at once, as far as the congestion window allows.
        let end = iss &+ 1 &+ UInt32(sent) &+ 256
        let opened = script.inject(sequence: 1001, acknowledgment: end, flags: .ack, window: 251,
                                   options: script.peerTimestamps(2001))
        #expect(opened.sends.reduce(0) { $0 + Int($1.1.length) } >= 10 * 1460)
    }

    @Test("a connection waiting out TIME-WAIT holds no send or receive buffer")
    func timeWaitHoldsNoBuffers() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        let request = Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        script.inject(sequence: 1001, acknowledgment: iss &+ 1, flags: [.ack, .psh], options: script.peerTimestamps(1500),
                      payload: request)
        var buffer = [UInt8](repeating: 0, count: 256)
        let read = try buffer.withUnsafeMutableBytes { try script.engine.read(handle, into: $0, now: script.now, output: &script.output) }
        #expect(read == request.count)
        let reply = Array("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".utf8)
        let written = try reply.withUnsafeBytes { try script.engine.write(handle, $0, now: script.now, output: &script.output) }
        #expect(written == reply.count)
        let fin = UInt32(1001 + request.count)
        script.inject(sequence: fin, acknowledgment: iss &+ 1 &+ UInt32(reply.count), flags: .ack, options: script.peerTimestamps(1600))
        #expect(script.engine.bufferBytes(of: handle) ?? 0 > 0, "both rings were in use")
        try script.engine.close(handle, now: script.now, output: &script.output)
        script.inject(sequence: fin, acknowledgment: iss &+ 2 &+ UInt32(reply.count), flags: [.fin, .ack], options: script.peerTimestamps(1700))
        #expect(script.engine.state(of: handle) == .timeWait)
        #expect(script.engine.bufferBytes(of: handle) == 0)
    }

    /// An established connection the server closes first; the peer ACKs the FIN and sends its own (its
    /// timestamps at 2000 and 2001), leaving the server in TIME-WAIT.
    private func closeIntoTimeWait(_ script: inout Script) throws -> (handle: TCPHandle, iss: UInt32) {
        let (handle, iss) = try establishPassive(&script)
        try script.engine.close(handle, now: script.now, output: &script.output)
        script.inject(sequence: 1001, acknowledgment: iss &+ 2, flags: .ack, options: script.peerTimestamps(2000))
        script.inject(sequence: 1001, acknowledgment: iss &+ 2, flags: [.fin, .ack], options: script.peerTimestamps(2001))
        return (handle, iss)
    }

    @Test("a SYN with a newer timestamp ends TIME-WAIT and opens a new connection; an older one is only ACKed (RFC 6191)")
    func timeWaitReopen() throws {
        var script = Script()
        let handle = try closeIntoTimeWait(&script).handle
        #expect(script.engine.state(of: handle) == .timeWait)

        // The client reuses its port, but its clock says this SYN is older than the old connection's last
        // segment: it may be a duplicate from the old connection, so TIME-WAIT stands and only ACKs it.
        let stale = script.inject(sequence: 90_000, flags: .syn, options: Script.linuxSynOptions(timestamp: 1500))
        #expect(stale.segments.count == 1)
        #expect(stale.segments.first?.flags == .ack)
        #expect(stale.segments.first?.acknowledgment == SequenceNumber(1002))
        #expect(script.engine.state(of: handle) == .timeWait)
        #expect(script.engine.statistics.timeWaitReopened == 0)

        // A newer clock: the new incarnation starts at once.
        let fresh = script.inject(sequence: 90_000, flags: .syn, options: Script.linuxSynOptions(timestamp: 2500))
        let synAck = try #require(fresh.segments.first)
        #expect(synAck.flags == [.syn, .ack])
        #expect(synAck.acknowledgment == SequenceNumber(90_001))
        #expect(script.engine.statistics.timeWaitReopened == 1)
        #expect(script.engine.state(of: handle) == nil, "the old handle is gone")
        let echo = try #require(synAck.tcp.options.timestamps?.value)
        script.inject(sequence: 90_001, acknowledgment: synAck.sequence.rawValue &+ 1, flags: .ack,
                      options: script.peerTimestamps(2501, echo: echo))
        let reopened = try #require(script.engine.accept(TCPListenerID(port: 80)))
        #expect(script.engine.state(of: reopened) == .established)
        #expect(script.engine.connectionCount == 1)
    }

    @Test("a reused slot gets a new flow generation: a late ECHO or ERROR about the old connection is not the new one's")
    func flowGenerations() throws {
        var script = Script()
        let (old, iss) = try closeIntoTimeWait(&script)
        let reopening = script.inject(sequence: 90_000, flags: .syn, options: Script.linuxSynOptions(timestamp: 2500))
        let synAck = try #require(reopening.segments.first)
        let echo = try #require(synAck.tcp.options.timestamps?.value)
        let established = script.inject(sequence: 90_001, acknowledgment: synAck.sequence.rawValue &+ 1, flags: .ack,
                                        options: script.peerTimestamps(2501, echo: echo))
        let new = try #require(script.engine.accept(TCPListenerID(port: 80)))
        let opened = (reopening + established).compactMap { if case .flowOpen(let flow, _) = $0 { flow } else { nil } }
        #expect(opened == [new.flow], "FLOW_OPEN names the new generation")

        #expect(new.slot == old.slot && new.flow.index == old.flow.index, "the slot is reused")
        #expect(new.flow != old.flow && new.flow.generation != old.flow.generation)
        #expect(script.engine.handle(for: old.flow) == nil, "an ERROR naming the old flow finds no connection")
        #expect(script.engine.handle(for: new.flow) == new)
        // The NIC's late ECHO for the old connection's data: ignored, counted, the new connection untouched.
        _ = script.output.take()
        script.engine.handleEcho(flow: old.flow, sequenceEnd: SequenceNumber(iss &+ 1), nicDelayNanoseconds: 5_000_000, now: script.now,
                                 output: &script.output)
        #expect(script.engine.statistics.staleEchoes == 1 && script.output.take().isEmpty)
        #expect(script.engine.state(of: new) == .established)
    }

    @Test("challenge ACKs are limited to challengeAcksPerSecond a connection (RFC 5961 §7)")
    func challengeAckRateLimit() throws {
        var script = Script()
        let (handle, _) = try establishPassive(&script)
        var challenges = 0
        for index in 0..<50 {
            // In the window but not exact: each asks for a challenge ACK.
            challenges += script.inject(sequence: 1001 &+ UInt32(100 + index), flags: .rst).segments.count
        }
        #expect(challenges == 10)
        #expect(script.engine.state(of: handle) == .established)
        script.advance(milliseconds: 1000)
        #expect(script.inject(sequence: 1001 &+ 99, flags: .rst).segments.count == 1, "a new second, a new allowance")
    }
}

@Suite("Bounded reassembly and SACK state")
struct BoundedRangesTests {
    @Test("insertMerging agrees with a byte model over random inserts, and refuses a new range past its limit")
    func insertMergingModel() {
        var random = SeededGenerator(seed: 99)
        for _ in 0..<200 {
            var ranges: [SACKBlock] = []
            var model = Set<UInt32>()
            for _ in 0..<30 {
                let left = UInt32.random(in: 0..<400, using: &random), length = UInt32.random(in: 1...20, using: &random)
                let limit = 8
                let wouldMerge = (left..<(left + length)).contains { model.contains($0) } || model.contains(left &- 1) || model.contains(left + length)
                let result = ranges.insertMerging(SACKBlock(left: SequenceNumber(left), right: SequenceNumber(left + length)), limit: limit)
                if result != nil { for value in left..<(left + length) { model.insert(value) } }
                #expect(result != nil || (!wouldMerge && ranges.count >= limit))
                // Sorted, disjoint, not touching, and covering exactly the model.
                for (a, b) in zip(ranges, ranges.dropFirst()) { #expect(a.right < b.left) }
                let covered = Set(ranges.flatMap { $0.left.rawValue..<$0.right.rawValue })
                #expect(covered == model)
                #expect(ranges.count <= limit)
            }
        }
    }

    @Test("a peer sending one byte in every other place fills at most 64 out-of-order ranges; the rest is refused")
    func outOfOrderRangesAreBounded() {
        var buffer = ReceiveBuffer(capacity: 65536)
        let next = SequenceNumber(1000)
        let byte: [UInt8] = [42]
        for index in 0..<500 {
            _ = byte.withUnsafeBytes { buffer.store($0, at: next + (2 + 2 * index), next: next) }
        }
        #expect(buffer.outOfOrder.count == ReceiveBuffer.maximumRanges)
        #expect(buffer.rangesRefused == 500 - ReceiveBuffer.maximumRanges)
        // Bytes that join an existing range are still taken.
        #expect(byte.withUnsafeBytes { buffer.store($0, at: next + 3, next: next) } == 0)
        #expect(buffer.outOfOrder.count == ReceiveBuffer.maximumRanges - 1, "two ranges joined by the byte between them")
    }
}
