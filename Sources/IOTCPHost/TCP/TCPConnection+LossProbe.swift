import IOTCPCommon

/// Tail loss probes (RFC 8985 §7). A loss among a flight's last segments leaves too few segments behind it
/// for duplicate ACKs or SACK to show it, and only the RTO (200 ms at least, doubled after each) would
/// repair it. A probe instead sends the last segment again about two round trips after the last data left:
/// its ACK either acknowledges everything (only the tail was lost), or carries the SACK that starts recovery
/// (early retransmit, with the few segments left outstanding), or shows by a D-SACK that nothing was lost.
///
/// The probe is always the last segment sent, never new data as RFC 8985 §7.3 prefers: new file data leaves
/// the NIC only after its disk read, while a RETRANSMIT comes from what the NIC already holds. It shares the
/// retransmission timer: armed as the probe's timeout when a probe may go, as the RTO otherwise.
extension TCPConnection {
    /// RFC 8985's WCDelAckT: how long a receiver may hold the ACK of a single segment.
    static let worstCaseDelayedAck: UInt64 = 200 * Nanoseconds.millisecond
    /// Added to two round trips (as Linux adds two ticks): with round trips of tens of microseconds, as inside
    /// one machine, two of them are shorter than the scheduling noise of the receiver's ACKs. Linux once took
    /// 10 ms as the least probe timeout; on such paths that left a flight whose ACKs were lost idle for fifty
    /// round trips, where a spurious probe costs one segment and a D-SACK.
    static let probeTimeoutAllowance: UInt64 = 2 * Nanoseconds.millisecond

    /// Arms the retransmission timer from `now`, after new data reached the wire or new data was
    /// acknowledged: as a loss probe's timeout when one may go and it comes before the RTO (RFC 8985 §7.2),
    /// as the RTO otherwise (RFC 6298 §5.1 and §5.3).
    mutating func armLossTimer(now: Instant, configuration: TCPConfiguration) {
        if unechoedBytes > 0 && echoedEnd <= sendUnacknowledged {
            // All that is outstanding waits on the NIC (a disk read, its queue), as after a first SEND.
            armRetransmitAwaitingEcho(now: now, configuration: configuration)
            return
        }
        if let probe = probeTimeout(configuration: configuration), probe < rtt.timeout {
            armRetransmit(at: now + probe, as: .probe)
        } else {
            armRetransmit(at: now + rtt.timeout)
        }
    }

    /// RFC 8985 §7.2's PTO, or nil when no probe may go: without SACK (its ACK could show nothing) or an RTT
    /// sample, while a probe is unsettled, in recovery or after a timeout until SND.UNA passes SND.MAX of then
    /// (those repair the flight already, and a probe's verdict would lower the window a second time),
    /// while SND.NXT is behind SND.MAX (resending after a timeout or a Packet Too Big), into a closed window,
    /// with nothing outstanding, and while the NIC still holds file data of ours (the tail is not on the wire
    /// yet: its ECHO arms the probe, and a busy NIC does not wake the host for probes that could not go).
    func probeTimeout(configuration: TCPConfiguration) -> UInt64? {
        guard configuration.tailLossProbes, sackEnabled, rtt.hasSample, probeEnd == nil, !repairingLoss,
              consecutiveTimeouts == 0, sendUnacknowledged < sendMaximum, sendNext == sendMaximum, sendWindow > 0,
              unechoedBytes == 0
        else { return nil }
        switch state {
        case .established, .closeWait, .finWait1, .closing, .lastAck: break
        default: return nil
        }
        var timeout = 2 * rtt.smoothed + Self.probeTimeoutAllowance
        // A single segment outstanding may be waiting for the receiver's delayed ACK.
        if sendMaximum - sendUnacknowledged <= segmentSize { timeout += Self.worstCaseDelayedAck }
        return timeout
    }

    /// The probe timeout expired: send the last segment again (or the FIN, when only it is outstanding), then
    /// arm the RTO (RFC 8985 §7.3).
    mutating func sendLossProbe<O: CommandOutput>(now: Instant, configuration: TCPConfiguration, output: inout O) {
        guard sendUnacknowledged < sendMaximum else { return }
        guard probeTimeout(configuration: configuration) != nil else {
            // What held when the timer was armed no longer does (recovery began, the window closed): the RTO
            // (and from it the persist timer) answers that, not a probe.
            armLossTimer(now: now, configuration: configuration)
            return
        }
        let dataEnd = SequenceNumber.min(sendMaximum, sendQueue.end)
        if let finSequence, sendMaximum == finSequence + 1 {
            // The FIN is the last segment: a receiver missing data before it SACKs it, as it would data.
            retransmit(from: finSequence, limit: 1, now: now, configuration: configuration, output: &output)
        } else if dataEnd > sendUnacknowledged {
            // The last segment's worth, within one queue entry (a RETRANSMIT names one entry's bytes).
            var start = SequenceNumber.max(sendUnacknowledged, dataEnd - segmentSize)
            while let piece = sendQueue.piece(at: start, limit: dataEnd - start), piece.sequence + piece.length < dataEnd {
                start = piece.sequence + piece.length
            }
            retransmit(from: start, limit: dataEnd - start, now: now, configuration: configuration, output: &output)
        } else {
            armRetransmit(at: now + rtt.timeout)
            return
        }
        probeEnd = sendMaximum
        lossProbes += 1
        armRetransmit(at: now + rtt.timeout)
    }

    /// An ACK after a probe: did the probe repair a loss (RFC 8985 §7.4)? A D-SACK says the original arrived
    /// too: nothing was lost. An ACK beyond the probe's end with no D-SACK says the probe filled a hole: a
    /// loss, so the congestion window comes down as for one recovery. A duplicate ACK at its end that
    /// acknowledges nothing new says both copies arrived. Anything else waits for a later ACK.
    mutating func settleLossProbe(_ segment: TCPRepr, now: Instant) {
        guard let probeEnd else { return }
        let ack = segment.acknowledgmentNumber
        guard ack >= probeEnd else { return }
        let blocks = segment.options.sackBlocks
        if let first = blocks.first, first.right <= ack || (blocks.count > 1 && blocks[1].left <= first.left && first.right <= blocks[1].right) {
            self.probeEnd = nil  // RFC 2883's D-SACK: the probe was a duplicate
        } else if ack > probeEnd {
            self.probeEnd = nil
            lossProbeRepairs += 1
            congestion.onLossDetected(flight: sendMaximum - sendUnacknowledged, now: now)
        } else if ack == sendUnacknowledged && blocks.isEmpty {
            self.probeEnd = nil  // a duplicate ACK: the receiver had the original and got the probe again
        }
    }
}
