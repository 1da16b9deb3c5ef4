import IOTCPCommon
import Testing
@testable import IOTCPHost

@Suite("Duplicate ACKs and IsLost as RFC 6675 defines them")
struct DuplicateAcknowledgmentTests {
    /// An ACK of nothing new whose SACK blocks are byte ranges from the flight's first byte.
    private func sack(_ flight: inout ScriptedFlight, _ ranges: [(Int, Int)], window: UInt16 = 502) -> [Emitted] {
        flight.peerClock += 1
        var options = flight.script.peerTimestamps(flight.peerClock)
        let base = flight.segment(0)
        options.sackBlocks = SACKBlockList(ranges.map { SACKBlock(left: base + $0.0, right: base + $0.1) })
        return flight.script.inject(sequence: 1001, acknowledgment: base.rawValue, flags: .ack, window: window, options: options)
    }

    @Test("with SACK, ACKs that SACK new bytes are duplicates though the window grows with each (a Linux receiver's): the third starts recovery")
    func growingWindow() throws {
        var flight = try ScriptedFlight()
        // Segment 0 lost; each ACK SACKs 500 bytes more of segment 1 with a larger window: too few bytes for
        // IsLost, so only the count of duplicates can start recovery.
        #expect(sack(&flight, [(1448, 1948)], window: 583).retransmits.isEmpty)
        #expect(sack(&flight, [(1448, 2448)], window: 586).retransmits.isEmpty)
        // The same SACK again is no duplicate: it says nothing new.
        #expect(sack(&flight, [(1448, 2448)], window: 589).retransmits.isEmpty)
        let third = sack(&flight, [(1448, 2896)], window: 592)
        #expect(third.retransmits.map(\.0) == [flight.segment(0)] && flight.info.inRecovery && flight.info.fastRecoveries == 1)
    }

    @Test("short segments: three SACKed ranges above the hole show it lost though they hold fewer bytes than two full segments")
    func discontiguousRanges() throws {
        // One ACK each, so one duplicate: only IsLost can start recovery.
        var two = try ScriptedFlight()
        #expect(sack(&two, [(2000, 2200), (3000, 3200)]).retransmits.isEmpty, "two ranges, 400 bytes: not yet")
        #expect(!two.info.inRecovery)
        var three = try ScriptedFlight()
        let lost = sack(&three, [(2000, 2200), (3000, 3200), (4000, 4200)])
        #expect(lost.retransmits.map(\.0) == [three.segment(0)] && three.info.inRecovery)
    }
}

@Suite("Retransmission timeouts and fast retransmits against RFC 6675")
struct TimeoutAndSpanTests {
    @Test("after a timeout, SACKs of what the peer held start no recovery before SND.UNA passes SND.MAX of then, and are not sent again")
    func noRecoveryAfterTimeout() throws {
        var configuration = TCPConfiguration()
        configuration.tailLossProbes = false  // the RTO, not a probe, after the silence
        var flight = try ScriptedFlight(configuration: configuration)
        // Nothing comes back: the RTO sends segment 0 again, with a window of one segment.
        let timeout = flight.script.advance(milliseconds: 1_000)
        #expect(timeout.retransmits.map(\.0) == [flight.segment(0)] && flight.info.timeouts == 1)
        // Segment 0 arrives; the peer held 3-9 all along (1 and 2 were lost too).
        let after = flight.acknowledge(through: 1, sack: [(3, 10)])
        #expect(!flight.info.inRecovery && flight.info.fastRecoveries == 0, "RFC 6675 §5.1: no recovery until SND.UNA reaches 10")
        // Slow start: two segments for the one acknowledged, the two holes, as one RETRANSMIT.
        #expect(after.retransmits.map(\.0) == [flight.segment(1)] && after.retransmits.map(\.1) == [2 * 1448])
        // They arrive: what follows was SACKed, and is not sent again (RFC 6675 §5.1).
        #expect(flight.acknowledge(through: 3, sack: [(3, 10)]).retransmits.isEmpty)
        flight.acknowledge(through: 10)
        #expect(!flight.info.inRecovery && flight.info.fastRecoveries == 0 && flight.info.timeouts == 1)
    }

