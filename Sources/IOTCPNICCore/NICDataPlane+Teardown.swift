import IOTCPCommon

/// Connections' endings on the NIC (AccelTCP's teardown offload): once the application has closed, the
/// host's FIN is out and everything before it is acknowledged, the host hands the connection over with
/// TEARDOWN and frees its control block. From then the NIC retransmits the FIN if it is lost, takes the
/// peer's ACK and FIN, answers RSTs, holds TIME-WAIT, and forgets the connection, all on a timer wheel of
/// its own.
///
/// What is kept per connection is one small entry (`ClosingConnection`, about 120 bytes with its index and
/// timer links) in a table bounded by `Limits.maximumClosingConnections` over both families; at the bound a
/// handed-over connection is reset instead (as Linux does past tcp_max_orphans). IPv4 and IPv6 endings are
/// indexed apart, as flows are, so an IPv4 segment's lookup stays a one-word key.
extension NICDataPlane {
    enum ClosingState: UInt8 {
        case free
        /// Our FIN sent, not acknowledged; the peer's not received.
        case finWait1
        /// Both FINs sent, ours not acknowledged.
        case closing
        /// The peer's FIN came first; ours sent, not acknowledged.
        case lastAck
        /// Ours acknowledged, the peer's not received.
        case finWait2
        case timeWait
    }

    struct ClosingConnection {
        var state = ClosingState.free
        var remoteAddress = IPAddress(IPv4Address(rawValue: 0))
        var localAddress = IPAddress(IPv4Address(rawValue: 0))
        var remotePort: UInt16 = 0
        var localPort: UInt16 = 0
        var finSequence = SequenceNumber(0)
        var receiveNext = SequenceNumber(0)
        var window: UInt16 = 0
        var windowShift: UInt8 = 0
        var lastChallenge = Instant.zero
        var timestamps = false
        var timestampValue: UInt32 = 0
        var timestampEcho: UInt32 = 0
        var handedOver = Instant.zero
        var timeout: UInt64 = 0
        var retransmissionsLeft = 0
        var timeWait: UInt64 = 0
        var finWait2: UInt64 = 0
        /// An ending handed over with data (TEARDOWN with data): the flow, still open here, whose stored data
        /// from `unacknowledged` to the FIN the peer has not acknowledged (0 once it has, or for a TEARDOWN's).
        var dataFlow: UInt32 = 0
        var unacknowledged = SequenceNumber(0)
        /// The host's bytes at the front of that data (`noHostBytes` if none): from `hostBytesStart` on.
        var hostBytes = NICDataPlane.noHostBytes
        var hostBytesStart = SequenceNumber(0)
        /// After a timeout: the data goes again from `unacknowledged`, a window at a time, the window
        /// starting at one segment and growing by what each ACK acknowledges (RFC 5681's slow start);
        /// `resendNext` is how far this pass has got.
        var resendNext = SequenceNumber(0)
        var resendWindow = 0
        /// The retries and the timeout it was handed, given back whenever the peer acknowledges more of the data.
        var retransmissions = 0
        var baseTimeout: UInt64 = 0

        /// The sequence number the peer expects next, for a RST it must accept: past our FIN, or, with data
        /// unacknowledged, that data's first byte.
        var peerExpects: SequenceNumber { dataFlow != 0 ? unacknowledged : finSequence + 1 }
    }

    /// Connections whose ending the NIC holds (TEARDOWN), for diagnostics and the report.
    public var closingCount: Int { closingByEndpoints.count }

    /// The ending held for these endpoints, if any.
    func closingSlot(remote: IPAddress, remotePort: UInt16, localPort: UInt16) -> Int? {
        closingByEndpoints[remote, remotePort, localPort].map(Int.init)
    }

    // MARK: - TEARDOWN

    func teardown<O: NICOutput>(flow: FlowID, _ parameters: TeardownParameters, now: Instant, output: inout O) {
        guard let index = openIndex(flow) else {
            fail(.unknownFlow, kind: .teardown, flow: flow, reference: UInt64(flow.rawValue), "TEARDOWN for a flow not open", output: &output)
            return
        }
        let endpoints = flows[Int(index)].endpoints
        closeFlow(index)
        counters.teardowns += 1
        let entry = closingEntry(endpoints, parameters, now: now)
        _ = holdClosing(entry, now: now, output: &output)
    }

