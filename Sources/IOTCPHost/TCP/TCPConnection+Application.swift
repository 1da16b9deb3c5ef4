import IOTCPCommon

/// The application's calls (read, write, writeFile, shutdown, close, abort), the NIC's ECHO, and what the
/// connection reports about itself.
extension TCPConnection {
    // MARK: - The application

    /// Copies queued bytes to the application; returns how many (0 with `readClosed` means end of stream).
    mutating func read<O: CommandOutput>(
        into buffer: UnsafeMutableRawBufferPointer, now: Instant, configuration: TCPConfiguration, output: inout O
    ) -> Int {
        let count = receiveBuffer.read(into: buffer)
        // Reading opened the window: announce it if it grew enough to matter (RFC 9293 §3.8.6.2.2). At once
        // only if the peer may be held up: with room for four more segments it can send, and two of them
        // draw an ACK that carries the window; otherwise the update waits for what goes out next (the
        // response to a request just read, typically) or the delayed-ACK timer. A window update sent at
        // once costs a frame each way for every request whose first read outgrows the SYN's unscaled window.
        if count > 0, state.isSynchronized, advertisableWindowGrowth >= min(receiveBuffer.capacity / 2, segmentSize) {
            if receiveWindowEdge - receiveNext < 4 * segmentSize {
                ackNow = true
                flush(now: now, configuration: configuration, output: &output)
            } else if timers[.delayedAck] == nil {
                timers[.delayedAck] = now + configuration.delayedAckTimeout
            }
        }
        return count
    }

    var readableBytes: Int { receiveBuffer.readable }
    var advertisedWindowEdge: SequenceNumber { receiveWindowEdge }

    var canSend: Bool {
        (state == .established || state == .closeWait || state == .synReceived || state == .synSent) && !finRequested
    }

    /// Queues application bytes; returns how many fit (0: would block).
    mutating func write<O: CommandOutput>(
        _ bytes: UnsafeRawBufferPointer, flush flushing: Bool = true, now: Instant, configuration: TCPConfiguration, output: inout O
    ) throws(TCPError) -> Int {
        guard canSend else { throw finRequested ? .alreadyClosing : (error ?? .notConnected) }
        let accepted = sendQueue.append(bytes: bytes)
        if accepted < bytes.count { events.remove(.writable) }
        if flushing { flush(now: now, configuration: configuration, output: &output) }
        return accepted
    }

    /// Queues a range of an offloaded file; returns how many bytes fit (0: would block).
    /// Queues a file range; with `shutdownAfter`, and the whole range taken, the sending side is shut down
    /// after it before anything is sent, so the FIN rides on the range's last segment.
    mutating func writeFile<O: CommandOutput>(
        _ file: OffloadedFileID, offset: UInt64, length: Int, shutdownAfter: Bool = false, now: Instant,
        configuration: TCPConfiguration, output: inout O
    ) throws(TCPError) -> Int {
        guard canSend else { throw finRequested ? .alreadyClosing : (error ?? .notConnected) }
        let accepted = min(length, max(configuration.fileQueueBytes - fileBytesQueued, 0))
        if accepted > 0 {
            sendQueue.append(file: file, offset: offset, length: accepted)
            fileBytesQueued += accepted
        }
        if accepted < length { events.remove(.writable) }
        if shutdownAfter && accepted == length { _ = beginShutdown(output: &output) }
        flush(now: now, configuration: configuration, output: &output)
        return accepted
    }

