/// One connection of a splice as the host hands it over: where its sequence spaces stand (everything we
/// sent acknowledged, everything received read), its timestamps, window and the peer's MSS.
public struct SpliceConnectionState: Hashable, Sendable {
    /// The peer (either family; both connections of a splice and its local address are of one family).
    public var remoteAddress: IPAddress
    public var remotePort: UInt16
    public var localPort: UInt16
    /// SND.NXT (= SND.UNA: nothing is in flight) and RCV.NXT.
    public var sendNext: SequenceNumber
    public var receiveNext: SequenceNumber
    /// Timestamps are on: `timestampValue` is our TSval now, `timestampEcho` the peer's TS.Recent.
    public var timestamps: Bool
    public var timestampValue: UInt32
    public var timestampEcho: UInt32
    /// The window field as we last sent it (already scaled) and the shifts: ours, and the peer's.
    public var window: UInt16
    public var localWindowShift: UInt8
    public var peerWindowShift: UInt8
    /// The most payload a segment to this peer may carry (its MSS).
    public var peerSegmentSize: UInt16
    public var selectiveAcknowledgments: Bool

    public init(
        remoteAddress: IPAddress, remotePort: UInt16, localPort: UInt16, sendNext: SequenceNumber, receiveNext: SequenceNumber,
        timestamps: Bool, timestampValue: UInt32, timestampEcho: UInt32, window: UInt16, localWindowShift: UInt8,
        peerWindowShift: UInt8, peerSegmentSize: UInt16, selectiveAcknowledgments: Bool
    ) {
        self.remoteAddress = remoteAddress
        self.remotePort = remotePort
        self.localPort = localPort
        self.sendNext = sendNext
        self.receiveNext = receiveNext
        self.timestamps = timestamps
        self.timestampValue = timestampValue
        self.timestampEcho = timestampEcho
        self.window = window
        self.localWindowShift = localWindowShift
        self.peerWindowShift = peerWindowShift
        self.peerSegmentSize = peerSegmentSize
        self.selectiveAcknowledgments = selectiveAcknowledgments
    }

    /// Bytes of one connection's record in SPLICE (IPv4) or SPLICE6: the address (4 or 16 bytes), then 28
    /// bytes of the rest.
    @inlinable static func encodedLength(ipv6: Bool) -> Int { ipv6 ? 44 : 32 }
    @usableFromInline static let timestampsBit: UInt8 = 1
    @usableFromInline static let selectiveAcknowledgmentsBit: UInt8 = 2
}

/// `SPLICE`: the host joins two of its connections (a client's and a backend's, AccelTCP's connection
/// splicing) and forgets both; from then the NIC relays each peer's segments to the other, rewritten, and
/// sends the backend the head bytes that follow the command first (the request the proxy read, as it
/// wants the backend to see it). The command's flow is the client connection's; neither flow needs to be
/// open on the NIC, and both ids are released with it. An IPv6 splice (both peers and the local address
/// IPv6) is encoded as SPLICE6, for NICs with `NICFeatures.ipv6Splicing`; a splice across families cannot
/// be relayed by rewriting in place and is never encoded.
public struct SpliceParameters: Hashable, Sendable {
    public var client: SpliceConnectionState
    public var backend: SpliceConnectionState
    /// The backend connection's flow id (for SPLICE_ENDED).
    public var backendFlow: FlowID
    public var localAddress: IPAddress
    /// The head's retransmission timeout (doubled each time, at most `maximumRetransmissions` times before
    /// both connections are reset).
    public var retransmissionTimeoutMilliseconds: UInt32
    public var maximumRetransmissions: UInt16
    /// A splice nothing crosses for this long is reset both ways.
    public var idleTimeoutMilliseconds: UInt32
    /// How long a splice both of whose FINs are acknowledged is kept to relay retransmitted FINs and ACKs.
    public var lingerMilliseconds: UInt32
    /// The NIC acknowledges everything the client sent (RCV.NXT in `client`) as it takes the splice, so the
    /// host sends no ACK of its own first (flags bit 0; only to a NIC with `NICFeatures.spliceAcknowledgment`).
    public var acknowledgeClient: Bool