    @Test("a fast retransmit of a segment that holds an application's head and file data sends both parts")
    func retransmissionAcrossHeadAndFile() throws {
        var flight = try ScriptedFlight(head: 300)
        flight.acknowledge(through: 0, sack: [(1, 2)])
        flight.acknowledge(through: 0, sack: [(1, 3)])
        let fast = flight.acknowledge(through: 0, sack: [(1, 4)])
        #expect(fast.segments.contains { $0.sequence == flight.segment(0) && $0.payload.count == 300 }, "the head, as a packet")
        #expect(fast.retransmits.map(\.0) == [flight.segment(0) + 300] && fast.retransmits.map(\.1) == [1448 - 300],
                "the file part of the segment, from the NIC's store")
        flight.acknowledge(through: 10)
        #expect(!flight.info.inRecovery && flight.info.lostRetransmissions == 0 && flight.info.timeouts == 0)
    }
}

@Suite("Lost retransmission detection in SACK recovery")
struct LostRetransmissionTests {
    /// Segment 0 lost, the peer holding 1-9: recovery and the fast retransmit of segment 0.
    private func recovering(_ configuration: TCPConfiguration = TCPConfiguration()) throws -> ScriptedFlight {
        var flight = try ScriptedFlight(configuration: configuration)
        flight.script.advance(milliseconds: 20)
        flight.acknowledge(through: 0, sack: [(1, 2)])
        flight.acknowledge(through: 0, sack: [(1, 3)])
        let fast = flight.acknowledge(through: 0, sack: [(1, 4)])
        #expect(fast.retransmits.map(\.0) == [flight.segment(0)] && flight.info.inRecovery)
        return flight
    }

    @Test("new data SACKed three segments past the retransmission while its hole stays: sent again at once, the window lowered a second time")
    func newDataShowsRetransmissionLost() throws {
        var flight = try recovering()
        let window = flight.info.congestionWindow
        #expect(flight.acknowledge(through: 0, sack: [(1, 10)]).retransmits.isEmpty, "all SACKed was sent before the retransmission")
        // Recovery lets new data out (the pipe is one segment); it reaches the peer, the retransmission does not.
        try flight.write(segments: 4, at: 10)
        #expect(flight.info.sendMaximum == flight.segment(14))
        flight.script.advance(milliseconds: 20)
        #expect(flight.acknowledge(through: 0, sack: [(1, 11)]).retransmits.isEmpty, "one segment past it could be reordering")
        #expect(flight.acknowledge(through: 0, sack: [(1, 12)]).retransmits.isEmpty)
        let again = flight.acknowledge(through: 0, sack: [(1, 13)])
        #expect(again.retransmits.map(\.0) == [flight.segment(0)] && again.retransmits.map(\.1) == [1448])
        let info = flight.info
        #expect(info.lostRetransmissions == 1 && info.timeouts == 0 && info.fastRecoveries == 1)
        #expect(info.congestionWindow < window, "RFC 5681 §3.2: a lost retransmission lowers the window again")
        // Found once: further SACKs of the same kind wait for a retransmission that can be shown lost again.
        #expect(flight.acknowledge(through: 0, sack: [(1, 14)]).retransmits.isEmpty)
        // The second retransmission arrives: all acknowledged, recovery over, no RTO to come.
        flight.acknowledge(through: 14)
        #expect(!flight.info.inRecovery && flight.info.lostRetransmissions == 1)
        #expect(flight.script.advance(milliseconds: 2_000).retransmits.isEmpty)
    }

