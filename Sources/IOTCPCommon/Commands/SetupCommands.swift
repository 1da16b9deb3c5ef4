/// `LISTEN`: the host asks the NIC to answer SYNs to `port` itself, with SYN cookies and these options, and
/// to hand it only completed handshakes (`ESTABLISHED`). With `isListening` false the NIC stops, and SYNs to
/// the port reach the host again as PACKET_IN.
public struct ListenerOptions: Hashable, Sendable {
    public var port: UInt16
    /// The MSS the SYN-ACK advertises.
    public var maximumSegmentSize: UInt16
    /// The SYN-ACK's window (a SYN's window is never scaled, RFC 7323 §2.2).
    public var window: UInt16
    /// The shift the SYN-ACK offers when the SYN offered scaling.
    public var windowShift: UInt8
    public var timestamps: Bool
    public var selectiveAcknowledgments: Bool
    public var isListening: Bool
    /// Linux's TCP_DEFER_ACCEPT, statelessly: a handshake's bare ACK is dropped (its cookie checked) and the
    /// connection is handed over with its first data or FIN, whose ACK field returns the same cookie. The
    /// host then gets the connection and the request in one ESTABLISHED. Only for protocols whose clients
    /// speak first (HTTP): a client waiting for the server's greeting would never be accepted.
    public var deferAccept: Bool

    public init(
        port: UInt16, maximumSegmentSize: UInt16, window: UInt16, windowShift: UInt8, timestamps: Bool = true,
        selectiveAcknowledgments: Bool = true, isListening: Bool = true, deferAccept: Bool = false
    ) {
        self.port = port
        self.maximumSegmentSize = maximumSegmentSize
        self.window = window
        self.windowShift = windowShift
        self.timestamps = timestamps
        self.selectiveAcknowledgments = selectiveAcknowledgments
        self.isListening = isListening
        self.deferAccept = deferAccept
    }

    @usableFromInline static let listeningBit: UInt8 = 1
    @usableFromInline static let timestampsBit: UInt8 = 2
    @usableFromInline static let selectiveAcknowledgmentsBit: UInt8 = 4
    @usableFromInline static let deferAcceptBit: UInt8 = 8
}

/// `ESTABLISHED`: the NIC verified a SYN cookie in a client's ACK; the host makes the connection, already
/// established, from these parameters and then takes the ACK itself (carried whole after them: it may hold
/// the client's first request, which reaches the application with the accept).
public struct HandshakeParameters: Hashable, Sendable {
    /// Our ISN: the cookie.
    public var localInitialSequence: SequenceNumber
    /// The client's ISN (its SYN's sequence number).
    public var peerInitialSequence: SequenceNumber
    /// The MSS the client may be sent, from the cookie's table.
    public var peerSegmentSize: UInt16
    /// The client's window shift, nil when scaling is off.
    public var peerWindowShift: UInt8?
    public var selectiveAcknowledgments: Bool
    public var timestamps: Bool
    /// The TSval our SYN-ACK carried: the connection's later TSvals must not be older (the peer's PAWS).
    public var synAckTimestamp: UInt32
    /// The handshake's round trip as the NIC measured it from that TSval, in microseconds, at least 1; 0 when
    /// unknown (no timestamps, or a NIC that does not say).
    public var handshakeRoundTripMicroseconds: UInt32

    public init(
        localInitialSequence: SequenceNumber, peerInitialSequence: SequenceNumber, peerSegmentSize: UInt16, peerWindowShift: UInt8?,
        selectiveAcknowledgments: Bool, timestamps: Bool, synAckTimestamp: UInt32, handshakeRoundTripMicroseconds: UInt32 = 0
    ) {
        self.handshakeRoundTripMicroseconds = handshakeRoundTripMicroseconds
        self.localInitialSequence = localInitialSequence
        self.peerInitialSequence = peerInitialSequence
        self.peerSegmentSize = peerSegmentSize
        self.peerWindowShift = peerWindowShift
        self.selectiveAcknowledgments = selectiveAcknowledgments
        self.timestamps = timestamps
        self.synAckTimestamp = synAckTimestamp
    }

    /// On the wire: 0xFF for no window scaling.
    @usableFromInline static let noWindowShift: UInt8 = 0xFF
    @usableFromInline static let selectiveAcknowledgmentsBit: UInt8 = 1
    @usableFromInline static let timestampsBit: UInt8 = 2
}

/// Where a connection's ending stands when the host hands it over: our FIN has been sent in each.
public enum TeardownState: UInt8, Sendable, Hashable {
    /// Our FIN unacknowledged; the peer's not received.
    case finWait1 = 1
    /// Both FINs; ours unacknowledged.
    case closing = 2
    /// The peer's FIN came first; ours unacknowledged.
    case lastAck = 3
    /// Ours acknowledged; the peer's not received.
    case finWait2 = 4
    /// Both FINs, both acknowledged.
    case timeWait = 5
}

