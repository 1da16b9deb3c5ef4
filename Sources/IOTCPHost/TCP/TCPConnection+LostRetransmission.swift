import IOTCPCommon

/// Lost retransmission detection. RFC 6675 sends each hole again once, and after a timeout everything from
/// SND.UNA goes again once: a retransmission that is lost too waits for the RTO (200 ms at least, doubled
/// after a timeout, then the window at one segment and everything after the hole sent again). RFC 8985's
/// RACK finds these losses by send time; the host keeps no time per segment (the NIC sends file data), so it
/// uses the order retransmissions went in, which is sequence order within a pass:
///
/// - more than two segments' worth of bytes first sent after the latest retransmission (above
///   `retransmissionRoundMark`, SND.MAX then) SACKed show every retransmission before them arrived or was
///   lost: the holes still below the retransmitted frontier are lost again;
/// - a retransmission of this pass SACKed above holes retransmitted before it shows those lost, once no
///   retransmission has gone for three quarters of an RTT: a reordered original arriving just after its
///   retransmission must not count (RACK's reordering window, coarser). A pass begins with the fast
///   retransmit, with a timeout, or with holes sent again here, and only what goes after that (at or above
///   `retransmissionPassStart`) counts: holes sent again here went after the older retransmissions above them.
///
/// In recovery the frontier is HighRxt. After a timeout, until SND.UNA passes SND.MAX of then, it is SND.NXT
/// (every unSACKed byte below it went again since the timeout, in order); and for a round trip and a quarter
/// after the timeout the second rule waits, as SACKs of what went before the timeout may still arrive then.
///
/// In recovery the window comes down a second time first (RFC 5681 §4.3: the loss of a retransmission is a
/// second sign of congestion), not once more for each; after a timeout it is already at one segment and
/// growing from there, and stays (as Linux's loss state). Then every hole found lost goes again at once.
/// They replace retransmissions the pipe counted as in flight, and are no more than the retransmissions
/// already sent for them, so the burst is no larger than the one they replace.
extension TCPConnection {
    /// A pass of retransmissions began at SND.UNA's hole; those of the pass from here on start at `passStart`.
    mutating func retransmissionPassStarted(at passStart: SequenceNumber, now: Instant) {
        retransmissionPassStart = passStart
        retransmissionSent(now: now)
    }

    /// Any retransmission in a repair: bytes past SND.MAX from now on were first sent after it.
    mutating func retransmissionSent(now: Instant) {
        lastRetransmissionAt = now
        retransmissionRoundMark = sendMaximum
    }

    /// After an ACK's SACK blocks (`newly`: what they covered for the first time) and cumulative ACK were taken.
    /// New data SACKed past the latest retransmission but too little for IsLost waits for the reordering
    /// window instead (`frontierAwaitingEvidence`, TCPConnection+ReorderTimer.swift).
    mutating func detectLostRetransmissions<O: CommandOutput>(
        newly: SACKScoreboard.NewlyCovered, now: Instant, configuration: TCPConfiguration, output: inout O
    ) {
        guard configuration.lostRetransmissionDetection, sackEnabled, let frontier = retransmittedFrontier,
              sendUnacknowledged < frontier, !scoreboard.isEmpty else { return }
        if newly.end > retransmissionRoundMark, scoreboard.isLost(retransmissionRoundMark - 1, threshold: lossThreshold) {
            resendLostRetransmissions(below: frontier, frontier: frontier, now: now, configuration: configuration, output: &output)
        } else if newly.first >= retransmissionPassStart, newly.first < frontier,
                  now - lastRetransmissionAt >= rtt.smoothed - rtt.smoothed / 4,
                  inRecovery || now - lastTimeoutAt >= rtt.smoothed + rtt.smoothed / 4 {
            resendLostRetransmissions(below: newly.first, frontier: frontier, now: now, configuration: configuration, output: &output)
        }
    }

    /// Sends again the holes below `boundary` (unSACKed ranges with a SACKed block above), all retransmitted
    /// once already (HighRxt passes only holes it sent, and after a timeout SND.NXT passes only SACKed bytes
    /// unsent), if there are any; the next pass starts at `frontier`.
    mutating func resendLostRetransmissions<O: CommandOutput>(
        below boundary: SequenceNumber, frontier: SequenceNumber, now: Instant, configuration: TCPConfiguration, output: inout O
    ) {
        var firstHole: SequenceNumber?
        var cursor = sendUnacknowledged
        for block in scoreboard.blocks where block.right > cursor {
            guard cursor < boundary else { break }
            let holeEnd = SequenceNumber.min(block.left, boundary)
            if cursor < holeEnd && firstHole == nil {
                firstHole = cursor
                // In recovery the window comes down once more, before the first hole goes.
                if inRecovery && !recoveryLoweredForLostRetransmission {
                    recoveryLoweredForLostRetransmission = true
                    congestion.onLossDetected(flight: congestion.window, now: now)
                }
            }
            var position = cursor
            while position < holeEnd {
                let sentTo = retransmitSpan(from: position, limit: min(holeEnd - position, segmentSize), now: now,
                                            configuration: configuration, output: &output)
                guard sentTo > position else { break }
                position = sentTo
                lostRetransmissions &+= 1
            }
            cursor = SequenceNumber.max(cursor, block.right)
        }
        guard let firstHole else { return }
        // SND.UNA's hole went again: its RTO counts from now (an RTO dating from the last cumulative ACK would
        // fire before this retransmission's ACK could come on a long path).
        if firstHole == sendUnacknowledged { armRetransmit(at: now + rtt.timeout) }
        retransmissionPassStarted(at: frontier, now: now)
    }

    /// The end of what the current repair has sent again, or nil when none is under way: HighRxt in
    /// recovery; after a timeout SND.NXT, up to SND.MAX of then (beyond it the data is new).
    var retransmittedFrontier: SequenceNumber? {
        guard repairingLoss else { return nil }
        return inRecovery ? highRetransmitted : SequenceNumber.min(sendNext, recoveryPoint)
    }
}
