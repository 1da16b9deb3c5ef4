import IOTCPCommon

/// One connection's transmission control block and its rules: RFC 9293's state machine with RFC 5961's
/// defences, RFC 7323's options and PAWS, RFC 2018 and 6675's SACK, RFC 6298's timer, RFC 5681/6582 or
/// 9438 congestion control, and IO-TCP's split: file data leaves as SEND commands the NIC turns into
/// segments, and the retransmission timer starts when the NIC's ECHO says the data is on the wire.
///
/// It makes no system call and reads no clock: every entry point takes `now` and an output.
///
/// Why one type of about 1,300 lines: a TCB's concerns share its sequence variables on every segment, and
/// the per-ACK path (about 100 ns, `iotcp-bench --only engine`) reads and writes them in place in the engine's
/// pool. What stands alone is its own type (`SendQueue`, `ReceiveBuffer`, `SACKScoreboard`, `ConnectionTimers`,
/// `RTTEstimator`, `CongestionController`); the rules are split by concern into files: this one (state,
/// opening, ending), `+Acknowledgments` (segments from the peer, ACKs, loss recovery), `+Receive`,
/// `+Application` (the application's calls and the NIC's ECHO), `+Timers` and `+Send`. Its members are
/// therefore internal rather than private; only `TCPEngine` uses the type.
struct TCPConnection {
    let handle: TCPHandle
    let localAddress: IPAddress
    let remoteAddress: IPAddress
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
    /// The application closed and the NIC will end the connection (TEARDOWN) once our FIN is out and
    /// everything before it acknowledged.
    var endingOnNIC = false
    /// Opened by `connect`: its ending is never handed to the NIC (see `TCPEngine.connect`).
    var openedActively = false

    var state: TCPState

    // Send sequence space (RFC 9293 §3.3.1).
    let initialSendSequence: SequenceNumber
    var sendUnacknowledged: SequenceNumber
    var sendNext: SequenceNumber
    /// The highest sequence number sent (SND.NXT before a timeout rewound it).
    var sendMaximum: SequenceNumber
    /// The peer's window in bytes, scaled.
    var sendWindow = 0 {
        didSet { if sendWindow > largestSendWindow { largestSendWindow = sendWindow } }
    }
    /// The largest window the peer has offered (Max(SND.WND), for sender silly-window avoidance).
    var largestSendWindow = 0
    /// The persist timer found a usable window too small to be worth a segment and nothing in flight: the
    /// next transmission sends what fits anyway (RFC 9293 §3.8.6.2.1's override timeout).
    var sillyWindowOverride = false
    var sendWindowUpdateSequence = SequenceNumber(0)
    var sendWindowUpdateAcknowledgment = SequenceNumber(0)
    var sendWindowShift: UInt8 = 0
    var receiveWindowShift: UInt8 = 0
    /// Payload bytes per segment this side sends.
    var segmentSize: Int

    // Receive sequence space.
    var initialReceiveSequence = SequenceNumber(0)
    var receiveNext = SequenceNumber(0)
    /// The right edge of the window last advertised; never moved left (RFC 9293 §3.8.6.2.1).
    var receiveWindowEdge = SequenceNumber(0)
    var receiveBuffer: ReceiveBuffer
    var pendingFinSequence: SequenceNumber?

    // Options.
    var timestampsEnabled = false
    var sackEnabled = false
    var timestampRecent: UInt32 = 0
    let timestampOffset: UInt32
    var offeredWindowScale = false

    // Send queue and close.
    var sendQueue: SendQueue
    var fileBytesQueued = 0
    /// What a TLS record adds to its plaintext on the wire, once the NIC has the connection's keys (0 before).
    var recordOverhead = 0
    var finRequested = false
    /// TCP_NODELAY: Nagle off for this connection whatever the configuration says.
    var noDelay = false
    /// SO_KEEPALIVE: probes for this connection even when the configuration has none (with Linux's defaults).
    var keepaliveRequested = false
    var finSequence: SequenceNumber?