    @Test("a later retransmission SACKed shows an earlier one lost, but not within three quarters of an RTT of it (a late original)")
    func laterRetransmissionShowsEarlierLost() throws {
        for (wait, expectLost) in [(5 as UInt64, false), (20, true)] {
            var flight = try ScriptedFlight()
            flight.script.advance(milliseconds: 20)
            // Segments 0 and 2 lost: recovery retransmits both, in order.
            var both = flight.acknowledge(through: 0, sack: [(1, 2), (3, 4)])
            both += flight.acknowledge(through: 0, sack: [(1, 2), (3, 5)])
            both += flight.acknowledge(through: 0, sack: [(1, 2), (3, 6)])
            #expect(both.retransmits.map(\.0) == [flight.segment(0), flight.segment(2)])
            flight.acknowledge(through: 0, sack: [(1, 2), (3, 10)])
            flight.script.advance(milliseconds: wait)
            // Segment 2 arrives; segment 0's retransmission, sent before it, has not.
            let after = flight.acknowledge(through: 0, sack: [(1, 10)])
            if expectLost {
                #expect(after.retransmits.map(\.0) == [flight.segment(0)], "wait \(wait) ms")
                #expect(flight.info.lostRetransmissions == 1)
            } else {
                #expect(after.retransmits.isEmpty, "wait \(wait) ms: it may be segment 2's original, reordered")
                #expect(flight.info.lostRetransmissions == 0)
            }
            flight.acknowledge(through: 10)
            #expect(!flight.info.inRecovery && flight.info.timeouts == 0)
        }
    }

    @Test("one segment of new data SACKed past the retransmission, too little for the first rule: the hole goes again a quarter RTT on")
    func oneSegmentPastRetransmission() throws {
        for on in [true, false] {
            var configuration = TCPConfiguration()
            configuration.lostRetransmissionDetection = on
            configuration.tailLossProbes = false
            var flight = try recovering(configuration)
            flight.acknowledge(through: 0, sack: [(1, 10)])
            try flight.write(segments: 1, at: 10)
            #expect(flight.info.sendMaximum == flight.segment(11))
            // The new segment arrives, the retransmission does not; nothing else is in flight.
            #expect(flight.acknowledge(through: 0, sack: [(1, 11)]).retransmits.isEmpty, "on \(on): could be reordering")
            #expect(flight.script.advance(milliseconds: 4).retransmits.isEmpty, "within the window (SRTT 20 ms / 4)")
            let passed = flight.script.advance(milliseconds: 2)
            if on {
                #expect(passed.retransmits.map(\.0) == [flight.segment(0)] && flight.info.lostRetransmissions == 1)
                #expect(flight.info.timeouts == 0 && flight.info.inRecovery)
            } else {
                #expect(passed.retransmits.isEmpty && flight.info.lostRetransmissions == 0)
            }
            flight.acknowledge(through: 11)
            #expect(!flight.info.inRecovery && flight.info.timeouts == 0)
        }
    }

    @Test("in recovery new file data goes a segment at a time as the pipe allows, not held for a fuller read")
    func newDataInRecoveryBySegment() throws {
        var flight = try recovering()
        try flight.write(segments: 4, at: 10)
        #expect(flight.info.sendMaximum == flight.segment(10), "the pipe fills the window")
        // One more segment SACKed: room for one segment, less than half the window.
        let room = flight.acknowledge(through: 0, sack: [(1, 5)])
        #expect(room.sends.map(\.1.sequence) == [flight.segment(10)] && room.sends.map(\.1.length) == [1448])
    }

    @Test("turned off, the lost retransmission waits for the RTO")
    func off() throws {
        var configuration = TCPConfiguration()
        configuration.lostRetransmissionDetection = false
        var flight = try recovering(configuration)
        flight.acknowledge(through: 0, sack: [(1, 10)])
        try flight.write(segments: 4, at: 10)
        #expect(flight.acknowledge(through: 0, sack: [(1, 14)]).retransmits.isEmpty)
        #expect(flight.info.lostRetransmissions == 0)
        let timeout = flight.script.advance(milliseconds: 1_000)
        #expect(timeout.retransmits.first?.0 == flight.segment(0) && flight.info.timeouts == 1)
    }
}

