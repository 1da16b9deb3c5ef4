import IOTCPCommon

/// Segments from the peer: RFC 9293's per-state processing and RFC 5961's checks, ACK processing with RTT
/// samples, and loss recovery (duplicate ACKs, RFC 6675's SACK-based recovery, RFC 5827 early retransmit).
extension TCPConnection {
    // MARK: - Segments from the peer

    /// Processes a segment for this connection (RFC 9293 §3.10.7.3 and §3.10.7.4).
    mutating func handle<O: CommandOutput>(
        _ segment: TCPRepr, payload: UnsafeRawBufferPointer, now: Instant, configuration: TCPConfiguration,
        output: inout O
    ) {
        if state == .synSent {
            handleInSynSent(segment, now: now, configuration: configuration, output: &output)
            flush(now: now, configuration: configuration, output: &output)
            return
        }
        guard state != .closed else {
            // RFC 9293 §3.10.7.1, as for no connection: a reset the sender accepts (its challenge ACK after
            // our reset with a sequence it had not reached, say, gets one with exactly what it expects).
            if segment.flags.contains(.ack) && !segment.flags.contains(.rst) {
                emitSegment(sequence: segment.acknowledgmentNumber, flags: .rst, window: 0, options: TCPOptions(), payload: nil, output: &output)
            }
            return
        }
        let flags = segment.flags
        let sequence = segment.sequenceNumber

        // PAWS (RFC 7323 §5.3): a timestamp older than the last one in order is an old duplicate.
        if timestampsEnabled, !flags.contains(.rst), let timestamps = segment.options.timestamps,
           Int32(bitPattern: timestamps.value &- timestampRecent) < 0 {
            ackNow = true
            flush(now: now, configuration: configuration, output: &output)
            return
        }

        // 1. Sequence number check.
        let segmentLength = payload.count + (flags.contains(.syn) ? 1 : 0) + (flags.contains(.fin) ? 1 : 0)
        let window = max(receiveWindowEdge - receiveNext, 0)
        let acceptable: Bool
        if segmentLength == 0 {
            acceptable = window == 0 ? sequence == receiveNext : sequence.isIn(receiveNext, upTo: receiveNext + window)
        } else {
            acceptable = window > 0
                && (sequence.isIn(receiveNext, upTo: receiveNext + window)
                    || (sequence + (segmentLength - 1)).isIn(receiveNext, upTo: receiveNext + window))
        }
        if !acceptable {
            if !flags.contains(.rst) {
                ackNow = true
                // A FIN retransmitted into TIME-WAIT restarts its timer (RFC 9293 §3.10.7.4, TIME-WAIT).
                if state == .timeWait { timers[.timeWait] = now + configuration.timeWaitDuration }
            }
            flush(now: now, configuration: configuration, output: &output)
            return
        }

        // Record the timestamp to echo (RFC 7323 §4.3): only from segments at or before the left edge.
        if timestampsEnabled, let timestamps = segment.options.timestamps, sequence <= receiveNext {
            timestampRecent = timestamps.value
        }

        // 2. RST (RFC 5961 §3.2): only an exact match resets; anything else in the window is challenged.
        if flags.contains(.rst) {
            if sequence == receiveNext {
                fail(state == .synReceived && listenerPort == nil ? .connectionRefused : .connectionReset, output: &output)
            } else {
                challenge(now: now, configuration: configuration)
                flush(now: now, configuration: configuration, output: &output)
            }
            return
        }

        // 4. SYN in a synchronized state (RFC 5961 §4.2): a challenge ACK; a retransmitted SYN in
        // SYN-RECEIVED gets the SYN-ACK again.
        if flags.contains(.syn) {
            if state == .synReceived && sequence == initialReceiveSequence {
                sendSynchronize(now: now, configuration: configuration, output: &output)
            } else {
                challenge(now: now, configuration: configuration)
                flush(now: now, configuration: configuration, output: &output)
            }
            return
        }

        // 5. ACK.
        guard flags.contains(.ack) else { return }
        if state == .synReceived {
            let ack = segment.acknowledgmentNumber
            guard sendUnacknowledged < ack && ack <= sendMaximum else {
                emitReset(sequence: ack, output: &output)
                return
            }
            state = .established
            events.insert(.writable)
            if consecutiveTimeouts == 0 { rtt.addSample(now - timedAt, configuration: configuration) } else { rtt.restartAfterSynTimeout() }
            consecutiveTimeouts = 0
            sendWindow = Int(segment.window) << Int(sendWindowShift)
            sendWindowUpdateSequence = sequence
            sendWindowUpdateAcknowledgment = ack
            refreshKeepalive(now: now, configuration: configuration)
        }
        guard processAcknowledgment(segment, payloadLength: payload.count, now: now, configuration: configuration, output: &output)
        else {
            flush(now: now, configuration: configuration, output: &output)
            return
        }
        refreshKeepalive(now: now, configuration: configuration)

        // 7. Data.
        if !payload.isEmpty && closedByApplication && (state == .finWait1 || state == .finWait2)
            && sequence + payload.count > receiveNext {
            // New data the application closed its side for: it can never be read (RFC 9293 §3.6, as Linux).
            abort(output: &output)
            return
        }
        if !payload.isEmpty {
            switch state {
            case .established, .finWait1, .finWait2:
                receiveData(payload, at: sequence)
            default:
                break  // the peer already sent FIN: data after it is ignored
            }
        }

        // 8. FIN.
        if flags.contains(.fin) {
            let finAt = sequence + payload.count
            if finAt == receiveNext {
                receiveFin(now: now, configuration: configuration)
            } else if finAt > receiveNext {
                pendingFinSequence = finAt
                ackNow = true
            }
        } else if let pending = pendingFinSequence, pending == receiveNext {
            receiveFin(now: now, configuration: configuration)
        }
        closeFlowOnNIC(output: &output)
        flush(now: now, configuration: configuration, output: &output)
    }