    /// The five timers, as one set of deadlines.
    var timers = ConnectionTimers()
    /// What the retransmission timer, when armed, stands for.
    var retransmitTimerKind = RetransmitTimerKind.timeout
    enum RetransmitTimerKind: UInt8 {
        /// The RTO (RFC 6298).
        case timeout
        /// The RTO armed at a SEND's issue, with the ECHO allowance: the ECHO re-arms it precisely.
        case awaitingEcho
        /// A tail loss probe's timeout (RFC 8985's PTO).
        case probe
        /// The reordering window (TCPConnection+ReorderTimer.swift).
        case reorderingWindow
        /// The short timeout after the peer reneged on its SACKs (`sackReneged`): neither the reordering window
        /// nor a probe takes its place, as either would re-arm the full RTO when it passed.
        case reneged
    }
    /// This recovery's window already came down a second time for a lost retransmission (RFC 5681 §4.3:
    /// twice, not once for each one found).
    var recoveryLoweredForLostRetransmission = false
    /// A timeout happened: no recovery until SND.UNA reaches `recoveryPoint` (`recoveryAllowed`).
    var recoveryBarredUntilPoint = false
    /// SND.MAX when the last loss probe went (RFC 8985's TLP.end_seq), until an ACK shows whether it
    /// repaired a loss; no other probe goes meanwhile.
    var probeEnd: SequenceNumber?
    var lossProbes = 0
    var lossProbeRepairs = 0
    /// Lost retransmission detection (TCPConnection+LostRetransmission.swift): when the latest
    /// retransmission went, SND.MAX then (bytes above it were first sent after all of them), and where the
    /// retransmissions of the current pass begin (NextSeg's in recovery, SND.NXT's after a timeout); when the
    /// latest timeout fired (ACKs of what went before it may arrive for a round trip after).
    var lastRetransmissionAt = Instant.zero
    var lastTimeoutAt = Instant.zero
    var retransmissionRoundMark = SequenceNumber(0)
    var retransmissionPassStart = SequenceNumber(0)
    /// The reordering window: the highest SACKed byte when it was armed, and once it passed, the mark below
    /// which every unSACKed byte counts as lost.
    var reorderEvidenceEnd = SequenceNumber(0)
    var reorderLostBelow: SequenceNumber?
    /// 32 bits, beside the mark: the control block stays 8-byte packed.
    var lostRetransmissions: UInt32 = 0
    /// Holes the reordering window found lost (TCPConnection+ReorderTimer.swift).
    var reorderingWindowLosses: UInt32 = 0
    /// Cumulative ACKs that stopped at bytes the peer had SACKed (`sackReneged`).
    var sackRenegings: UInt32 = 0
    var consecutiveTimeouts = 0
    /// When the first of the `consecutiveTimeouts` fired: an echoed timestamp from then on is a retransmission's.
    var retransmittingSince = Instant.zero
    var keepaliveProbesSent = 0
    var persistBackoff = 0
    /// Zero-window probes sent since the peer last answered anything: past `maximumRetransmissions` the
    /// peer is taken for gone (a window may stay closed forever, but only while the peer answers).
    var unansweredProbes: UInt8 = 0
    var challengeSecond: UInt32 = 0
    var challengesThisSecond: UInt8 = 0
    var challengesSuppressed: UInt16 = 0

    // RTT measurement: one timed sequence number at a time, from when it reached the wire. File data is
    // timed from its SEND and moved on by the delay the NIC's ECHO reports, so disk and queueing time on the
    // NIC never counts as network time; until that ECHO comes, no sample is taken from it.
    var rtt: RTTEstimator
    var timedSequence: SequenceNumber?
    var timedAt = Instant.zero
    var timedAwaitsEcho = false

    // Congestion and loss recovery.
    var congestion: CongestionController
    var duplicateAcks = 0
    var inRecovery = false
    var recoveryPoint = SequenceNumber(0)
    /// RFC 6675's HighRxt: the highest sequence number retransmitted in this recovery.
    var highRetransmitted = SequenceNumber(0)
    /// What the peer SACKed above SND.UNA.
    var scoreboard = SACKScoreboard()

