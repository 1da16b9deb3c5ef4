import IOTCPCommon
import Testing
@testable import IOTCPHost

private extension ScriptedFlight {
    /// Six segments of a file on the wire over a path whose handshake took no time.
    static func tail(configuration: TCPConfiguration = TCPConfiguration(), synOptions: TCPOptions = Script.linuxSynOptions()) throws -> ScriptedFlight {
        try ScriptedFlight(configuration: configuration, synOptions: synOptions, handshakeMilliseconds: 0, segments: 6)
    }
}

@Suite("Tail loss probes (RFC 8985 §7)")
struct LossProbeTests {
    @Test("the last two segments lost: a probe 2 ms after the last ACK, and its SACK starts recovery, long before the RTO")
    func tailLossRepairedByProbe() throws {
        var tail = try ScriptedFlight.tail()
        #expect(tail.script.advance(milliseconds: 1).isEmpty)
        tail.acknowledge(through: 4)
        // The handshake's RTT is ~0, so the probe timeout is its 2 ms allowance (and two round trips of
        // microseconds), from the ACK.
        #expect(tail.script.advance(milliseconds: 2).isEmpty)
        let probe = tail.script.advance(milliseconds: 1)
        #expect(probe.retransmits.map(\.0) == [tail.segment(5)] && probe.retransmits.map(\.1) == [1448], "the last segment, from the NIC")
        #expect(tail.info.lossProbes == 1)
        // The probe arrives; the peer SACKs it: two segments outstanding, so one duplicate ACK is enough (RFC 5827).
        let recovered = tail.acknowledge(through: 4, sack: [(5, 6)])
        #expect(recovered.retransmits.map(\.0) == [tail.segment(4)] && recovered.retransmits.map(\.1) == [1448])
        tail.acknowledge(through: 6)
        let info = tail.info
        #expect(info.sendUnacknowledged == tail.segment(6) && info.timeouts == 0 && info.fastRecoveries == 1)
        #expect(info.lossProbeRepairs == 0, "the recovery answered for the loss, not the probe: the window came down once")
        #expect(tail.script.advance(milliseconds: 1_000).retransmits.isEmpty)
    }

    @Test("a probe whose ACK carries a D-SACK lost nothing: the window stays; one acknowledged past it without one repaired a loss")
    func probeOutcome() throws {
        for duplicateReported in [true, false] {
            var tail = try ScriptedFlight.tail()
            tail.acknowledge(through: 4)
            // The ACKs of segments 4 and 5 are lost (or slow): the probe goes.
            let probe = tail.script.advance(milliseconds: 10)
            #expect(probe.retransmits.map(\.0) == [tail.segment(5)])
            #expect(tail.script.advance(milliseconds: 100).isEmpty, "one probe until an ACK settles it")
            if duplicateReported {
                // The peer had segment 5 already: RFC 2883's D-SACK, below the cumulative ACK.
                tail.acknowledge(through: 6, sack: [(5, 6)])
                #expect(tail.info.lossProbeRepairs == 0 && tail.info.slowStartThreshold == .max, "no loss: no reduction")
            } else {
                tail.acknowledge(through: 6)
                #expect(tail.info.lossProbeRepairs == 0, "an ACK that just reaches the probe's end does not yet tell")
                // More data, acknowledged past the probe with no D-SACK: the probe filled a hole.
                _ = try tail.script.writeFile(tail.handle, length: 2 * 1448, offset: 6 * 1448)
                let send = try #require(tail.script.output.take().sends.first)
                tail.script.engine.handleEcho(flow: tail.handle.flow, sequenceEnd: send.1.sequence + Int(send.1.length),
                                              nicDelayNanoseconds: 0, now: tail.script.now, output: &tail.script.output)
                let window = tail.info.congestionWindow
                tail.acknowledge(through: 8)
                #expect(tail.info.lossProbeRepairs == 1)
                #expect(tail.info.slowStartThreshold < .max && tail.info.congestionWindow < window, "a loss: the window comes down")
            }
            #expect(tail.info.timeouts == 0 && tail.info.fastRecoveries == 0)
        }
    }

    @Test("no probe without SACK, with one segment outstanding (the RTO comes first), or when turned off")
    func noProbe() throws {
        // The peer offers no SACK: a probe's ACK could not show which segment it repaired.
        var withoutSACK = try ScriptedFlight.tail(synOptions: TCPOptions(maximumSegmentSize: 1460, windowScale: 7,
                                                          timestamps: TCPTimestamps(value: 1000, echoReply: 0)))
        withoutSACK.acknowledge(through: 4)
        #expect(withoutSACK.script.advance(milliseconds: 199).isEmpty)
        #expect(withoutSACK.script.advance(milliseconds: 1).retransmits.map(\.0) == [withoutSACK.segment(4)], "the RTO")
        #expect(withoutSACK.info.lossProbes == 0 && withoutSACK.info.timeouts == 1)

        // One segment outstanding: the probe would wait for a delayed ACK too (200 ms more), past the RTO.
        var single = try ScriptedFlight.tail()
        single.acknowledge(through: 5)
        #expect(single.script.advance(milliseconds: 199).isEmpty)
        #expect(single.script.advance(milliseconds: 1).retransmits.map(\.0) == [single.segment(5)])
        #expect(single.info.lossProbes == 0 && single.info.timeouts == 1)

        var configuration = TCPConfiguration()
        configuration.tailLossProbes = false
        var off = try ScriptedFlight.tail(configuration: configuration)
        off.acknowledge(through: 4)
        #expect(off.script.advance(milliseconds: 199).isEmpty)
        #expect(off.script.advance(milliseconds: 1).retransmits.map(\.0) == [off.segment(4)])
        #expect(off.info.lossProbes == 0)
    }

