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

    public init(
        port: UInt16, maximumSegmentSize: UInt16, window: UInt16, windowShift: UInt8, timestamps: Bool = true,
        selectiveAcknowledgments: Bool = true, isListening: Bool = true
    ) {
        self.port = port
        self.maximumSegmentSize = maximumSegmentSize
        self.window = window
        self.windowShift = windowShift
        self.timestamps = timestamps
        self.selectiveAcknowledgments = selectiveAcknowledgments
        self.isListening = isListening
    }

    @usableFromInline static let listeningBit: UInt8 = 1
    @usableFromInline static let timestampsBit: UInt8 = 2
    @usableFromInline static let selectiveAcknowledgmentsBit: UInt8 = 4
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

    public init(
        localInitialSequence: SequenceNumber, peerInitialSequence: SequenceNumber, peerSegmentSize: UInt16, peerWindowShift: UInt8?,
        selectiveAcknowledgments: Bool, timestamps: Bool, synAckTimestamp: UInt32
    ) {
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
