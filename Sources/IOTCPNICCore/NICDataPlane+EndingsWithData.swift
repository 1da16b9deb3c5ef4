import IOTCPCommon

/// Endings handed over with data (TEARDOWN with data): AccelTCP's quasi-TCB for a connection that makes one
/// request and gets one response. The host sends the response and the FIN and hands the ending over at the
/// application's close, before the peer has acknowledged anything of it, so its control block lives only
/// from the handshake to the close and never takes an ACK, a timer or an ECHO.
///
/// Here the ending is a closing entry (`ClosingConnection`) that keeps the flow open until the peer has
/// acknowledged the data before the FIN: the flow's queue still sends what the SENDs asked for, its store
/// keeps what was sent, and the peer's segments come to the entry instead of going up. A timeout sends the
/// data again from the first unacknowledged byte, one segment first and then a window growing with each ACK
/// (the host's bytes from the copy the command carried, the file bytes as a RETRANSMIT would), and the FIN
/// after it. Once the peer has acknowledged everything before the FIN the flow closes, the host hears
/// FLOW_RELEASED (its id may be given out again) and the entry goes on as any TEARDOWN's. Every other way
/// the entry ends (a reset, the retransmissions running out, a read that fails) releases the flow too.
extension NICDataPlane {
    static let noHostBytes = UInt32.max

    func teardownWithData<O: NICOutput>(
        flow: FlowID, _ parameters: TeardownParameters, unacknowledged: SequenceNumber, hostBytes: UnsafeRawBufferPointer,
        now: Instant, output: inout O
    ) {
        guard let index = openIndex(flow) else {
            fail(.unknownFlow, kind: .teardown, flow: flow, reference: UInt64(flow.rawValue), "TEARDOWN for a flow not open", output: &output)
            // The host keeps the id until it hears the flow is released: nothing here holds it.
            output.reply(.flowReleased(flow, reason: .failed))
            counters.flowsReleased += 1
            return
        }
        let slot = Int(index)
        guard flows[slot].ending < 0 else {
            fail(.malformedCommand, kind: .teardown, flow: flow, reference: UInt64(flow.rawValue), "a second TEARDOWN for a flow", output: &output)
            return
        }
        counters.teardowns += 1
        counters.endingsWithData += 1
        var entry = closingEntry(flows[slot].endpoints, parameters, now: now)
        if flows[slot].failed || deferredBytes + hostBytes.count > limits.maximumDeferredBytes {
            // Its data can no longer be sent (a read failed), or there is no room for the host's bytes.
            counters.closingReset += 1
            sendClosingSegment(entry, flags: [.rst, .ack], sequence: unacknowledged, now: now, output: &output)
            releaseFlow(index, reason: flows[slot].failed ? .failed : .reset, output: &output)
            return
        }
        entry.dataFlow = index
        entry.unacknowledged = unacknowledged
        entry.retransmissions = entry.retransmissionsLeft
        entry.baseTimeout = entry.timeout
        entry.resendNext = parameters.finSequence + 1
        entry.hostBytesStart = unacknowledged
        if !hostBytes.isEmpty {
            let held = newDeferredPacket()
            deferred[Int(held)].bytes.append(contentsOf: hostBytes)
            deferredBytes += hostBytes.count
            counters.payloadBytesCopied += hostBytes.count
            entry.hostBytes = held
        }
        guard let ending = holdClosing(entry, now: now, output: &output) else {
            // No room: reset (sent by `holdClosing`), and the flow goes.
            if entry.hostBytes != Self.noHostBytes { freeDeferredPacket(entry.hostBytes) }
            releaseFlow(index, reason: .reset, output: &output)
            return
        }
        flows[slot].ending = Int32(ending)
    }

