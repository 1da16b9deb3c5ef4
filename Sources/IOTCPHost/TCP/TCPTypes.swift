import IOTCPCommon

/// The connection states of RFC 9293 §3.3.2 (LISTEN belongs to listeners, not connections).
public enum TCPState: String, Sendable, CaseIterable {
    case synSent, synReceived, established, finWait1, finWait2, closeWait, closing, lastAck, timeWait, closed

    /// States in which the peer's sequence numbers are known.
    var isSynchronized: Bool { self != .synSent && self != .closed }
}

/// A connection, as the application holds it: a slot and a generation, so a handle kept after its
/// connection was freed never reaches the connection that reuses the slot.
public struct TCPHandle: Hashable, Sendable, CustomStringConvertible {
    public let slot: Int32
    public let generation: UInt32
    /// The flow id the NIC knows the connection by: its slot, and its generation so a late answer about the
    /// slot's previous connection is not taken for this one.
    public var flow: FlowID { FlowID(index: UInt32(slot) + 1, generation: generation) }
    public var description: String { "connection \(slot).\(generation)" }
}

/// A listening port.
public struct TCPListenerID: Hashable, Sendable {
    public let port: UInt16
    public init(port: UInt16) { self.port = port }
}

/// What happened to a connection since the application last looked.
public struct TCPEvents: OptionSet, Hashable, Sendable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }
    /// Bytes are waiting to be read, or the peer closed its side (a read returns 0).
    public static let readable = TCPEvents(rawValue: 1 << 0)
    /// The send queue has room again.
    public static let writable = TCPEvents(rawValue: 1 << 1)
    /// An active open completed.
    public static let connected = TCPEvents(rawValue: 1 << 2)
    /// The peer closed its sending side (FIN received).
    public static let readClosed = TCPEvents(rawValue: 1 << 3)
    /// The connection is over, cleanly or not; `TCPEngine.error(of:)` says which.
    public static let closed = TCPEvents(rawValue: 1 << 4)
    /// An ACK just covered everything queued so far (data and offloaded ranges alike).
    public static let allAcknowledged = TCPEvents(rawValue: 1 << 5)
}

/// Why a connection ended other than by an orderly close, or why a call failed.
public enum TCPError: Error, Hashable, Sendable, CustomStringConvertible {
    case connectionReset
    case connectionRefused
    case timedOut
    /// The NIC could not send this connection's data (a file it cannot read, a full store); the
    /// connection was reset.
    case nicFailed
    case invalidHandle
    case notConnected
    case alreadyClosing
    case portInUse(UInt16)
    case noFreePort
    case tooManyConnections
    case invalidArgument(String)
    /// `splice` refused: the NIC does not splice, or the connections are not in a state it can take.
    case cannotSplice(String)

    public var description: String {
        switch self {
        case .connectionReset: "connection reset by peer"
        case .connectionRefused: "connection refused"
        case .timedOut: "connection timed out"
        case .nicFailed: "the NIC could not send this connection's data; the connection was reset"
        case .invalidHandle: "no such connection (closed, or a stale handle)"
        case .notConnected: "the connection is not established"
        case .alreadyClosing: "the connection's sending side is already closed"
        case .portInUse(let port): "port \(port) is already in use"
        case .noFreePort: "no free local port"
        case .tooManyConnections: "the connection table is full"
        case .invalidArgument(let text): "invalid argument: \(text)"
        case .cannotSplice(let text): "cannot splice: \(text)"
        }
    }
}

/// Everything a connection's behaviour depends on. The defaults follow Linux where RFCs leave a choice.
public struct TCPConfiguration: Sendable {
    /// The MSS this side advertises: the largest segment it accepts (1,460 on Ethernet).
    public var maximumSegmentSize: UInt16 = 1460

