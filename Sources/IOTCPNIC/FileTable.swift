import CIOTCPSystem
import Glibc
import IOTCPSystem
import IOTCPCommon
import IOTCPNICCore

/// The files the NIC has opened for the host, under one export root.
///
/// Confinement is the kernel's: every open is `openat2` relative to the root's descriptor with
/// `RESOLVE_BENEATH`, so `..` above the root, absolute paths and symlinks that lead out of it all fail in
/// path resolution itself, with no string checks to get wrong (and no race between a check and the open).
/// Opens never block (a FIFO under the root is refused, not waited on), and only regular files are kept.
/// Ids carry a generation, so an id kept after its file was closed never names the file that reuses the
/// slot; a descriptor lent to a read in flight stays open until the read is done (`FileService`).
///
/// Files are also mapped (`mmap`, read-only) on first use, so data the page cache holds can be sent from
/// there with no read at all: the wire's gathered write is then the only copy of those bytes. The data plane
/// checks residency first (`mincore`) and reads anything else through its disk, so the loop never waits on
/// a page fault. Mappings outlive their descriptors for a while (`FileMappings`), so a hot file is mapped
/// once, not once a request. `mapFiles: false` turns this off.
///
/// With `directIO`, files are opened with `O_DIRECT` (Atlas's choice: the page cache is bypassed and a
/// library larger than memory does not evict everything else); reads must then be aligned to
/// `directAlignment`, which the data plane does. A file system that refuses `O_DIRECT` gets a buffered open,
/// counted in `directFallbacks`.
public final class FileTable: FileService {
    public typealias Failure = FileFailure

    public struct OpenFile {
        public let descriptor: Int32
        public let status: OffloadedFileStatus
        public let direct: Bool
    }

    public let root: String
    public let limit: Int
    public let directIO: Bool
    /// Whose read permission a file must grant to be served: the export root's owner unless given. The
    /// NIC usually runs as root (it makes the TAP and the namespace), and root may read anything; serving
    /// only what the root's owner could read keeps a file its owner made private (mode 000, or another
    /// user's 0600) private.
    public let servingUser: uid_t
    public let servingGroup: gid_t
    public let mapFiles: Bool
    /// Files smaller than this are read, not mapped: for a page or two, a read into a pool buffer (which
    /// completes inside the ring's submission when cached) costs less than checking residency and gathering
    /// from the mapping. Measured with `scripts/compare.sh`, split, 100 connections: 4 KiB files 23,400
    /// requests/s read against 18,800 mapped; 16 KiB files 18,300 read against 22,500 mapped.
    public let minimumMappedSize: UInt64
    /// Files mapped so far (`mmap` calls), opens that reused a kept mapping, and mappings the kernel refused.
    public var mappings: Int { fileMappings.mapped }
    public var mappingReuses: Int { fileMappings.reused }
    public var mappingFailures: Int { fileMappings.failures }
    /// Mappings kept with no open file using them.
    public var idleMappings: Int { fileMappings.idleCount }
    @exclusivity(unchecked) private var fileMappings: FileMappings
    private let residency = UnsafeMutablePointer<UInt8>.allocate(capacity: FileTable.residencyPages)
    /// Pages a `mincore` call looks at, at most (2 MiB).
    private static let residencyPages = 512
    private static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
    /// Offset, length and memory alignment for direct reads: the largest logical block size in common use.
    public static let directAlignment: Int32 = 4096
    private let rootDescriptor: Int32
    @exclusivity(unchecked) private var slots: [Slot] = []
    @exclusivity(unchecked) private var freeSlots: [Int] = []
    @exclusivity(unchecked) public private(set) var openCount = 0
    /// Opens that asked for `O_DIRECT` and had to do without it.
    @exclusivity(unchecked) public private(set) var directFallbacks = 0
    /// Files closed by the host while a read was still in flight (their descriptors closed after it).
    @exclusivity(unchecked) public private(set) var deferredCloses = 0

    private struct Slot {
        var file: OpenFile?
        var generation: UInt32 = 1
        /// Reads in flight on this slot's descriptor (which may belong to a file already closed by id).
        var leases = 0
        /// The descriptor whose close waits for `leases` to reach 0, if any.
        var retiredDescriptor: Int32 = -1
        /// The entry in `fileMappings` of the descriptor's file mapped read-only (found or made on first use,
        /// given back when the descriptor closes), or -1.
        var mappingEntry = -1
        var mappingTried = false
    }