    /// The closing entry for a connection handed over with these endpoints and parameters.
    func closingEntry(_ endpoints: FlowEndpoints, _ parameters: TeardownParameters, now: Instant) -> ClosingConnection {
        var entry = ClosingConnection()
        entry.remoteAddress = endpoints.remoteAddress
        entry.localAddress = endpoints.localAddress
        entry.remotePort = endpoints.remotePort
        entry.localPort = endpoints.localPort
        switch parameters.state {
        case .finWait1: entry.state = .finWait1
        case .closing: entry.state = .closing
        case .lastAck: entry.state = .lastAck
        case .finWait2: entry.state = .finWait2
        case .timeWait: entry.state = .timeWait
        }
        entry.finSequence = parameters.finSequence
        entry.receiveNext = parameters.receiveNext
        entry.window = parameters.window
        entry.windowShift = min(parameters.windowShift, 14)
        entry.timestamps = parameters.timestamps
        entry.timestampValue = parameters.timestampValue
        entry.timestampEcho = parameters.timestampEcho
        entry.handedOver = now
        entry.timeout = UInt64(max(parameters.retransmissionTimeoutMilliseconds, 1)) * Nanoseconds.millisecond
        entry.retransmissionsLeft = Int(parameters.maximumRetransmissions)
        entry.timeWait = UInt64(parameters.timeWaitMilliseconds) * Nanoseconds.millisecond
        entry.finWait2 = UInt64(parameters.finWait2Milliseconds) * Nanoseconds.millisecond
        return entry
    }

    /// Keeps `entry` and starts its timer; nil (the connection reset) when the table is full.
    func holdClosing<O: NICOutput>(_ entry: ClosingConnection, now: Instant, output: inout O) -> Int? {
        if let existing = closingSlot(remote: entry.remoteAddress, remotePort: entry.remotePort, localPort: entry.localPort) {
            forgetClosing(existing)
        }
        guard closingCount < limits.maximumClosingConnections else {
            // No room to hold the ending: reset it now rather than leave the peer waiting for a FIN.
            counters.teardownOverflows += 1
            sendClosingSegment(entry, flags: [.rst, .ack], sequence: entry.peerExpects, now: now, output: &output)
            return nil
        }
        let slot = freeClosing.popLast().map(Int.init) ?? {
            closing.append(ClosingConnection())
            return closing.count - 1
        }()
        closing[slot] = entry
        closingByEndpoints[entry.remoteAddress, entry.remotePort, entry.localPort] = Int32(slot)
        // The host sent the FIN; what is left is to wait for it to be acknowledged (and sent again if it
        // is not), for the peer's FIN, or for TIME-WAIT to pass.
        switch entry.state {
        case .finWait1, .closing, .lastAck: closingWheel.schedule(slot, at: now + entry.timeout)
        case .finWait2: closingWheel.schedule(slot, at: now + entry.finWait2)
        case .timeWait: closingWheel.schedule(slot, at: now + entry.timeWait)
        case .free: break
        }
        return slot
    }

