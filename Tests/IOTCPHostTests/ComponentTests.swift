import IOTCPCommon
import Testing
@testable import IOTCPHost

@Suite("Send queue, congestion control, timer wheel")
struct ComponentTests {
    @Test("application bytes and file ranges go out in stream order: PACKET_OUT, SEND, PACKET_OUT")
    func interleavedStream() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        let header = Array("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n".utf8)
        let trailer = Array("--end--".utf8)
        _ = try header.withUnsafeBytes { try script.engine.write(handle, $0, now: script.now, output: &script.output) }
        _ = try script.writeFile(handle, length: 5000, offset: 100)
        _ = try trailer.withUnsafeBytes { try script.engine.write(handle, $0, now: script.now, output: &script.output) }
        var emitted = script.output.take()
        // Nagle in Minshall's form holds the short trailer while the short header is unacknowledged.
        #expect(!emitted.segments.contains { $0.payload == trailer })
        emitted += script.inject(sequence: 1001, acknowledgment: iss &+ 1 &+ UInt32(header.count), flags: .ack,
                                 options: script.peerTimestamps(1500))
        var order: [(String, UInt32, Int)] = []
        for item in emitted {
            switch item {
            case .segment(let segment) where !segment.payload.isEmpty:
                order.append(("bytes", segment.sequence.rawValue &- iss, segment.payload.count))
            case .send(_, let range):
                order.append(("file", range.sequence.rawValue &- iss, Int(range.length)))
            default: break
            }
        }
        #expect(order.map(\.0) == ["bytes", "file", "bytes"])
        #expect(order.map(\.1) == [1, UInt32(1 + header.count), UInt32(1 + header.count + 5000)])
        #expect(order.map(\.2) == [header.count, 5000, trailer.count])
        let first = try #require(emitted.segments.first)
        #expect(first.payload == header)
        let sends = emitted.sends
        #expect(sends.first?.1.offset == 100)
    }

    @Test("a connection that dies before accept is skipped by accept, and its slot's next tenant is not confused with it")
    func staleAcceptEntry() throws {
        var script = Script()
        _ = try script.engine.listen(port: 80)
        // Two connections complete their handshakes; the first is reset before the application accepts.
        var isses: [UInt16: UInt32] = [:]
        for port in [UInt16(41000), 41001] {
            let reply = script.inject(sequence: 1000, flags: .syn, options: Script.linuxSynOptions(), from: port)
            let synAck = try #require(reply.segments.first)
            isses[port] = synAck.sequence.rawValue
            script.inject(sequence: 1001, acknowledgment: synAck.sequence.rawValue &+ 1, flags: .ack,
                          options: script.peerTimestamps(1001, echo: synAck.tcp.options.timestamps!.value), from: port)
        }
        script.inject(sequence: 1001, flags: .rst, from: 41000)
        let accepted = script.engine.accept(TCPListenerID(port: 80))
        let handle = try #require(accepted)
        #expect(script.engine.endpoints(of: handle)?.remotePort == 41001)
        let none = script.engine.accept(TCPListenerID(port: 80))
        #expect(none == nil)
    }

    @Test("CUBIC: after a loss the window is 0.7 of W_max and grows back to W_max about K seconds later (RFC 9438)")
    func cubicCurve() {
        var controller = CongestionController(algorithm: .cubic, segmentSize: 1000, initialWindowSegments: 100)
        controller.onLossDetected(flight: 100_000, now: .zero)
        #expect(controller.window == 70_000)
        #expect(controller.slowStartThreshold == 70_000)
        // K = cbrt(W_max (1 − β) / C) = cbrt(100 × 0.3 / 0.4) ≈ 4.217 s.
        var now = Instant.zero
        let rtt: UInt64 = 100 * Nanoseconds.millisecond
        var windowAtK = 0
        while now.nanoseconds < 6 * Nanoseconds.second {
            // One window of ACKs per RTT, one ACK per two segments.
            let acks = controller.window / 2000
            for _ in 0..<acks { controller.onAcknowledged(bytes: 2000, now: now, smoothedRTT: rtt) }
            now = now + rtt
            if now.nanoseconds >= 4_200_000_000 && windowAtK == 0 { windowAtK = controller.window }
        }
        #expect(abs(windowAtK - 100_000) < 8_000, "back near W_max at t ≈ K: \(windowAtK)")
        #expect(controller.window > 100_000, "and probing beyond it afterwards: \(controller.window)")
    }

    @Test("NewReno grows one segment per window in congestion avoidance (RFC 5681 §3.1)")
    func newRenoAvoidance() {
        var controller = CongestionController(algorithm: .newReno, segmentSize: 1000, initialWindowSegments: 10)
        controller.onLossDetected(flight: 20_000, now: .zero)
        #expect(controller.window == 10_000)
        for _ in 0..<10 { controller.onAcknowledged(bytes: 1000, now: .zero, smoothedRTT: 0) }
        #expect(controller.window == 11_000)
        controller.onTimeout(flight: 11_000)
        #expect(controller.window == 1000 && controller.slowStartThreshold == 5500)
    }

    @Test("RTO follows RFC 6298: 1 s before a sample, SRTT + 4·RTTVAR after, doubled on expiry, clamped")
    func retransmissionTimeout() {
        var configuration = TCPConfiguration()
        configuration.minimumRetransmissionTimeout = 200 * Nanoseconds.millisecond
        var estimator = RTTEstimator(initial: Nanoseconds.second)
        #expect(estimator.timeout == Nanoseconds.second)
        estimator.addSample(100 * Nanoseconds.millisecond, configuration: configuration)
        #expect(estimator.smoothed == 100 * Nanoseconds.millisecond)
        #expect(estimator.timeout == 300 * Nanoseconds.millisecond, "100 + 4 × 50")
        estimator.addSample(200 * Nanoseconds.millisecond, configuration: configuration)
        // RTTVAR = 3/4 × 50 + 1/4 × 100 = 62.5; SRTT = 7/8 × 100 + 1/8 × 200 = 112.5
        #expect(estimator.smoothed == 112_500_000 && estimator.variation == 62_500_000)
        #expect(estimator.timeout == 362_500_000)
        for _ in 0..<20 { estimator.backOff(configuration: configuration) }
        #expect(estimator.timeout == configuration.maximumRetransmissionTimeout)
        var fast = RTTEstimator(initial: Nanoseconds.second)
        fast.addSample(10_000, configuration: configuration)
        #expect(fast.timeout == configuration.minimumRetransmissionTimeout)
    }

    @Test("the timer wheel's earliest deadline stays exact through moves, cancels, expiries and far deadlines")
    func timerWheelEarliest() {
        var wheel = TimerWheel(tick: Nanoseconds.millisecond, bucketCount: 64, start: .zero)
        var random = SeededGenerator(seed: 7)
        var deadlines: [Int: UInt64] = [:]
        var now: UInt64 = 0
        var due: [Int] = []
        for _ in 0..<20_000 {
            let slot = Int.random(in: 0..<200, using: &random)
            switch Int.random(in: 0..<10, using: &random) {
            case 0..<6:
                // Mostly near (within a revolution of 64 ms), sometimes many revolutions away, sometimes past.
                let span: UInt64 = Bool.random(using: &random) ? 60 : 2_000
                let at = now - min(now, 5 * Nanoseconds.millisecond) + UInt64.random(in: 0...(span * Nanoseconds.millisecond), using: &random)
                deadlines[slot] = at
                wheel.schedule(slot, at: Instant(nanoseconds: at))
            case 6, 7:
                deadlines[slot] = nil
                wheel.schedule(slot, at: nil)
            default:
                now += UInt64.random(in: 0...(20 * Nanoseconds.millisecond), using: &random)
                due.removeAll()
                wheel.popExpired(now: Instant(nanoseconds: now), into: &due)
                for fired in due {
                    #expect(deadlines[fired].map { $0 <= now } == true)
                    deadlines[fired] = nil
                }
                #expect(deadlines.values.allSatisfy { $0 > now }, "everything due was fired")
            }
            #expect(wheel.earliestDeadline()?.nanoseconds == deadlines.values.min())
        }
    }

    @Test("the timer wheel fires each deadline once, at or after its time, including ones a revolution away")
    func timerWheel() {
        var wheel = TimerWheel(tick: Nanoseconds.millisecond, bucketCount: 64, start: .zero)
        var random = SeededGenerator(seed: 99)
        var deadlines: [Int: UInt64] = [:]
        for slot in 0..<500 {
            let at = UInt64.random(in: 0...(300 * Nanoseconds.millisecond), using: &random)
            deadlines[slot] = at
            wheel.schedule(slot, at: Instant(nanoseconds: at))
        }
        // Move a few and cancel a few.
        for slot in 0..<50 {
            let at = UInt64.random(in: 0...(300 * Nanoseconds.millisecond), using: &random)
            deadlines[slot] = at
            wheel.schedule(slot, at: Instant(nanoseconds: at))
        }
        for slot in 50..<60 {
            deadlines[slot] = nil
            wheel.schedule(slot, at: nil)
        }
        #expect(wheel.earliestDeadline()?.nanoseconds == deadlines.values.min())
        var fired: [Int: UInt64] = [:]
        var due: [Int] = []
        var now: UInt64 = 0
        while now <= 310 * Nanoseconds.millisecond {
            due.removeAll()
            wheel.popExpired(now: Instant(nanoseconds: now), into: &due)
            for slot in due {
                #expect(fired[slot] == nil, "slot \(slot) fired twice")
                fired[slot] = now
            }
            now += UInt64.random(in: 1...3_000_000, using: &random)
        }
        #expect(fired.count == deadlines.count)
        for (slot, at) in deadlines {
            guard let when = fired[slot] else { continue }
            #expect(when >= at, "slot \(slot) fired early")
            #expect(when - at <= 3_000_000, "slot \(slot) fired late")
        }
        #expect(wheel.scheduledCount == 0)
    }
}
