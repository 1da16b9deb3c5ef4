import IOTCPCommon

/// The send side: what may go now (window, congestion, Nagle, SWS avoidance, TCP small queues), SENDs
/// and RETRANSMITs for the NIC, ACKs and host-built segments, and the header fields they carry.
extension TCPConnection {
    // MARK: - Sending

    /// Sends what the windows allow, retransmissions first, then an ACK if one is owed and nothing carried it.
    mutating func flush<O: CommandOutput>(now: Instant, configuration: TCPConfiguration, output: inout O) {
        var sentAcknowledgment = false
        switch state {
        case .established, .closeWait, .finWait1, .closing, .lastAck:
            sentAcknowledgment = transmit(now: now, configuration: configuration, output: &output)
        default:
            break
        }
        if ackNow && !sentAcknowledgment && state != .closed && state != .synSent {
            sendAcknowledgment(now: now, output: &output)
        } else if !ackNow && segmentsSinceAck > 0 && timers[.delayedAck] == nil && state.isSynchronized {
            timers[.delayedAck] = now + configuration.delayedAckTimeout
        }
        ackNow = false
    }

    mutating func sendAcknowledgment<O: CommandOutput>(now: Instant, output: inout O) {
        let advertised = windowField()
        emitSegment(sequence: sendNext, flags: .ack, window: advertised, options: currentOptions(now: now), payload: nil,
                    output: &output)
        acknowledgmentSent()
    }

    mutating func acknowledgmentSent() {
        owesHandshakeAcknowledgment = false
        segmentsSinceAck = 0
        timers[.delayedAck] = nil
        ackNow = false
    }