    public init(
        client: SpliceConnectionState, backend: SpliceConnectionState, backendFlow: FlowID, localAddress: IPAddress,
        retransmissionTimeoutMilliseconds: UInt32, maximumRetransmissions: UInt16, idleTimeoutMilliseconds: UInt32,
        lingerMilliseconds: UInt32, acknowledgeClient: Bool = false
    ) {
        self.client = client
        self.backend = backend
        self.backendFlow = backendFlow
        self.localAddress = localAddress
        self.retransmissionTimeoutMilliseconds = retransmissionTimeoutMilliseconds
        self.maximumRetransmissions = maximumRetransmissions
        self.idleTimeoutMilliseconds = idleTimeoutMilliseconds
        self.lingerMilliseconds = lingerMilliseconds
        self.acknowledgeClient = acknowledgeClient
    }

    /// Whether the splice is IPv4's (SPLICE) rather than IPv6's (SPLICE6).
    @inlinable public var isIPv4: Bool { localAddress.isIPv4 }

    /// Whether the local address and both peers are of one family (the only splices there are).
    @inlinable public var familiesAgree: Bool {
        client.remoteAddress.isIPv4 == localAddress.isIPv4 && backend.remoteAddress.isIPv4 == localAddress.isIPv4
    }

    /// The most head bytes one SPLICE carries.
    public static let maximumHeadLength = 16_384
    /// Bit 0 of SPLICE's flags (u16 after the retransmission count): `acknowledgeClient`.
    @usableFromInline static let acknowledgeClientBit: UInt16 = 1
}

/// Why a splice ended.
public enum SpliceEndReason: UInt8, Sendable, Hashable, CustomStringConvertible {
    /// Both FINs acknowledged and the linger over.
    case finished = 0
    /// A peer reset its connection (the reset was passed on to the other).
    case reset = 1
    /// Nothing crossed for the idle timeout: both reset.
    case idle = 2
    /// The NIC could not take it (table full, bad parameters): both reset.
    case refused = 3
    /// The backend never acknowledged the head: both reset.
    case headLost = 4
    /// The client's port started a new connection during the linger.
    case reused = 5

    public var description: String {
        switch self {
        case .finished: "finished"
        case .reset: "reset"
        case .idle: "idle"
        case .refused: "refused"
        case .headLost: "head lost"
        case .reused: "port reused"
        }
    }
}

/// `SPLICE_ENDED` (`SPLICE_ENDED6` for an IPv6 backend): the NIC has forgotten a splice; the backend's 4-tuple
/// may be used again.
public struct SpliceReport: Hashable, Sendable {
    public var backendFlow: FlowID
    public var reason: SpliceEndReason
    /// Payload bytes relayed client to backend (head excluded) and backend to client.
    public var clientBytes: UInt64
    public var backendBytes: UInt64
    public var backendAddress: IPAddress
    public var backendPort: UInt16
    public var backendLocalPort: UInt16
    /// The client's FIN reached the backend before the backend sent its own: to the backend, our side of its
    /// connection closed first, so that side's TIME-WAIT is ours to keep (the host keeps the backend's
    /// 4-tuple out of use for it). False when the backend closed first (it keeps TIME-WAIT itself) or when
    /// the splice ended otherwise.
    public var clientClosedFirst: Bool

    public init(
        backendFlow: FlowID, reason: SpliceEndReason, clientBytes: UInt64, backendBytes: UInt64, backendAddress: IPAddress,
        backendPort: UInt16, backendLocalPort: UInt16, clientClosedFirst: Bool = false
    ) {
        self.backendFlow = backendFlow
        self.reason = reason
        self.clientBytes = clientBytes
        self.backendBytes = backendBytes
        self.backendAddress = backendAddress
        self.backendPort = backendPort
        self.backendLocalPort = backendLocalPort
        self.clientClosedFirst = clientClosedFirst
    }
}

extension SpliceReport {
    /// Bit 0 of SPLICE_ENDED's flags byte (@5): `clientClosedFirst`.
    @usableFromInline static let clientClosedFirstBit: UInt8 = 1
}
