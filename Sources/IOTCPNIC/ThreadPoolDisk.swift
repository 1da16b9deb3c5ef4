import CIOTCPSystem
import DequeModule
import Glibc
import IOTCPSystem
import IOTCPNICCore

/// Asynchronous reads where io_uring is refused: `pread` on a few worker threads. Reads queued in a turn are
/// handed to the workers together (one lock, one wake-up); each finished read is put on a completion list and
/// the NIC loop is woken through an eventfd when the list goes from empty to not.
///
/// `submit`, `flush`, `reap` and `clearWake` belong to the NIC thread; the workers share only the job and
/// completion lists with it, under one lock. Letting go of the disk stops the workers after their reads.
public final class ThreadPoolDisk: DiskIO {
    public let capacity: Int
    public private(set) var inFlight = 0
    public let threads: Int
    private let shared: Shared
    private var staged: [DiskRead] = []
    private var taken: [(tag: UInt64, result: Int)] = []
    private var takenHead = 0
    private var workers: [pthread_t] = []

    /// What the NIC thread and the workers share, behind `lock`.
    private final class Shared: @unchecked Sendable {
        let lock = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
        let work = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
        let wake: Int32
        var jobs = Deque<DiskRead>()
        var completions: [(tag: UInt64, result: Int)] = []
        var stopping = false

        init(wake: Int32) {
            self.wake = wake
            pthread_mutex_init(lock, nil)
            pthread_cond_init(work, nil)
        }

        deinit {
            Glibc.close(wake)
            pthread_cond_destroy(work)
            pthread_mutex_destroy(lock)
            lock.deallocate()
            work.deallocate()
        }

        func serve() {
            while true {
                pthread_mutex_lock(lock)
                while jobs.isEmpty && !stopping { pthread_cond_wait(work, lock) }
                guard let read = jobs.popFirst() else {
                    pthread_mutex_unlock(lock)
                    return
                }
                pthread_mutex_unlock(lock)
                var result = retryingOnInterrupt { pread(read.descriptor, read.destination, read.length, off_t(read.offset)) }
                if result < 0 { result = -Int(errno) }
                pthread_mutex_lock(lock)
                let wasEmpty = completions.isEmpty
                completions.append((read.tag, result))
                pthread_mutex_unlock(lock)
                if wasEmpty {
                    var one: UInt64 = 1
                    _ = Glibc.write(wake, &one, 8)
                }
            }
        }
    }

    public init(threads: Int = 4, capacity: Int = 256) throws(DiskFailure) {
        self.threads = max(threads, 1)
        self.capacity = capacity
        let wake = iotcp_eventfd()
        guard wake >= 0 else { throw DiskFailure("eventfd") }
        shared = Shared(wake: wake)
        for _ in 0..<self.threads {
            var thread = pthread_t()
            let context = Unmanaged.passRetained(shared).toOpaque()
            let created = pthread_create(&thread, nil, { context in
                let shared = Unmanaged<Shared>.fromOpaque(context!).takeRetainedValue()
                NICRuntime.nameCurrentThread("iotcp-disk")
                shared.serve()
                return nil
            }, context)
            if created == 0 {
                workers.append(thread)
            } else {
                Unmanaged<Shared>.fromOpaque(context).release()
            }
        }
        guard !workers.isEmpty else { throw DiskFailure("pthread_create", errno: .resourceTemporarilyUnavailable) }
    }

    deinit {
        // Reads still queued are done first: their memory belongs to whoever submitted them until then.
        pthread_mutex_lock(shared.lock)
        shared.stopping = true
        pthread_cond_broadcast(shared.work)
        pthread_mutex_unlock(shared.lock)
        for worker in workers { pthread_join(worker, nil) }
    }

    public var name: String { "pread×\(threads)" }
    public var wakeDescriptor: Int32 { shared.wake }
    public var nextDue: Instant? { nil }
    public func register(slab: Int, memory: UnsafeMutableRawBufferPointer) -> Bool { false }

    public func submit(_ read: DiskRead, now: Instant) -> Bool {
        guard inFlight < capacity else { return false }
        staged.append(read)
        inFlight += 1
        return true
    }

    public func flush() {
        guard !staged.isEmpty else { return }
        pthread_mutex_lock(shared.lock)
        shared.jobs.append(contentsOf: staged)
        if staged.count > 1 { pthread_cond_broadcast(shared.work) } else { pthread_cond_signal(shared.work) }
        pthread_mutex_unlock(shared.lock)
        staged.removeAll(keepingCapacity: true)
    }

    public func reap(now: Instant, limit: Int, _ body: (UInt64, Int) -> Void) -> Int {
        if takenHead == taken.count {
            taken.removeAll(keepingCapacity: true)
            takenHead = 0
            pthread_mutex_lock(shared.lock)
            swap(&taken, &shared.completions)
            pthread_mutex_unlock(shared.lock)
        }
        var count = 0
        while takenHead < taken.count && count < limit {
            let (tag, result) = taken[takenHead]
            takenHead += 1
            inFlight -= 1
            count += 1
            body(tag, result)
        }
        return count
    }

    public func clearWake() {
        var value: UInt64 = 0
        _ = Glibc.read(shared.wake, &value, 8)
    }
}

/// `pread` on the calling thread, each read carried out when it is reaped: no concurrency and no waiting
/// on anything but the read itself, so runs replay exactly. For tests and tools, not for serving (one
/// cold read stalls the loop, which is what the asynchronous disks exist to avoid).
public final class PreadDisk: DiskIO {
    public let capacity: Int
    private var queued: [DiskRead] = []

    public init(capacity: Int = 256) {
        self.capacity = capacity
    }

    public var name: String { "pread (synchronous)" }
    public var inFlight: Int { queued.count }
    public var wakeDescriptor: Int32 { -1 }
    public var nextDue: Instant? { nil }
    public func register(slab: Int, memory: UnsafeMutableRawBufferPointer) -> Bool { false }

    public func submit(_ read: DiskRead, now: Instant) -> Bool {
        guard queued.count < capacity else { return false }
        queued.append(read)
        return true
    }

    public func flush() {}

    public func reap(now: Instant, limit: Int, _ body: (UInt64, Int) -> Void) -> Int {
        let count = min(limit, queued.count)
        let reads = queued.prefix(count)
        queued.removeFirst(count)
        for read in reads {
            let result = retryingOnInterrupt { pread(read.descriptor, read.destination, read.length, off_t(read.offset)) }
            body(read.tag, result < 0 ? -Int(errno) : result)
        }
        return count
    }
}
