import IOTCPCommon

/// Files held in memory, served like an export root: for simulations, fuzzing and tests that run the real
/// data plane without a disk. Paths are names in a dictionary; a leading `/` is ignored, as in a URL path.
/// Its "descriptors" are indices `MemoryDisk` reads from.
public final class MemoryFiles: FileService {
    public let limit: Int
    public private(set) var openCount = 0
    private var contents: [String: Content] = [:]
    private var slots: [Slot] = []
    private var freeSlots: [Int] = []
    /// The content of every descriptor ever opened (kept after close while leased), by descriptor.
    fileprivate var data: [Content] = []

    /// A file's bytes: stored, or computed from the offset (large files for simulations, at no memory cost).
    enum Content {
        case bytes([UInt8])
        case pattern(size: Int, byte: @Sendable (UInt64) -> UInt8)

        static let empty = Content.bytes([])

        var count: Int {
            switch self {
            case .bytes(let bytes): bytes.count
            case .pattern(let size, _): size
            }
        }

        func copy(from offset: Int, count: Int, to destination: UnsafeMutableRawPointer) {
            switch self {
            case .bytes(let bytes):
                bytes.withUnsafeBytes { source in destination.copyMemory(from: source.baseAddress! + offset, byteCount: count) }
            case .pattern(_, let byte):
                let target = destination.assumingMemoryBound(to: UInt8.self)
                for index in 0..<count { target[index] = byte(UInt64(offset + index)) }
            }
        }
    }
    private var leases: [Int] = []

    private struct Slot {
        var generation: UInt32 = 1
        var descriptor: Int32 = -1
        var path = ""
        var open = false
    }

    public init(limit: Int = 65536) {
        self.limit = limit
    }

    /// Adds (or replaces) a file.
    public func add(_ path: String, _ bytes: [UInt8]) {
        contents[Self.normalized(path)] = .bytes(bytes)
    }

    /// Adds (or replaces) a file of `size` bytes whose byte at each offset is `byte(offset)`.
    public func add(_ path: String, size: Int, byte: @escaping @Sendable (UInt64) -> UInt8) {
        contents[Self.normalized(path)] = .pattern(size: size, byte: byte)
    }

    /// Shortens a file, as another process truncating it would: open descriptors see the new length.
    public func truncate(_ path: String, to length: Int) {
        let key = Self.normalized(path)
        guard let content = contents[key] else { return }
        let shorter: Content = switch content {
        case .bytes(let bytes): .bytes(Array(bytes.prefix(length)))
        case .pattern(let size, let byte): .pattern(size: min(size, length), byte: byte)
        }
        contents[key] = shorter
        for slot in slots where slot.open && slot.path == key { data[Int(slot.descriptor)] = shorter }
    }

    /// Leases out now, over every file (0 once every read has completed and every file is closed).
    public var leasesOut: Int { leases.reduce(0, +) }

    private static func normalized(_ path: String) -> String {
        var relative = Substring(path)
        while relative.first == "/" { relative = relative.dropFirst() }
        return String(relative)
    }

    public func open(path: String) throws(FileFailure) -> (OffloadedFileID, OffloadedFileStatus) {
        let key = Self.normalized(path)
        guard !key.isEmpty, !key.split(separator: "/").contains("..") else { throw .outsideRoot(path) }
        guard let content = contents[key] else { throw .notFound(path) }
        guard openCount < limit else { throw .tooManyFiles(limit) }
        let index: Int
        if let reused = freeSlots.popLast() { index = reused } else { index = slots.count; slots.append(Slot()) }
        let descriptor = Int32(data.count)
        data.append(content)
        leases.append(0)
        slots[index].descriptor = descriptor
        slots[index].path = key
        slots[index].open = true
        openCount += 1
        let id = OffloadedFileID(slot: UInt32(index), generation: slots[index].generation)
        return (id, try status(id))
    }

    private func slot(_ id: OffloadedFileID) throws(FileFailure) -> Int {
        let index = Int(id.slot)
        guard index < slots.count, slots[index].open, slots[index].generation == id.generation else { throw .unknownFile(id) }
        return index
    }