    mutating func handleInSynSent<O: CommandOutput>(
        _ segment: TCPRepr, now: Instant, configuration: TCPConfiguration, output: inout O
    ) {
        let flags = segment.flags
        let ack = segment.acknowledgmentNumber
        if flags.contains(.ack), ack <= initialSendSequence || ack > sendMaximum {
            if !flags.contains(.rst) { emitReset(sequence: ack, output: &output) }
            return
        }
        if flags.contains(.rst) {
            if flags.contains(.ack) { fail(.connectionRefused, output: &output) }
            return
        }
        guard flags.contains(.syn) else { return }
        adoptSynchronize(segment, configuration: configuration)
        if flags.contains(.ack) {
            sendUnacknowledged = ack
            sendQueue.acknowledge(through: ack)
            state = .established
            events.formUnion([.connected, .writable])
            timers[.retransmit] = nil
            if consecutiveTimeouts == 0 { rtt.addSample(now - timedAt, configuration: configuration) } else { rtt.restartAfterSynTimeout() }
            consecutiveTimeouts = 0
            sendWindow = Int(segment.window) << Int(sendWindowShift)
            if configuration.acknowledgeConnectWithData {
                // Our SYN's window (never scaled) was an offer: the peer may fill it before hearing from us.
                receiveWindowEdge = receiveNext + min(receiveBuffer.free, 65535)
                // The engine sends it after the application's turn; a timer a tick away, if nobody asks the
                // engine to (the peer takes an RTT sample from this ACK: it must not wait a delayed ACK's 40 ms).
                owesHandshakeAcknowledgment = true
                timers[.delayedAck] = now + Nanoseconds.millisecond
            } else {
                ackNow = true
            }
            refreshKeepalive(now: now, configuration: configuration)
        } else {
            // Simultaneous open (RFC 9293 §3.5): both sent SYNs.
            state = .synReceived
            sendSynchronize(now: now, configuration: configuration, output: &output)
        }
    }