    /// Returns whether anything carrying an ACK went out.
    mutating func transmit<O: CommandOutput>(now: Instant, configuration: TCPConfiguration, output: inout O) -> Bool {
        var sent = false
        var heldBySillyWindow = false
        defer { sillyWindowOverride = false }
        if needsFastRetransmit {
            needsFastRetransmit = false
            let end = retransmitSpan(from: sendUnacknowledged, limit: segmentSize, now: now, configuration: configuration, output: &output)
            if end > highRetransmitted { highRetransmitted = end }
            retransmissionPassStarted(at: highRetransmitted, now: now)
            sent = true
        }
        sending: while true {
            let window = min(congestion.window + limitedTransmitAllowance, max(sendWindow, 0))
            let inFlight = pipe
            if inRecovery && sackEnabled, inFlight + segmentSize <= congestion.window, let (start, length) = nextLostRange() {
                let end = retransmitSpan(from: start, limit: length, now: now, configuration: configuration, output: &output)
                guard end > start else { break sending }
                highRetransmitted = end
                retransmissionSent(now: now)
                sent = true
                continue
            }
            let dataEnd = sendQueue.end
            if sackEnabled, sendNext < sendMaximum, let sackedEnd = scoreboard.end(ofBlockContaining: sendNext) {
                // RFC 6675 §5.1: after a timeout, what the peer has SACKed since is not sent again.
                sendNext = sackedEnd
                continue
            }
            if sendNext < dataEnd {
                // Room in the congestion window and in the peer's offered window.
                let offered = sendUnacknowledged + sendWindow - sendNext
                let room = min(window - inFlight, offered)
                guard room > 0 else { break sending }
                // Sender silly-window avoidance (RFC 9293 §3.8.6.2.1, MUST-38): new data waits while the peer's
                // usable window is less than a segment, less than what is queued, and less than half the largest
                // window it has offered; an ACK that opens the window, or the persist timer, sends it.
                if sendNext >= sendMaximum, offered < segmentSize, offered < dataEnd - sendNext,
                   offered < largestSendWindow / 2, !sillyWindowOverride {
                    heldBySillyWindow = true
                    break sending
                }
                guard var piece = sendQueue.piece(at: sendNext, limit: min(room, configuration.maximumSendBytes)) else { break sending }
                let isRetransmission = sendNext < sendMaximum
                switch piece.source {
                case .file, .records:
                    if isRetransmission {
                        // Up to the next range the peer SACKed, which is skipped above.
                        let unsacked = (scoreboard.start(ofBlockAfter: sendNext) ?? sendMaximum) - sendNext
                        retransmit(from: sendNext, limit: min(piece.length, sendMaximum - sendNext, unsacked), now: now,
                                   configuration: configuration, output: &output)
                    } else {
                        guard let admitted = admittedFileLength(piece, besides: 0, inFlight: inFlight, configuration: configuration)
                        else { break sending }
                        piece.length = admitted
                        if case .records(let run) = piece.source {
                            // End on a record boundary, so the NIC reads and seals each record once: cut back to
                            // the last boundary inside the piece, or, when the piece ends inside the record it
                            // starts in, wait for more room while something in flight will bring it (the
                            // record's other part would need the record read and sealed a second time).
                            // Waiting only helps when the windows can hold the rest of the record at all: with a
                            // congestion window smaller than that (heavy loss), the part goes now.
                            let end = piece.sequence + piece.length
                            let remaining = sendQueue.piece(at: sendNext, limit: .max)?.length ?? 0
                            let (_, recordStart) = run.record(containing: end, overhead: recordOverhead)
                            if recordStart > piece.sequence && recordStart < end {
                                piece.length = recordStart - piece.sequence
                            } else if recordStart < end && end < piece.sequence + remaining && inFlight > 0
                                        && window >= recordStart + (run.recordPlaintext + recordOverhead) - piece.sequence {
                                break sending
                            }
                        }
                        emitSend(piece, last: piece.sequence + piece.length == dataEnd, now: now, configuration: configuration,
                                 output: &output)
                    }
                case .bytes:
                    var length = min(piece.length, segmentSize)
                    if isRetransmission, let sacked = scoreboard.start(ofBlockAfter: sendNext) { length = min(length, sacked - sendNext) }
                    if !isRetransmission, let file = fileAfterHead(piece, room: room, inFlight: inFlight, configuration: configuration) {
                        emitSend(file, head: piece, last: file.sequence + file.length == dataEnd, now: now, configuration: configuration,
                                 output: &output)
                        sent = true
                        continue
                    }
                    let endOfQueue = piece.sequence + length == dataEnd
                    // Nagle (RFC 9293 §3.7.4) in Minshall's form, as Linux: a short segment waits only while
                    // an earlier short segment is unacknowledged, so a reply's tail is not held for an ACK.
                    if configuration.nagle, !noDelay, length < segmentSize, !isRetransmission, !finRequested,
                       let small = unacknowledgedSmallSegmentEnd, small > sendUnacknowledged { break sending }
                    emitBytes(SendQueue.Piece(sequence: piece.sequence, length: length, source: piece.source),
                              push: endOfQueue, now: now, output: &output)
                    advanceSent(by: length, now: now, timed: true, configuration: configuration)
                    if length < segmentSize { unacknowledgedSmallSegmentEnd = sendNext }
                }
                if isRetransmission { retransmissionSent(now: now) }
                sent = true
                continue
            }
            // A FIN after the data, when the windows allow one more sequence number.
            if finRequested && sendNext == dataEnd && (finSequence == nil || sendNext == finSequence!) {
                finSequence = dataEnd
                let advertised = windowField()
                emitSegment(sequence: dataEnd, flags: [.fin, .ack], window: advertised, options: currentOptions(now: now),
                            payload: nil, output: &output)
                acknowledgmentSent()
                advanceSent(by: 1, now: now, timed: false, configuration: configuration)
                sent = true
            }
            break sending
        }
        // Zero window with data waiting and nothing being timed for retransmission: probe until the peer opens
        // (RFC 9293 §3.8.6.1).
        // The same when a window too small to use holds data back and nothing in flight will bring an ACK.
        if (sendWindow == 0 || heldBySillyWindow) && sendNext < sendQueue.end && timers[.retransmit] == nil
            && timers[.persist] == nil && (sendUnacknowledged == sendMaximum || sendNext == sendUnacknowledged) {
            armPersist(now: now, configuration: configuration)
        }
        return sent
    }

    /// Moves SND.NXT past bytes just sent and starts the timer if nothing armed it; a loss probe's timer
    /// starts again (RFC 8985 §7.2: the probe follows the last data sent).
    mutating func advanceSent(by length: Int, now: Instant, timed: Bool, configuration: TCPConfiguration) {
        sendNext += length
        if sendNext > sendMaximum { sendMaximum = sendNext }
        if timers[.retransmit] == nil || (retransmitTimerKind == .probe && sendNext == sendMaximum) {
            armLossTimer(now: now, configuration: configuration)
        }
        if timed, timedSequence == nil, consecutiveTimeouts == 0, !inRecovery {
            timedSequence = sendNext
            timedAt = now
            timedAwaitsEcho = false
        }
    }

