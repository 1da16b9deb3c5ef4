/// The command kinds of protocol version 1 and the fixed size of each one's body.
///
/// Wire layout (all little-endian): a message is a 16-byte `MessageHeader` followed by `count` commands;
/// a command is a 12-byte header (kind u8, flags u8, reserved u16, length u32 counting the header, flow
/// u32) followed by its body. Fixed-size kinds must have exactly their size; variable kinds (a path, a
/// packet, a text) have at least their fixed part and carry the rest as bytes. The per-command length
/// lets a receiver skip a kind it does not know and go on with the next.
public enum CommandKind: UInt8, CaseIterable, Sendable, CustomStringConvertible {
    case hello = 1
    case keepalive = 2
    case error = 3
    case open = 4
    case opened = 5
    case fstat = 6
    case stat = 7
    case closeFile = 8
    case flowOpen = 9
    case flowClose = 10
    case send = 11
    case retransmit = 12
    case acknowledged = 13
    case echo = 14
    case packetIn = 15
    case packetOut = 16
    case device = 17
    case tlsKeys = 18
    case sendRecords = 19
    case listen = 20
    case established = 21
    case teardown = 22
    case redeliver = 23
    case splice = 24
    case spliceEnded = 25
    /// `FLOW_OPEN` for an IPv6 flow: the same fields with 16-byte addresses.
    case flowOpenIPv6 = 26
    /// `SPLICE` of two IPv6 connections: the same fields with 16-byte addresses (NICs with
    /// `NICFeatures.ipv6Splicing`).
    case spliceIPv6 = 27
    /// `SPLICE_ENDED` of an IPv6 splice: the backend's address in 16 bytes.
    case spliceEndedIPv6 = 28
    /// The NIC is done with a flow whose ending was handed over with data still unacknowledged (TEARDOWN with
    /// data): the host may give its id to another connection (NICs with `NICFeatures.endingsWithData`).
    case flowReleased = 29

    /// Body bytes after the command header that every command of this kind has.
    @inlinable
    public var fixedBodyLength: Int {
        switch self {
        case .hello: 24
        case .keepalive: 8
        case .error: 12
        case .open: 8
        case .opened: 20
        case .fstat: 12
        case .stat: 52
        case .closeFile: 8
        case .flowOpen: 24
        case .flowClose: 4
        case .send: 44
        case .retransmit: 28
        case .acknowledged: 4
        case .echo: 16
        case .packetIn: 0
        case .packetOut: 0
        case .device: 76
        case .tlsKeys: 4
        case .sendRecords: 68
        case .listen: 8
        case .established: 20
        case .teardown: 36
        case .redeliver: 0
        case .splice: 88
        case .spliceEnded: 32
        case .flowOpenIPv6: 48
        case .spliceIPv6: 124
        case .spliceEndedIPv6: 44
        case .flowReleased: 4
        }
    }

    /// Whether bytes may follow the fixed body.
    @inlinable
    public var hasVariableBody: Bool {
        switch self {
        case .error, .open, .send, .packetIn, .packetOut, .tlsKeys, .established, .teardown, .redeliver, .splice, .spliceIPv6: true
        default: false
        }
    }

    public var description: String {
        switch self {
        case .hello: "HELLO"
        case .keepalive: "KEEPALIVE"
        case .error: "ERROR"
        case .open: "OPEN"
        case .opened: "OPENED"
        case .fstat: "FSTAT"
        case .stat: "STAT"
        case .closeFile: "CLOSE_FILE"
        case .flowOpen: "FLOW_OPEN"
        case .flowOpenIPv6: "FLOW_OPEN6"
        case .spliceIPv6: "SPLICE6"
        case .spliceEndedIPv6: "SPLICE_ENDED6"
        case .flowClose: "FLOW_CLOSE"
        case .send: "SEND"
        case .retransmit: "RETRANSMIT"
        case .acknowledged: "ACKD"
        case .echo: "ECHO"
        case .packetIn: "PACKET_IN"
        case .packetOut: "PACKET_OUT"
        case .device: "DEVICE"
        case .tlsKeys: "TLS_KEYS"
        case .sendRecords: "SEND_RECORDS"
        case .listen: "LISTEN"
        case .established: "ESTABLISHED"
        case .teardown: "TEARDOWN"
        case .redeliver: "REDELIVER"
        case .splice: "SPLICE"
        case .spliceEnded: "SPLICE_ENDED"
        case .flowReleased: "FLOW_RELEASED"
        }
    }
}

/// Constants of the command protocol.
public enum CommandProtocol {
    /// Bumped on any change to a layout; a receiver rejects messages of another version.
    public static let version: UInt16 = 1
    /// "ITCP" in little-endian byte order.
    public static let magic: UInt32 = 0x5043_5449
    public static let messageHeaderLength = 16
    public static let commandHeaderLength = 12
    /// The longest path `OPEN` carries (Linux's PATH_MAX).
    public static let maxPathLength = 4096
    /// The longest text an `ERROR` carries; longer text is cut.
    public static let maxErrorTextLength = 256
}