    public func status(_ file: OffloadedFileID) throws(FileFailure) -> OffloadedFileStatus {
        let index = try slot(file)
        let descriptor = slots[index].descriptor
        return OffloadedFileStatus(size: UInt64(data[Int(descriptor)].count), modificationSeconds: 1_700_000_000,
                                   modificationNanoseconds: 0, mode: 0o100644, inode: UInt64(descriptor) + 1, device: 1)
    }

    public func device(of file: OffloadedFileID) throws(FileFailure) -> StorageDevice? {
        _ = try slot(file)
        return nil
    }

    public func close(_ file: OffloadedFileID) throws(FileFailure) {
        let index = try slot(file)
        retire(index)
    }

    public func closeAll() {
        for index in slots.indices where slots[index].open { retire(index) }
    }

    private func retire(_ index: Int) {
        slots[index].open = false
        slots[index].generation &+= 1
        if slots[index].generation == 0 { slots[index].generation = 1 }
        let descriptor = Int(slots[index].descriptor)
        if leases[descriptor] == 0 { data[descriptor] = .empty }
        freeSlots.append(index)
        openCount -= 1
    }

    public func lease(_ file: OffloadedFileID) throws(FileFailure) -> FileLease {
        let index = try slot(file)
        let descriptor = slots[index].descriptor
        leases[Int(descriptor)] += 1
        return FileLease(slot: UInt32(index), descriptor: descriptor)
    }

    public func release(_ lease: FileLease) {
        let descriptor = Int(lease.descriptor)
        precondition(leases[descriptor] > 0, "a lease released twice")
        leases[descriptor] -= 1
    }

    fileprivate func content(descriptor: Int32) -> Content? {
        descriptor >= 0 && Int(descriptor) < data.count ? data[Int(descriptor)] : nil
    }
}

/// Reads `MemoryFiles`, completing each read at the next `reap` (after `delayNanoseconds` if set), in
/// submission order or, with a seed, shuffled. `failures` makes chosen reads fail with an errno value.
public final class MemoryDisk: DiskIO {
    public let files: MemoryFiles
    public let capacity: Int
    public var delayNanoseconds: UInt64 = 0
    /// Returns an errno value for a read that should fail.
    public var failures: ((DiskRead) -> Int32?)?
    private var random: SeededGenerator?
    private var queued: [DiskRead] = []
    private var pending: [(due: Instant, tag: UInt64, result: Int)] = []
    public private(set) var submitted = 0
    public private(set) var maximumInFlight = 0

    public init(files: MemoryFiles, capacity: Int = 256, shuffleSeed: UInt64? = nil) {
        self.files = files
        self.capacity = capacity
        random = shuffleSeed.map { SeededGenerator(seed: $0) }
    }

    public var name: String { "memory" }
    public var inFlight: Int { queued.count + pending.count }
    public var wakeDescriptor: Int32 { -1 }
    public var nextDue: Instant? { pending.min { $0.due < $1.due }?.due }

    public func submit(_ read: DiskRead, now: Instant) -> Bool {
        guard inFlight < capacity else { return false }
        queued.append(read)
        submitted += 1
        maximumInFlight = max(maximumInFlight, inFlight)
        _ = now
        return true
    }

    public func flush() {}

    public func reap(now: Instant, limit: Int, _ body: (UInt64, Int) -> Void) -> Int {
        // Reads are carried out at the first reap after their flush, which is when they "start".
        for read in queued {
            let result: Int
            if let code = failures?(read) {
                result = -Int(code)
            } else if let content = files.content(descriptor: read.descriptor) {
                let start = Int(min(read.offset, UInt64(content.count)))
                let count = min(read.length, content.count - start)
                if count > 0 { content.copy(from: start, count: count, to: read.destination) }
                result = count
            } else {
                result = -9  // EBADF
            }
            pending.append((now + delayNanoseconds, read.tag, result))
        }
        queued.removeAll(keepingCapacity: true)
        if var generator = random {
            pending.shuffle(using: &generator)
            random = generator
        }
        let due = takeDue(&pending, now: now, limit: limit)
        for completion in due { body(completion.tag, completion.result) }
        return due.count
    }

    public func register(slab: Int, memory: UnsafeMutableRawBufferPointer) -> Bool { false }
}