    /// The file range that may leave with `head`, new bytes just before it, as the head of its SEND: when
    /// the NIC takes heads, the bytes are all there is before the range and fit under a segment, and the
    /// windows, the NIC's share (TCP small queues, the head counted) and the rule against small reads let
    /// some of the range go now, as they would without the head. Otherwise the head goes on its own.
    func fileAfterHead(_ head: SendQueue.Piece, room: Int, inFlight: Int, configuration: TCPConfiguration) -> SendQueue.Piece? {
        guard configuration.headsWithFiles && configuration.nicTakesHeads, head.length < segmentSize,
              head.length <= SendRange.maximumHeadLength, room > head.length,
              var file = sendQueue.piece(at: head.sequence + head.length, limit: min(room - head.length, configuration.maximumSendBytes)),
              file.source.isFile,
              let admitted = admittedFileLength(file, besides: head.length, inFlight: inFlight, configuration: configuration)
        else { return nil }
        file.length = admitted
        return file
    }

    /// How much of `piece`, new file data, may go to the NIC now, or nil to wait. It stops where the NIC's
    /// share (TCP small queues) runs out, counting `besides` bytes that leave with it; bytes from memory
    /// never wait on that. And Atlas: it waits for a window worth a disk read, unless the queue is shorter or
    /// nothing is in flight; never more than half the congestion window, or a small window would go out in
    /// bursts with gaps, and a loss near a burst's end would find too few segments behind it for duplicate
    /// ACKs. While loss is being repaired (recovery, or sending again after a timeout), a segment's worth goes
    /// as soon as the pipe has room for it (RFC 6675 §5 step C): new data keeps the ACKs coming, and an ACK
    /// for it shows a retransmission lost, or stands in for a lost ACK, where waiting for a fuller read would
    /// leave only the RTO.
    func admittedFileLength(_ piece: SendQueue.Piece, besides: Int, inFlight: Int, configuration: TCPConfiguration) -> Int? {
        var length = piece.length
        if configuration.maximumUnechoedBytes > 0 {
            let nicRoom = configuration.maximumUnechoedBytes - unechoedBytes - besides
            guard nicRoom > 0 else { return nil }
            length = min(length, nicRoom)
        }
        let remaining = sendQueue.piece(at: piece.sequence, limit: .max)?.length ?? 0
        let minimum = repairingLoss
            ? segmentSize : min(configuration.minimumSendSegments * segmentSize, congestion.window / 2)
        if length < minimum && length < remaining && inFlight > 0 { return nil }
        return length
    }

    mutating func emitSend<O: CommandOutput>(
        _ piece: SendQueue.Piece, head: SendQueue.Piece? = nil, last: Bool, now: Instant, configuration: TCPConfiguration,
        output: inout O
    ) {
        // The FIN rides on the range's last segment when the sending side was shut down before the range
        // went (`writeFile(shutdownAfter:)`): one packet fewer than the data and then a FIN of its own.
        let carriesFin = last && finRequested && finSequence == nil && piece.source.isFile
        // A SEND leaves only after the NIC's read: an owed handshake ACK must not wait for the disk.
        if owesHandshakeAcknowledgment { sendAcknowledgment(now: now, output: &output) }
        switch piece.source {
        case .file(let file, let offset):
            openFlowOnNIC(output: &output)
            let template = template(lastFlags: last ? (carriesFin ? [.psh, .fin] : .psh) : [], now: now)
            if let head {
                // The head's bytes, copied from the send queue into the command (a few hundred bytes).
                let queue = sendQueue
                withUnsafeTemporaryAllocation(byteCount: head.length, alignment: 1) { buffer in
                    queue.copy(head, into: buffer)
                    output.emit(.sendWithHead(handle.flow, SendRange(
                        sequence: head.sequence, length: UInt32(piece.length), file: file, offset: offset, template: template),
                        head: UnsafeRawBufferPointer(buffer)))
                }
                sendNext += head.length
            } else {
                output.emit(.send(handle.flow, SendRange(
                    sequence: piece.sequence, length: UInt32(piece.length), file: file, offset: offset, template: template)))
            }
        case .records(let run):
            openFlowOnNIC(output: &output)
            output.emit(.sendRecords(handle.flow, RecordSendRange(
                sequence: piece.sequence, length: UInt32(piece.length), runStart: run.start,
                recordPlaintext: UInt16(run.recordPlaintext), file: run.file, offset: run.offset, runPlaintext: run.plaintext,
                firstRecord: run.firstRecord, template: template(lastFlags: last ? .psh : [], now: now))))
        case .bytes:
            return
        }
        acknowledgmentSent()
        if piece.sequence + piece.length > sendIssuedEnd { sendIssuedEnd = piece.sequence + piece.length }
        if timedSequence == nil, consecutiveTimeouts == 0, !inRecovery {
            timedSequence = piece.sequence + piece.length
            timedAt = now
            timedAwaitsEcho = true
        }
        sendNext += piece.length
        if sendNext > sendMaximum { sendMaximum = sendNext }
        if timers[.retransmit] == nil || retransmitTimerKind == .probe {
            // Not on the wire yet (a loss probe's timer too: the probe follows the last data on the wire).
            armRetransmitAwaitingEcho(now: now, configuration: configuration)
        }
        if carriesFin {
            // Counted as the FIN of `transmit` counts its own (a lost one is sent again as a bare FIN).
            finSequence = sendNext
            advanceSent(by: 1, now: now, timed: false, configuration: configuration)
        }
    }

