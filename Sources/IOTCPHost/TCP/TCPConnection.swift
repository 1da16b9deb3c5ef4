import IOTCPCommon

/// One connection's transmission control block and its rules: RFC 9293's state machine with RFC 5961's
/// defences, RFC 7323's options and PAWS, RFC 2018 and 6675's SACK, RFC 6298's timer, RFC 5681/6582 or
/// 9438 congestion control, and IO-TCP's split: file data leaves as SEND commands the NIC turns into
/// segments, and the retransmission timer starts when the NIC's ECHO says the data is on the wire.
///
/// It makes no system call and reads no clock: every entry point takes `now` and an output.
struct TCPConnection {
    let handle: TCPHandle
    let localAddress: IPv4Address
    let remoteAddress: IPv4Address
    let localPort: UInt16
    let remotePort: UInt16
    /// The listener a passive connection came from, until it is accepted.
    var listenerPort: UInt16?
    /// Established and in its listener's accept queue.
    var awaitingAccept = false
    /// The application holds a handle (it connected, or accepted); when false the slot is freed at CLOSED.
    var ownedByApplication: Bool
    /// The application closed it (not merely: never accepted it yet). Data arriving after that can never be
    /// read, and is answered with a RST (RFC 9293 §3.6).
    var closedByApplication = false

    private(set) var state: TCPState

    // Send sequence space (RFC 9293 §3.3.1).
    let initialSendSequence: SequenceNumber
    private(set) var sendUnacknowledged: SequenceNumber
    private(set) var sendNext: SequenceNumber
    /// The highest sequence number sent (SND.NXT before a timeout rewound it).
    private(set) var sendMaximum: SequenceNumber
    /// The peer's window in bytes, scaled.
    private(set) var sendWindow = 0 {
        didSet { if sendWindow > largestSendWindow { largestSendWindow = sendWindow } }
    }
    /// The largest window the peer has offered (Max(SND.WND), for sender silly-window avoidance).
    private var largestSendWindow = 0
    /// The persist timer found a usable window too small to be worth a segment and nothing in flight: the
    /// next transmission sends what fits anyway (RFC 9293 §3.8.6.2.1's override timeout).
    private var sillyWindowOverride = false
    private var sendWindowUpdateSequence = SequenceNumber(0)
    private var sendWindowUpdateAcknowledgment = SequenceNumber(0)
    private var sendWindowShift: UInt8 = 0
    private var receiveWindowShift: UInt8 = 0
    /// Payload bytes per segment this side sends.
    private(set) var segmentSize: Int

    // Receive sequence space.
    private(set) var initialReceiveSequence = SequenceNumber(0)
    private(set) var receiveNext = SequenceNumber(0)
    /// The right edge of the window last advertised; never moved left (RFC 9293 §3.8.6.2.1).
    private var receiveWindowEdge = SequenceNumber(0)
    private var receiveBuffer: ReceiveBuffer
    private var pendingFinSequence: SequenceNumber?

    // Options.
    private(set) var timestampsEnabled = false
    private(set) var sackEnabled = false
    private var timestampRecent: UInt32 = 0
    private let timestampOffset: UInt32
    private var offeredWindowScale = false

    // Send queue and close.
    private var sendQueue: SendQueue
    private var fileBytesQueued = 0
    private var finRequested = false
    private var finSequence: SequenceNumber?

    // Timers, as nanoseconds with `noDeadline` for none: an `Instant?` would take 16 bytes, and every
    // byte here is paid once per connection.
    private var retransmitAt = noDeadline
    private var delayedAckAt = noDeadline
    private var persistAt = noDeadline
    private var keepaliveAt = noDeadline
    private var timeWaitAt = noDeadline
    /// The timer was armed at a SEND's issue, with the ECHO allowance: the ECHO re-arms it precisely.
    private var retransmitAwaitsEcho = false
    private static var noDeadline: UInt64 { .max }

    private var retransmitDeadline: Instant? {
        get { Self.deadline(retransmitAt) }
        set { retransmitAt = newValue?.nanoseconds ?? Self.noDeadline }
    }
    private var delayedAckDeadline: Instant? {
        get { Self.deadline(delayedAckAt) }
        set { delayedAckAt = newValue?.nanoseconds ?? Self.noDeadline }
    }
    private var persistDeadline: Instant? {
        get { Self.deadline(persistAt) }
        set { persistAt = newValue?.nanoseconds ?? Self.noDeadline }
    }
    private var keepaliveDeadline: Instant? {
        get { Self.deadline(keepaliveAt) }
        set { keepaliveAt = newValue?.nanoseconds ?? Self.noDeadline }
    }
    private var timeWaitDeadline: Instant? {
        get { Self.deadline(timeWaitAt) }
        set { timeWaitAt = newValue?.nanoseconds ?? Self.noDeadline }
    }
    private static func deadline(_ nanoseconds: UInt64) -> Instant? {
        nanoseconds == noDeadline ? nil : Instant(nanoseconds: nanoseconds)
    }
    private var consecutiveTimeouts = 0
    private var keepaliveProbesSent = 0
    private var persistBackoff = 0
    /// Zero-window probes sent since the peer last answered anything: past `maximumRetransmissions` the
    /// peer is taken for gone (a window may stay closed forever, but only while the peer answers).
    private var unansweredProbes: UInt8 = 0
    private var challengeSecond: UInt32 = 0
    private var challengesThisSecond: UInt8 = 0
    private(set) var challengesSuppressed: UInt16 = 0

    // RTT measurement: one timed sequence number at a time, from when it reached the wire. File data is
    // timed from its SEND and moved on by the delay the NIC's ECHO reports, so disk and queueing time on the
    // NIC never counts as network time; until that ECHO comes, no sample is taken from it.
    private var rtt: RTTEstimator
    private var timedSequence: SequenceNumber?
    private var timedAt = Instant.zero
    private var timedAwaitsEcho = false

