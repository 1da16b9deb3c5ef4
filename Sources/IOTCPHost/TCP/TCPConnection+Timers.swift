import IOTCPCommon

/// The timers: retransmission (RFC 6298), delayed ACK, persist (zero-window probes), keepalive, TIME-WAIT.
extension TCPConnection {
    // MARK: - Timers

    var nextDeadline: Instant? { timers.earliest }

    mutating func handleTimers<O: CommandOutput>(now: Instant, configuration: TCPConfiguration, output: inout O) {
        if let deadline = timers[.timeWait], deadline <= now {
            close(output: &output)
            return
        }
        if let deadline = timers[.retransmit], deadline <= now {
            timers[.retransmit] = nil
            let kind = retransmitTimerKind
            retransmitTimerKind = .timeout
            switch kind {
            case .probe:
                sendLossProbe(now: now, configuration: configuration, output: &output)
            case .reorderingWindow:
                reorderWindowPassed(now: now, configuration: configuration, output: &output)
            case .timeout, .awaitingEcho, .reneged:
                retransmissionTimeout(now: now, configuration: configuration, output: &output)
                if state == .closed { return }
            }
        }
        if let deadline = timers[.persist], deadline <= now {
            timers[.persist] = nil
            // A closed connection's probes are limited as its retransmissions are: a peer that shut its window
            // and vanished would otherwise hold an orphan for minutes of backed-off probes.
            let probeLimit = closedByApplication
                ? min(configuration.maximumRetransmissions, configuration.maximumOrphanRetransmissions)
                : configuration.maximumRetransmissions
            if Int(unansweredProbes) >= probeLimit {
                fail(.timedOut, output: &output)
                return
            }
            if sendWindow > 0 && sendNext == sendMaximum && sendNext < sendQueue.end
                && sendUnacknowledged + sendWindow > sendNext {
                // A small window, not a closed one: send what fits rather than probe (the override timeout).
                sillyWindowOverride = true
            } else {
                sendWindowProbe(now: now, configuration: configuration, output: &output)
            }
        }
        if let deadline = timers[.keepalive], deadline <= now, let keepalive = keepaliveSettings(configuration) {
            if keepaliveProbesSent >= keepalive.probes {
                fail(.timedOut, output: &output)
                return
            }
            let advertised = windowField()
            emitSegment(sequence: sendUnacknowledged - 1, flags: .ack, window: advertised, options: currentOptions(now: now),
                        payload: nil, output: &output)
            keepaliveProbesSent += 1
            timers[.keepalive] = now + keepalive.interval
        }
        if let deadline = timers[.delayedAck], deadline <= now {
            timers[.delayedAck] = nil
            ackNow = true
        }
        flush(now: now, configuration: configuration, output: &output)
    }

    /// A zero-window probe: an old sequence number the peer must answer with its window (as Linux), then the
    /// next one after the persist timer's backoff.
    mutating func sendWindowProbe<O: CommandOutput>(now: Instant, configuration: TCPConfiguration, output: inout O) {
        let advertised = windowField()
        emitSegment(sequence: sendUnacknowledged - 1, flags: .ack, window: advertised, options: currentOptions(now: now),
                    payload: nil, output: &output)
        if unansweredProbes < .max { unansweredProbes += 1 }
        persistBackoff += 1
        armPersist(now: now, configuration: configuration)
    }

    /// The persist timer, backed off by the probes sent so far (RTO doubling, at most 64 times, at most the
    /// largest RTO).
    mutating func armPersist(now: Instant, configuration: TCPConfiguration) {
        let backoff = UInt64(1) << UInt64(min(persistBackoff, 6))
        timers[.persist] = now + min(rtt.timeout * backoff, configuration.maximumRetransmissionTimeout)
    }