    /// Queues a file range as TLS records of `recordPlaintext` bytes numbered from `firstRecord`, sealed by
    /// the NIC; takes whole records only, as many as the queue has room for. Returns the plaintext bytes
    /// taken (0: would block).
    mutating func writeRecords<O: CommandOutput>(
        _ file: OffloadedFileID, offset: UInt64, length: Int, recordPlaintext: Int, firstRecord: UInt64, now: Instant,
        configuration: TCPConfiguration, output: inout O
    ) throws(TCPError) -> Int {
        guard canSend else { throw finRequested ? .alreadyClosing : (error ?? .notConnected) }
        guard recordOverhead > 0 else { throw .invalidArgument("no TLS keys were given for this connection") }
        // Whole records while the queue is under its limit, the last one allowed past it: `.writable` says
        // there is room at all, and a call it wakes should always make progress (at most one record over).
        let room = max(configuration.fileQueueBytes - fileBytesQueued, 0)
        let stride = recordPlaintext + recordOverhead
        let wholeRecords = room > 0 ? (room + stride - 1) / stride : 0
        // A run stays well inside half the sequence space (SEND_RECORDS requires it).
        let accepted = min(length, wholeRecords * recordPlaintext, (1 << 30) / recordPlaintext * recordPlaintext)
        if accepted > 0 {
            let run = TLSRecordRun(start: sendQueue.end, recordPlaintext: recordPlaintext, plaintext: UInt64(accepted),
                                   firstRecord: firstRecord, file: file, offset: offset)
            let wire = run.wireLength(overhead: recordOverhead)
            sendQueue.append(records: run, wireLength: wire)
            fileBytesQueued += wire
        }
        if accepted < length { events.remove(.writable) }
        flush(now: now, configuration: configuration, output: &output)
        return accepted
    }

    func queueHasRoom(configuration: TCPConfiguration) -> Bool {
        sendQueue.freeByteCapacity > 0 && fileBytesQueued < configuration.fileQueueBytes
    }

    /// Closes the sending side: a FIN follows the queued data.
    mutating func shutdownWrite<O: CommandOutput>(now: Instant, configuration: TCPConfiguration, output: inout O) {
        guard beginShutdown(output: &output) else { return }
        flush(now: now, configuration: configuration, output: &output)
    }

    /// Asks for a FIN after what is queued (FIN-WAIT-1, or LAST-ACK after the peer's FIN); false when there
    /// is nothing more to do: a FIN already asked for, a connection not open (one still opening is closed).
    mutating func beginShutdown<O: CommandOutput>(output: inout O) -> Bool {
        guard !finRequested else { return false }
        switch state {
        case .synSent:
            close(output: &output)
            return false
        case .synReceived, .established:
            state = .finWait1
        case .closeWait:
            state = .lastAck
        default:
            return false
        }
        finRequested = true
        return true
    }

    /// The application closed its handle: from now on new data is refused, and FIN-WAIT-2 is timed.
    mutating func markClosedByApplication(now: Instant, configuration: TCPConfiguration) {
        closedByApplication = true
        if state == .finWait2 { timers[.timeWait] = now + configuration.finWait2Timeout }
    }

    /// Whether the connection can be handed to the NIC for its ending now: the application closed, our FIN
    /// has been sent, and everything before it is acknowledged (only the FIN's fate and the waits remain).
    var readyForTeardown: Bool {
        guard endingOnNIC, !openedActively, let finSequence, sendNext > finSequence,
              sendUnacknowledged >= finSequence else { return false }
        switch state {
        case .finWait1, .finWait2, .closing, .lastAck, .timeWait: return true
        default: return false
        }
    }

    /// The host bytes a hand-over with data would carry (TEARDOWN with data, `TCPConfiguration.endingsWithDataOnNIC`),
    /// or nil when the connection cannot be handed over before its data is acknowledged: the application
    /// closed, our FIN is sent, nothing is lost or being sent again, and what is unacknowledged is at most
    /// `TeardownParameters.maximumDataLength` bytes: host bytes (at most `SendRange.maximumHeadLength`) and
    /// then only data the NIC sent.
    var hostBytesForEndingWithData: Int? {
        guard endingOnNIC, !openedActively, flowOpenOnNIC, let finSequence, sendNext > finSequence, sendNext == sendMaximum,
              !inRecovery, consecutiveTimeouts == 0, duplicateAcks == 0,
              sendUnacknowledged < finSequence, finSequence - sendUnacknowledged <= TeardownParameters.maximumDataLength
        else { return nil }
        switch state {
        case .finWait1, .closing, .lastAck: break
        default: return nil
        }
        guard let bytes = sendQueue.leadingBytes(from: sendUnacknowledged), bytes <= SendRange.maximumHeadLength else { return nil }
        return bytes
    }