    /// REDELIVER: a packet the NIC forwarded to the host just before the host handed its connection over.
    /// Taken by the closing connection if there is one; dropped otherwise (never forwarded again, which could
    /// bounce between the halves).
    func redeliver<O: NICOutput>(_ packet: UnsafeRawBufferPointer, output: inout O) {
        if packet.count > 0 && packet[0] >> 4 == 6 {
            guard let ip = try? IPv6PacketView(packet), ip.upperLayerProtocol == .tcp, let segment = try? TCPSegmentView(ip.upperLayer) else {
                counters.malformedIn += 1
                return
            }
            counters.redelivered += 1
            let source = IPAddress(ip.source)
            if let spliced = splicesByEndpoints[source, segment.sourcePort, segment.destinationPort] {
                _ = relaySpliced(packet: ip.bytes, source: source, destination: IPAddress(ip.destination), segment: segment, found: spliced,
                                 output: &output)
                return
            }
            if let slot = closingSlot(remote: source, remotePort: segment.sourcePort, localPort: segment.destinationPort) {
                _ = receiveClosing(slot, source: source, destination: IPAddress(ip.destination), segment: segment, output: &output)
            }
            return
        }
        guard let ip = try? IPv4PacketView(packet), ip.protocol == .tcp, let segment = try? TCPSegmentView(ip.payload) else {
            counters.malformedIn += 1
            return
        }
        counters.redelivered += 1
        let key = EndpointKey(remoteAddress: ip.source.rawValue, remotePort: segment.sourcePort, localPort: segment.destinationPort)
        if let spliced = splicesByEndpoints.ipv4[key] {
            _ = relaySpliced(ip: ip, segment: segment, found: spliced, output: &output)
            return
        }
        if let found = closingByEndpoints.ipv4[key] {
            _ = receiveClosing(Int(found), source: IPAddress(ip.source), destination: IPAddress(ip.destination), segment: segment, output: &output)
        }
    }

    // MARK: - Segments for a closing connection

    /// A segment for the closing connection in `slot` (found by its endpoints): true when it was consumed
    /// here, false when it is a SYN that ended TIME-WAIT (it goes on as any SYN would).
    ///
    /// RFC 9293 §3.10.7.4 in the closing states: a segment outside the receive window is answered with an
    /// ACK and dropped (a RST outside it is dropped silently); a RST exactly at RCV.NXT ends the connection,
    /// one elsewhere in the window, or any SYN, gets a challenge ACK (RFC 5961), at most ten a second.
    func receiveClosing<O: NICOutput>(
        _ slot: Int, source: IPAddress, destination: IPAddress, segment view: TCPSegmentView, output: inout O
    ) -> Bool {
        let now = clock
        guard view.checksumVerifies(source: source, destination: destination), let segment = try? TCPRepr(view) else {
            counters.malformedIn += 1
            return true
        }
        var entry = closing[slot]
        let flags = segment.flags
        let payload = view.payload.count
        if flags.contains(.syn) {
            if entry.state == .timeWait && flags == .syn && Self.startsNewIncarnation(segment, of: entry) {
                // RFC 6191: a SYN certainly newer than the old connection ends TIME-WAIT; it is then any SYN.
                counters.timeWaitReused += 1
                forgetClosing(slot)
                return false
            }
            challenge(slot, now: now, output: &output)
            return true
        }
        let inWindow = Self.acceptable(segment, payload: payload, entry: entry)
        if flags.contains(.rst) {
            if segment.sequenceNumber == entry.receiveNext {
                counters.closingReset += 1
                forgetClosing(slot)
            } else if inWindow {
                challenge(slot, now: now, output: &output)
            }
            return true
        }
        if let echoed = segment.options.timestamps, entry.timestamps, segment.sequenceNumber <= entry.receiveNext,
           Int32(bitPattern: echoed.value &- entry.timestampEcho) >= 0 {
            entry.timestampEcho = echoed.value  // TS.Recent only moves forward (RFC 7323 §4.3)
        }
        if flags.contains(.fin) && segment.sequenceNumber + payload + 1 == entry.receiveNext {
            // The peer's FIN again: our ACK of it was lost. ACK it again; in TIME-WAIT the wait starts
            // again (RFC 9293 §3.10.7.4), as Linux's TIME-WAIT does.
            closing[slot] = entry
            if entry.dataFlow != 0 && flags.contains(.ack) {
                acknowledgeEndingData(slot, through: segment.acknowledgmentNumber, now: now, output: &output)
                guard closing[slot].state != .free else { return true }
                if closing[slot].dataFlow == 0 && segment.acknowledgmentNumber == entry.finSequence + 1 {
                    // It acknowledges our FIN too (CLOSING to TIME-WAIT, LAST-ACK to the end).
                    sendClosingSegment(entry, flags: .ack, now: now, output: &output)
                    return ourFinAcknowledged(slot, now: now)
                }
            }
            sendClosingSegment(entry, flags: .ack, now: now, output: &output)
            if entry.state == .timeWait { closingWheel.schedule(slot, at: now + entry.timeWait) }
            return true
        }
        guard inWindow else {
            closing[slot] = entry
            challenge(slot, now: now, output: &output)
            return true
        }
        if payload > 0 && segment.sequenceNumber + payload > entry.receiveNext && entry.state != .timeWait {
            // New data for an application that has closed: nobody will read it (Linux resets here too), at
            // what the peer expects next (RFC 9293 §3.10.7.4: the segment's ACK number).
            counters.closingReset += 1
            let next = entry.dataFlow != 0 && flags.contains(.ack) ? segment.acknowledgmentNumber : entry.peerExpects
            sendClosingSegment(entry, flags: [.rst, .ack], sequence: next, now: now, output: &output)
            forgetClosing(slot)
            return true
        }
        if entry.dataFlow != 0 && flags.contains(.ack) {
            // An ending with data: what the ACK takes of it (all of it, and the flow is released).
            closing[slot] = entry
            acknowledgeEndingData(slot, through: segment.acknowledgmentNumber, now: now, output: &output)
            // A resend that could not be made resets the peer and forgets the entry.
            guard closing[slot].state != .free else { return true }
            entry = closing[slot]
        }
        if flags.contains(.ack) && segment.acknowledgmentNumber == entry.finSequence + 1 && entry.dataFlow == 0 {
            closing[slot] = entry
            _ = ourFinAcknowledged(slot, now: now)
            guard closing[slot].state != .free else { return true }
            entry = closing[slot]
        }
        if flags.contains(.fin) {
            let finAt = segment.sequenceNumber + payload
            if finAt == entry.receiveNext {
                entry.receiveNext = entry.receiveNext + 1
                switch entry.state {
                case .finWait1:
                    entry.state = .closing
                case .finWait2:
                    entry.state = .timeWait
                    closingWheel.schedule(slot, at: now + entry.timeWait)
                default:
                    break
                }
                sendClosingSegment(entry, flags: .ack, now: now, output: &output)
            }
        }
        closing[slot] = entry
        return true
    }

