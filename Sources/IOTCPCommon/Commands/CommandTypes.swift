/// A connection as both halves name it in commands, assigned by the host with `FLOW_OPEN`: a table index
/// (the low 20 bits, 1 to 1,048,575), so the NIC indexes a table instead of hashing a 4-tuple per command,
/// and a generation (the high 12 bits) that changes each time the host reuses the index. The NIC answers
/// with the id it was given, so an ECHO or ERROR still in flight when the host closed a connection names
/// the old generation and is not taken for the next connection in that slot.
public struct FlowID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    @inlinable public init(_ rawValue: UInt32) { self.rawValue = rawValue }
    /// An index and a generation (only its low 12 bits are kept).
    @inlinable public init(index: UInt32, generation: UInt32) {
        precondition(index <= Self.maximumIndex, "flow index \(index) over \(Self.maximumIndex)")
        rawValue = (generation & Self.generationMask) << Self.indexBits | index
    }
    public static let indexBits: UInt32 = 20
    /// The largest index: the most flows either half can name at once.
    public static let maximumIndex: UInt32 = (1 << indexBits) - 1
    public static let generationMask: UInt32 = (1 << (32 - indexBits)) - 1
    /// The table index (0 is no flow).
    @inlinable public var index: UInt32 { rawValue & Self.maximumIndex }
    @inlinable public var generation: UInt32 { rawValue >> Self.indexBits }
    /// Commands that concern no flow (HELLO, OPEN, ...) carry this.
    public static let none = FlowID(0)
    public var description: String { generation == 0 ? "flow \(index)" : "flow \(index).\(generation)" }
}

/// A file the NIC has opened for the host: a table slot and a generation, so a handle kept after its
/// file was closed can never name the file that reuses the slot.
public struct OffloadedFileID: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }
    @inlinable public init(slot: UInt32, generation: UInt32) {
        rawValue = UInt64(generation) << 32 | UInt64(slot)
    }
    @inlinable public var slot: UInt32 { UInt32(truncatingIfNeeded: rawValue) }
    @inlinable public var generation: UInt32 { UInt32(truncatingIfNeeded: rawValue >> 32) }
    public var description: String { "file \(slot).\(generation)" }
}

/// Which half of the stack sent a `HELLO`.
public enum StackRole: UInt8, Sendable {
    case host = 1
    case nic = 2
}

/// `HELLO`: the first command each half sends, so each learns the other's protocol version and limits.
public struct Hello: Hashable, Sendable {
    public var protocolVersion: UInt16
    public var role: StackRole
    public var maxMessageBytes: UInt32
    public var maxFlows: UInt32
    public var maxOpenFiles: UInt32
    /// Feature bits (`NICFeatures`): what a NIC can do beyond version 1's base; a host sets none.
    public var features: UInt64

    public init(
        protocolVersion: UInt16 = CommandProtocol.version, role: StackRole, maxMessageBytes: UInt32,
        maxFlows: UInt32, maxOpenFiles: UInt32, features: UInt64 = 0
    ) {
        self.protocolVersion = protocolVersion
        self.role = role
        self.maxMessageBytes = maxMessageBytes
        self.maxFlows = maxFlows
        self.maxOpenFiles = maxOpenFiles
        self.features = features
    }
}

/// `FLOW_OPEN` (`FLOW_OPEN6` for IPv6): what the NIC needs to demultiplex a connection's segments and
/// address its packets. Both addresses are of one family.
public struct FlowEndpoints: Hashable, Sendable {
    public var localAddress: IPAddress
    public var remoteAddress: IPAddress
    public var localPort: UInt16
    public var remotePort: UInt16
    /// Where frames for this flow go; learnt by the NIC from ARP or the first frame.
    public var remoteHardwareAddress: MACAddress
    /// The segment size the connection negotiated.
    public var maximumSegmentSize: UInt16

    public init(
        localAddress: IPAddress, remoteAddress: IPAddress, localPort: UInt16, remotePort: UInt16,
        remoteHardwareAddress: MACAddress, maximumSegmentSize: UInt16
    ) {
        self.localAddress = localAddress
        self.remoteAddress = remoteAddress
        self.localPort = localPort
        self.remotePort = remotePort
        self.remoteHardwareAddress = remoteHardwareAddress
        self.maximumSegmentSize = maximumSegmentSize
    }

