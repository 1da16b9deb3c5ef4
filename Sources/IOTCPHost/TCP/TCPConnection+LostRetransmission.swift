import IOTCPCommon

/// Lost retransmission detection in SACK recovery. RFC 6675 sends each hole again once: a retransmission
/// that is lost too stays counted in the pipe and waits for the RTO (200 ms at least, then the window at one
/// segment and everything after the hole sent again). At 5 % loss one retransmission in twenty is lost, and
/// with a long transfer's many recoveries that is most of the timeouts left. RFC 8985's RACK finds these
/// losses by send time; the host does not keep a time per segment (the NIC sends file data), so it uses the
/// order the retransmissions went in instead:
///
/// - bytes first sent after a round's last retransmission (above `retransmissionRoundMark`, SND.MAX then)
///   that the peer SACKs show every retransmission of the round arrived or was lost: the holes still below
///   HighRxt are lost again;
/// - a retransmission SACKed above a hole retransmitted before it (holes go in sequence order) shows that
///   hole's retransmission lost, if the round began at least three quarters of an RTT before: a reordered
///   original arriving just after the retransmission must not count (RACK's reordering window, coarser).
///
/// The holes found lost are sent again at once (they replace segments the pipe counted as in flight, so
/// the window allows them) and the window comes down a second time in the recovery (RFC 5681 §3.2: the
/// loss of a retransmission is a second sign of congestion), not once more for each.
extension TCPConnection {
    /// A round of retransmissions starts at SND.UNA's hole (the fast retransmit, or holes sent again here).
    mutating func retransmissionRoundStarted(now: Instant) {
        retransmissionRoundStartedAt = now
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
        } else if newly.first < highRetransmitted, now - retransmissionRoundStartedAt >= rtt.smoothed - rtt.smoothed / 4 {
            boundary = newly.first
        } else {
            return
        }
        // The holes below the boundary, as RETRANSMITs of at most a segment each, up to a window's worth.
        var budget = congestion.window
        var cursor = sendUnacknowledged
        var resent = false
        for block in scoreboard.blocks {
            guard cursor < boundary, budget > 0 else { break }
            if block.right <= cursor { continue }
            let holeEnd = SequenceNumber.min(block.left, boundary)
            while cursor < holeEnd && budget > 0 {
                let length = min(holeEnd - cursor, segmentSize)
                retransmit(from: cursor, limit: length, now: now, configuration: configuration, output: &output)
                cursor = cursor + length
                budget -= length
                resent = true
            }
            cursor = SequenceNumber.max(cursor, block.right)
        }
        guard resent else { return }
        lostRetransmissions &+= 1
        if !recoveryLoweredForLostRetransmission {
            recoveryLoweredForLostRetransmission = true
            congestion.onLossDetected(flight: pipe, now: now)
        }
        retransmissionRoundStarted(now: now)
    }
}