@Suite("The reordering window (RFC 8985 §6.2 by sequence order)")
struct ReorderingWindowTests {
    @Test("one segment SACKed above a hole: no retransmission at once, the hole sent a quarter RTT later; never when turned off")
    func holeBelowOneSegment() throws {
        for on in [true, false] {
            var configuration = TCPConfiguration()
            configuration.reorderingWindow = on
            configuration.tailLossProbes = false
            var flight = try ScriptedFlight(configuration: configuration)
            // Of the flight only segment 9 arrives: too little for IsLost.
            #expect(flight.acknowledge(through: 0, sack: [(9, 10)]).retransmits.isEmpty)
            #expect(flight.script.advance(milliseconds: 4).retransmits.isEmpty, "within the window (SRTT 20 ms / 4)")
            let passed = flight.script.advance(milliseconds: 1)
            if on {
                // Everything sent before segment 9 and still missing is lost (RACK's rule): from segment 0, as
                // the window allows.
                #expect(passed.retransmits.first?.0 == flight.segment(0) && flight.info.inRecovery)
                #expect(passed.retransmits.allSatisfy { $0.0 < flight.segment(9) })
                #expect(flight.info.reorderingWindowLosses == 1 && flight.info.timeouts == 0)
            } else {
                #expect(passed.retransmits.isEmpty && flight.info.reorderingWindowLosses == 0)
                #expect(flight.script.advance(milliseconds: 1_000).retransmits.first?.0 == flight.segment(0) && flight.info.timeouts == 1)
            }
        }
    }

    @Test("the hole filled within the window (a reordered segment): nothing sent again")
    func reordered() throws {
        var flight = try ScriptedFlight()
        flight.acknowledge(through: 0, sack: [(9, 10)])
        flight.script.advance(milliseconds: 2)
        flight.acknowledge(through: 10)
        #expect(flight.script.advance(milliseconds: 1_000).retransmits.isEmpty)
        #expect(flight.info.reorderingWindowLosses == 0 && flight.info.fastRecoveries == 0 && flight.info.timeouts == 0)
    }

    @Test("in recovery, a hole NextSeg stops at (one segment SACKed above it) goes once the window passes")
    func holeInRecovery() throws {
        var configuration = TCPConfiguration()
        configuration.tailLossProbes = false
        var flight = try ScriptedFlight(configuration: configuration)
        // Segments 0 and 8 lost: 0 is lost by IsLost and goes at once; 8 has one segment above it.
        let first = flight.acknowledge(through: 0, sack: [(1, 8), (9, 10)])
        #expect(first.retransmits.map(\.0) == [flight.segment(0)] && flight.info.inRecovery)
        flight.script.advance(milliseconds: 4)
        let passed = flight.script.advance(milliseconds: 1)
        #expect(passed.retransmits.map(\.0) == [flight.segment(8)] && flight.info.reorderingWindowLosses == 1)
        flight.acknowledge(through: 10)
        #expect(!flight.info.inRecovery && flight.info.timeouts == 0 && flight.info.fastRecoveries == 1)
    }
}

@Suite("After a retransmission timeout: the scoreboard kept, lost retransmissions found, reneging caught")
struct AfterTimeoutTests {
    /// Nothing came back for the flight of ten: the RTO sent segment 0 again, with a window of one segment.
    private func timedOut(_ configuration: TCPConfiguration = TCPConfiguration()) throws -> ScriptedFlight {
        var configuration = configuration
        configuration.tailLossProbes = false  // the RTO, not a probe, after the silence
        var flight = try ScriptedFlight(configuration: configuration)
        let timeout = flight.script.advance(milliseconds: 1_000)
        #expect(timeout.retransmits.map(\.0) == [flight.segment(0)] && flight.info.timeouts == 1)
        return flight
    }

    @Test("the SACKed bytes SND.NXT skips are not in flight: slow start sends two holes for the segment acknowledged, not one a round trip")
    func sackedBytesNotInFlight() throws {
        var flight = try timedOut()
        flight.script.advance(milliseconds: 20)
        // Segment 0 arrives; the peer holds 2-3, 5-6 and 8-9: holes at 1, 4 and 7.
        let after = flight.acknowledge(through: 1, sack: [(2, 4), (5, 7), (8, 10)])
        #expect(after.retransmits.map(\.0) == [flight.segment(1), flight.segment(4)], "a window of two segments, both holes")
        #expect(after.retransmits.map(\.1) == [1448, 1448] && !flight.info.inRecovery)
        flight.script.advance(milliseconds: 20)
        let next = flight.acknowledge(through: 7, sack: [(8, 10)])
        #expect(next.retransmits.map(\.0) == [flight.segment(7)])
        flight.acknowledge(through: 10)
        let info = flight.info
        #expect(info.timeouts == 1 && info.fastRecoveries == 0 && info.lostRetransmissions == 0 && info.sackRenegings == 0)
        #expect(flight.script.advance(milliseconds: 2_000).retransmits.isEmpty)
    }