    /// The peer acknowledged up to `acknowledgment`: the store lets go of what it took, and once everything
    /// before the FIN is acknowledged the flow is released. After a timeout the window grows and more goes.
    func acknowledgeEndingData<O: NICOutput>(_ slot: Int, through acknowledgment: SequenceNumber, now: Instant, output: inout O) {
        let entry = closing[slot]
        guard entry.dataFlow != 0, acknowledgment > entry.unacknowledged, acknowledgment <= entry.finSequence + 1 else { return }
        let through = SequenceNumber.min(acknowledgment, entry.finSequence)
        let taken = through - entry.unacknowledged
        closing[slot].unacknowledged = through
        // The peer is there: its retries and timeout start afresh, as a sender's do on new data acknowledged.
        closing[slot].retransmissionsLeft = entry.retransmissions
        closing[slot].timeout = entry.baseTimeout
        let pool = self.pool
        store.acknowledge(through: through, in: &flows[Int(entry.dataFlow)].sent) { pool.give($0) }
        if through == entry.finSequence {
            counters.endingDataAcknowledged += 1
            if closing[slot].resendNext <= entry.finSequence && acknowledgment == entry.finSequence {
                // Resending, and the FIN of this pass not yet gone (or not reached): it goes now.
                closing[slot].resendNext = entry.finSequence + 1
                resendFin(slot, now: now, output: &output)
            }
            releaseEndingFlow(slot, reason: .acknowledged)
            // Only the FIN is left, as for a TEARDOWN: its timer runs from now.
            closingWheel.schedule(slot, at: now + closing[slot].timeout)
            flushReleases(output: &output)
            return
        }
        // New data acknowledged: the timer starts again (RFC 6298 5.3).
        closingWheel.schedule(slot, at: now + closing[slot].timeout)
        if closing[slot].resendNext <= entry.finSequence {
            // Resending after a timeout: slow start.
            closing[slot].resendWindow += taken
            if closing[slot].resendNext < through { closing[slot].resendNext = through }
            sendEndingData(slot, now: now, output: &output)
        }
    }

    /// A timeout: the data goes again from the first unacknowledged byte, one segment's worth first.
    func resendEndingData<O: NICOutput>(_ slot: Int, now: Instant, output: inout O) {
        let index = Int(closing[slot].dataFlow)
        closing[slot].resendNext = closing[slot].unacknowledged
        closing[slot].resendWindow = max(Int(flows[index].endpoints.maximumSegmentSize), 1)
        counters.endingDataResends += 1
        sendEndingData(slot, now: now, output: &output)
    }

    /// Sends the ending's data from `resendNext` up to the window's edge, and the FIN once the data is all out.
    func sendEndingData<O: NICOutput>(_ slot: Int, now: Instant, output: inout O) {
        let entry = closing[slot]
        let index = Int(entry.dataFlow)
        let endpoints = flows[index].endpoints
        let edge = SequenceNumber.min(entry.unacknowledged + entry.resendWindow, entry.finSequence)
        var next = entry.resendNext
        if next < edge {
            var timestamps: TCPTimestamps?
            if entry.timestamps {
                let elapsed = UInt32(truncatingIfNeeded: (now - entry.handedOver) / Nanoseconds.millisecond)
                timestamps = TCPTimestamps(value: entry.timestampValue &+ elapsed, echoReply: entry.timestampEcho)
            }
            let template = SegmentTemplate(acknowledgmentNumber: entry.receiveNext, window: entry.window,
                                           maximumSegmentSize: max(endpoints.maximumSegmentSize, 1), timestamps: timestamps)
            if entry.hostBytes != Self.noHostBytes {
                let hostEnd = entry.hostBytesStart + deferred[Int(entry.hostBytes)].bytes.count
                if next < hostEnd {
                    let end = SequenceNumber.min(hostEnd, edge)
                    let skip = next - entry.hostBytesStart
                    deferred[Int(entry.hostBytes)].bytes.withUnsafeBytes { bytes in
                        sendStored(UnsafeRawBufferPointer(rebasing: bytes[skip..<(skip + (end - next))]), flow: index,
                                   endpoints: endpoints, sequence: next, template: template, output: &output)
                    }
                    counters.retransmittedBytes += end - next
                    next = end
                }
            }
            if next < edge {
                // The file bytes, as a RETRANSMIT of them would send them (from the store's buffer, or read again).
                // If they cannot be (the file gone, a record changed), the peer is reset rather than sent a FIN.
                guard retransmit(flow: flows[index].id, sequence: next, length: edge - next, template: template, now: now, output: &output)
                else {
                    endingDataFailed(index, now: now, output: &output)
                    return
                }
                next = edge
            }
            closing[slot].resendNext = next
        }
        // The FIN once everything before it has left: not before bytes still being read again.
        if next == entry.finSequence && flows[index].urgent.isEmpty {
            closing[slot].resendNext = entry.finSequence + 1
            resendFin(slot, now: now, output: &output)
        }
    }