    /// The MSS advertised to `peer`: `maximumSegmentSize` is IPv4's (the MTU less 40 bytes of headers),
    /// IPv6's is 20 less (`IPAddress.segmentSize(matchingIPv4:)`).
    @inlinable
    public func maximumSegmentSize(for peer: IPAddress) -> UInt16 {
        peer.segmentSize(matchingIPv4: maximumSegmentSize)
    }
    /// Bytes of receive buffer per connection; the window scale is chosen to advertise all of it.
    public var receiveBufferBytes = 256 * 1024
    /// Bytes of application data a connection queues (offloaded file ranges are bounded separately).
    public var sendBufferBytes = 256 * 1024
    /// Bytes of offloaded file ranges a connection queues ahead of acknowledgment (sendfile's limit).
    public var fileQueueBytes = 4 * 1024 * 1024
    public var timestamps = true
    public var selectiveAcknowledgments = true
    public var initialWindowSegments = 10
    public var congestionControl = CongestionAlgorithm.cubic
    /// Nagle's algorithm (RFC 9293 §3.7.4) for application bytes.
    public var nagle = true
    public var delayedAckTimeout: UInt64 = 40 * Nanoseconds.millisecond
    /// The ACK that completes an active open waits for the end of the application's turn (the stack's next
    /// pass, `TCPEngine.sendOwedAcknowledgments`): what the application writes when it hears the connection
    /// is open, or a SPLICE's head, carries it, and the peer gets one segment fewer (RFC 9293 lets the third
    /// segment of the handshake carry data). False sends it at once.
    public var acknowledgeConnectWithData = true
    public var initialRetransmissionTimeout: UInt64 = Nanoseconds.second
    /// Linux's 200 ms rather than RFC 6298's conservative 1 s.
    public var minimumRetransmissionTimeout: UInt64 = 200 * Nanoseconds.millisecond
    public var maximumRetransmissionTimeout: UInt64 = 60 * Nanoseconds.second
    /// Tail loss probes (RFC 8985 §7): when the last segments of a flight go unacknowledged for about two
    /// round trips, the last one is sent again, so a loss at a response's tail is repaired by the SACK
    /// recovery its ACK starts instead of by an RTO (200 ms at least, doubled each time). Needs SACK.
    public var tailLossProbes = true
    /// Lost retransmission detection in SACK recovery: a retransmission still missing when the peer SACKs
    /// bytes sent after it (more than two segments of new data, or a later retransmission once none has gone
    /// for three quarters of an RTT) is sent again at once, and the window comes down a second time (RFC 5681
    /// §4.3), instead of the loss waiting for the retransmission timeout. The ordering part of RFC 8985's
    /// RACK; it needs SACK.
    public var lostRetransmissionDetection = true
    /// The reordering window (RACK's, RFC 8985 §6.2, by sequence order): a hole with SACKed data above it but
    /// too little for IsLost counts as lost when it is still there a quarter of an RTT (1 ms at least) after
    /// the SACK showed it, instead of waiting for more ACKs that may never come (the last ones lost, the
    /// flight too short) and then the RTO. Needs SACK.
    public var reorderingWindow = true
    /// Retransmissions of one segment before the connection is given up; also the zero-window probes a
    /// peer may leave unanswered.
    public var maximumRetransmissions = 15
    /// Retransmissions before a connection the application already closed is given up (Linux's
    /// tcp_orphan_retries: 8): nobody waits on it, and a vanished peer should not hold it for a quarter of
    /// an hour.
    public var maximumOrphanRetransmissions = 8
    /// SYN-ACKs (and SYNs) sent again before a half-open connection is dropped (Linux: 5 SYN-ACKs, about
    /// 63 s with its backoff): a flood of spoofed SYNs must not keep the backlog full for minutes.
    public var maximumSynRetransmissions = 5
    /// Challenge ACKs (RFC 5961) one connection sends in a second at most (§7's rate limit).
    public var challengeAcksPerSecond = 10
    /// How long a connection the application closed may wait in FIN-WAIT-2 for the peer's FIN (Linux's
    /// tcp_fin_timeout): a peer that acknowledges our FIN and never closes cannot hold it forever.
    public var finWait2Timeout: UInt64 = 60 * Nanoseconds.second
    /// How long a connection stays in TIME-WAIT (2 × MSL; Linux uses 60 s).
    public var timeWaitDuration: UInt64 = 60 * Nanoseconds.second
    /// A spliced pair (`TCPEngine.splice`) across which nothing passes for this long is reset both ways
    /// by the NIC, so vanished peers do not hold its table.
    public var spliceIdleTimeout: UInt64 = 300 * Nanoseconds.second
    /// How long the NIC keeps relaying a splice once both FINs are acknowledged: long enough for a lost
    /// last ACK's FIN to be sent again and answered. (The relay holds no TIME-WAIT of its own: each peer
    /// keeps its side's, and the backend's 4-tuple is not reused by the host until the NIC lets go.)
    public var spliceLinger: UInt64 = 5 * Nanoseconds.second
    /// Keepalive probes (RFC 9293 §3.8.4), off unless set: idle time, interval, probes before giving up.
    public var keepalive: (idle: UInt64, interval: UInt64, probes: Int)? = nil
    /// Linux's keepalive (tcp_keepalive_time, _intvl, _probes): for connections that ask with SO_KEEPALIVE.
    public static let defaultKeepalive = (idle: 7200 * Nanoseconds.second, interval: 75 * Nanoseconds.second, probes: 9)
    /// Send ACKD to the NIC once this many bytes have been acknowledged since the last one.
    public var acknowledgedBatchBytes = 64 * 1024
    /// Atlas's rule: a SEND of file data waits until the window allows this many segments, unless what
    /// is queued is shorter, so the NIC reads the disk in useful sizes.
    public var minimumSendSegments = 10
    /// The longest single SEND; the NIC cuts it into segments.
    public var maximumSendBytes = 256 * 1024
    /// An offloaded range's retransmission timer starts at its ECHO; until the ECHO comes, this much
    /// extra time is allowed for the NIC's queueing and disk.
    public var echoAllowance: UInt64 = Nanoseconds.second
    /// File data a connection hands the NIC ahead of its ECHOs (sent as SEND, not yet on the wire), like
    /// Linux's TCP small queues: past it, new SENDs wait for ECHOs. It keeps the NIC's queues, and so its
    /// delay, short, and lets it interleave flows finely instead of holding each one's whole window. 0: no
    /// limit.
    public var maximumUnechoedBytes = 256 * 1024
    /// The NIC answers SYNs to listening ports itself, with SYN cookies, and hands the host only completed
    /// handshakes (AccelTCP's stateless setup): a SYN flood costs neither the host nor the NIC's memory, and
    /// a short connection costs the host one command instead of a SYN and a handshake's state. A NIC that
    /// does not know LISTEN answers ERROR and the host answers SYNs as before.
    public var handshakesOnNIC = true
    /// The NIC ends connections the application closed (AccelTCP's teardown offload): once everything sent
    /// is acknowledged the host hands the connection over (TEARDOWN) and frees its control block; the NIC
    /// sends the FIN, retransmits it, and holds TIME-WAIT. Used only with a NIC whose HELLO offers it.
    public var teardownOnNIC = true
    /// With `teardownOnNIC`, a connection the application closes right after its response (the FIN sent,
    /// nothing lost or retransmitted, at most `TeardownParameters.maximumDataLength` unacknowledged, of which at most
    /// 4,096 host bytes at the front and the rest file data the NIC sent) is handed over at once, data and
    /// all, instead of after the peer's ACK (AccelTCP's quasi-TCB): the NIC retransmits the response if it is
    /// lost, and the host's control block never takes an ACK, a timer or an ECHO. Its flow id stays the
    /// NIC's until FLOW_RELEASED. Used only with a NIC whose HELLO offers `NICFeatures.endingsWithData`.
    public var endingsWithDataOnNIC = true
    /// Bytes written with `more` (a response head, `IOTCPStack.write(_:_:more:)`) and the file range queued
    /// right after them leave together, the bytes as the head of the range's SEND, in its first segment, when
    /// the NIC's HELLO offers it: a small response is one frame, not a head and a body, and its peer sends one
    /// ACK fewer. The head stays the host's: if it is lost, the host sends it again itself.
    public var headsWithFiles = true
    /// Whether the NIC takes SEND heads (its HELLO); set by the stack, used only with `headsWithFiles`.
    public internal(set) var nicTakesHeads = false

