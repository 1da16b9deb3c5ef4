import IOTCPCommon

/// Where the NIC stack's Ethernet frames come from and go to: a TAP today (`TapDevice`), an AF_XDP socket or
/// a SmartNIC's rings tomorrow, memory in tests (`MemoryWire`). The runtime reads in bursts and sleeps on
/// `descriptor` between them.
public protocol WireBackend: AnyObject {
    /// A descriptor that polls readable while a frame waits, or -1 when there is none to sleep on (the
    /// runtime then naps instead).
    var descriptor: Int32 { get }
    /// Whether `write` takes checksum offload and TCP super-segments to cut at the MSS.
    var takesSuperSegments: Bool { get }
    /// One frame into `buffer`: its length, or nil when none is waiting.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(WireFailure) -> Int?
    /// One frame made of `header` followed by `payload` (gathered, not copied together here); with
    /// `offload`, a frame whose TCP checksum the wire finishes, cut at the MSS if it is a super-segment.
    /// `.refused` when the wire's queue is full and the frame was not taken; `.unreadablePayload` when the
    /// payload's memory faulted (a mapped file truncated under it).
    func write(header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, offload: SegmentationOffload?) throws(WireFailure) -> TransmitResult
    /// Asks the wire to hand over frames as the kernel built them (checksums unsummed, super-segments uncut),
    /// described by `lastReadOffload`; false when it cannot (then frames come finished, as before).
    func acceptSuperSegments(_ accept: Bool) -> Bool
    /// What the wire left unfinished in the frame the last `read` returned; nil for a finished frame.
    var lastReadOffload: ReceivedOffload? { get }
}

extension WireBackend {
    public func acceptSuperSegments(_ accept: Bool) -> Bool { false }
    public var lastReadOffload: ReceivedOffload? { nil }

    /// An ordinary frame, in one piece.
    @discardableResult
    public func write(_ frame: UnsafeRawBufferPointer) throws(WireFailure) -> TransmitResult {
        try write(header: frame, payload: UnsafeRawBufferPointer(start: nil, count: 0), offload: nil)
    }
}

/// A wire that failed, in words for a log.
public struct WireFailure: Error, CustomStringConvertible {
    public let description: String
    public init(description: String) { self.description = description }
}

/// A TCP/IPv4 frame whose TCP checksum the wire finishes (its field holds the pseudo-header sum), and, with
/// `segmentSize` > 0, a super-segment for the wire to cut into segments of that many payload bytes.
public struct SegmentationOffload: Hashable, Sendable {
    /// Payload bytes per segment on the wire (the MSS), or 0 for a frame that is one segment.
    public var segmentSize: UInt16
    /// Ethernet + IPv4 + TCP header bytes at the front of the frame.
    public var headerLength: UInt16
    /// Where the TCP header starts in the frame (the checksum covers from here to the end).
    public var checksumStart: UInt16

    public init(segmentSize: UInt16, headerLength: UInt16, checksumStart: UInt16) {
        self.segmentSize = segmentSize
        self.headerLength = headerLength
        self.checksumStart = checksumStart
    }
}

/// A wire in memory: frames written are kept in `sent`, frames in `incoming` are read. For tests of the
/// runtime without root, and for replaying captures. `refuseWrites` makes it a full queue.
public final class MemoryWire: WireBackend {
    public var sent: [[UInt8]] = []
    public var sentOffloads: [SegmentationOffload?] = []
    public var incoming: [[UInt8]] = []
    public let takesSuperSegments: Bool
    /// While set, every write is refused as by a full queue.
    public var refuseWrites = false
    public private(set) var refused = 0

    public init(takesSuperSegments: Bool = false) {
        self.takesSuperSegments = takesSuperSegments
    }

    public var descriptor: Int32 { -1 }

    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(WireFailure) -> Int? {
        guard !incoming.isEmpty else { return nil }
        let frame = incoming.removeFirst()
        let count = min(frame.count, buffer.count)
        frame.withUnsafeBytes { buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
        return count
    }

    public func write(header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, offload: SegmentationOffload?) throws(WireFailure) -> TransmitResult {
        if offload != nil && !takesSuperSegments { throw WireFailure(description: "this memory wire takes no offloads") }
        if refuseWrites {
            refused += 1
            return .refused
        }
        sent.append(Array(header) + Array(payload))
        sentOffloads.append(offload)
        return .sent
    }
}

/// What the wire left unfinished in a frame it read, when it was asked to (`WireBackend.acceptSuperSegments`):
/// the kernel hands its own TCP packets over as it built them, checksum unsummed and TSO super-segments uncut,
/// the way a virtio device receives them.
public struct ReceivedOffload: Hashable, Sendable {
    /// The TCP checksum field holds only the pseudo-header sum (the bytes never left memory, so they are sound).
    public var checksumPartial: Bool
    /// The wire checked the checksum already.
    public var checksumVerified: Bool
    /// Payload bytes per segment the sender cut at (its MSS) when the packet is a super-segment; 0 otherwise.
    public var segmentSize: UInt16

    public init(checksumPartial: Bool, checksumVerified: Bool = false, segmentSize: UInt16 = 0) {
        self.checksumPartial = checksumPartial
        self.checksumVerified = checksumVerified
        self.segmentSize = segmentSize
    }

    /// The checksum need not be checked here.
    @inlinable public var checksumTrusted: Bool { checksumPartial || checksumVerified }
}