    @Test("data still on its way to the wire is not the tail: the probe waits for its ECHO")
    func probeWaitsForEcho() throws {
        var tail = try ScriptedFlight.tail()
        tail.acknowledge(through: 4)
        // A second SEND the NIC has not put on the wire yet (a slow disk).
        _ = try tail.script.writeFile(tail.handle, length: 1448, offset: 6 * 1448)
        let send = try #require(tail.script.output.take().sends.first)
        #expect(tail.script.advance(milliseconds: 50).retransmits.isEmpty, "nothing is probed while the NIC holds data")
        tail.script.engine.handleEcho(flow: tail.handle.flow, sequenceEnd: send.1.sequence + Int(send.1.length),
                                      nicDelayNanoseconds: 50_000_000, now: tail.script.now, output: &tail.script.output)
        #expect(tail.script.advance(milliseconds: 2).isEmpty)
        let probe = tail.script.advance(milliseconds: 1)
        #expect(probe.retransmits.map(\.0) == [tail.segment(6)], "2 ms after the ECHO, the new last segment")
    }
    @Test("recovery begun while the probe's timer runs turns it into the RTO: no probe in recovery (RFC 8985 §7.2)")
    func noProbeInRecovery() throws {
        var tail = try ScriptedFlight.tail()
        // Segment 0 is lost, the rest arrive: the SACKs start recovery at once and segment 0 goes again.
        let recovery = tail.acknowledge(through: 0, sack: [(1, 6)])
        #expect(recovery.retransmits.map(\.0) == [tail.segment(0)] && tail.info.inRecovery)
        // Its retransmission is lost too: nothing more until the RTO, from when recovery began.
        #expect(tail.script.advance(milliseconds: 199).isEmpty, "no probe in recovery")
        #expect(tail.script.advance(milliseconds: 1).retransmits.map(\.0) == [tail.segment(0)])
        #expect(tail.info.lossProbes == 0 && tail.info.timeouts == 1)
    }

    @Test("each ECHO of new data restarts the probe's timer: the tail is the last data on the wire, and it had its two round trips")
    func echoRestartsProbeTimer() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        let base = SequenceNumber(iss &+ 1)
        _ = try script.writeFile(handle, length: 6 * 1448)
        _ = try script.writeFile(handle, length: 2 * 1448, offset: 6 * 1448)
        let sends = script.output.take().sends
        #expect(sends.map(\.1.length) == [6 * 1448, 2 * 1448], "two SENDs, both issued before either is on the wire")
        for (index, (_, range)) in sends.enumerated() {
            if index > 0 { #expect(script.advance(milliseconds: 1).isEmpty) }
            script.engine.handleEcho(flow: handle.flow, sequenceEnd: range.sequence + Int(range.length), nicDelayNanoseconds: 0,
                                     now: script.now, output: &script.output)
        }
        #expect(script.advance(milliseconds: 2).isEmpty, "2 ms from the second ECHO, not from the first")
        let probe = script.advance(milliseconds: 1)
        #expect(probe.retransmits.map(\.0) == [base + 7 * 1448])
    }
    @Test("an ACK of all that is on the wire while the NIC still reads the rest leaves the NIC its allowance; the ECHO restarts the timer")
    func outstandingOnlyOnTheNIC() throws {
        var tail = try ScriptedFlight.tail()
        _ = try tail.script.writeFile(tail.handle, length: 2 * 1448, offset: 6 * 1448)
        let send = try #require(tail.script.output.take().sends.first)
        tail.acknowledge(through: 6)
        // A slow disk: 300 ms for the read. No timeout meanwhile (the RTO's 200 ms would send bytes never sent).
        #expect(tail.script.advance(milliseconds: 300).isEmpty)
        tail.script.engine.handleEcho(flow: tail.handle.flow, sequenceEnd: send.1.sequence + Int(send.1.length),
                                      nicDelayNanoseconds: 300_000_000, now: tail.script.now, output: &tail.script.output)
        #expect(tail.script.advance(milliseconds: 2).isEmpty)
        #expect(tail.script.advance(milliseconds: 1).retransmits.map(\.0) == [tail.segment(7)], "the probe, 2 ms after the ECHO")
        #expect(tail.info.timeouts == 0)
    }
}
