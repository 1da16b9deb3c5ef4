import IOTCPCommon
import Testing
@testable import IOTCPHost

@Suite("SACK scoreboard and connection timers")
struct ScoreboardAndTimerTests {
    let mss = 1000
    /// IsLost's bytes: (DupThresh - 1) segments, to be exceeded.
    var threshold: Int { 2 * mss }
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
        // One straddling SND.UNA (a late ACK's, or nonsense) or starting at it is no SACK: nothing held out of
        // order is acknowledged. Ignored.
        board.record(SACKBlockList([block(500, 1500), block(1000, 2000)]), unacknowledged: seq(1000), sendMaximum: seq(10000))
        #expect(board.blocks == [block(3000, 4500), block(5000, 6000)])
        board.record(SACKBlockList([block(1500, 2000)]), unacknowledged: seq(1000), sendMaximum: seq(10000))
        #expect(board.sackedBytes == 500 + 1500 + 1000)
        #expect(board.sackedBytes(below: seq(3500)) == 500 + 500 && board.sackedBytes(below: seq(1500)) == 0)
        #expect(board.sackedBytes(below: seq(7000)) == board.sackedBytes)
        board.acknowledge(through: seq(3500))
        #expect(board.blocks == [block(3500, 4500), block(5000, 6000)])
        board.clear()
        #expect(board.isEmpty && board.sackedBytes == 0)
    }

    @Test("record reports the first byte and the end of what an ACK's blocks covered for the first time")
    func newlyCovered() {
        var board = SACKScoreboard()
        let first = board.record(SACKBlockList([block(3000, 4000)]), unacknowledged: seq(1000), sendMaximum: seq(10000))
        #expect(first == SACKScoreboard.NewlyCovered(first: seq(3000), end: seq(4000)))
        // The same block again: nothing new.
        #expect(board.record(SACKBlockList([block(3000, 4000)]), unacknowledged: seq(1000), sendMaximum: seq(10000)) == nil)
        // Growing it on both sides, and a block of its own above: from the lowest new byte to the highest's end.
        let grown = board.record(SACKBlockList([block(2000, 5000), block(7000, 8000)]), unacknowledged: seq(1000), sendMaximum: seq(10000))
        #expect(grown == SACKScoreboard.NewlyCovered(first: seq(2000), end: seq(8000)))
        // Filling the gap between two blocks covers only the gap.
        #expect(board.record(SACKBlockList([block(2000, 8000)]), unacknowledged: seq(1000), sendMaximum: seq(10000))
                == SACKScoreboard.NewlyCovered(first: seq(5000), end: seq(7000)))
        // Stale and never-sent blocks cover nothing.
        #expect(board.record(SACKBlockList([block(0, 900), block(9000, 11000)]), unacknowledged: seq(1000), sendMaximum: seq(10000)) == nil)
        #expect(board.blocks == [block(2000, 8000)])
    }

    @Test("IsLost, NextSeg and SetPipe as RFC 6675 defines them")
    func lossQuestions() {
        var board = SACKScoreboard()
        // Sent 1000..<9000 in segments of 1000; the peer holds 2000..<3000 and 4000..<7000.
        board.record(SACKBlockList([block(2000, 3000), block(4000, 7000)]), unacknowledged: seq(1000), sendMaximum: seq(9000))
        // 4,000 SACKed bytes lie above 1000 (more than 2 segments): lost. Above 3000, 3,000: lost. Above 7000: none.
        #expect(board.isLost(seq(1000), threshold: threshold))
        #expect(board.isLost(seq(3000), threshold: threshold))
        #expect(!board.isLost(seq(7000), threshold: threshold))
        // Exactly two segments' bytes above, in one range, are not enough; a byte more is.
        var two = SACKScoreboard()
        two.record(SACKBlockList([block(2000, 4000)]), unacknowledged: seq(1000), sendMaximum: seq(9000))
        #expect(!two.isLost(seq(1000), threshold: threshold))
        two.record(SACKBlockList([block(4000, 4001)]), unacknowledged: seq(1000), sendMaximum: seq(9000))
        #expect(two.isLost(seq(1000), threshold: threshold))
        // Three discontiguous short ranges (300 bytes in all) are DupThresh SACKed sequences: lost.
        var short = SACKScoreboard()
        short.record(SACKBlockList([block(2000, 2100), block(2500, 2600)]), unacknowledged: seq(1000), sendMaximum: seq(9000))
        #expect(!short.isLost(seq(1000), threshold: threshold))
        short.record(SACKBlockList([block(3000, 3100)]), unacknowledged: seq(1000), sendMaximum: seq(9000))
        #expect(short.isLost(seq(1000), threshold: threshold) && !short.isLost(seq(2100), threshold: threshold))
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

@Suite("Keyed numbers and SYN cookies")
struct ConnectionSecretsTests {
    let secrets = ConnectionSecrets(key0: 0x0123_4567_89AB_CDEF, key1: 0xFEDC_BA98_7654_3210)
    let server = IPAddress(IPv4Address(10, 0, 0, 2))
    let client = IPAddress(IPv4Address(10, 0, 0, 1))
    let now = Instant(nanoseconds: 1_000 * Nanoseconds.second)

    func syn(mss: UInt16?, shift: UInt8?, sack: Bool, timestamps: Bool) -> TCPRepr {
        TCPRepr(sourcePort: 40000, destinationPort: 80, sequenceNumber: SequenceNumber(777_000), flags: .syn, window: 65535,
                options: TCPOptions(maximumSegmentSize: mss, windowScale: shift, sackPermitted: sack,
                                    timestamps: timestamps ? TCPTimestamps(value: 12345, echoReply: 0) : nil))
    }

    /// The client's ACK of a cookie SYN-ACK, as a Linux client sends it.
    func ack(of reply: TCPRepr, tamper: UInt32 = 0) -> TCPRepr {
        TCPRepr(sourcePort: 40000, destinationPort: 80, sequenceNumber: SequenceNumber(777_001),
                acknowledgmentNumber: reply.sequenceNumber + 1 + Int(tamper), flags: .ack, window: 502,
                options: TCPOptions(timestamps: reply.options.timestamps.map { TCPTimestamps(value: 12346, echoReply: $0.value) }))
    }

    @Test("a cookie comes back with the MSS rounded down to its table, and window scale and SACK when timestamps carried them")
    func roundTrip() throws {
        let configuration = TCPConfiguration()
        let reply = secrets.cookieReply(to: syn(mss: 1460, shift: 7, sack: true, timestamps: true), remote: client, local: server, now: now,
                                        configuration: configuration)
        #expect(reply.flags == [.syn, .ack] && reply.acknowledgmentNumber == SequenceNumber(777_001))
        #expect(reply.options.windowScale == configuration.receiveWindowShift && reply.options.sackPermitted)
        let parameters = try #require(secrets.verifyCookie(in: ack(of: reply), remote: client, local: server, now: now + 5 * Nanoseconds.second))
        // The round trip: the 5 s since the SYN-ACK, plus what its TSval's option bits took off the clock.
        let sinceTSval = UInt64(UInt32(truncatingIfNeeded: (now + 5 * Nanoseconds.second).nanoseconds / Nanoseconds.millisecond)
                                - reply.options.timestamps!.value)
        #expect(sinceTSval >= 5_000 && sinceTSval < 5_032)
        #expect(parameters == ConnectionSecrets.CookieParameters(initialSequence: reply.sequenceNumber, peerSegmentSize: 1460,
                                                                 windowShift: 7, selectiveAcknowledgments: true,
                                                                 handshakeRoundTrip: sinceTSval * Nanoseconds.millisecond))
        // 1300 is not in the table: the largest entry below it, 1220, is what the connection may use.
        let odd = secrets.cookieReply(to: syn(mss: 1300, shift: nil, sack: false, timestamps: false), remote: client, local: server, now: now,
                                      configuration: configuration)
        #expect(odd.options.timestamps == nil && odd.options.windowScale == nil && !odd.options.sackPermitted)
        let oddParameters = try #require(secrets.verifyCookie(in: ack(of: odd), remote: client, local: server, now: now))
        #expect(oddParameters.peerSegmentSize == 1220 && oddParameters.windowShift == nil && !oddParameters.selectiveAcknowledgments)
    }

    @Test("a cookie is refused when tampered with, from another address, or two periods old")
    func refusals() {
        let reply = secrets.cookieReply(to: syn(mss: 1460, shift: 7, sack: true, timestamps: true), remote: client, local: server, now: now,
                                        configuration: TCPConfiguration())
        #expect(secrets.verifyCookie(in: ack(of: reply, tamper: 1), remote: client, local: server, now: now) == nil)
        #expect(secrets.verifyCookie(in: ack(of: reply), remote: IPAddress(IPv4Address(10, 0, 0, 9)), local: server, now: now) == nil)
        #expect(secrets.verifyCookie(in: ack(of: reply), remote: client, local: server, now: now + SYNCookies.period) != nil)
        #expect(secrets.verifyCookie(in: ack(of: reply), remote: client, local: server, now: now + 2 * SYNCookies.period) == nil)
    }

    @Test("ISNs differ by endpoints and advance with the clock; timestamp offsets differ by endpoints")
    func keyedNumbers() {
        let first = secrets.initialSequence(local: server, remote: client, remotePort: 40000, localPort: 80, now: now)
        let otherPort = secrets.initialSequence(local: server, remote: client, remotePort: 40001, localPort: 80, now: now)
        let later = secrets.initialSequence(local: server, remote: client, remotePort: 40000, localPort: 80, now: now + 4_000_000)
        #expect(first != otherPort)
        #expect(later - first == 1000, "4 ms later the ISN is 1,000 ticks of 4 µs further")
        #expect(secrets.timestampOffset(remote: client, remotePort: 40000, localPort: 80)
                != secrets.timestampOffset(remote: client, remotePort: 40001, localPort: 80))
    }
}