    // Congestion and loss recovery.
    private var congestion: CongestionController
    private var duplicateAcks = 0
    private var inRecovery = false
    private var recoveryPoint = SequenceNumber(0)
    /// RFC 6675's HighRxt: the highest sequence number retransmitted in this recovery.
    private var highRetransmitted = SequenceNumber(0)
    /// SACKed ranges above SND.UNA, sorted and disjoint.
    private var scoreboard: [SACKBlock] = []

    // The NIC.
    private var acknowledgedReported: SequenceNumber
    /// The end of the last SEND, and of the data the NIC has ECHOed as on the wire: file data between them
    /// waits on the NIC.
    private var sendIssuedEnd: SequenceNumber
    private var echoedEnd: SequenceNumber
    private var segmentsSinceAck = 0
    private var ackNow = false

    // What the application should hear.
    var events: TCPEvents = []
    /// Why the connection failed, as a one-byte code (a `TCPError?` would take 24 bytes).
    private var failure = Failure.none
    private enum Failure: UInt8 { case none, reset, refused, timedOut, nicFailed }
    var error: TCPError? {
        switch failure {
        case .none: nil
        case .reset: .connectionReset
        case .refused: .connectionRefused
        case .timedOut: .timedOut
        case .nicFailed: .nicFailed
        }
    }
    /// The peer closed its side: reads return 0 once the buffer is drained.
    private(set) var readClosed = false

    static let duplicateThreshold = 3

    init(
        handle: TCPHandle, localAddress: IPv4Address, remoteAddress: IPv4Address, localPort: UInt16,
        remotePort: UInt16, initialSequence: SequenceNumber, timestampOffset: UInt32, state: TCPState,
        ownedByApplication: Bool, configuration: TCPConfiguration
    ) {
        self.handle = handle
        self.localAddress = localAddress
        self.remoteAddress = remoteAddress
        self.localPort = localPort
        self.remotePort = remotePort
        self.state = state
        self.ownedByApplication = ownedByApplication
        initialSendSequence = initialSequence
        sendUnacknowledged = initialSequence
        sendNext = initialSequence
        sendMaximum = initialSequence
        self.timestampOffset = timestampOffset
        segmentSize = Int(configuration.maximumSegmentSize)
        receiveBuffer = ReceiveBuffer(capacity: configuration.receiveBufferBytes)
        // The queue starts after the SYN's sequence number.
        sendQueue = SendQueue(start: initialSequence + 1, byteCapacity: configuration.sendBufferBytes)
        rtt = RTTEstimator(initial: configuration.initialRetransmissionTimeout)
        congestion = CongestionController(
            algorithm: configuration.congestionControl, segmentSize: Int(configuration.maximumSegmentSize),
            initialWindowSegments: configuration.initialWindowSegments)
        acknowledgedReported = initialSequence + 1
        sendIssuedEnd = initialSequence + 1
        echoedEnd = initialSequence + 1
    }

    // MARK: - Opening

    /// Active open: send the SYN.
    mutating func open<O: CommandOutput>(now: Instant, configuration: TCPConfiguration, output: inout O) {
        timedAt = now
        output.emit(.flowOpen(handle.flow, endpoints))
        sendSynchronize(now: now, configuration: configuration, output: &output)
        armRetransmit(at: now + rtt.timeout)
    }

    /// Passive open from a listener: read the SYN's options and answer with a SYN-ACK.
    mutating func acceptSynchronize<O: CommandOutput>(
        _ segment: TCPRepr, now: Instant, configuration: TCPConfiguration, output: inout O
    ) {
        adoptSynchronize(segment, configuration: configuration)
        timedAt = now
        output.emit(.flowOpen(handle.flow, endpoints))
        sendSynchronize(now: now, configuration: configuration, output: &output)
        armRetransmit(at: now + rtt.timeout)
    }

    /// A connection made from a valid SYN cookie: the handshake is complete already.
    mutating func establishFromCookie<O: CommandOutput>(
        _ segment: TCPRepr, peerSegmentSize: Int, windowShift: UInt8?, sack: Bool, now: Instant,
        configuration: TCPConfiguration, output: inout O
    ) {
        initialReceiveSequence = segment.sequenceNumber - 1
        receiveNext = segment.sequenceNumber
        // The cookie's SYN-ACK offered an unscaled window: honour that offer (RFC 9293 §3.8.6: never shrink
        // it), or the client's first request would fall outside a zero window and wait for its RTO, just
        // when the server is under a flood.
        receiveWindowEdge = receiveNext + min(receiveBuffer.free, 65535)
        sendUnacknowledged = segment.acknowledgmentNumber
        sendNext = sendUnacknowledged
        sendMaximum = sendUnacknowledged
        if let windowShift {
            sendWindowShift = windowShift
            receiveWindowShift = configuration.receiveWindowShift
        }
        if let timestamps = segment.options.timestamps, configuration.timestamps {
            timestampsEnabled = true
            timestampRecent = timestamps.value
        }
        sackEnabled = sack && configuration.selectiveAcknowledgments
        setSegmentSize(peer: peerSegmentSize, configuration: configuration)
        sendWindow = Int(segment.window) << Int(sendWindowShift)
        sendWindowUpdateSequence = segment.sequenceNumber
        sendWindowUpdateAcknowledgment = segment.acknowledgmentNumber
        state = .established
        output.emit(.flowOpen(handle.flow, endpoints))
        refreshKeepalive(now: now, configuration: configuration)
    }

    var endpoints: FlowEndpoints {
        FlowEndpoints(
            localAddress: localAddress, remoteAddress: remoteAddress, localPort: localPort, remotePort: remotePort,
            remoteHardwareAddress: .zero, maximumSegmentSize: UInt16(segmentSize))
    }

