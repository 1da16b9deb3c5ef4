import IOTCPCommon

/// The reordering window (RACK's idea, RFC 8985 §6.2, with sequence order standing in for send time). IsLost
/// wants more than two segments' bytes or three ranges SACKed above a hole before it calls the hole lost:
/// with a short flight, or when the ACKs that would have brought more SACKs are lost, that never comes, and
/// the hole waits for the RTO (200 ms at least, then one segment's window). But a segment first sent below
/// one the peer has SACKed was sent before it (new data goes in sequence order), so it is either lost or
/// reordered, and reordering is over within a fraction of a round trip. So when an ACK SACKs new data above a
/// hole IsLost does not call lost (and that NextSeg would not send), the retransmission timer is armed a
/// quarter of an RTT ahead (1 ms at least), before the RTO or a probe would fire. If the hole is still there
/// then, every unSACKed byte below the highest byte SACKed at arming counts as lost: recovery begins (when a
/// timeout does not bar it), or NextSeg sends them in the one under way. Then the RTO is armed again.
///
/// The same window serves lost retransmission detection: data first sent after the latest retransmission,
/// SACKed while a retransmitted hole stays but too little of it for IsLost, shows the retransmissions lost
/// once the window passes with no retransmission since (RACK's rule, by the same sequence order).
extension TCPConnection {
    static let minimumReorderingWindow: UInt64 = Nanoseconds.millisecond

    /// After an ACK that SACKed new data.
    mutating func armReorderTimer(now: Instant, configuration: TCPConfiguration) {
        guard sackEnabled, rtt.hasSample, retransmitTimerKind != .reorderingWindow, retransmitTimerKind != .reneged,
              sendUnacknowledged < sendMaximum,
              let highestSACKed = scoreboard.blocks.last?.right else { return }
        let firstSent = configuration.reorderingWindow && recoveryAllowed
            && (reorderLostBelow.map { $0 < highestSACKed } ?? true) && holeAwaitingEvidence
        guard firstSent || frontierAwaitingEvidence(highestSACKed: highestSACKed, configuration: configuration) != nil else { return }
        let deadline = now + max(rtt.smoothed / 4, Self.minimumReorderingWindow)
        if let armed = timers[.retransmit], armed <= deadline { return }
        reorderEvidenceEnd = highestSACKed
        armRetransmit(at: deadline, as: .reorderingWindow)
    }

    /// A hole below SACKed data that IsLost does not call lost, so that nothing will send it.
    var holeAwaitingEvidence: Bool {
        scoreboard.hasHoleNotLost(from: sendUnacknowledged, threshold: lossThreshold, lostBelow: reorderLostBelow)
    }

    /// Data first sent after the latest retransmission SACKed while a retransmitted hole stays, too little for
    /// IsLost (lost retransmission detection's first rule, TCPConnection+LostRetransmission.swift): RACK
    /// would call the retransmissions lost a reordering window on, and so does this. Returns the retransmitted
    /// frontier when so.
    func frontierAwaitingEvidence(highestSACKed: SequenceNumber, configuration: TCPConfiguration) -> SequenceNumber? {
        guard configuration.lostRetransmissionDetection, highestSACKed > retransmissionRoundMark,
              let frontier = retransmittedFrontier, sendUnacknowledged < frontier else { return nil }
        return frontier
    }

    /// The window passed: what is still unSACKed below the evidence is lost; retransmissions below it too,
    /// when the evidence was sent after all of them (no retransmission since).
    mutating func reorderWindowPassed<O: CommandOutput>(now: Instant, configuration: TCPConfiguration, output: inout O) {
        armRetransmit(at: now + rtt.timeout)
        guard sendUnacknowledged < reorderEvidenceEnd, !scoreboard.isEmpty else { return }
        if let frontier = frontierAwaitingEvidence(highestSACKed: reorderEvidenceEnd, configuration: configuration) {
            resendLostRetransmissions(below: frontier, frontier: frontier, now: now, configuration: configuration, output: &output)
        }
        guard configuration.reorderingWindow, recoveryAllowed, holeAwaitingEvidence else { return }
        reorderLostBelow = reorderEvidenceEnd
        reorderingWindowLosses &+= 1
        if !inRecovery { enterRecovery(now: now) }
    }
}
