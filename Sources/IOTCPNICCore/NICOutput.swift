import IOTCPCommon

/// Where the data plane's work goes: packets to the wire, and answers to the host. A conformer only takes
/// what it is given and returns: the data plane calls it while it holds its own state (unchecked for
/// exclusivity on the hot path), so calling back into that data plane from here is not allowed.
public protocol NICOutput {
    /// One IPv4 packet: `headers` (IPv4 and TCP, built by the NIC) followed by `payload`, which stays where it
    /// is (a disk buffer) and is gathered by the wire: payload bytes are never copied into a frame here.
    /// With `offload`, the TCP checksum holds only the pseudo-header sum for the wire to finish, and a packet
    /// longer than one segment is a super-segment the wire cuts at `offload.segmentSize`.
    ///
    /// `.refused` when the wire's queue is full (nothing of it left; the data plane tries again on a later
    /// turn); `.unreadablePayload` when the payload's memory could not be read (a mapped file truncated under
    /// it). A packet the wire accepted and then lost counts as sent.
    mutating func transmit(headers: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, offload: PacketOffload?) -> TransmitResult
    /// A command for the host: OPENED, DEVICE, STAT, ECHO, ERROR, PACKET_IN.
    mutating func reply(_ command: Command)
}

/// What became of a packet handed to the wire.
public enum TransmitResult: Hashable, Sendable {
    case sent
    /// The wire's queue is full: nothing left.
    case refused
    /// The payload's memory could not be read (EFAULT: a file mapping past the file's end).
    case unreadablePayload
}

/// What the wire finishes for a packet the NIC hands it.
public struct PacketOffload: Hashable, Sendable {
    /// Payload bytes per segment the wire cuts the packet into; 0 for a packet that is one segment.
    public var segmentSize: UInt16
    /// Bytes of IPv4 and TCP headers at the packet's front (repeated in every cut segment).
    public var headerLength: UInt16
    /// Where the TCP header starts in the packet: the checksum covers from there to the end.
    public var transportStart: UInt16

    public init(segmentSize: UInt16, headerLength: UInt16, transportStart: UInt16) {
        self.segmentSize = segmentSize
        self.headerLength = headerLength
        self.transportStart = transportStart
    }
}

/// What the wire can finish for the data plane, as the runtime learns it from the wire and its settings.
public struct WireOffloads: Hashable, Sendable {
    /// Packets may leave with their TCP checksum for the wire to finish.
    public var checksum: Bool
    /// Largest IPv4 packet a super-segment may be (0: none; every segment is cut here).
    public var superSegmentLimit: Int

    public init(checksum: Bool = false, superSegmentLimit: Int = 0) {
        self.checksum = checksum
        self.superSegmentLimit = superSegmentLimit
    }

    public static let none = WireOffloads()
    /// A TAP with a vnet header and nothing between the NIC and it that must see real segments.
    public static let all = WireOffloads(checksum: true, superSegmentLimit: Int(UInt16.max))
}