    /// Copies the host bytes a hand-over with data carries (`hostBytesForEndingWithData` of them) into `buffer`.
    func copyUnacknowledgedBytes(_ count: Int, into buffer: UnsafeMutableRawBufferPointer) {
        guard count > 0, let piece = sendQueue.piece(at: sendUnacknowledged, limit: count) else { return }
        sendQueue.copy(piece, into: buffer)
    }

    /// What the NIC needs to end the connection by itself (TEARDOWN): where our FIN is, what it
    /// acknowledges, the state, the window and timestamps of now, and the timers.
    mutating func teardownParameters(now: Instant, configuration: TCPConfiguration) -> TeardownParameters {
        let window = windowField()
        func milliseconds(_ nanoseconds: UInt64) -> UInt32 { UInt32(clamping: nanoseconds / Nanoseconds.millisecond) }
        let ending: TeardownState
        switch state {
        case .closing: ending = .closing
        case .lastAck: ending = .lastAck
        case .finWait2: ending = .finWait2
        case .timeWait: ending = .timeWait
        default: ending = .finWait1
        }
        return TeardownParameters(
            finSequence: finSequence ?? sendNext, receiveNext: receiveNext, window: window, windowShift: receiveWindowShift, state: ending,
            timestamps: timestampsEnabled, timestampValue: timestampClock(now), timestampEcho: timestampRecent,
            retransmissionTimeoutMilliseconds: max(milliseconds(rtt.timeout), 1),
            maximumRetransmissions: UInt16(clamping: configuration.maximumOrphanRetransmissions),
            timeWaitMilliseconds: milliseconds(configuration.timeWaitDuration), finWait2Milliseconds: milliseconds(configuration.finWait2Timeout))
    }

    /// In TIME-WAIT, whether the ACK completing a handshake the NIC made (ESTABLISHED) is of a new
    /// incarnation (RFC 6191's evidence, for the ACK instead of the SYN): a newer TSval, or without
    /// timestamps a sequence number past the old connection's.
    func acceptsNewIncarnation(_ ack: TCPRepr) -> Bool {
        guard state == .timeWait else { return false }
        return TimeWaitReuse.accepts(timestamp: ack.options.timestamps?.value, initialSequence: ack.sequenceNumber - 1,
                                     recentTimestamp: timestampsEnabled ? timestampRecent : nil, receiveNext: receiveNext)
    }

    /// In TIME-WAIT, whether a SYN starts a new incarnation (RFC 6191): with timestamps, its TSval is newer
    /// than the last one seen; without, its sequence number is past the old connection's.
    func acceptsNewConnection(_ segment: TCPRepr) -> Bool {
        guard state == .timeWait, segment.flags.contains(.syn), !segment.flags.contains(.ack), !segment.flags.contains(.rst) else { return false }
        return TimeWaitReuse.accepts(timestamp: segment.options.timestamps?.value, initialSequence: segment.sequenceNumber,
                                     recentTimestamp: timestampsEnabled ? timestampRecent : nil, receiveNext: receiveNext)
    }

    /// Ends a TIME-WAIT connection without a word to the peer or the application (its slot is released at
    /// once); the NIC hears of it if it has not yet.
    mutating func closeQuietly<O: CommandOutput>(output: inout O) {
        enterClosed(output: &output)
    }

    /// Abort (RFC 9293 §3.10.5): a RST to the peer and the connection is gone.
    /// The NIC could not carry out this connection's work (a file it cannot read, a full store): the
    /// stream cannot continue intact, so the peer gets a RST and the application the error.
    mutating func failOnNIC<O: CommandOutput>(output: inout O) {
        guard state != .closed else { return }
        failure = .nicFailed
        abort(output: &output)
    }