    /// The peer acknowledged our FIN: FIN-WAIT-1 to FIN-WAIT-2, CLOSING to TIME-WAIT, LAST-ACK to the end
    /// (the entry forgotten). Returns true (the segment was taken).
    func ourFinAcknowledged(_ slot: Int, now: Instant) -> Bool {
        switch closing[slot].state {
        case .finWait1:
            closing[slot].state = .finWait2
            closingWheel.schedule(slot, at: now + closing[slot].finWait2)
        case .closing:
            closing[slot].state = .timeWait
            closingWheel.schedule(slot, at: now + closing[slot].timeWait)
        case .lastAck:
            counters.closingFinished += 1
            forgetClosing(slot)
        default:
            break
        }
        return true
    }

    /// RFC 9293 §3.10.7.4's acceptability test against the window the host handed over.
    static func acceptable(_ segment: TCPRepr, payload: Int, entry: ClosingConnection) -> Bool {
        let window = Int(entry.window) << Int(entry.windowShift)
        let length = payload + (segment.flags.contains(.fin) ? 1 : 0)
        let start = segment.sequenceNumber - entry.receiveNext
        if window == 0 { return length == 0 && start == 0 }
        if length == 0 { return start >= 0 && start < window }
        let end = start + length - 1
        return (start >= 0 && start < window) || (end >= 0 && end < window)
    }

    /// RFC 6191, the rule the host's engine applies too (`TimeWaitReuse`).
    static func startsNewIncarnation(_ syn: TCPRepr, of entry: ClosingConnection) -> Bool {
        TimeWaitReuse.accepts(timestamp: syn.options.timestamps?.value, initialSequence: syn.sequenceNumber,
                              recentTimestamp: entry.timestamps ? entry.timestampEcho : nil, receiveNext: entry.receiveNext)
    }

    /// An ACK for a segment that may not change anything (a SYN, a RST inside the window, a segment outside
    /// it), one per 100 ms per connection at most (RFC 5961 §7): a flood of forgeries must not become one of ACKs.
    func challenge<O: NICOutput>(_ slot: Int, now: Instant, output: inout O) {
        guard closing[slot].lastChallenge == .zero || now - closing[slot].lastChallenge >= 100 * Nanoseconds.millisecond else {
            counters.challengesSuppressed += 1
            return
        }
        closing[slot].lastChallenge = now
        sendClosingSegment(closing[slot], flags: .ack, now: now, output: &output)
    }