    /// Sends again up to `limit` bytes from `start`, across queue entries (an application's head and the file
    /// after it are two), and returns the end of what went: RFC 6675's HighRxt must not pass bytes that did not.
    @discardableResult
    mutating func retransmitSpan<O: CommandOutput>(
        from start: SequenceNumber, limit: Int, now: Instant, configuration: TCPConfiguration, output: inout O
    ) -> SequenceNumber {
        var cursor = start
        while cursor - start < limit {
            let end = retransmit(from: cursor, limit: limit - (cursor - start), now: now, configuration: configuration, output: &output)
            guard end > cursor else { break }
            cursor = end
        }
        return cursor
    }

    /// Sends again `[from, from + limit)`, clipped to one queue entry: file data by RETRANSMIT from the
    /// NIC's store, application bytes as packets, a lost FIN as a FIN. Returns the end of what went (`start`
    /// when nothing could).
    @discardableResult
    mutating func retransmit<O: CommandOutput>(
        from start: SequenceNumber, limit: Int, now: Instant, configuration: TCPConfiguration, output: inout O
    ) -> SequenceNumber {
        if let finSequence, start == finSequence {
            let advertised = windowField()
            emitSegment(sequence: finSequence, flags: [.fin, .ack], window: advertised, options: currentOptions(now: now),
                        payload: nil, output: &output)
            acknowledgmentSent()
            if sendNext <= finSequence { sendNext = finSequence + 1 }
            return finSequence + 1
        }
        // Only what was sent can be sent again: the NIC holds nothing beyond SND.MAX, and counting unsent
        // bytes as sent would leave a hole no RETRANSMIT could fill.
        let sentLimit = min(limit, SequenceNumber.min(sendMaximum, sendQueue.end) - start)
        guard sentLimit > 0, let piece = sendQueue.piece(at: start, limit: sentLimit) else { return start }
        switch piece.source {
        case .file, .records:
            openFlowOnNIC(output: &output)
            output.emit(.retransmit(handle.flow, sequence: piece.sequence, length: UInt32(piece.length),
                                    template: template(lastFlags: [], now: now)))
            acknowledgmentSent()
            if sendNext < piece.sequence + piece.length && sendNext >= piece.sequence { sendNext = piece.sequence + piece.length }
        case .bytes:
            var offset = 0
            while offset < piece.length {
                let length = min(piece.length - offset, segmentSize)
                emitBytes(SendQueue.Piece(sequence: piece.sequence + offset, length: length,
                                          source: .bytes(streamIndex: streamIndex(piece.source) + UInt64(offset))),
                          push: false, now: now, output: &output)
                offset += length
            }
            if sendNext < piece.sequence + piece.length && sendNext >= piece.sequence { sendNext = piece.sequence + piece.length }
        }
        if sendNext > sendMaximum { sendMaximum = sendNext }
        if timers[.retransmit] == nil { armRetransmit(at: now + rtt.timeout) }
        // Karn: whatever was being timed may now be acknowledged by the retransmission.
        timedSequence = nil
        timedAwaitsEcho = false
        return piece.sequence + piece.length
    }

    func streamIndex(_ source: SendQueue.Source) -> UInt64 {
        if case .bytes(let index) = source { return index }
        return 0
    }