    /// Opens the export root; every later open is confined beneath it. Up to `idleMappingLimit` mappings of
    /// files no longer open (and `idleMappingBytes` of them) are kept for the next open of the same file.
    public init(
        root: String, limit: Int = 65536, directIO: Bool = false, mapFiles: Bool = true, servingAs identity: (user: uid_t, group: gid_t)? = nil,
        idleMappingLimit: Int = 1024, idleMappingBytes: Int = 64 << 20, minimumMappedSize: UInt64 = 16 << 10
    ) throws(FileFailure) {
        self.minimumMappedSize = minimumMappedSize
        fileMappings = FileMappings(maximumIdle: idleMappingLimit, maximumIdleBytes: idleMappingBytes)
        let descriptor = Glibc.open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw errno == ENOENT ? .notFound(root) : errno == EACCES ? .permissionDenied(root) : .invalidPath(root)
        }
        var information = stat()
        guard fstat(descriptor, &information) == 0 else {
            Glibc.close(descriptor)
            throw .invalidPath(root)
        }
        servingUser = identity?.user ?? information.st_uid
        servingGroup = identity?.group ?? information.st_gid
        self.root = root
        self.limit = limit
        self.directIO = directIO
        self.mapFiles = mapFiles && !directIO
        rootDescriptor = descriptor
    }

    deinit {
        for index in slots.indices {
            unmap(index)
            if let file = slots[index].file { Glibc.close(file.descriptor) }
            if slots[index].retiredDescriptor >= 0 { Glibc.close(slots[index].retiredDescriptor) }
        }
        Glibc.close(rootDescriptor)
        residency.deallocate()
    }

    private func unmap(_ index: Int) {
        if slots[index].mappingEntry >= 0 { fileMappings.release(slots[index].mappingEntry, now: Self.coarseNow()) }
        slots[index].mappingEntry = -1
        slots[index].mappingTried = false
    }

    /// Opens `path`, relative to the root (a leading `/` means the root itself, as in a URL path).
    public func open(path: String) throws(FileFailure) -> (OffloadedFileID, OffloadedFileStatus) {
        var relative = Substring(path)
        while relative.first == "/" { relative = relative.dropFirst() }
        guard !relative.isEmpty, !relative.utf8.contains(0) else { throw .invalidPath(path) }
        guard openCount < limit else { throw .tooManyFiles(limit) }
        var direct = directIO
        var descriptor = String(relative).withCString { path in retryingOnInterrupt { iotcp_open_beneath(rootDescriptor, path, direct ? 1 : 0) } }
        if descriptor < 0 && direct && errno == EINVAL {
            direct = false
            directFallbacks += 1
            descriptor = String(relative).withCString { path in retryingOnInterrupt { iotcp_open_beneath(rootDescriptor, path, 0) } }
        }
        guard descriptor >= 0 else {
            switch errno {
            case ENOENT, ENOTDIR: throw .notFound(path)
            case EACCES, EPERM: throw .permissionDenied(path)
            case EXDEV, ELOOP: throw .outsideRoot(path)
            case EMFILE, ENFILE, ENOMEM: throw .outOfDescriptors(path)
            case ENXIO, EWOULDBLOCK: throw .notARegularFile(path)
            default: throw .invalidPath(path)
            }
        }
        var information = stat()
        guard fstat(descriptor, &information) == 0, information.st_mode & S_IFMT == S_IFREG, iotcp_clear_nonblocking(descriptor) == 0 else {
            Glibc.close(descriptor)
            throw .notARegularFile(path)
        }
        guard grantsRead(information) else {
            Glibc.close(descriptor)
            throw .permissionDenied(path)
        }
        let status = Self.status(information)
        let index: Int
        if let reused = freeSlots.popLast() {
            index = reused
        } else {
            index = slots.count
            slots.append(Slot())
        }
        slots[index].file = OpenFile(descriptor: descriptor, status: status, direct: direct)
        openCount += 1
        return (OffloadedFileID(slot: UInt32(index), generation: slots[index].generation), status)
    }

    public func file(_ id: OffloadedFileID) throws(FileFailure) -> OpenFile {
        let index = Int(id.slot)
        guard index < slots.count, slots[index].generation == id.generation, let file = slots[index].file else { throw .unknownFile(id) }
        return file
    }

    /// Refreshes the status from the file as it is now (it may have changed since it was opened).
    public func status(_ id: OffloadedFileID) throws(FileFailure) -> OffloadedFileStatus {
        let open = try file(id)
        return Self.status(of: open.descriptor) ?? open.status
    }

    /// Whether the file's mode lets the serving user read it, as `access(2)` would decide for that user
    /// (owner, then group, then others; supplementary groups aside), whatever this process may read.
    private func grantsRead(_ information: stat) -> Bool {
        let mode = information.st_mode
        if information.st_uid == servingUser { return mode & S_IRUSR != 0 }
        if information.st_gid == servingGroup { return mode & S_IRGRP != 0 }
        return mode & S_IROTH != 0
    }

    /// What `fstat` says of a descriptor, as the protocol's STAT carries it.
    private static func status(of descriptor: Int32) -> OffloadedFileStatus? {
        var information = stat()
        guard fstat(descriptor, &information) == 0 else { return nil }
        return status(information)
    }

    private static func status(_ information: stat) -> OffloadedFileStatus {
        OffloadedFileStatus(
            size: UInt64(information.st_size), modificationSeconds: Int64(information.st_mtim.tv_sec),
            modificationNanoseconds: UInt32(information.st_mtim.tv_nsec), mode: information.st_mode,
            inode: UInt64(information.st_ino), device: UInt64(information.st_dev))
    }

    public func close(_ id: OffloadedFileID) throws(FileFailure) {
        _ = try file(id)
        retire(Int(id.slot))
    }

    /// Closes every open file (the host that opened them is gone); ids given out before stay invalid.
    public func closeAll() {
        for index in slots.indices where slots[index].file != nil { retire(index) }
    }

    /// The id stops naming the file at once; the descriptor closes now, or after the last read in flight.
    private func retire(_ index: Int) {
        guard let open = slots[index].file else { return }
        slots[index].file = nil
        slots[index].generation &+= 1
        if slots[index].generation == 0 { slots[index].generation = 1 }
        openCount -= 1
        if slots[index].leases > 0 {
            slots[index].retiredDescriptor = open.descriptor
            deferredCloses += 1
        } else {
            unmap(index)
            Glibc.close(open.descriptor)
            freeSlots.append(index)
        }
    }

    public func lease(_ id: OffloadedFileID) throws(FileFailure) -> FileLease {
        let open = try file(id)
        slots[Int(id.slot)].leases += 1
        return FileLease(slot: id.slot, descriptor: open.descriptor, alignment: open.direct ? Self.directAlignment : 1)
    }

    public func release(_ lease: FileLease) {
        let index = Int(lease.slot)
        guard index < slots.count, slots[index].leases > 0 else { return }
        slots[index].leases -= 1
        if slots[index].leases == 0 && slots[index].retiredDescriptor >= 0 {
            unmap(index)
            Glibc.close(slots[index].retiredDescriptor)
            slots[index].retiredDescriptor = -1
            freeSlots.append(index)
        }
    }

    public func mapping(_ lease: FileLease) -> UnsafeRawBufferPointer? {
        let index = Int(lease.slot)
        guard mapFiles, index < slots.count, slots[index].leases > 0 else { return nil }
        if let mapping = mapped(index) { return mapping }
        guard !slots[index].mappingTried, let status = slots[index].file?.status,
              status.size > 0, status.size >= minimumMappedSize else { return nil }
        slots[index].mappingTried = true
        // The length is the one seen at open: a file that grew since is read past it, one that shrank fails
        // the wire's write (the kernel reads the mapping, not this process).
        let identity = FileMappings.Identity(device: status.device, inode: status.inode)
        guard let entry = fileMappings.acquire(identity, length: Int(status.size), descriptor: lease.descriptor, now: Self.coarseNow())
        else { return nil }
        slots[index].mappingEntry = entry
        return fileMappings.mapping(entry)
    }

    /// The slot's file as mapped, if it is.
    private func mapped(_ index: Int) -> UnsafeRawBufferPointer? {
        slots[index].mappingEntry >= 0 ? fileMappings.mapping(slots[index].mappingEntry) : nil
    }

    /// Unmaps every kept mapping no open file uses, so deleted files' space comes back at once (they also
    /// go by themselves after ten idle seconds, at the next open or close).
    public func dropIdleMappings() { fileMappings.dropIdle() }

    /// A monotonic clock read without a system call (the vDSO's coarse clock), for aging kept mappings.
    private static func coarseNow() -> UInt64 {
        var time = timespec()
        clock_gettime(CLOCK_MONOTONIC_COARSE, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }

    public func isResident(_ lease: FileLease, offset: UInt64, length: Int) -> Bool {
        let index = Int(lease.slot)
        guard index < slots.count, let mapped = mapped(index), let mapping = mapped.baseAddress, length > 0,
              offset + UInt64(length) <= UInt64(mapped.count) else { return false }
        let start = Int(offset), end = Int(offset) + length
        // A hot file is sent chunk by chunk, request after request: one check of the whole file stands for
        // `residencyWindow`, instead of a `mincore` a chunk (6% of the core at 500 KiB files). A page
        // reclaimed within the window costs a page fault inside the wire's write, not wrong bytes.
        let entry = slots[index].mappingEntry
        let now = Self.coarseNow()
        switch fileMappings.recentResidency(entry, now: now, window: Self.residencyWindow) {
        case true?: return true
        case false?: return firstUncachedPage(mapping, from: start, to: end) == nil
        case nil:
            let missing = firstUncachedPage(mapping, from: 0, to: mapped.count)
            fileMappings.noteResidency(entry, allResident: missing == nil, now: now)
            guard let missing else { return true }
            if missing >= end { return true }
            if missing >= start { return false }
            return firstUncachedPage(mapping, from: start, to: end) == nil
        }
    }

    /// How long a whole-file residency check is trusted: 100 ms.
    static let residencyWindow: UInt64 = 100_000_000

    /// The offset of the first page in `[from, to)` of a mapping that the page cache does not hold, or nil.
    private func firstUncachedPage(_ mapping: UnsafeRawPointer, from: Int, to: Int) -> Int? {
        let page = Self.pageSize
        var start = from / page * page
        let end = (to + page - 1) / page * page
        while start < end {
            let span = min(end - start, Self.residencyPages * page)
            guard mincore(UnsafeMutableRawPointer(mutating: mapping + start), span, residency) == 0 else { return start }
            for index in 0..<(span / page) where residency[index] & 1 == 0 { return start + index * page }
            start += span
        }
        return nil
    }

    /// Reads in flight over every file (0 when the data plane is idle).
    public var leasesOut: Int { slots.reduce(0) { $0 + $1.leases } }

    /// Names the storage device under a device number (`st_dev`); NVMe through libnvme by default. Tests
    /// install their own.
    public var deviceProbe: (UInt64) -> StorageDevice? = { StorageDeviceProbe.nvmeNamespace(device: $0) }
    private var devices: [UInt64: StorageDevice?] = [:]

    /// The storage device under an open file, if the probe can name it (asked once per device number).
    public func device(of id: OffloadedFileID) throws(FileFailure) -> StorageDevice? {
        let number = try status(id).device
        if let known = devices[number] { return known }
        let found = deviceProbe(number)
        devices[number] = .some(found)
        return found
    }

    /// Reads exactly `buffer.count` bytes at `offset` with `pread`, for tools and tests (the data plane
    /// reads through its `DiskIO`); a read that ends early means the file shrank.
    public func read(_ id: OffloadedFileID, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(FileFailure) {
        let open = try file(id)
        var done = 0
        while done < buffer.count {
            let count = retryingOnInterrupt { pread(open.descriptor, buffer.baseAddress! + done, buffer.count - done, off_t(offset) + off_t(done)) }
            if count < 0 { throw .readFailed(id, errno: errno) }
            if count == 0 { throw .shrank(id, expected: buffer.count, got: done) }
            done += count
        }
    }
}