/// `TEARDOWN`: the host hands a connection's ending to the NIC and frees its control block. The host has
/// sent its FIN (right after the data, as any TCP does) and everything before it has been acknowledged; the
/// NIC retransmits the FIN if it is lost, takes the peer's FIN and ACK, answers RSTs, and holds TIME-WAIT,
/// all on its own timers, then forgets the connection. The flow's id is released with it (no FLOW_CLOSE).
public struct TeardownParameters: Hashable, Sendable {
    /// Our FIN's sequence number (everything before it is acknowledged).
    public var finSequence: SequenceNumber
    /// RCV.NXT: what every later ACK acknowledges (past the peer's FIN if it came).
    public var receiveNext: SequenceNumber
    /// The window field as it goes on the wire (already scaled), and the shift that scales it: the NIC takes
    /// only segments inside the window it implies (RFC 9293 §3.10.7.4).
    public var window: UInt16
    public var windowShift: UInt8
    public var state: TeardownState
    /// Timestamps are on: `timestampValue` is the TSval for now (the NIC adds the milliseconds since), and
    /// `timestampEcho` the TSecr (TS.Recent).
    public var timestamps: Bool
    public var timestampValue: UInt32
    public var timestampEcho: UInt32
    /// The FIN's retransmission timeout, doubled each time, at most `maximumRetransmissions` times.
    public var retransmissionTimeoutMilliseconds: UInt32
    public var maximumRetransmissions: UInt16
    /// How long TIME-WAIT and FIN-WAIT-2 last.
    public var timeWaitMilliseconds: UInt32
    public var finWait2Milliseconds: UInt32

    public init(
        finSequence: SequenceNumber, receiveNext: SequenceNumber, window: UInt16, windowShift: UInt8 = 0, state: TeardownState,
        timestamps: Bool, timestampValue: UInt32, timestampEcho: UInt32, retransmissionTimeoutMilliseconds: UInt32,
        maximumRetransmissions: UInt16, timeWaitMilliseconds: UInt32, finWait2Milliseconds: UInt32
    ) {
        self.finSequence = finSequence
        self.receiveNext = receiveNext
        self.window = window
        self.windowShift = windowShift
        self.state = state
        self.timestamps = timestamps
        self.timestampValue = timestampValue
        self.timestampEcho = timestampEcho
        self.retransmissionTimeoutMilliseconds = retransmissionTimeoutMilliseconds
        self.maximumRetransmissions = maximumRetransmissions
        self.timeWaitMilliseconds = timeWaitMilliseconds
        self.finWait2Milliseconds = finWait2Milliseconds
    }

    @usableFromInline static let timestampsBit: UInt8 = 2
    /// The most data a TEARDOWN with data may leave unacknowledged before the FIN: a response the NIC resends
    /// whole from a timeout, not a transfer it would have to pace.
    public static let maximumDataLength = 1 << 16
}

/// Feature bits a NIC's HELLO sets for what it can do beyond version 1's base.
public enum NICFeatures {
    /// LISTEN and ESTABLISHED: SYN cookies on the NIC.
    public static let connectionSetup: UInt64 = 1 << 0
    /// TEARDOWN: connections' endings on the NIC.
    public static let connectionTeardown: UInt64 = 1 << 1
    /// SPLICE and SPLICE_ENDED: two connections joined and relayed on the NIC.
    public static let connectionSplicing: UInt64 = 1 << 2
    /// SEND with a head: host bytes sent in the range's first segment, before the file's.
    public static let sendHeads: UInt64 = 1 << 3
    /// SPLICE6 and SPLICE_ENDED6: splices of IPv6 connections.
    public static let ipv6Splicing: UInt64 = 1 << 4
    /// SPLICE's flags bit 0: the NIC acknowledges the client's bytes as it takes a splice, and a SPLICE
    /// closes both connections' flows itself (no FLOW_CLOSE before it).
    public static let spliceAcknowledgment: UInt64 = 1 << 5
    /// TEARDOWN with data and FLOW_RELEASED: an ending handed over before the peer acknowledged the data
    /// ahead of the FIN (a response sent with the close); the NIC retransmits that data itself.
    public static let endingsWithData: UInt64 = 1 << 6
}

/// Why a NIC released a flow handed over with data (FLOW_RELEASED).
public enum FlowReleaseReason: UInt8, Sendable, Hashable, CustomStringConvertible {
    /// The peer acknowledged everything before the FIN: the ending goes on as a TEARDOWN's would.
    case acknowledged = 0
    /// The peer reset the connection, or the NIC did (data after the close, no room to hold the ending).
    case reset = 1
    /// The peer never acknowledged the data: the retransmissions ran out.
    case abandoned = 2
    /// The data could not be sent again (its file became unreadable): the peer was reset.
    case failed = 3

    public var description: String {
        switch self {
        case .acknowledged: "acknowledged"
        case .reset: "reset"
        case .abandoned: "abandoned"
        case .failed: "failed"
        }
    }
}