    // The NIC.
    var acknowledgedReported: SequenceNumber
    /// The end of the last SEND, and of the data the NIC has ECHOed as on the wire: file data between them
    /// waits on the NIC.
    var sendIssuedEnd: SequenceNumber
    var echoedEnd: SequenceNumber
    var segmentsSinceAck = 0
    var ackNow = false
    /// The handshake's last ACK is owed and waits for the application's turn (`acknowledgeConnectWithData`).
    var owesHandshakeAcknowledgment = false

    // What the application should hear.
    var events: TCPEvents = []
    /// Why the connection failed, as a one-byte code (a `TCPError?` would take 24 bytes).
    var failure = Failure.none
    enum Failure: UInt8 { case none, reset, refused, timedOut, nicFailed }
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
    var readClosed = false

    // Loss recovery beyond the scoreboard, and the NIC flow.
    var needsFastRetransmit = false
    var fastRecoveries = 0
    /// Bytes Limited Transmit lets past the congestion window until the next new ACK.
    var limitedTransmitAllowance = 0
    var timeouts = 0
    /// FLOW_OPEN was sent and FLOW_CLOSE not yet. A connection accepted from a listener has its flow from
    /// the handshake; one this host opened gets it with its first data (`openFlowOnNIC`), so a backend
    /// connection that sends none (a proxy's, spliced after its first request) costs the NIC no flow, and
    /// the channel no FLOW_OPEN and FLOW_CLOSE.
    var flowOpenOnNIC = false
    /// The connection reached TIME-WAIT or CLOSED and its flow, if it had one, was closed (`closeFlowOnNIC`).
    var flowEnded = false
    /// The end of the last sub-MSS segment of application bytes sent (Minshall's Nagle).
    var unacknowledgedSmallSegmentEnd: SequenceNumber?

    /// RFC 5681's and RFC 6675's DupThresh, the scoreboard's.
    static var duplicateThreshold: Int { SACKScoreboard.duplicateThreshold }

    init(
        handle: TCPHandle, localAddress: IPAddress, remoteAddress: IPAddress, localPort: UInt16,
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
        segmentSize = Int(configuration.maximumSegmentSize(for: remoteAddress))
        receiveBuffer = ReceiveBuffer(capacity: configuration.receiveBufferBytes)
        // The queue starts after the SYN's sequence number.
        sendQueue = SendQueue(start: initialSequence + 1, byteCapacity: configuration.sendBufferBytes)
        rtt = RTTEstimator(initial: configuration.initialRetransmissionTimeout)
        congestion = CongestionController(
            algorithm: configuration.congestionControl, segmentSize: segmentSize,
            initialWindowSegments: configuration.initialWindowSegments)
        acknowledgedReported = initialSequence + 1
        sendIssuedEnd = initialSequence + 1
        echoedEnd = initialSequence + 1
    }

    // MARK: - Opening

    /// Active open: send the SYN.
    mutating func open<O: CommandOutput>(now: Instant, configuration: TCPConfiguration, output: inout O) {
        timedAt = now
        sendSynchronize(now: now, configuration: configuration, output: &output)
        armRetransmit(at: now + rtt.timeout)
    }

    /// Passive open from a listener: read the SYN's options and answer with a SYN-ACK.
    mutating func acceptSynchronize<O: CommandOutput>(
        _ segment: TCPRepr, now: Instant, configuration: TCPConfiguration, output: inout O
    ) {
        adoptSynchronize(segment, configuration: configuration)
        timedAt = now
        openFlowOnNIC(output: &output)
        sendSynchronize(now: now, configuration: configuration, output: &output)
        armRetransmit(at: now + rtt.timeout)
    }