    mutating func retransmissionTimeout<O: CommandOutput>(now: Instant, configuration: TCPConfiguration, output: inout O) {
        guard sendUnacknowledged < sendMaximum else { return }
        var limit = state == .synSent || state == .synReceived ? configuration.maximumSynRetransmissions : configuration.maximumRetransmissions
        if closedByApplication { limit = min(limit, configuration.maximumOrphanRetransmissions) }
        if consecutiveTimeouts >= limit {
            fail(state == .synSent ? .connectionRefused : .timedOut, output: &output)
            return
        }
        if sendWindow == 0 && state.isSynchronized && state != .timeWait {
            // The peer closed its window with data still in flight (RFC 9293 §3.8.6.1, MUST-36/37): nothing can
            // be sent into it, so probe it until it opens (or the peer stops answering), instead of waiting
            // out timeouts that send nothing. What was in flight goes again once it opens.
            sendNext = sendUnacknowledged
            timers[.retransmit] = nil
            timedSequence = nil
            timedAwaitsEcho = false
            sendWindowProbe(now: now, configuration: configuration, output: &output)
            return
        }
        if consecutiveTimeouts == 0 { retransmittingSince = now }
        consecutiveTimeouts += 1
        // A second timeout in a row with SACKed data still held: forget it (RFC 2018's caution), in case the
        // peer discarded it in a way no ACK showed; every unacknowledged byte goes again.
        if consecutiveTimeouts > 1 { scoreboard.clear() }
        timeouts += 1
        rtt.backOff(configuration: configuration)
        timedSequence = nil
        timedAwaitsEcho = false
        switch state {
        case .synSent, .synReceived:
            sendSynchronize(now: now, configuration: configuration, output: &output)
            armRetransmit(at: now + rtt.timeout)
            return
        default:
            break
        }
        // RFC 5681 §3.1 and RFC 6675 §5.1: one segment's window, and send again from the first unacknowledged.
        // The scoreboard stays (RFC 6675 §5.1 leaves it to updates of RFC 2018 on reneging; Linux keeps it
        // too): what the peer SACKed is not sent again nor counted in flight, and a SACK after the timeout is
        // news of what arrived since, which lost retransmission detection needs. A peer that discards what it
        // SACKed is caught by its cumulative ACK (`sackReneged`).
        congestion.onTimeout(flight: sendMaximum - sendUnacknowledged)
        recoveryPoint = sendMaximum
        recoveryBarredUntilPoint = true
        inRecovery = false
        duplicateAcks = 0
        limitedTransmitAllowance = 0
        probeEnd = nil
        reorderLostBelow = nil
        sendNext = sendUnacknowledged
        highRetransmitted = sendUnacknowledged
        lastTimeoutAt = now
        // The pass sending everything again from SND.UNA: what it sends after the first hole counts as evidence.
        retransmissionPassStarted(at: sendUnacknowledged + 1, now: now)
        armRetransmit(at: now + rtt.timeout)
    }

    mutating func armRetransmit(at deadline: Instant, as kind: RetransmitTimerKind = .timeout) {
        timers[.retransmit] = deadline
        retransmitTimerKind = kind
    }

    /// The RTO for data the NIC has not put on the wire yet: with the allowance for its disk and queue, until
    /// the ECHO re-arms it from the moment the data left (`handleEcho`).
    mutating func armRetransmitAwaitingEcho(now: Instant, configuration: TCPConfiguration) {
        armRetransmit(at: now + rtt.timeout + configuration.echoAllowance, as: .awaitingEcho)
    }

    /// The stack's keepalive, or Linux's defaults for a connection that asked for one (SO_KEEPALIVE).
    func keepaliveSettings(_ configuration: TCPConfiguration) -> (idle: UInt64, interval: UInt64, probes: Int)? {
        configuration.keepalive ?? (keepaliveRequested ? TCPConfiguration.defaultKeepalive : nil)
    }

    mutating func refreshKeepalive(now: Instant, configuration: TCPConfiguration) {
        guard let keepalive = keepaliveSettings(configuration), state == .established || state == .closeWait else { return }
        timers[.keepalive] = now + keepalive.idle
        keepaliveProbesSent = 0
    }

    /// Bytes of buffers held: the send ring and the receive ring.
    var bufferBytes: Int { sendQueue.allocatedBytes + receiveBuffer.allocatedBytes }

    mutating func cancelTimersForTimeWait() {
        timers.cancelAllButTimeWait()
        // Only ACKs are sent from here on, and nothing more is received: the buffers can go.
        sendQueue.releaseStorage()
        receiveBuffer.releaseStorage()
        scoreboard.clear(releasingStorage: true)
    }

    mutating func enterTimeWait<O: CommandOutput>(now: Instant, configuration: TCPConfiguration, output: inout O) {
        state = .timeWait
        cancelTimersForTimeWait()
        timers[.timeWait] = now + configuration.timeWaitDuration
        closeFlowOnNIC(output: &output)
    }

    /// The NIC needs a flow only while data may still leave as SEND or RETRANSMIT: in TIME-WAIT and
    /// CLOSED only host-built ACKs remain. Tells it once (if it was told of the flow at all), whichever way
    /// the connection got there.
    mutating func closeFlowOnNIC<O: CommandOutput>(output: inout O) {
        guard !flowEnded, state == .timeWait || state == .closed else { return }
        // A connection the NIC will end keeps its flow into TIME-WAIT: the TEARDOWN that follows names it.
        if endingOnNIC && state == .timeWait { return }
        flowEnded = true
        if flowOpenOnNIC {
            flowOpenOnNIC = false
            output.emit(.flowClose(handle.flow, reason: error == nil ? 0 : 1))
        }
        events.insert(.closed)
    }
}
