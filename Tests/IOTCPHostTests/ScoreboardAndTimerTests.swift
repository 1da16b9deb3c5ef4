import IOTCPCommon
import Testing
@testable import IOTCPHost

@Suite("SACK scoreboard and connection timers")
struct ScoreboardAndTimerTests {
    let mss = 1000
    var threshold: Int { 3 * mss }
    func seq(_ value: UInt32) -> SequenceNumber { SequenceNumber(value) }
    func block(_ left: UInt32, _ right: UInt32) -> SACKBlock { SACKBlock(left: SequenceNumber(left), right: SequenceNumber(right)) }

    @Test("blocks are kept sorted and merged; stale, inverted and never-sent ones are ignored; a cumulative ACK trims")
    func recordAndAcknowledge() {
        var board = SACKScoreboard()
        board.record(SACKBlockList([block(5000, 6000), block(3000, 4000), block(4000, 4500)]), unacknowledged: seq(1000), sendMaximum: seq(10000))
        #expect(board.blocks == [block(3000, 4500), block(5000, 6000)])
        // Below SND.UNA, inverted, past SND.MAX: none recorded.
        board.record(SACKBlockList([block(0, 900), block(7000, 6500), block(9000, 11000)]), unacknowledged: seq(1000), sendMaximum: seq(10000))
        #expect(board.blocks == [block(3000, 4500), block(5000, 6000)])
        // One straddling SND.UNA is cut at it.
        board.record(SACKBlockList([block(500, 1500)]), unacknowledged: seq(1000), sendMaximum: seq(10000))
        #expect(board.blocks.first == block(1000, 1500))
        #expect(board.sackedBytes == 500 + 1500 + 1000)
        board.acknowledge(through: seq(3500))
        #expect(board.blocks == [block(3500, 4500), block(5000, 6000)])
        board.clear()
        #expect(board.isEmpty && board.sackedBytes == 0)
    }

    @Test("IsLost, NextSeg and SetPipe as RFC 6675 defines them")
    func lossQuestions() {
        var board = SACKScoreboard()
        // Sent 1000..<9000 in segments of 1000; the peer holds 2000..<3000 and 4000..<7000.
        board.record(SACKBlockList([block(2000, 3000), block(4000, 7000)]), unacknowledged: seq(1000), sendMaximum: seq(9000))
        // 4,000 SACKed bytes lie above 1000 (>= 3 segments): lost. Above 3000 only 3,000: lost. Above 7000: none.
        #expect(board.isLost(seq(1000), threshold: threshold))
        #expect(board.isLost(seq(3000), threshold: threshold))
        #expect(!board.isLost(seq(7000), threshold: threshold))
        // The first hole goes first, one segment of it; after it is retransmitted, the next hole.
        #expect(board.nextLostRange(from: seq(1000), segmentSize: mss, threshold: threshold)! == (seq(1000), 1000))
        #expect(board.nextLostRange(from: seq(2000), segmentSize: mss, threshold: threshold)! == (seq(3000), 1000))
        #expect(board.nextLostRange(from: seq(7000), segmentSize: mss, threshold: threshold) == nil)
        // Outstanding 8,000 bytes: 4,000 SACKed, 2,000 lost and not retransmitted (1000..<2000, 3000..<4000).
        #expect(board.pipe(outstanding: 8000, unacknowledged: seq(1000), highRetransmitted: seq(1000), threshold: threshold) == 2000)
        // Once the first hole is retransmitted it counts in the pipe again.
        #expect(board.pipe(outstanding: 8000, unacknowledged: seq(1000), highRetransmitted: seq(2000), threshold: threshold) == 3000)
    }

    @Test("timers: each armed and cancelled alone, the earliest of them, TIME-WAIT kept when the rest are cancelled")
    func timerSet() {
        var timers = ConnectionTimers()
        #expect(timers.earliest == nil)
        for timer in ConnectionTimers.Timer.allCases { #expect(timers[timer] == nil) }
        timers[.retransmit] = Instant(nanoseconds: 300)
        timers[.delayedAck] = Instant(nanoseconds: 40)
        timers[.keepalive] = Instant(nanoseconds: 7_000)
        timers[.timeWait] = Instant(nanoseconds: 60_000)
        #expect(timers[.persist] == nil)
        #expect(timers.earliest == Instant(nanoseconds: 40))
        #expect(timers.isDue(.delayedAck, at: Instant(nanoseconds: 40)) && !timers.isDue(.retransmit, at: Instant(nanoseconds: 299)))
        timers[.delayedAck] = nil
        #expect(timers.earliest == Instant(nanoseconds: 300))
        timers.cancelAllButTimeWait()
        #expect(timers[.retransmit] == nil && timers[.keepalive] == nil)
        #expect(timers.earliest == Instant(nanoseconds: 60_000))
        #expect(MemoryLayout<ConnectionTimers>.size == 40, "five deadlines of 8 bytes, nothing more per connection")
    }
}