    /// RFC 9293 §3.10.7.4 step 5 for synchronized states. Returns false when the segment must go no further.
    mutating func processAcknowledgment<O: CommandOutput>(
        _ segment: TCPRepr, payloadLength: Int, now: Instant, configuration: TCPConfiguration, output: inout O
    ) -> Bool {
        let ack = segment.acknowledgmentNumber
        if ack > sendMaximum {
            // It acknowledges something not yet sent: answer with an ACK and drop it.
            ackNow = true
            return false
        }
        let window = Int(segment.window) << Int(sendWindowShift)
        unansweredProbes = 0
        var newlySACKed: SACKScoreboard.NewlyCovered?
        if sackEnabled && !segment.options.sackBlocks.isEmpty {
            // Against this ACK, not the last: a D-SACK of what it acknowledges is no news (RFC 2883).
            newlySACKed = scoreboard.record(segment.options.sackBlocks, unacknowledged: SequenceNumber.max(ack, sendUnacknowledged),
                                            sendMaximum: sendMaximum)
        }

        if probeEnd != nil { settleLossProbe(segment, now: now) }
        let previouslyUnacknowledged = sendUnacknowledged
        if ack > sendUnacknowledged {
            if consecutiveTimeouts > 0 { sampleRetransmission(echo: segment.options.timestamps?.echoReply, now: now, configuration: configuration) }
            newlyAcknowledged(through: ack, now: now, configuration: configuration, output: &output)
        }
        // SACKed bytes at SND.UNA can never be acknowledged while every retransmission skips them. `record`
        // takes no block that starts there, so only a cumulative ACK into a block brings this about.
        if let first = scoreboard.blocks.first, first.left <= sendUnacknowledged { sackReneged(now: now) }
        let duplicate: Bool
        if sackEnabled && !segment.options.sackBlocks.isEmpty {
            // RFC 6675 §2's duplicate ACK: one that SACKs bytes not SACKed before, even if it carries data,
            // changes the window or moves SND.UNA. RFC 5681's (same window, same ACK) would not count a Linux
            // receiver's ACKs while its window grows, and a loss would wait for the RTO.
            duplicate = newlySACKed != nil && sendUnacknowledged != sendMaximum
        } else {
            // RFC 5681 §2's, also for a SACK connection whose peer sends none (or none that survive a
            // middlebox): without it no loss would be repaired before the RTO.
            duplicate = ack == previouslyUnacknowledged && payloadLength == 0 && !segment.flags.contains(.fin)
                && window == sendWindow && sendUnacknowledged != sendMaximum
        }
        if duplicate {
            duplicateAcks += 1
            if inRecovery {
                if !sackEnabled { congestion.inflate(by: segmentSize) }
            } else if recoveryAllowed, duplicateAcks >= Self.duplicateThreshold
                        || (sackEnabled && scoreboard.isLost(sendUnacknowledged, threshold: lossThreshold)) || earlyRetransmitDue {
                enterRecovery(now: now)
            } else if recoveryAllowed {
                // RFC 3042 Limited Transmit: each of the first two duplicate ACKs lets one new segment out, so
                // the ACKs a fast retransmit needs keep coming when the window is small. Not after a timeout:
                // no fast retransmit may come then, and the SACKs free the window of what they cover (`pipe`).
                limitedTransmitAllowance = duplicateAcks * segmentSize
            }
        }
        if !inRecovery && recoveryAllowed && sackEnabled && sendUnacknowledged != sendMaximum
            && scoreboard.isLost(sendUnacknowledged, threshold: lossThreshold) {
            // SACK information alone can show the first segment lost (RFC 6675 §5 step 4's IsLost), even
            // when the ACKs carrying it changed the window and so did not count as duplicates.
            enterRecovery(now: now)
        }
        if let newlySACKed {
            detectLostRetransmissions(newly: newlySACKed, now: now, configuration: configuration, output: &output)
            armReorderTimer(now: now, configuration: configuration)
        }

        // Window update (RFC 9293 §3.10.7.4): only from a segment newer than the last that updated it.
        if sendWindowUpdateSequence < segment.sequenceNumber
            || (sendWindowUpdateSequence == segment.sequenceNumber && sendWindowUpdateAcknowledgment <= ack) {
            if window > sendWindow && sendWindow == 0 { timers[.persist] = nil; persistBackoff = 0 }
            sendWindow = window
            sendWindowUpdateSequence = segment.sequenceNumber
            sendWindowUpdateAcknowledgment = ack
        }

        switch state {
        case .finWait1 where finAcknowledged:
            state = .finWait2
            if closedByApplication { timers[.timeWait] = now + configuration.finWait2Timeout }
        case .closing where finAcknowledged:
            enterTimeWait(now: now, configuration: configuration, output: &output)
        case .lastAck where finAcknowledged:
            close(output: &output)
            return false
        default:
            break
        }
        return true
    }