    private mutating func adoptSynchronize(_ segment: TCPRepr, configuration: TCPConfiguration) {
        initialReceiveSequence = segment.sequenceNumber
        receiveNext = segment.sequenceNumber + 1
        receiveWindowEdge = receiveNext
        let options = segment.options
        // RFC 7323 §2.2: scaling is on only if both SYNs carry the option.
        if let shift = options.windowScale, !segment.flags.contains(.ack) || offeredWindowScale {
            sendWindowShift = min(shift, 14)
            receiveWindowShift = configuration.receiveWindowShift
        } else {
            sendWindowShift = 0
            receiveWindowShift = 0
        }
        if let timestamps = options.timestamps, configuration.timestamps {
            timestampsEnabled = true
            timestampRecent = timestamps.value
        } else {
            timestampsEnabled = false
        }
        sackEnabled = options.sackPermitted && configuration.selectiveAcknowledgments
        // RFC 9293 §3.7.1: without the option, assume 536.
        setSegmentSize(peer: Int(options.maximumSegmentSize ?? 536), configuration: configuration)
        // A SYN's window is never scaled.
        sendWindow = Int(segment.window)
        sendWindowUpdateSequence = segment.sequenceNumber
        sendWindowUpdateAcknowledgment = segment.acknowledgmentNumber
    }

    private mutating func setSegmentSize(peer: Int, configuration: TCPConfiguration) {
        // The payload per segment leaves room for the options every segment carries (RFC 9293 §3.7.1).
        segmentSize = max(min(peer, Int(configuration.maximumSegmentSize)) - (timestampsEnabled ? 12 : 0), 64)
        congestion = CongestionController(
            algorithm: configuration.congestionControl, segmentSize: segmentSize,
            initialWindowSegments: configuration.initialWindowSegments)
    }

    private mutating func sendSynchronize<O: CommandOutput>(now: Instant, configuration: TCPConfiguration, output: inout O) {
        var options = TCPOptions(maximumSegmentSize: configuration.maximumSegmentSize)
        let isReply = state == .synReceived
        if !isReply || sendWindowShift > 0 || receiveWindowShift > 0 {
            // Offer scaling on an active SYN; answer it only if the peer offered.
            if !isReply || receiveWindowShift > 0 {
                options.windowScale = configuration.receiveWindowShift
                offeredWindowScale = true
            }
        }
        if configuration.selectiveAcknowledgments && (!isReply || sackEnabled) { options.sackPermitted = true }
        if configuration.timestamps && (!isReply || timestampsEnabled) {
            options.timestamps = TCPTimestamps(value: timestampClock(now), echoReply: isReply ? timestampRecent : 0)
        }
        let flags: TCPFlags = isReply ? [.syn, .ack] : .syn
        let window = UInt16(min(receiveBuffer.free, 65535))
        // The SYN-ACK's window is an offer like any other: the peer may fill it before our next ACK.
        if isReply { receiveWindowEdge = receiveNext + Int(window) }
        emitSegment(
            sequence: initialSendSequence, flags: flags, window: window, options: options, payload: nil,
            output: &output)
        if sendMaximum == initialSendSequence {
            sendNext = initialSendSequence + 1
            sendMaximum = sendNext
        }
    }

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
                if state == .timeWait { timeWaitDeadline = now + configuration.timeWaitDuration }
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