    // MARK: - Timers

    /// Retransmits FINs whose time came, and forgets connections whose FIN-WAIT-2 or TIME-WAIT ran out.
    func expireClosing<O: NICOutput>(now: Instant, output: inout O) {
        guard closingWheel.scheduledCount > 0 else { return }
        closingDue.removeAll(keepingCapacity: true)
        closingWheel.popExpired(now: now, into: &closingDue)
        for slot in closingDue where closing[slot].state != .free {
            switch closing[slot].state {
            case .finWait1, .closing, .lastAck:
                if closing[slot].dataFlow != 0 && firstUnsent(Int(closing[slot].dataFlow)) != nil {
                    // Its data has not left yet (a slow disk): no retry spent; the ECHO point re-arms the timer.
                    closingWheel.schedule(slot, at: now + closing[slot].timeout)
                    continue
                }
                guard closing[slot].retransmissionsLeft > 0 else {
                    // The peer never acknowledged: give up quietly, as an orphan's retries do.
                    counters.closingAbandoned += 1
                    forgetClosing(slot, reason: .abandoned)
                    continue
                }
                closing[slot].retransmissionsLeft -= 1
                closing[slot].timeout = min(closing[slot].timeout * 2, 120 * Nanoseconds.second)
                if closing[slot].dataFlow != 0 {
                    resendEndingData(slot, now: now, output: &output)
                    if closing[slot].state != .free { closingWheel.schedule(slot, at: now + closing[slot].timeout) }
                    continue
                }
                resendFin(slot, now: now, output: &output)
                closingWheel.schedule(slot, at: now + closing[slot].timeout)
            case .finWait2:
                counters.closingAbandoned += 1
                forgetClosing(slot)
            case .timeWait:
                counters.closingFinished += 1
                forgetClosing(slot)
            case .free:
                break
            }
        }
    }

    /// Forgets the ending in `slot`; one that still held its flow for data releases it (FLOW_RELEASED, with
    /// `reason`).
    func forgetClosing(_ slot: Int, reason: FlowReleaseReason = .reset) {
        guard closing[slot].state != .free else { return }
        releaseEndingFlow(slot, reason: reason)
        let entry = closing[slot]
        closingByEndpoints.remove(remote: entry.remoteAddress, remotePort: entry.remotePort, localPort: entry.localPort, ifStill: Int32(slot))
        closingWheel.schedule(slot, at: nil)
        closing[slot].state = .free
        freeClosing.append(Int32(slot))
    }

    /// Forgets every closing connection (the host that handed them over is gone; their peers time out).
    func forgetAllClosing() {
        for slot in closing.indices where closing[slot].state != .free { forgetClosing(slot) }
    }

    /// A control segment of a closing connection: at `sequence` (SND.NXT by default: after our FIN, which
    /// the host sent before the hand-over), acknowledging RCV.NXT, with the window and the timestamps the host handed over (the TSval
    /// moved on by the time since).
    func sendClosingSegment<O: NICOutput>(
        _ entry: ClosingConnection, flags: TCPFlags, sequence: SequenceNumber? = nil, now: Instant, output: inout O
    ) {
        var options = TCPOptions()
        if entry.timestamps {
            let elapsed = UInt32(truncatingIfNeeded: (now - entry.handedOver) / Nanoseconds.millisecond)
            options.timestamps = TCPTimestamps(value: entry.timestampValue &+ elapsed, echoReply: entry.timestampEcho)
        }
        let segment = TCPRepr(
            sourcePort: entry.localPort, destinationPort: entry.remotePort,
            sequenceNumber: sequence ?? entry.finSequence + 1,
            acknowledgmentNumber: flags.contains(.ack) ? entry.receiveNext : SequenceNumber(0), flags: flags,
            window: flags.contains(.rst) ? 0 : entry.window, options: options)
        _ = transmitControl(segment, from: entry.localAddress, to: entry.remoteAddress, output: &output)
    }
}