    /// After timeouts, an ACK of new data whose echoed timestamp is one we sent since the first of them
    /// measures the retransmission's round trip unambiguously (RFC 7323 §4.1, where Karn's rule forbids a
    /// sequence-based sample): the RTO returns from its backoff at once instead of after one more clean
    /// round, so a lossy path does not keep a minute-long RTO that turns a few losses into a give-up.
    mutating func sampleRetransmission(echo: UInt32?, now: Instant, configuration: TCPConfiguration) {
        guard timestampsEnabled, let echo, echo != 0 else { return }
        let sent = Int32(bitPattern: echo &- timestampClock(retransmittingSince))
        let age = Int32(bitPattern: timestampClock(now) &- echo)
        guard sent >= 0, age >= 0 else { return }
        rtt.addSample(UInt64(age) * Nanoseconds.millisecond, configuration: configuration)
    }

    var finAcknowledged: Bool {
        guard let finSequence else { return false }
        return sendUnacknowledged > finSequence
    }

    mutating func newlyAcknowledged<O: CommandOutput>(
        through ack: SequenceNumber, now: Instant, configuration: TCPConfiguration, output: inout O
    ) {
        let dataEnd = sendQueue.end
        // Only data counts towards the congestion window: not the SYN, not the FIN.
        let dataStart = sendQueue.acknowledged
        let acknowledgedBytes = max((ack > dataEnd ? dataEnd : ack) - SequenceNumber.max(sendUnacknowledged, dataStart), 0)
        let queueHadRoom = queueHasRoom(configuration: configuration)
        sendQueue.acknowledge(through: ack > dataEnd ? dataEnd : ack)
        fileBytesQueued = min(fileBytesQueued, sendQueue.count)
        sendUnacknowledged = ack
        if sendNext < ack { sendNext = ack }
        // Acknowledged bytes are on the wire: the NIC's marks never fall more than 2 GiB behind (sequence
        // comparisons would turn) however much is sent from memory between file ranges.
        if echoedEnd < ack { echoedEnd = ack }
        if sendIssuedEnd < ack { sendIssuedEnd = ack }
        if highRetransmitted < ack { highRetransmitted = ack }
        scoreboard.acknowledge(through: ack)
        if recoveryBarredUntilPoint && ack >= recoveryPoint { recoveryBarredUntilPoint = false }
        if let lostBelow = reorderLostBelow, lostBelow <= ack { reorderLostBelow = nil }

        // RTT sample (RFC 6298 §3, Karn): the timed data reached the wire at `timedAt`.
        if let timed = timedSequence, ack >= timed {
            if !timedAwaitsEcho { rtt.addSample(now - timedAt, configuration: configuration) }
            timedSequence = nil
            timedAwaitsEcho = false
        }
        consecutiveTimeouts = 0

        if inRecovery {
            if ack >= recoveryPoint {
                inRecovery = false
                congestion.deflateToThreshold()
            } else if !sackEnabled {
                // RFC 6582 §3.2 step 3, a partial ACK: retransmit the next hole, deflate by what was acknowledged.
                retransmit(from: sendUnacknowledged, limit: segmentSize, now: now, configuration: configuration, output: &output)
                congestion.setWindow(congestion.window - acknowledgedBytes + segmentSize)
            }
        } else {
            congestion.onAcknowledged(bytes: acknowledgedBytes, now: now, smoothedRTT: rtt.smoothed)
        }
        duplicateAcks = 0
        limitedTransmitAllowance = 0

        // RFC 6298 §5.2 and 5.3.
        if sendUnacknowledged == sendMaximum {
            timers[.retransmit] = nil
        } else {
            armLossTimer(now: now, configuration: configuration)
        }

        // The NIC keeps sent bytes until told they are acknowledged: tell it in batches.
        let reportable = ack > dataEnd ? dataEnd : ack
        if reportable - acknowledgedReported >= configuration.acknowledgedBatchBytes
            || (reportable == dataEnd && reportable > acknowledgedReported) {
            // Only a flow the NIC knows holds bytes there to free.
            if flowOpenOnNIC { output.emit(.acknowledged(handle.flow, through: reportable)) }
            if reportable == dataEnd { events.insert(.allAcknowledged) }
            acknowledgedReported = reportable
        }
        if !queueHadRoom && queueHasRoom(configuration: configuration) { events.insert(.writable) }
    }

    /// RFC 6675 §5.1 (and RFC 6582 §3.2 step 4): after a timeout no recovery begins until SND.UNA reaches
    /// SND.MAX as it was then. The peer's SACKs of what it already held come back at once and would start one
    /// on the first ACK, setting the window to a threshold above the timeout's one segment and sending every
    /// hole at once.
    /// (The flag falls when an ACK reaches the point: `newlyAcknowledged`.)
    var recoveryAllowed: Bool { !recoveryBarredUntilPoint }