    mutating func emitBytes<O: CommandOutput>(_ piece: SendQueue.Piece, push: Bool, now: Instant, output: inout O) {
        openFlowOnNIC(output: &output)
        let queue = sendQueue
        let advertised = windowField()
        emitSegment(sequence: piece.sequence, flags: push ? [.ack, .psh] : .ack, window: advertised,
                    options: currentOptions(now: now), payload: (piece.length, { buffer in queue.copy(piece, into: buffer) }),
                    output: &output)
        acknowledgmentSent()
    }

    mutating func template(lastFlags: TCPFlags, now: Instant) -> SegmentTemplate {
        SegmentTemplate(
            acknowledgmentNumber: receiveNext, window: windowField(), lastSegmentFlags: lastFlags,
            maximumSegmentSize: UInt16(segmentSize),
            timestamps: timestampsEnabled ? TCPTimestamps(value: timestampClock(now), echoReply: timestampRecent) : nil)
    }

    @inline(__always)
    func currentOptions(now: Instant) -> TCPOptions {
        var options = TCPOptions()
        if timestampsEnabled { options.timestamps = TCPTimestamps(value: timestampClock(now), echoReply: timestampRecent) }
        if sackEnabled { options.sackBlocks = receiveBuffer.sackBlocks(limit: timestampsEnabled ? 3 : 4) }
        return options
    }

    /// The timestamp clock: milliseconds, offset per connection (RFC 7323 §5.4) so it reveals no uptime.
    func timestampClock(_ now: Instant) -> UInt32 {
        UInt32(truncatingIfNeeded: now.nanoseconds / Nanoseconds.millisecond) &+ timestampOffset
    }

    /// How far the window could move right now, beyond the edge already advertised.
    var advertisableWindowGrowth: Int {
        (receiveNext + receiveBuffer.free) - receiveWindowEdge
    }

    /// The window field for the next segment: moves the edge right when it grew enough (receiver-side
    /// silly window avoidance), never left.
    mutating func windowField() -> UInt16 {
        let growth = advertisableWindowGrowth
        if growth >= min(receiveBuffer.capacity / 2, segmentSize) || receiveWindowEdge < receiveNext {
            receiveWindowEdge = receiveNext + receiveBuffer.free
        }
        return windowFieldValue
    }

    var windowFieldValue: UInt16 {
        let offered = max(receiveWindowEdge - receiveNext, 0)
        return UInt16(min(offered >> Int(receiveWindowShift), 65535))
    }

    /// Builds an IPv4 packet holding one TCP segment and hands it to the NIC as PACKET_OUT.
    /// Callers compute `windowField()` (which mutates) before the call, never among its arguments: a
    /// mutation inside the arguments of a call on `self` makes Swift copy the whole control block (its
    /// buffers retained and released) for every segment.
    @inline(__always)
    func emitSegment<O: CommandOutput>(
        sequence: SequenceNumber, flags: TCPFlags, window: UInt16, options: TCPOptions,
        payload: (count: Int, fill: (UnsafeMutableRawBufferPointer) -> Void)?, output: inout O
    ) {
        let tcp = TCPRepr(
            sourcePort: localPort, destinationPort: remotePort, sequenceNumber: sequence,
            acknowledgmentNumber: flags.contains(.ack) ? receiveNext : SequenceNumber(0), flags: flags, window: window,
            options: options)
        PacketBuilder.emit(tcp, from: localAddress, to: remoteAddress, flow: handle.flow, payload: payload, output: &output)
    }

    /// A challenge ACK (RFC 5961 §3.2, §4.2), at most `challengeAcksPerSecond` a second on this connection
    /// (§7): a flood of forged RSTs or SYNs must not turn into a flood of ACKs.
    mutating func challenge(now: Instant, configuration: TCPConfiguration) {
        let second = UInt32(truncatingIfNeeded: now.nanoseconds / Nanoseconds.second)
        if second != challengeSecond {
            challengeSecond = second
            challengesThisSecond = 0
        }
        guard Int(challengesThisSecond) < configuration.challengeAcksPerSecond else {
            challengesSuppressed += 1
            return
        }
        challengesThisSecond += 1
        ackNow = true
    }

    func emitReset<O: CommandOutput>(sequence: SequenceNumber, output: inout O) {
        emitSegment(sequence: sequence, flags: .rst, window: 0, options: TCPOptions(), payload: nil, output: &output)
    }
}
