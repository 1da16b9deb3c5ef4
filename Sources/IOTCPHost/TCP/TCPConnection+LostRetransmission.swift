import IOTCPCommon

/// Lost retransmission detection in SACK recovery. RFC 6675 sends each hole again once: a retransmission
/// that is lost too stays counted in the pipe and waits for the RTO (200 ms at least, then the window at one
/// segment and everything after the hole sent again). RFC 8985's RACK finds these losses by send time; the
/// host keeps no time per segment (the NIC sends file data), so it uses the order retransmissions went in:
///
/// - more than two segments' worth of bytes first sent after the latest retransmission (above
///   `retransmissionRoundMark`, SND.MAX then) SACKed show every retransmission before them arrived or was
///   lost: the holes still below HighRxt are lost again;
/// - a retransmission of this pass SACKed above holes retransmitted before it shows those lost, once no
///   retransmission has gone for three quarters of an RTT: a reordered original arriving just after its
///   retransmission must not count (RACK's reordering window, coarser). A pass begins with the fast
///   retransmit or with holes sent again here, and only what NextSeg sends after that (at or above
///   `retransmissionPassStart`) counts: holes sent again here went after the older retransmissions above them.
///
/// The window comes down a second time in the recovery first (RFC 5681 §4.3: the loss of a retransmission
/// is a second sign of congestion), not once more for each; then every hole found lost goes again at once.
/// They replace retransmissions the pipe counted as in flight, and are no more than the retransmissions
/// already sent for them, so the burst is no larger than the one they replace.
extension TCPConnection {
    /// A pass of retransmissions began at SND.UNA's hole; NextSeg's from here on start at `passStart`.
    mutating func retransmissionPassStarted(at passStart: SequenceNumber, now: Instant) {
        retransmissionPassStart = passStart
        retransmissionSent(now: now)
    }

    /// Any retransmission in recovery: bytes past SND.MAX from now on were first sent after it.
    mutating func retransmissionSent(now: Instant) {
        lastRetransmissionAt = now
        retransmissionRoundMark = sendMaximum
    }

    /// After an ACK's SACK blocks (`newly`: what they covered for the first time) and cumulative ACK were taken.
    mutating func detectLostRetransmissions<O: CommandOutput>(
        newly: SACKScoreboard.NewlyCovered, now: Instant, configuration: TCPConfiguration, output: inout O
    ) {
        guard configuration.lostRetransmissionDetection, sackEnabled, inRecovery, sendUnacknowledged < highRetransmitted,
              !scoreboard.isEmpty else { return }
        let boundary: SequenceNumber
        if newly.end > retransmissionRoundMark, scoreboard.isLost(retransmissionRoundMark - 1, threshold: lossThreshold) {
            boundary = highRetransmitted
        } else if newly.first >= retransmissionPassStart, newly.first < highRetransmitted,
                  now - lastRetransmissionAt >= rtt.smoothed - rtt.smoothed / 4 {
            boundary = newly.first
        } else {
            return
        }
        // The holes below the boundary, if any: all were retransmitted (HighRxt passes only holes it sent).
        var holes: [(SequenceNumber, SequenceNumber)] = []
        var cursor = sendUnacknowledged
        for block in scoreboard.blocks {
            guard cursor < boundary else { break }
            if block.right <= cursor { continue }
            let holeEnd = SequenceNumber.min(block.left, boundary)
            if cursor < holeEnd { holes.append((cursor, holeEnd)) }
            cursor = SequenceNumber.max(cursor, block.right)
        }
        guard !holes.isEmpty else { return }
        if !recoveryLoweredForLostRetransmission {
            recoveryLoweredForLostRetransmission = true
            congestion.onLossDetected(flight: congestion.window, now: now)
        }
        let oldHigh = highRetransmitted
        for (start, end) in holes {
            var position = start
            while position < end {
                let sentTo = retransmitSpan(from: position, limit: min(end - position, segmentSize), now: now,
                                            configuration: configuration, output: &output)
                guard sentTo > position else { break }
                position = sentTo
                lostRetransmissions &+= 1
            }
        }
        // SND.UNA's hole went again: its RTO counts from now (an RTO dating from the last cumulative ACK would
        // fire before this retransmission's ACK could come on a long path).
        if holes[0].0 == sendUnacknowledged { armRetransmit(at: now + rtt.timeout) }
        retransmissionPassStarted(at: oldHigh, now: now)
    }
}