    /// In recovery, or sending again after a timeout until SND.UNA passes SND.MAX of then.
    var repairingLoss: Bool { inRecovery || !recoveryAllowed }

    /// RFC 5827 Early Retransmit: with fewer than four segments outstanding and nothing new to send, fewer
    /// duplicate ACKs than three are all that can ever arrive; one less than the segments outstanding will do.
    var earlyRetransmitDue: Bool {
        let outstanding = (sendMaximum - sendUnacknowledged + segmentSize - 1) / segmentSize
        return outstanding < 4 && sendNext == sendQueue.end && duplicateAcks >= max(outstanding - 1, 1)
    }

    mutating func enterRecovery(now: Instant) {
        fastRecoveries += 1
        // Recovery answers for the loss a probe may have shown: the window comes down once, not twice; and
        // a probe's timer becomes the RTO (RFC 8985 §7.2: no probe in recovery), as does a reordering window
        // (the hole it waited on is being sent; one of the recovery's own is armed after this ACK if needed).
        probeEnd = nil
        if retransmitTimerKind == .probe || retransmitTimerKind == .reorderingWindow { armRetransmit(at: now + rtt.timeout) }
        limitedTransmitAllowance = 0
        inRecovery = true
        recoveryPoint = sendMaximum
        highRetransmitted = sendUnacknowledged
        recoveryLoweredForLostRetransmission = false
        congestion.onLossDetected(flight: sendMaximum - sendUnacknowledged, now: now)
        if !sackEnabled { congestion.inflate(by: Self.duplicateThreshold * segmentSize) }
        // The first retransmission goes now (RFC 5681 §3.2 step 2); the transmit loop does the rest.
        needsFastRetransmit = true
    }


    // MARK: - Loss recovery's questions (RFC 6675), asked of the scoreboard

    /// IsLost's bytes: more than (DupThresh - 1) * SMSS SACKed above a sequence number (RFC 6675 §4).
    var lossThreshold: Int { (Self.duplicateThreshold - 1) * segmentSize }

    /// RFC 6675 NextSeg rule 1: the first unSACKed, lost, not yet retransmitted range.
    func nextLostRange() -> (SequenceNumber, Int)? {
        scoreboard.nextLostRange(from: SequenceNumber.max(highRetransmitted, sendUnacknowledged), segmentSize: segmentSize,
                                 threshold: lossThreshold, lostBelow: reorderLostBelow)
    }

    /// RFC 6675 SetPipe: outstanding bytes neither SACKed nor lost, plus lost ones retransmitted. After a
    /// timeout, until SND.UNA passes SND.MAX of then, every unSACKed byte below SND.NXT went again since it:
    /// the bytes in flight are those less what the peer SACKed (as Linux counts its loss state's). Counting
    /// the SACKed bytes SND.NXT skips would let one hole go a round trip whatever the window.
    var pipe: Int {
        let outstanding = sendNext - sendUnacknowledged
        guard sackEnabled, !scoreboard.isEmpty else { return max(outstanding, 0) }
        if inRecovery {
            return scoreboard.pipe(outstanding: outstanding, unacknowledged: sendUnacknowledged, highRetransmitted: highRetransmitted,
                                   threshold: lossThreshold, lostBelow: reorderLostBelow)
        }
        if !recoveryAllowed { return max(outstanding - scoreboard.sackedBytes(below: sendNext), 0) }
        return max(outstanding, 0)
    }

    /// The peer's cumulative ACK stopped at bytes it had SACKed: it discarded them, as RFC 2018 lets a
    /// receiver short of memory. Nothing it SACKed can be trusted now: the scoreboard goes, and a timeout
    /// soon (half an RTT, 10 ms at least, as Linux waits) sends again from SND.UNA what was skipped as SACKed.
    mutating func sackReneged(now: Instant) {
        scoreboard.clear()
        reorderLostBelow = nil
        sackRenegings &+= 1
        armRetransmit(at: now + max(rtt.smoothed / 2, Self.renegingTimeout), as: .reneged)
    }

    static let renegingTimeout: UInt64 = 10 * Nanoseconds.millisecond
}