    private mutating func handleInSynSent<O: CommandOutput>(
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
            retransmitDeadline = nil
            if consecutiveTimeouts == 0 { rtt.addSample(now - timedAt, configuration: configuration) } else { rtt.restartAfterSynTimeout() }
            consecutiveTimeouts = 0
            sendWindow = Int(segment.window) << Int(sendWindowShift)
            ackNow = true
            refreshKeepalive(now: now, configuration: configuration)
        } else {
            // Simultaneous open (RFC 9293 §3.5): both sent SYNs.
            state = .synReceived
            sendSynchronize(now: now, configuration: configuration, output: &output)
        }
    }

    /// RFC 9293 §3.10.7.4 step 5 for synchronized states. Returns false when the segment must go no further.
    private mutating func processAcknowledgment<O: CommandOutput>(
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
        if sackEnabled && !segment.options.sackBlocks.isEmpty { updateScoreboard(segment.options.sackBlocks) }

        if ack > sendUnacknowledged {
            newlyAcknowledged(through: ack, now: now, configuration: configuration, output: &output)
        } else if ack == sendUnacknowledged, payloadLength == 0, !segment.flags.contains(.fin),
                  window == sendWindow, sendUnacknowledged != sendMaximum {
            // RFC 5681 §2's duplicate ACK.
            duplicateAcks += 1
            if inRecovery {
                if !sackEnabled { congestion.inflate(by: segmentSize) }
            } else if duplicateAcks >= Self.duplicateThreshold || (sackEnabled && isLost(sendUnacknowledged))
                        || earlyRetransmitDue {
                enterRecovery(now: now)
            } else {
                // RFC 3042 Limited Transmit: each of the first two duplicate ACKs lets one new segment out, so
                // the ACKs a fast retransmit needs keep coming when the window is small.
                limitedTransmitAllowance = duplicateAcks * segmentSize
            }
        }
        if !inRecovery && sackEnabled && sendUnacknowledged != sendMaximum && isLost(sendUnacknowledged) {
            // SACK information alone can show the first segment lost (RFC 6675 §5 step 4's IsLost), even
            // when the ACKs carrying it changed the window and so did not count as duplicates.
            enterRecovery(now: now)
        }

        // Window update (RFC 9293 §3.10.7.4): only from a segment newer than the last that updated it.
        if sendWindowUpdateSequence < segment.sequenceNumber
            || (sendWindowUpdateSequence == segment.sequenceNumber && sendWindowUpdateAcknowledgment <= ack) {
            if window > sendWindow && sendWindow == 0 { persistDeadline = nil; persistBackoff = 0 }
            sendWindow = window
            sendWindowUpdateSequence = segment.sequenceNumber
            sendWindowUpdateAcknowledgment = ack
        }

        switch state {
        case .finWait1 where finAcknowledged:
            state = .finWait2
            if closedByApplication { timeWaitDeadline = now + configuration.finWait2Timeout }
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

    private var finAcknowledged: Bool {
        guard let finSequence else { return false }
        return sendUnacknowledged > finSequence
    }

    private mutating func newlyAcknowledged<O: CommandOutput>(
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
        if highRetransmitted < ack { highRetransmitted = ack }
        scoreboard.removeAll { $0.right <= ack }
        if let first = scoreboard.first, first.left < ack { scoreboard[0].left = ack }

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
            retransmitDeadline = nil
            retransmitAwaitsEcho = false
        } else {
            armRetransmit(at: now + rtt.timeout)
        }

        // The NIC keeps sent bytes until told they are acknowledged: tell it in batches.
        let reportable = ack > dataEnd ? dataEnd : ack
        if reportable - acknowledgedReported >= configuration.acknowledgedBatchBytes
            || (reportable == dataEnd && reportable > acknowledgedReported) {
            output.emit(.acknowledged(handle.flow, through: reportable))
            if reportable == dataEnd { events.insert(.allAcknowledged) }
            acknowledgedReported = reportable
        }
        if !queueHadRoom && queueHasRoom(configuration: configuration) { events.insert(.writable) }
    }

    /// RFC 5827 Early Retransmit: with fewer than four segments outstanding and nothing new to send, fewer
    /// duplicate ACKs than three are all that can ever arrive; one less than the segments outstanding will do.
    private var earlyRetransmitDue: Bool {
        let outstanding = (sendMaximum - sendUnacknowledged + segmentSize - 1) / segmentSize
        return outstanding < 4 && sendNext == sendQueue.end && duplicateAcks >= max(outstanding - 1, 1)
    }

    private mutating func enterRecovery(now: Instant) {
        fastRecoveries += 1
        limitedTransmitAllowance = 0
        inRecovery = true
        recoveryPoint = sendMaximum
        highRetransmitted = sendUnacknowledged
        congestion.onLossDetected(flight: sendMaximum - sendUnacknowledged, now: now)
        if !sackEnabled { congestion.inflate(by: Self.duplicateThreshold * segmentSize) }
        // The first retransmission goes now (RFC 5681 §3.2 step 2); the transmit loop does the rest.
        needsFastRetransmit = true
    }

    private var needsFastRetransmit = false
    private var fastRecoveries = 0
    /// Bytes Limited Transmit lets past the congestion window until the next new ACK.
    private var limitedTransmitAllowance = 0
    private var timeouts = 0
    /// FLOW_OPEN was sent and FLOW_CLOSE not yet.
    private var flowOpenOnNIC = true
    /// The end of the last sub-MSS segment of application bytes sent (Minshall's Nagle).
    private var unacknowledgedSmallSegmentEnd: SequenceNumber?

    // MARK: - SACK scoreboard (RFC 6675)

    private mutating func updateScoreboard(_ blocks: SACKBlockList) {
        for block in blocks {
            // Ignore blocks that are stale or claim what was never sent (RFC 2883's D-SACK included).
            guard block.left < block.right, block.right <= sendMaximum, block.right > sendUnacknowledged else { continue }
            // Bounded: SACK is advice, and a peer reporting thousands of tiny holes gets the first 64 taken.
            scoreboard.insertMerging(SACKBlock(left: SequenceNumber.max(block.left, sendUnacknowledged), right: block.right), limit: 64)
        }
    }

    private var sackedBytes: Int { scoreboard.reduce(0) { $0 + ($1.right - $1.left) } }

    /// RFC 6675 IsLost: at least DupThresh segments' worth of SACKed bytes lie above `sequence`.
    private func isLost(_ sequence: SequenceNumber) -> Bool {
        var above = 0
        for block in scoreboard where block.right > sequence {
            above += block.right - SequenceNumber.max(block.left, sequence + 1)
        }
        return above >= Self.duplicateThreshold * segmentSize
    }

    /// RFC 6675 NextSeg rule 1: the first unSACKed, lost, not yet retransmitted range.
    private func nextLostRange() -> (SequenceNumber, Int)? {
        var cursor = SequenceNumber.max(highRetransmitted, sendUnacknowledged)
        for block in scoreboard {
            if block.right <= cursor { continue }
            if cursor < block.left {
                if isLost(cursor) { return (cursor, min(block.left - cursor, segmentSize)) }
                return nil
            }
            cursor = block.right
        }
        return nil
    }

    /// RFC 6675 SetPipe, by ranges: outstanding bytes neither SACKed nor lost, plus lost ones retransmitted.
    private var pipe: Int {
        let outstanding = sendNext - sendUnacknowledged
        guard sackEnabled, inRecovery, !scoreboard.isEmpty else { return max(outstanding, 0) }
        var lostNotRetransmitted = 0
        var cursor = sendUnacknowledged
        for block in scoreboard {
            if cursor < block.left, isLost(cursor) {
                let holeStart = SequenceNumber.max(cursor, highRetransmitted)
                if holeStart < block.left { lostNotRetransmitted += block.left - holeStart }
            }
            cursor = SequenceNumber.max(cursor, block.right)
        }
        return max(outstanding - sackedBytes - lostNotRetransmitted, 0)
    }

    // MARK: - Receiving

    private mutating func receiveData(_ payload: UnsafeRawBufferPointer, at sequence: SequenceNumber) {
        let wasInOrder = sequence == receiveNext
        let hadGap = !receiveBuffer.outOfOrder.isEmpty
        let advanced = receiveBuffer.store(payload, at: sequence, next: receiveNext)
        receiveNext += advanced
        if advanced > 0 { events.insert(.readable) }
        if !wasInOrder || hadGap || advanced < payload.count {
            // Out of order, a hole filled, or data that did not fit: tell the peer at once (RFC 5681 §4.2).
            ackNow = true
        } else {
            segmentsSinceAck += 1
            // RFC 9293 §3.8.6.3: an ACK for at least every second full-sized segment.
            if segmentsSinceAck >= 2 { ackNow = true }
        }
    }

    private mutating func receiveFin(now: Instant, configuration: TCPConfiguration) {
        pendingFinSequence = nil
        receiveNext += 1
        readClosed = true
        events.formUnion([.readable, .readClosed])
        ackNow = true
        switch state {
        case .synReceived, .established:
            state = .closeWait
        case .finWait1:
            // Our FIN not yet acknowledged: simultaneous close.
            state = finAcknowledged ? .timeWait : .closing
            if state == .timeWait { timeWaitDeadline = now + configuration.timeWaitDuration }
        case .finWait2:
            state = .timeWait
            timeWaitDeadline = now + configuration.timeWaitDuration
        default:
            break
        }
        if state == .timeWait { cancelTimersForTimeWait() }
    }

    // MARK: - The application

    /// Copies queued bytes to the application; returns how many (0 with `readClosed` means end of stream).
    mutating func read<O: CommandOutput>(
        into buffer: UnsafeMutableRawBufferPointer, now: Instant, configuration: TCPConfiguration, output: inout O
    ) -> Int {
        let count = receiveBuffer.read(into: buffer)
        // Reading opened the window: announce it if it grew enough to matter (RFC 9293 §3.8.6.2.2).
        if count > 0, state.isSynchronized, advertisableWindowGrowth >= min(receiveBuffer.capacity / 2, segmentSize) {
            ackNow = true
            flush(now: now, configuration: configuration, output: &output)
        }
        return count
    }

    var readableBytes: Int { receiveBuffer.readable }
    var advertisedWindowEdge: SequenceNumber { receiveWindowEdge }

    private var canSend: Bool {
        (state == .established || state == .closeWait || state == .synReceived || state == .synSent) && !finRequested
    }

    /// Queues application bytes; returns how many fit (0: would block).
    mutating func write<O: CommandOutput>(
        _ bytes: UnsafeRawBufferPointer, now: Instant, configuration: TCPConfiguration, output: inout O
    ) throws(TCPError) -> Int {
        guard canSend else { throw finRequested ? .alreadyClosing : (error ?? .notConnected) }
        let accepted = sendQueue.append(bytes: bytes)
        if accepted < bytes.count { events.remove(.writable) }
        flush(now: now, configuration: configuration, output: &output)
        return accepted
    }

    /// Queues a range of an offloaded file; returns how many bytes fit (0: would block).
    mutating func writeFile<O: CommandOutput>(
        _ file: OffloadedFileID, offset: UInt64, length: Int, now: Instant, configuration: TCPConfiguration,
        output: inout O
    ) throws(TCPError) -> Int {
        guard canSend else { throw finRequested ? .alreadyClosing : (error ?? .notConnected) }
        let accepted = min(length, max(configuration.fileQueueBytes - fileBytesQueued, 0))
        if accepted > 0 {
            sendQueue.append(file: file, offset: offset, length: accepted)
            fileBytesQueued += accepted
        }
        if accepted < length { events.remove(.writable) }
        flush(now: now, configuration: configuration, output: &output)
        return accepted
    }

    private func queueHasRoom(configuration: TCPConfiguration) -> Bool {
        sendQueue.freeByteCapacity > 0 && fileBytesQueued < configuration.fileQueueBytes
    }

    /// Closes the sending side: a FIN follows the queued data.
    mutating func shutdownWrite<O: CommandOutput>(now: Instant, configuration: TCPConfiguration, output: inout O) {
        guard !finRequested else { return }
        switch state {
        case .synSent:
            close(output: &output)
            return
        case .synReceived, .established:
            state = .finWait1
        case .closeWait:
            state = .lastAck
        default:
            return
        }
        finRequested = true
        flush(now: now, configuration: configuration, output: &output)
    }

    /// The application closed its handle: from now on new data is refused, and FIN-WAIT-2 is timed.
    mutating func markClosedByApplication(now: Instant, configuration: TCPConfiguration) {
        closedByApplication = true
        if state == .finWait2 { timeWaitDeadline = now + configuration.finWait2Timeout }
    }

    /// In TIME-WAIT, whether a SYN starts a new incarnation (RFC 6191): with timestamps, its TSval is newer
    /// than the last one seen; without, its sequence number is past the old connection's.
    func acceptsNewConnection(_ segment: TCPRepr) -> Bool {
        guard state == .timeWait, segment.flags.contains(.syn), !segment.flags.contains(.ack), !segment.flags.contains(.rst) else { return false }
        if timestampsEnabled, let timestamps = segment.options.timestamps {
            return Int32(bitPattern: timestamps.value &- timestampRecent) > 0
        }
        return !timestampsEnabled && segment.sequenceNumber > receiveNext
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
    func isWritable(configuration: TCPConfiguration) -> Bool { canSend && queueHasRoom(configuration: configuration) }

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
        if sequenceEnd > echoedEnd { echoedEnd = sequenceEnd }
        // The timed SEND left the NIC its delay after it was issued: time it from then (IO-TCP's rule). A delay
        // longer than the time since the SEND (clocks of two machines) is clamped to the ECHO's arrival.
        if timedAwaitsEcho, let timed = timedSequence, sequenceEnd >= timed {
            let departed = timedAt + nicDelayNanoseconds
            timedAt = departed < now ? departed : now
            timedAwaitsEcho = false
        }
        // RFC 6298 §5.1, IO-TCP's way: the timer runs from when the data is on the wire.
        if retransmitAwaitsEcho, sendUnacknowledged < sendMaximum {
            retransmitDeadline = now + rtt.timeout
            retransmitAwaitsEcho = false
        }
        // Room on the NIC again: what waited for it may go.
        if wasHeldByNIC { flush(now: now, configuration: configuration, output: &output) }
    }

    /// File data handed to the NIC and not yet reported on the wire.
    private var unechoedBytes: Int { sendIssuedEnd > echoedEnd ? sendIssuedEnd - echoedEnd : 0 }

    var info: TCPConnectionInfo {
        TCPConnectionInfo(
            state: state, sendUnacknowledged: sendUnacknowledged, sendNext: sendNext, sendMaximum: sendMaximum,
            sendWindow: sendWindow, receiveNext: receiveNext, congestionWindow: congestion.window,
            slowStartThreshold: congestion.slowStartThreshold, smoothedRTT: rtt.smoothed, retransmissionTimeout: rtt.timeout,
            consecutiveTimeouts: consecutiveTimeouts, inRecovery: inRecovery, queuedBytes: sendQueue.count, segmentSize: segmentSize,
            fastRecoveries: fastRecoveries, timeouts: timeouts)
    }

    // MARK: - Timers

    var nextDeadline: Instant? {
        Self.deadline(min(retransmitAt, delayedAckAt, persistAt, keepaliveAt, timeWaitAt))
    }

    mutating func handleTimers<O: CommandOutput>(now: Instant, configuration: TCPConfiguration, output: inout O) {
        if let deadline = timeWaitDeadline, deadline <= now {
            close(output: &output)
            return
        }
        if let deadline = retransmitDeadline, deadline <= now {
            retransmitDeadline = nil
            retransmissionTimeout(now: now, configuration: configuration, output: &output)
            if state == .closed { return }
        }
        if let deadline = persistDeadline, deadline <= now {
            persistDeadline = nil
            if Int(unansweredProbes) >= configuration.maximumRetransmissions {
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
        if let deadline = keepaliveDeadline, deadline <= now, let keepalive = configuration.keepalive {
            if keepaliveProbesSent >= keepalive.probes {
                fail(.timedOut, output: &output)
                return
            }
            let advertised = windowField()
            emitSegment(sequence: sendUnacknowledged - 1, flags: .ack, window: advertised, options: currentOptions(now: now),
                        payload: nil, output: &output)
            keepaliveProbesSent += 1
            keepaliveDeadline = now + keepalive.interval
        }
        if let deadline = delayedAckDeadline, deadline <= now {
            delayedAckDeadline = nil
            ackNow = true
        }
        flush(now: now, configuration: configuration, output: &output)
    }

    /// A zero-window probe: an old sequence number the peer must answer with its window (as Linux), then the
    /// next one after the persist timer's backoff.
    private mutating func sendWindowProbe<O: CommandOutput>(now: Instant, configuration: TCPConfiguration, output: inout O) {
        let advertised = windowField()
        emitSegment(sequence: sendUnacknowledged - 1, flags: .ack, window: advertised, options: currentOptions(now: now),
                    payload: nil, output: &output)
        if unansweredProbes < .max { unansweredProbes += 1 }
        persistBackoff += 1
        armPersist(now: now, configuration: configuration)
    }

    /// The persist timer, backed off by the probes sent so far (RTO doubling, at most 64 times, at most the
    /// largest RTO).
    private mutating func armPersist(now: Instant, configuration: TCPConfiguration) {
        let backoff = UInt64(1) << UInt64(min(persistBackoff, 6))
        persistDeadline = now + min(rtt.timeout * backoff, configuration.maximumRetransmissionTimeout)
    }

    private mutating func retransmissionTimeout<O: CommandOutput>(now: Instant, configuration: TCPConfiguration, output: inout O) {
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
            retransmitDeadline = nil
            retransmitAwaitsEcho = false
            timedSequence = nil
            timedAwaitsEcho = false
            sendWindowProbe(now: now, configuration: configuration, output: &output)
            return
        }
        consecutiveTimeouts += 1
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
        congestion.onTimeout(flight: sendMaximum - sendUnacknowledged)
        inRecovery = false
        duplicateAcks = 0
        scoreboard.removeAll()
        sendNext = sendUnacknowledged
        highRetransmitted = sendUnacknowledged
        armRetransmit(at: now + rtt.timeout)
    }

    private mutating func armRetransmit(at deadline: Instant) {
        retransmitDeadline = deadline
        retransmitAwaitsEcho = false
    }

    private mutating func refreshKeepalive(now: Instant, configuration: TCPConfiguration) {
        guard let keepalive = configuration.keepalive, state == .established || state == .closeWait else { return }
        keepaliveDeadline = now + keepalive.idle
        keepaliveProbesSent = 0
    }

    /// Bytes of buffers held: the send ring and the receive ring.
    var bufferBytes: Int { sendQueue.allocatedBytes + receiveBuffer.allocatedBytes }

    private mutating func cancelTimersForTimeWait() {
        retransmitDeadline = nil
        persistDeadline = nil
        keepaliveDeadline = nil
        delayedAckDeadline = nil
        // Only ACKs are sent from here on, and nothing more is received: the buffers can go.
        sendQueue.releaseStorage()
        receiveBuffer.releaseStorage()
        scoreboard = []
    }

    private mutating func enterTimeWait<O: CommandOutput>(now: Instant, configuration: TCPConfiguration, output: inout O) {
        state = .timeWait
        cancelTimersForTimeWait()
        timeWaitDeadline = now + configuration.timeWaitDuration
        closeFlowOnNIC(output: &output)
    }

    /// The NIC needs a flow only while data may still leave as SEND or RETRANSMIT: in TIME-WAIT and
    /// CLOSED only host-built ACKs remain. Tells it once, whichever way the connection got there.
    private mutating func closeFlowOnNIC<O: CommandOutput>(output: inout O) {
        guard flowOpenOnNIC, state == .timeWait || state == .closed else { return }
        flowOpenOnNIC = false
        output.emit(.flowClose(handle.flow, reason: error == nil ? 0 : 1))
        events.insert(.closed)
    }

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
        } else if !ackNow && segmentsSinceAck > 0 && delayedAckDeadline == nil && state.isSynchronized {
            delayedAckDeadline = now + configuration.delayedAckTimeout
        }
        ackNow = false
    }

    private mutating func sendAcknowledgment<O: CommandOutput>(now: Instant, output: inout O) {
        let advertised = windowField()
        emitSegment(sequence: sendNext, flags: .ack, window: advertised, options: currentOptions(now: now), payload: nil,
                    output: &output)
        acknowledgmentSent()
    }

    private mutating func acknowledgmentSent() {
        segmentsSinceAck = 0
        delayedAckDeadline = nil
        ackNow = false
    }

    /// Returns whether anything carrying an ACK went out.
    private mutating func transmit<O: CommandOutput>(now: Instant, configuration: TCPConfiguration, output: inout O) -> Bool {
        var sent = false
        var heldBySillyWindow = false
        defer { sillyWindowOverride = false }
        if needsFastRetransmit {
            needsFastRetransmit = false
            retransmit(from: sendUnacknowledged, limit: segmentSize, now: now, configuration: configuration, output: &output)
            if sendUnacknowledged + segmentSize > highRetransmitted { highRetransmitted = sendUnacknowledged + segmentSize }
            sent = true
        }
        sending: while true {
            let window = min(congestion.window + limitedTransmitAllowance, max(sendWindow, 0))
            let inFlight = pipe
            if inRecovery && sackEnabled, inFlight + segmentSize <= congestion.window, let (start, length) = nextLostRange() {
                retransmit(from: start, limit: length, now: now, configuration: configuration, output: &output)
                highRetransmitted = start + length
                sent = true
                continue
            }
            let dataEnd = sendQueue.end
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
                case .file:
                    // New file data stops where the NIC's share of it (TCP small queues) runs out; bytes from
                    // memory never wait on it.
                    if !isRetransmission && configuration.maximumUnechoedBytes > 0 {
                        let nicRoom = configuration.maximumUnechoedBytes - unechoedBytes
                        guard nicRoom > 0 else { break sending }
                        piece.length = min(piece.length, nicRoom)
                    }
                    if isRetransmission {
                        retransmit(from: sendNext, limit: min(piece.length, sendMaximum - sendNext), now: now,
                                   configuration: configuration, output: &output)
                    } else {
                        // Atlas: wait for a window worth a disk read, unless the queue is shorter or nothing is in
                        // flight. Never more than half the congestion window, or a small window would go out in
                        // bursts with gaps, and a loss near a burst's end would find too few segments behind it
                        // for duplicate ACKs.
                        let remaining = sendQueue.piece(at: sendNext, limit: .max)?.length ?? 0
                        let minimum = min(configuration.minimumSendSegments * segmentSize, congestion.window / 2)
                        if piece.length < minimum && piece.length < remaining && inFlight > 0 { break sending }
                        emitSend(piece, last: piece.sequence + piece.length == dataEnd, now: now, configuration: configuration,
                                 output: &output)
                    }
                case .bytes:
                    let length = min(piece.length, segmentSize)
                    let endOfQueue = piece.sequence + length == dataEnd
                    // Nagle (RFC 9293 §3.7.4) in Minshall's form, as Linux: a short segment waits only while
                    // an earlier short segment is unacknowledged, so a reply's tail is not held for an ACK.
                    if configuration.nagle, length < segmentSize, !isRetransmission, !finRequested,
                       let small = unacknowledgedSmallSegmentEnd, small > sendUnacknowledged { break sending }
                    emitBytes(SendQueue.Piece(sequence: piece.sequence, length: length, source: piece.source),
                              push: endOfQueue, now: now, output: &output)
                    advanceSent(by: length, now: now, timed: true)
                    if length < segmentSize { unacknowledgedSmallSegmentEnd = sendNext }
                }
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
                advanceSent(by: 1, now: now, timed: false)
                sent = true
            }
            break sending
        }
        // Zero window with data waiting and nothing being timed for retransmission: probe until the peer opens
        // (RFC 9293 §3.8.6.1).
        // The same when a window too small to use holds data back and nothing in flight will bring an ACK.
        if (sendWindow == 0 || heldBySillyWindow) && sendNext < sendQueue.end && retransmitDeadline == nil
            && persistDeadline == nil && (sendUnacknowledged == sendMaximum || sendNext == sendUnacknowledged) {
            armPersist(now: now, configuration: configuration)
        }
        return sent
    }

    /// Moves SND.NXT past bytes just sent and starts the timer if nothing armed it.
    private mutating func advanceSent(by length: Int, now: Instant, timed: Bool) {
        sendNext += length
        if sendNext > sendMaximum { sendMaximum = sendNext }
        if retransmitDeadline == nil { armRetransmit(at: now + rtt.timeout) }
        if timed, timedSequence == nil, consecutiveTimeouts == 0, !inRecovery {
            timedSequence = sendNext
            timedAt = now
            timedAwaitsEcho = false
        }
    }

    private mutating func emitSend<O: CommandOutput>(
        _ piece: SendQueue.Piece, last: Bool, now: Instant, configuration: TCPConfiguration, output: inout O
    ) {
        guard case .file(let file, let offset) = piece.source else { return }
        output.emit(.send(handle.flow, SendRange(
            sequence: piece.sequence, length: UInt32(piece.length), file: file, offset: offset,
            template: template(lastFlags: last ? .psh : [], now: now))))
        acknowledgmentSent()
        if piece.sequence + piece.length > sendIssuedEnd { sendIssuedEnd = piece.sequence + piece.length }
        if timedSequence == nil, consecutiveTimeouts == 0, !inRecovery {
            timedSequence = piece.sequence + piece.length
            timedAt = now
            timedAwaitsEcho = true
        }
        sendNext += piece.length
        if sendNext > sendMaximum { sendMaximum = sendNext }
        if retransmitDeadline == nil {
            // Not on the wire yet: the ECHO will re-arm this from the moment it is.
            retransmitDeadline = now + rtt.timeout + configuration.echoAllowance
            retransmitAwaitsEcho = true
        }
    }

    /// Sends again `[from, from + limit)`, clipped to one queue entry: file data by RETRANSMIT from the
    /// NIC's store, application bytes as packets, a lost FIN as a FIN.
    private mutating func retransmit<O: CommandOutput>(
        from start: SequenceNumber, limit: Int, now: Instant, configuration: TCPConfiguration, output: inout O
    ) {
        if let finSequence, start == finSequence {
            let advertised = windowField()
            emitSegment(sequence: finSequence, flags: [.fin, .ack], window: advertised, options: currentOptions(now: now),
                        payload: nil, output: &output)
            acknowledgmentSent()
            if sendNext <= finSequence { sendNext = finSequence + 1 }
            return
        }
        // Only what was sent can be sent again: the NIC holds nothing beyond SND.MAX, and counting unsent
        // bytes as sent would leave a hole no RETRANSMIT could fill.
        let sentLimit = min(limit, SequenceNumber.min(sendMaximum, sendQueue.end) - start)
        guard sentLimit > 0, let piece = sendQueue.piece(at: start, limit: sentLimit) else { return }
        switch piece.source {
        case .file:
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
        if retransmitDeadline == nil { armRetransmit(at: now + rtt.timeout) }
        // Karn: whatever was being timed may now be acknowledged by the retransmission.
        timedSequence = nil
        timedAwaitsEcho = false
    }

    private func streamIndex(_ source: SendQueue.Source) -> UInt64 {
        if case .bytes(let index) = source { return index }
        return 0
    }

    private mutating func emitBytes<O: CommandOutput>(_ piece: SendQueue.Piece, push: Bool, now: Instant, output: inout O) {
        let queue = sendQueue
        let advertised = windowField()
        emitSegment(sequence: piece.sequence, flags: push ? [.ack, .psh] : .ack, window: advertised,
                    options: currentOptions(now: now), payload: (piece.length, { buffer in queue.copy(piece, into: buffer) }),
                    output: &output)
        acknowledgmentSent()
    }

    private mutating func template(lastFlags: TCPFlags, now: Instant) -> SegmentTemplate {
        SegmentTemplate(
            acknowledgmentNumber: receiveNext, window: windowField(), lastSegmentFlags: lastFlags,
            maximumSegmentSize: UInt16(segmentSize),
            timestamps: timestampsEnabled ? TCPTimestamps(value: timestampClock(now), echoReply: timestampRecent) : nil)
    }

    @inline(__always)
    private func currentOptions(now: Instant) -> TCPOptions {
        var options = TCPOptions()
        if timestampsEnabled { options.timestamps = TCPTimestamps(value: timestampClock(now), echoReply: timestampRecent) }
        if sackEnabled { options.sackBlocks = receiveBuffer.sackBlocks(limit: timestampsEnabled ? 3 : 4) }
        return options
    }

    /// The timestamp clock: milliseconds, offset per connection (RFC 7323 §5.4) so it reveals no uptime.
    private func timestampClock(_ now: Instant) -> UInt32 {
        UInt32(truncatingIfNeeded: now.nanoseconds / Nanoseconds.millisecond) &+ timestampOffset
    }

    /// How far the window could move right now, beyond the edge already advertised.
    private var advertisableWindowGrowth: Int {
        (receiveNext + receiveBuffer.free) - receiveWindowEdge
    }

    /// The window field for the next segment: moves the edge right when it grew enough (receiver-side
    /// silly window avoidance), never left.
    private mutating func windowField() -> UInt16 {
        let growth = advertisableWindowGrowth
        if growth >= min(receiveBuffer.capacity / 2, segmentSize) || receiveWindowEdge < receiveNext {
            receiveWindowEdge = receiveNext + receiveBuffer.free
        }
        return windowFieldValue
    }

    private var windowFieldValue: UInt16 {
        let offered = max(receiveWindowEdge - receiveNext, 0)
        return UInt16(min(offered >> Int(receiveWindowShift), 65535))
    }

    /// Builds an IPv4 packet holding one TCP segment and hands it to the NIC as PACKET_OUT.
    /// Callers compute `windowField()` (which mutates) before the call, never among its arguments: a
    /// mutation inside the arguments of a call on `self` makes Swift copy the whole control block (its
    /// buffers retained and released) for every segment.
    @inline(__always)
    private func emitSegment<O: CommandOutput>(
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
    private mutating func challenge(now: Instant, configuration: TCPConfiguration) {
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

    private func emitReset<O: CommandOutput>(sequence: SequenceNumber, output: inout O) {
        emitSegment(sequence: sequence, flags: .rst, window: 0, options: TCPOptions(), payload: nil, output: &output)
    }

    // MARK: - Ending

    private mutating func fail<O: CommandOutput>(_ reason: TCPError, output: inout O) {
        switch reason {
        case .connectionRefused: failure = .refused
        case .timedOut: failure = .timedOut
        default: failure = .reset
        }
        close(output: &output)
    }

    /// To CLOSED: timers off, the NIC told to forget the flow, the application told.
    private mutating func close<O: CommandOutput>(output: inout O) {
        enterClosed(output: &output)
        events.formUnion([.closed, .readable, .writable])
    }

    private mutating func enterClosed<O: CommandOutput>(output: inout O) {
        state = .closed
        closeFlowOnNIC(output: &output)
        retransmitDeadline = nil
        delayedAckDeadline = nil
        persistDeadline = nil
        keepaliveDeadline = nil
        timeWaitDeadline = nil
    }
}