    public init() {}

    /// What a listener's SYN-ACK offers, for the NIC's LISTEN or the host's own cookies.
    public func listenerOptions(port: UInt16, isListening: Bool = true, deferAccept: Bool = false) -> ListenerOptions {
        ListenerOptions(port: port, maximumSegmentSize: maximumSegmentSize, window: UInt16(min(receiveBufferBytes, 65535)),
                        windowShift: receiveWindowShift, timestamps: timestamps, selectiveAcknowledgments: selectiveAcknowledgments,
                        isListening: isListening, deferAccept: deferAccept)
    }

    /// The shift that lets a 16-bit window field advertise the whole receive buffer (RFC 7323 §2.3).
    var receiveWindowShift: UInt8 {
        var shift: UInt8 = 0
        while shift < 14 && (receiveBufferBytes >> Int(shift)) > 65535 { shift += 1 }
        return shift
    }
}

/// A snapshot of one connection's control block, for diagnostics and metrics (what `ss -i` shows).
public struct TCPConnectionInfo: Hashable, Sendable, CustomStringConvertible {
    public var state: TCPState
    public var sendUnacknowledged: SequenceNumber
    public var sendNext: SequenceNumber
    public var sendMaximum: SequenceNumber
    public var sendWindow: Int
    public var receiveNext: SequenceNumber
    public var congestionWindow: Int
    public var slowStartThreshold: Int
    public var smoothedRTT: UInt64
    public var retransmissionTimeout: UInt64
    public var consecutiveTimeouts: Int
    public var inRecovery: Bool
    public var queuedBytes: Int
    public var segmentSize: Int
    /// Loss recoveries entered from duplicate ACKs or SACK, and retransmission timeouts, over the connection's life.
    public var fastRecoveries: Int
    public var timeouts: Int
    /// Tail loss probes sent (RFC 8985 §7), and those whose ACK showed they repaired a loss.
    public var lossProbes: Int
    public var lossProbeRepairs: Int
    /// Segments whose retransmission was found lost (bytes sent after it arrived first), in SACK recovery or
    /// while sending again after a timeout, and sent again without waiting for the retransmission timeout.
    public var lostRetransmissions: Int
    /// Times the reordering window passed with a hole still below SACKed data, which then counted as lost.
    public var reorderingWindowLosses: Int
    /// Times the peer's cumulative ACK stopped at bytes it had SACKed (it discarded them): the SACKs were
    /// forgotten and the data sent again.
    public var sackRenegings: Int