    @Test("a later retransmission SACKed shows an earlier one lost: sent again at once, not after a second RTO; not within 3/4 RTT, nor when off")
    func laterRetransmissionShowsEarlierLost() throws {
        for (wait, on) in [(20 as UInt64, true), (5, true), (20, false)] {
            var configuration = TCPConfiguration()
            configuration.lostRetransmissionDetection = on
            var flight = try timedOut(configuration)
            flight.script.advance(milliseconds: 20)
            let after = flight.acknowledge(through: 1, sack: [(2, 4), (5, 7), (8, 10)])
            #expect(after.retransmits.map(\.0) == [flight.segment(1), flight.segment(4)])
            let window = flight.info.congestionWindow
            flight.script.advance(milliseconds: wait)
            // Hole 4's retransmission arrives; hole 1's, sent before it, does not. The SACK frees the window
            // for hole 7 in any case.
            let shown = flight.acknowledge(through: 1, sack: [(2, 7), (8, 10)])
            if on && wait == 20 {
                #expect(shown.retransmits.map(\.0) == [flight.segment(1), flight.segment(7)], "wait \(wait) ms")
                #expect(flight.info.lostRetransmissions == 1 && flight.info.congestionWindow == window,
                        "the timeout already brought the window down")
                // Found once: the same pass's later SACKs do not send it a third time.
                #expect(flight.acknowledge(through: 1, sack: [(2, 10)]).retransmits.isEmpty)
                flight.acknowledge(through: 10)
                #expect(flight.info.timeouts == 1 && !flight.info.inRecovery)
                #expect(flight.script.advance(milliseconds: 2_000).retransmits.isEmpty)
            } else {
                #expect(shown.retransmits.map(\.0) == [flight.segment(7)], "wait \(wait) ms, on \(on): it may be hole 4's original")
                #expect(flight.info.lostRetransmissions == 0)
                if !on {
                    #expect(flight.acknowledge(through: 1, sack: [(2, 10)]).retransmits.isEmpty)
                    let second = flight.script.advance(milliseconds: 2_000)
                    #expect(second.retransmits.first?.0 == flight.segment(1) && flight.info.timeouts == 2)
                }
            }
        }
    }

    @Test("new data SACKed three segments past the pass while a hole stays: the hole goes again")
    func newDataShowsRetransmissionLost() throws {
        var flight = try timedOut()
        flight.script.advance(milliseconds: 20)
        let after = flight.acknowledge(through: 1, sack: [(2, 10)])
        #expect(after.retransmits.map(\.0) == [flight.segment(1)])
        // The pass is done: new data follows as the SACKs free the window.
        try flight.write(segments: 4, at: 10)
        #expect(flight.info.sendMaximum > flight.segment(10))
        #expect(flight.acknowledge(through: 1, sack: [(2, 11)]).retransmits.isEmpty, "one segment past it could be reordering")
        try flight.write(segments: 0, at: 14)
        #expect(flight.acknowledge(through: 1, sack: [(2, 12)]).retransmits.isEmpty)
        try flight.write(segments: 0, at: 14)
        let again = flight.acknowledge(through: 1, sack: [(2, 13)])
        #expect(again.retransmits.map(\.0) == [flight.segment(1)] && flight.info.lostRetransmissions == 1)
        flight.acknowledge(through: 13)
        #expect(flight.info.timeouts == 1)
    }

    @Test("after a timeout too, one segment of new data SACKed past the pass while a hole stays: the hole goes again a quarter RTT on")
    func oneSegmentPastPass() throws {
        var flight = try timedOut()
        flight.script.advance(milliseconds: 20)
        #expect(flight.acknowledge(through: 1, sack: [(2, 10)]).retransmits.map(\.0) == [flight.segment(1)])
        try flight.write(segments: 1, at: 10)
        #expect(flight.info.sendMaximum == flight.segment(11))
        #expect(flight.acknowledge(through: 1, sack: [(2, 11)]).retransmits.isEmpty)
        let srtt = flight.info.smoothedRTT
        flight.script.advance(nanoseconds: max(srtt / 4, Nanoseconds.millisecond) - Nanoseconds.millisecond / 2)
        #expect(flight.info.lostRetransmissions == 0)
        let passed = flight.script.advance(milliseconds: 1)
        #expect(passed.retransmits.map(\.0) == [flight.segment(1)] && flight.info.lostRetransmissions == 1)
        flight.acknowledge(through: 11)
        #expect(flight.info.timeouts == 1)
    }

    @Test("a late ACK whose block reaches below SND.UNA is ignored: what it claims is not skipped at the next timeout")
    func lateBlockBelowUnacknowledged() throws {
        var flight = try timedOut()
        flight.script.advance(milliseconds: 20)
        // Segment 0 arrives; the peer holds 1-4 and has discarded 5-9: its ACK stops at 5.
        let after = flight.acknowledge(through: 5)
        #expect(after.retransmits.first?.0 == flight.segment(5))
        // An older ACK from before the discard arrives late, SACKing 1-9.
        flight.acknowledge(through: 0, sack: [(1, 10)])
        #expect(flight.info.sendUnacknowledged == flight.segment(5))
        // The retransmissions from 5 are lost: the next timeout sends 5 again, not nothing.
        let second = flight.script.advance(milliseconds: 2_000)
        #expect(second.retransmits.first?.0 == flight.segment(5) && flight.info.timeouts == 2)
        flight.acknowledge(through: 10)
        #expect(flight.info.sendUnacknowledged == flight.segment(10))
    }

    @Test("no loss probe while sending again after a timeout: its verdict would lower the window a second time")
    func noProbeAfterTimeout() throws {
        var flight = try timedOut()
        flight.script.engine.configuration.tailLossProbes = true  // off only for the silence before the timeout
        flight.script.advance(milliseconds: 20)
        #expect(flight.acknowledge(through: 1, sack: [(2, 10)]).retransmits.map(\.0) == [flight.segment(1)])
        // New data goes (SND.NXT skipped the SACKed tail) and reaches the wire: no probe is armed for it.
        try flight.write(segments: 1, at: 10)
        #expect(flight.info.sendMaximum == flight.segment(11))
        #expect(flight.script.advance(milliseconds: 100).retransmits.isEmpty, "2 SRTT + 2 ms passed: no probe")
        #expect(flight.info.lossProbes == 0)
    }

    @Test("a cumulative ACK that stops at SACKed bytes (the peer discarded them): SACKs forgotten, the bytes sent again within half an RTT")
    func reneging() throws {
        var configuration = TCPConfiguration()
        configuration.tailLossProbes = false
        var flight = try ScriptedFlight(configuration: configuration)
        flight.script.advance(milliseconds: 20)
        // Segments 0-2 lost, 3-9 SACKed: recovery sends the holes.
        let fast = flight.acknowledge(through: 0, sack: [(3, 10)])
        #expect(fast.retransmits.first?.0 == flight.segment(0) && flight.info.inRecovery)
        flight.script.advance(milliseconds: 20)
        // The holes arrive, but the ACK stops at 3: the peer no longer holds what it SACKed.
        #expect(flight.acknowledge(through: 3).retransmits.isEmpty)
        #expect(flight.info.sackRenegings == 1)
        #expect(flight.script.advance(milliseconds: 9).retransmits.isEmpty)
        let again = flight.script.advance(milliseconds: 2)
        #expect(again.retransmits.first?.0 == flight.segment(3) && flight.info.timeouts == 1, "SRTT / 2, not the 200 ms RTO")
        flight.acknowledge(through: 10)
        #expect(flight.info.sendUnacknowledged == flight.segment(10))
    }
}