    /// An IPv4 flow.
    public init(
        localAddress: IPv4Address, remoteAddress: IPv4Address, localPort: UInt16, remotePort: UInt16,
        remoteHardwareAddress: MACAddress, maximumSegmentSize: UInt16
    ) {
        self.init(localAddress: IPAddress(localAddress), remoteAddress: IPAddress(remoteAddress), localPort: localPort,
                  remotePort: remotePort, remoteHardwareAddress: remoteHardwareAddress, maximumSegmentSize: maximumSegmentSize)
    }

    /// Whether the flow is IPv4 (its command is `FLOW_OPEN`) rather than IPv6 (`FLOW_OPEN6`).
    @inlinable public var isIPv4: Bool { remoteAddress.isIPv4 }
}

/// The per-segment header fields the host decides and the NIC copies into every segment it builds for
/// a `SEND` or `RETRANSMIT`.
public struct SegmentTemplate: Hashable, Sendable {
    public var acknowledgmentNumber: SequenceNumber
    /// The window field as it goes on the wire (already scaled down).
    public var window: UInt16
    /// Flags besides ACK for the last segment of the range (PSH, FIN).
    public var lastSegmentFlags: TCPFlags
    /// Payload bytes per segment.
    public var maximumSegmentSize: UInt16
    /// RFC 7323 timestamps, when the connection uses them. The NIC adds its own delay to `value`.
    public var timestamps: TCPTimestamps?

    public init(
        acknowledgmentNumber: SequenceNumber, window: UInt16, lastSegmentFlags: TCPFlags = [],
        maximumSegmentSize: UInt16, timestamps: TCPTimestamps? = nil
    ) {
        self.acknowledgmentNumber = acknowledgmentNumber
        self.window = window
        self.lastSegmentFlags = lastSegmentFlags
        self.maximumSegmentSize = maximumSegmentSize
        self.timestamps = timestamps
    }
}

/// `STAT`: what the host learns of an offloaded file.
public struct OffloadedFileStatus: Hashable, Sendable {
    public var size: UInt64
    public var modificationSeconds: Int64
    public var modificationNanoseconds: UInt32
    public var mode: UInt32
    public var inode: UInt64
    public var device: UInt64

    public init(
        size: UInt64, modificationSeconds: Int64, modificationNanoseconds: UInt32, mode: UInt32, inode: UInt64,
        device: UInt64
    ) {
        self.size = size
        self.modificationSeconds = modificationSeconds
        self.modificationNanoseconds = modificationNanoseconds
        self.mode = mode
        self.inode = inode
        self.device = device
    }
}

/// Why a command failed, as carried by `ERROR`.
public struct CommandErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let malformedCommand = CommandErrorCode(rawValue: 1)
    public static let unknownCommand = CommandErrorCode(rawValue: 2)
    public static let unsupportedVersion = CommandErrorCode(rawValue: 3)
    public static let unknownFlow = CommandErrorCode(rawValue: 4)
    public static let unknownFile = CommandErrorCode(rawValue: 5)
    public static let fileNotFound = CommandErrorCode(rawValue: 6)
    public static let permissionDenied = CommandErrorCode(rawValue: 7)
    public static let pathOutsideRoot = CommandErrorCode(rawValue: 8)
    public static let readFailed = CommandErrorCode(rawValue: 9)
    public static let fileShrank = CommandErrorCode(rawValue: 10)
    public static let storeFull = CommandErrorCode(rawValue: 11)
    public static let tooManyFiles = CommandErrorCode(rawValue: 12)
    public static let tooManyFlows = CommandErrorCode(rawValue: 13)
    /// The NIC cannot do what the command asks (TLS_KEYS on a NIC without record sealing, or keys it cannot use).
    public static let unsupported = CommandErrorCode(rawValue: 14)

    public var description: String {
        switch self {
        case .malformedCommand: "malformed command"
        case .unknownCommand: "unknown command"
        case .unsupportedVersion: "unsupported protocol version"
        case .unknownFlow: "unknown flow"
        case .unknownFile: "unknown file"
        case .fileNotFound: "file not found"
        case .permissionDenied: "permission denied"
        case .pathOutsideRoot: "path outside the export root"
        case .readFailed: "read failed"
        case .fileShrank: "file shrank under a read"
        case .storeFull: "retransmit store full"
        case .tooManyFiles: "too many open files"
        case .tooManyFlows: "too many flows"
        case .unsupported: "unsupported"
        default: "error \(rawValue)"
        }
    }
}