    public var description: String {
        "\(state) una \(sendUnacknowledged) nxt \(sendNext) max \(sendMaximum) wnd \(sendWindow) rcv.nxt \(receiveNext) "
            + "cwnd \(congestionWindow) ssthresh \(slowStartThreshold == .max ? -1 : slowStartThreshold) srtt \(smoothedRTT / 1000) µs "
            + "rto \(retransmissionTimeout / 1_000_000) ms timeouts \(consecutiveTimeouts) recovery \(inRecovery) queued \(queuedBytes) "
            + "fast recoveries \(fastRecoveries) timeouts total \(timeouts) loss probes \(lossProbes) (\(lossProbeRepairs) repaired) "
            + "lost retransmissions \(lostRetransmissions) reordering-window losses \(reorderingWindowLosses) "
            + "SACK renegings \(sackRenegings)"
    }
}

/// What loss recovery did, over every connection (`TCPEngine.lossRecovery`).
public struct LossRecoveryCounts: Sendable, Hashable {
    public var timeouts = 0
    public var fastRecoveries = 0
    /// Tail loss probes sent, and those whose ACK showed they repaired a loss.
    public var lossProbes = 0
    public var lossProbeRepairs = 0
    /// Segments whose retransmission was found lost and sent again before the RTO.
    public var lostRetransmissions = 0
    /// Times the reordering window passed with a hole still below SACKed data.
    public var reorderingWindowLosses = 0
    /// Times a peer's cumulative ACK stopped at bytes it had SACKed.
    public var sackRenegings = 0

    public init() {}

    /// Adds one connection's counts.
    public mutating func add(_ info: TCPConnectionInfo) {
        timeouts += info.timeouts
        fastRecoveries += info.fastRecoveries
        lossProbes += info.lossProbes
        lossProbeRepairs += info.lossProbeRepairs
        lostRetransmissions += info.lostRetransmissions
        reorderingWindowLosses += info.reorderingWindowLosses
        sackRenegings += info.sackRenegings
    }
}