    /// Whether a write would take at least one byte now.
    @inline(__always)
    /// Writable as a non-blocking socket is: once connected (an active open turns writable when its
    /// handshake completes, as `connect` documents), while the queue has room. Bytes written before then are
    /// still queued and sent after the handshake.
    func isWritable(configuration: TCPConfiguration) -> Bool {
        (state == .established || state == .closeWait) && !finRequested && queueHasRoom(configuration: configuration)
    }

    mutating func abort<O: CommandOutput>(output: inout O) {
        if state.isSynchronized && state != .timeWait {
            emitSegment(sequence: sendNext, flags: [.rst, .ack], window: 0, options: TCPOptions(), payload: nil, output: &output)
        }
        close(output: &output)
    }

    // MARK: - The NIC's ECHO

    /// A SEND's data up to `sequenceEnd` is on the wire, after `nicDelayNanoseconds` on the NIC (reading the
    /// disk, waiting for its turn and for the wire).
    mutating func handleEcho<O: CommandOutput>(
        sequenceEnd: SequenceNumber, nicDelayNanoseconds: UInt64, now: Instant, configuration: TCPConfiguration, output: inout O
    ) {
        let wasHeldByNIC = unechoedBytes >= configuration.maximumUnechoedBytes && configuration.maximumUnechoedBytes > 0
        let newOnTheWire = sequenceEnd > echoedEnd
        if newOnTheWire { echoedEnd = sequenceEnd }
        // The timed SEND left the NIC its delay after it was issued: time it from then (IO-TCP's rule). A delay
        // longer than the time since the SEND (clocks of two machines) is clamped to the ECHO's arrival.
        if timedAwaitsEcho, let timed = timedSequence, sequenceEnd >= timed {
            let departed = timedAt + nicDelayNanoseconds
            timedAt = departed < now ? departed : now
            timedAwaitsEcho = false
        }
        // RFC 6298 §5.1, IO-TCP's way: the timer runs from when the data is on the wire; so does a loss
        // probe's (RFC 8985 §7.2 restarts it when new data is sent, and file data is sent when ECHOed).
        if retransmitTimerKind == .awaitingEcho, sendUnacknowledged < sendMaximum {
            armLossTimer(now: now, configuration: configuration)
        } else if newOnTheWire, retransmitTimerKind != .reneged, let deadline = timers[.retransmit],
                  let probe = probeTimeout(configuration: configuration), now + probe < deadline {
            // The last of the data the NIC held is on the wire: the RTO keeps running, a probe may come first.
            armRetransmit(at: now + probe, as: .probe)
        }
        // Room on the NIC again: what waited for it may go.
        if wasHeldByNIC { flush(now: now, configuration: configuration, output: &output) }
    }

    /// File data handed to the NIC and not yet reported on the wire.
    var unechoedBytes: Int { sendIssuedEnd > echoedEnd ? sendIssuedEnd - echoedEnd : 0 }

    var info: TCPConnectionInfo {
        TCPConnectionInfo(
            state: state, sendUnacknowledged: sendUnacknowledged, sendNext: sendNext, sendMaximum: sendMaximum,
            sendWindow: sendWindow, receiveNext: receiveNext, congestionWindow: congestion.window,
            slowStartThreshold: congestion.slowStartThreshold, smoothedRTT: rtt.smoothed, retransmissionTimeout: rtt.timeout,
            consecutiveTimeouts: consecutiveTimeouts, inRecovery: inRecovery, queuedBytes: sendQueue.count, segmentSize: segmentSize,
            fastRecoveries: fastRecoveries, timeouts: timeouts, lossProbes: lossProbes, lossProbeRepairs: lossProbeRepairs,
            lostRetransmissions: Int(lostRetransmissions), reorderingWindowLosses: Int(reorderingWindowLosses),
            sackRenegings: Int(sackRenegings))
    }
}
