internal import CIOTCPURing
import CIOTCPSystem
import Glibc
import IOTCPSystem
import IOTCPNICCore

/// Asynchronous reads through io_uring (liburing, in the C target CIOTCPURing): reads are queued as they
/// come, handed to the kernel together in one `io_uring_enter` per turn, and reaped from the completion
/// queue in batches without a system call. Reads of cached pages complete inside that submission; the rest
/// complete in the background while the NIC serves other flows, and an eventfd wakes its loop.
///
/// The buffer pool's slabs are registered with the ring (io_uring's registered buffers), so a read does not
/// pin and unpin its pages each time; where the kernel refuses (memory-lock limits), reads go unregistered.
public final class URingDisk: DiskIO {
    private let ring: OpaquePointer
    public let capacity: Int
    @exclusivity(unchecked) public private(set) var inFlight = 0
    public let wakeDescriptor: Int32
    /// Slabs registered with the ring, and registrations the kernel refused.
    @exclusivity(unchecked) public private(set) var registeredSlabs = 0
    @exclusivity(unchecked) public private(set) var registrationFailures = 0
    /// io_uring_enter calls made (one per turn with reads to submit).
    @exclusivity(unchecked) public private(set) var submissions = 0
    private let reservedSlabs: Int
    @exclusivity(unchecked) private var canRegister: Bool
    @exclusivity(unchecked) private var unsubmitted = 0
    private let tags: UnsafeMutablePointer<UInt64>
    private let results: UnsafeMutablePointer<Int32>
    private static let batch = 256

    /// A ring taking up to `entries` reads in flight, with room for `slabs` registered buffers. Throws
    /// when the kernel refuses io_uring (old kernels, `kernel.io_uring_disabled`, seccomp).
    public init(entries: UInt32 = 256, slabs: Int = 128) throws(DiskFailure) {
        var error: Int32 = 0
        guard let ring = iotcp_uring_create(entries, &error) else {
            throw DiskFailure("io_uring_setup", errno: Errno(rawValue: error))
        }
        self.ring = ring
        capacity = Int(entries)
        reservedSlabs = slabs
        canRegister = iotcp_uring_reserve_buffers(ring, UInt32(slabs)) == 0
        let wake = iotcp_eventfd()
        if wake >= 0 && iotcp_uring_register_eventfd(ring, wake) == 0 {
            wakeDescriptor = wake
        } else {
            if wake >= 0 { Glibc.close(wake) }
            wakeDescriptor = -1
        }
        tags = .allocate(capacity: Self.batch)
        results = .allocate(capacity: Self.batch)
    }

    deinit {
        // Exiting the ring waits for reads in flight, so no read lands in memory freed after this.
        iotcp_uring_destroy(ring)
        if wakeDescriptor >= 0 { Glibc.close(wakeDescriptor) }
        tags.deallocate()
        results.deallocate()
    }

    public var name: String { "io_uring" + (registeredSlabs > 0 ? ", registered buffers" : "") }
    public var nextDue: Instant? { nil }

    public func register(slab: Int, memory: UnsafeMutableRawBufferPointer) -> Bool {
        guard canRegister, slab < reservedSlabs,
              iotcp_uring_register_buffer(ring, UInt32(slab), memory.baseAddress, memory.count) == 0
        else {
            registrationFailures += 1
            return false
        }
        registeredSlabs += 1
        return true
    }

    public func submit(_ read: DiskRead, now: Instant) -> Bool {
        guard inFlight < capacity, read.length > 0 else { return false }
        var result = iotcp_uring_queue_read(ring, read.descriptor, read.destination, UInt32(read.length), read.offset,
                                            read.registeredSlab, read.missesCache ? 1 : 0, read.tag)
        if result == -EBUSY {
            // Every submission slot holds an unsubmitted read: hand them over and take the slot.
            flush()
            result = iotcp_uring_queue_read(ring, read.descriptor, read.destination, UInt32(read.length), read.offset,
                                            read.registeredSlab, read.missesCache ? 1 : 0, read.tag)
        }
        guard result == 0 else { return false }
        inFlight += 1
        unsubmitted += 1
        return true
    }

    public func flush() {
        guard unsubmitted > 0 else { return }
        let submitted = iotcp_uring_submit(ring)
        submissions += 1
        if submitted >= 0 {
            unsubmitted -= min(Int(submitted), unsubmitted)
        } else {
            // The reads stay queued in the ring and go with the next submission (EAGAIN, EBUSY: the kernel is
            // short of room for now); anything else is counted, for the operator to see.
            submitFailures += 1
            lastSubmitError = -submitted
        }
    }

    /// Submissions the kernel refused, and the errno value of the last one.
    public private(set) var submitFailures = 0
    public private(set) var lastSubmitError: Int32 = 0

    public func reap(now: Instant, limit: Int, _ body: (UInt64, Int) -> Void) -> Int {
        var total = 0
        while total < limit && inFlight > 0 {
            let count = Int(iotcp_uring_reap(ring, tags, results, UInt32(min(Self.batch, limit - total))))
            if count == 0 { break }
            inFlight -= count
            for index in 0..<count { body(tags[index], Int(results[index])) }
            total += count
        }
        return total
    }

    public func clearWake() {
        guard wakeDescriptor >= 0 else { return }
        var value: UInt64 = 0
        _ = Glibc.read(wakeDescriptor, &value, 8)
    }
}

/// A disk that could not be set up: the call that failed and its error.
public typealias DiskFailure = SystemCallError

extension NICDataPlane {
    /// The data plane as a NIC program wants it by default: files from `files`, read through io_uring (or
    /// pread worker threads where the kernel refuses io_uring), buffered retransmissions, TLS records sealed.
    public static func standard(
        files: any FileService, retransmitMode: RetransmitStore.Mode = .buffered, storeLimitBytes: Int = 192 << 20,
        readMemoryBytes: Int = 64 << 20
    ) -> NICDataPlane {
        let plane = NICDataPlane(files: files, disk: standardDisk(), pool: BufferPool(capacityBytes: storeLimitBytes + readMemoryBytes),
                                 retransmitMode: retransmitMode, storeLimitBytes: storeLimitBytes)
        plane.recordSealers = TLSRecordSealers()
        return plane
    }

    /// io_uring, or pread on four threads where io_uring is refused, or, where not even a thread can be
    /// started, pread on the NIC's own thread (slow on a cold disk, but serving).
    public static func standardDisk() -> any DiskIO {
        if let ring = try? URingDisk() { return ring }
        if let threads = try? ThreadPoolDisk() { return threads }
        return PreadDisk()
    }
}
