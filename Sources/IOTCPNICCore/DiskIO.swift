import IOTCPCommon

/// Asynchronous file reads, as the data plane issues them: many reads in flight across flows, handed to the
/// kernel together, their completions taken in batches and in whatever order they finish. `URingDisk`
/// (io_uring) and `ThreadPoolDisk` (pread on worker threads, where io_uring is refused) are the real ones in
/// IOTCPNIC; `MemoryDisk` reads `MemoryFiles`, and `DelayedDisk` makes any disk slow, for tests.
///
/// A disk never touches the memory of a read after reporting its completion, and reports every read it
/// accepted exactly once, failed or not: the caller's buffers are its to reuse only then.
public protocol DiskIO: AnyObject {
    /// For logs and counters: "io_uring", "pread×4", "memory".
    var name: String { get }
    /// Reads accepted and not yet reaped.
    var inFlight: Int { get }
    /// The most reads that may be in flight at once; `submit` refuses more.
    var capacity: Int { get }
    /// Accepts a read (it reaches the kernel at the next `flush`); false when `capacity` are in flight.
    func submit(_ read: DiskRead, now: Instant) -> Bool
    /// Hands every accepted read to the kernel, in one system call where the disk can.
    func flush()
    /// Calls `body` for up to `limit` finished reads, without waiting: the read's tag and its result, bytes
    /// read (0 at the end of the file) or a negated errno value. Returns how many.
    func reap(now: Instant, limit: Int, _ body: (_ tag: UInt64, _ result: Int) -> Void) -> Int
    /// A descriptor that polls readable when completions wait (an eventfd), or -1.
    var wakeDescriptor: Int32 { get }
    /// When a completion held back for time (a delayed disk) becomes due, if one is.
    var nextDue: Instant? { get }
    /// Memory that reads will land in, once per slab: a disk that can register it (io_uring's registered
    /// buffers: no page pinning per read) returns true, and reads into it then carry the slab's index.
    func register(slab: Int, memory: UnsafeMutableRawBufferPointer) -> Bool
    /// Resets `wakeDescriptor` after it woke the loop (reading the eventfd), so it polls readable again
    /// only for new completions.
    func clearWake()
}

extension DiskIO {
    public func clearWake() {}
}

/// One read: `length` bytes of `descriptor` from `offset` into `destination`, which lies inside registered
/// slab `registeredSlab` (or -1). The tag comes back with the completion.
/// Sendable by promise: `destination` is memory the submitter hands over to the disk until the completion.
public struct DiskRead: Hashable, @unchecked Sendable {
    public var descriptor: Int32
    public var offset: UInt64
    public var length: Int
    public var destination: UnsafeMutableRawPointer
    public var registeredSlab: Int32
    /// The caller knows the bytes are not in the page cache: a disk with worker threads should hand the read
    /// to them at once rather than try it inline (where the page cache's allocation, and under a memory
    /// limit its reclaim, would stall the loop).
    public var missesCache: Bool
    public var tag: UInt64

    public init(descriptor: Int32, offset: UInt64, length: Int, destination: UnsafeMutableRawPointer, registeredSlab: Int32 = -1,
                missesCache: Bool = false, tag: UInt64) {
        self.descriptor = descriptor
        self.offset = offset
        self.length = length
        self.destination = destination
        self.registeredSlab = registeredSlab
        self.missesCache = missesCache
        self.tag = tag
    }
}

/// A disk made slow: every read's completion is held until `delay` after it was submitted. It stands for
/// a cold disk (or a loaded one) in tests and in `--disk-delay-ms`, so what a slow disk does to RTT
/// estimates, retransmission timers and other flows can be shown on purpose.
public final class DelayedDisk: DiskIO {
    public let base: any DiskIO
    public let delayNanoseconds: UInt64
    private var submitted: [UInt64: Instant] = [:]
    private var held: [(due: Instant, tag: UInt64, result: Int)] = []

    public init(base: any DiskIO, delayNanoseconds: UInt64) {
        self.base = base
        self.delayNanoseconds = delayNanoseconds
    }

    public var name: String { "\(base.name), delayed \(delayNanoseconds / 1_000_000) ms" }
    public var inFlight: Int { base.inFlight + held.count }
    public var capacity: Int { base.capacity }
    public var wakeDescriptor: Int32 { base.wakeDescriptor }

    public var nextDue: Instant? {
        let own = held.min { $0.due < $1.due }?.due
        guard let other = base.nextDue else { return own }
        return own.map { min($0, other) } ?? other
    }

    public func submit(_ read: DiskRead, now: Instant) -> Bool {
        guard inFlight < capacity, base.submit(read, now: now) else { return false }
        submitted[read.tag] = now
        return true
    }

    public func flush() { base.flush() }

    public func reap(now: Instant, limit: Int, _ body: (UInt64, Int) -> Void) -> Int {
        _ = base.reap(now: now, limit: .max) { tag, result in
            let start = submitted.removeValue(forKey: tag) ?? now
            held.append((start + delayNanoseconds, tag, result))
        }
        let due = takeDue(&held, now: now, limit: limit)
        for completion in due { body(completion.tag, completion.result) }
        return due.count
    }

    public func register(slab: Int, memory: UnsafeMutableRawBufferPointer) -> Bool {
        base.register(slab: slab, memory: memory)
    }

    public func clearWake() { base.clearWake() }
}

/// Takes from `waiting` the completions due by `now`, in order, at most `limit`; the ones not yet due stay.
/// For the disks that hold completions back (delay, shuffling). The caller hands them on afterwards:
/// handing them on from inside would keep `waiting` borrowed while the data plane submits the next reads.
func takeDue(_ waiting: inout [(due: Instant, tag: UInt64, result: Int)], now: Instant, limit: Int) -> [(tag: UInt64, result: Int)] {
    var due: [(tag: UInt64, result: Int)] = []
    var index = 0
    while index < waiting.count && due.count < limit {
        if waiting[index].due <= now {
            let (_, tag, result) = waiting.remove(at: index)
            due.append((tag, result))
        } else {
            index += 1
        }
    }
    return due
}