    /// A connection made from a valid SYN cookie: the handshake is complete already.
    mutating func establishFromCookie<O: CommandOutput>(
        _ segment: TCPRepr, peerSegmentSize: Int, windowShift: UInt8?, sack: Bool, roundTrip: UInt64?, now: Instant,
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
            // The handshake's round trip, from the cookie's timestamp: the first flight's RTO and loss probe
            // come from it instead of from RFC 6298's initial 1 s (a handshake the host keeps samples its SYN-ACK).
            // Not when it is as long as a retransmission timeout: the ACK was then likely not the first the client
            // sent for this SYN-ACK (a drop at a full accept queue, say, and the client's retransmission got in).
            if let roundTrip, roundTrip < configuration.minimumRetransmissionTimeout {
                rtt.addSample(roundTrip, configuration: configuration)
            }
        }
        sackEnabled = sack && configuration.selectiveAcknowledgments
        setSegmentSize(peer: peerSegmentSize, configuration: configuration)
        sendWindow = Int(segment.window) << Int(sendWindowShift)
        sendWindowUpdateSequence = segment.sequenceNumber
        sendWindowUpdateAcknowledgment = segment.acknowledgmentNumber
        state = .established
        openFlowOnNIC(output: &output)
        refreshKeepalive(now: now, configuration: configuration)
    }

    /// Tells the NIC of the flow: at the handshake of a connection accepted from a listener, and for one this
    /// host opened with its first data, before the first command that needs it (SEND, RETRANSMIT,
    /// SEND_RECORDS, TLS_KEYS, TEARDOWN) or the first data packet the host builds. From then on the peer's
    /// segments come up tagged with it, found without hashing on either side; until then they come up
    /// untagged and the host finds the connection by its endpoints.
    ///
    /// An accepted connection cannot wait: a port the NIC listens on answers SYNs of no flow with cookies
    /// itself, so without one a client that lost its side of the connection (a reboot, a NAT reusing the
    /// port) would get a cookie's SYN-ACK and then be taken for the stale connection, instead of the
    /// challenge ACK (RFC 5961 §4) whose RST clears it. No port is listened on for connections this host
    /// opens: their SYNs and segments always come up.
    mutating func openFlowOnNIC<O: CommandOutput>(output: inout O) {
        guard !flowOpenOnNIC, !flowEnded else { return }
        flowOpenOnNIC = true
        output.emit(.flowOpen(handle.flow, endpoints))
    }

    var endpoints: FlowEndpoints {
        FlowEndpoints(
            localAddress: localAddress, remoteAddress: remoteAddress, localPort: localPort, remotePort: remotePort,
            remoteHardwareAddress: .zero, maximumSegmentSize: UInt16(segmentSize))
    }

    mutating func adoptSynchronize(_ segment: TCPRepr, configuration: TCPConfiguration) {
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

    mutating func setSegmentSize(peer: Int, configuration: TCPConfiguration) {
        // The payload per segment leaves room for the options every segment carries (RFC 9293 §3.7.1).
        segmentSize = max(min(peer, Int(configuration.maximumSegmentSize(for: remoteAddress))) - (timestampsEnabled ? 12 : 0), 64)
        congestion = CongestionController(
            algorithm: configuration.congestionControl, segmentSize: segmentSize,
            initialWindowSegments: configuration.initialWindowSegments)
    }

    mutating func sendSynchronize<O: CommandOutput>(now: Instant, configuration: TCPConfiguration, output: inout O) {
        var options = TCPOptions(maximumSegmentSize: configuration.maximumSegmentSize(for: remoteAddress))
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

    // MARK: - Ending

    mutating func fail<O: CommandOutput>(_ reason: TCPError, output: inout O) {
        switch reason {
        case .connectionRefused: failure = .refused
        case .timedOut: failure = .timedOut
        default: failure = .reset
        }
        close(output: &output)
    }

    /// To CLOSED: timers off, the NIC told to forget the flow, the application told.
    mutating func close<O: CommandOutput>(output: inout O) {
        enterClosed(output: &output)
        events.formUnion([.closed, .readable, .writable])
    }

    mutating func enterClosed<O: CommandOutput>(output: inout O) {
        state = .closed
        owesHandshakeAcknowledgment = false
        closeFlowOnNIC(output: &output)
        timers = ConnectionTimers()
    }
}