    /// The ending in `slot` no longer needs its flow: the flow closes (its stored data and the host's bytes
    /// go) and the host hears FLOW_RELEASED at the next flush.
    func releaseEndingFlow(_ slot: Int, reason: FlowReleaseReason) {
        guard let index = detachEndingFlow(slot, reason: reason) else { return }
        closeFlow(index)
    }

    /// Parts the ending in `slot` from its flow (the host's bytes freed, FLOW_RELEASED noted); returns the
    /// flow's index, which the caller closes, or nil if the ending held none.
    func detachEndingFlow(_ slot: Int, reason: FlowReleaseReason) -> UInt32? {
        let index = closing[slot].dataFlow
        guard index != 0 else { return nil }
        closing[slot].dataFlow = 0
        if closing[slot].hostBytes != Self.noHostBytes {
            freeDeferredPacket(closing[slot].hostBytes)
            closing[slot].hostBytes = Self.noHostBytes
        }
        flows[Int(index)].ending = -1
        pendingReleases.append(PendingRelease(flow: flows[Int(index)].id, reason: reason))
        return index
    }

    /// Our FIN again, from a closing entry's timer or resend.
    func resendFin<O: NICOutput>(_ slot: Int, now: Instant, output: inout O) {
        sendClosingSegment(closing[slot], flags: [.fin, .ack], sequence: closing[slot].finSequence, now: now, output: &output)
        counters.finsSent += 1
        counters.finRetransmissions += 1
    }

    /// A segment for a flow whose ending holds it: the entry takes it, the host having forgotten the
    /// connection. False for any other flow (its segment goes up).
    func receiveForEnding<O: NICOutput>(
        _ index: Int, source: IPAddress, destination: IPAddress, segment: TCPSegmentView, output: inout O
    ) -> Bool {
        guard flows[index].ending >= 0 else { return false }
        _ = receiveClosing(Int(flows[index].ending), source: source, destination: destination, segment: segment, output: &output)
        flushReleases(output: &output)
        return true
    }

    /// Closes a flow handed over with data that has no ending entry, and says so at once.
    func releaseFlow<O: NICOutput>(_ index: UInt32, reason: FlowReleaseReason, output: inout O) {
        let flow = flows[Int(index)].id
        closeFlow(index)
        output.reply(.flowReleased(flow, reason: reason))
        counters.flowsReleased += 1
    }

    /// Answers the releases noted since the last flush.
    func flushReleases<O: NICOutput>(output: inout O) {
        guard !pendingReleases.isEmpty else { return }
        for release in pendingReleases {
            output.reply(.flowReleased(release.flow, reason: release.reason))
            counters.flowsReleased += 1
        }
        pendingReleases.removeAll(keepingCapacity: true)
    }

    /// A read for a flow whose ending holds it failed: its data can never be sent whole, so the peer is reset.
    func endingDataFailed<O: NICOutput>(_ index: Int, now: Instant, output: inout O) {
        let slot = Int(flows[index].ending)
        guard slot >= 0 else { return }
        counters.closingReset += 1
        sendClosingSegment(closing[slot], flags: [.rst, .ack], sequence: closing[slot].peerExpects, now: now, output: &output)
        forgetClosing(slot, reason: .failed)
        flushReleases(output: &output)
    }

    struct PendingRelease {
        var flow: FlowID
        var reason: FlowReleaseReason
    }
}
