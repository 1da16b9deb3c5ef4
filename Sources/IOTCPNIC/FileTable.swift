import CIOTCPSystem
import Glibc
import IOTCPCommon
import SystemPackage

/// The files the NIC has opened for the host, under one export root.
///
/// Confinement is the kernel's: every open is `openat2` relative to the root's descriptor with
/// `RESOLVE_BENEATH`, so `..` above the root, absolute paths and symlinks that lead out of it all fail in
/// path resolution itself, with no string checks to get wrong (and no race between a check and the open).
/// Ids carry a generation, so an id kept after its file was closed never names the file that reuses the
/// slot.
public final class FileTable {
    public struct OpenFile {
        public let descriptor: Int32
        public let status: OffloadedFileStatus
    }

    public enum Failure: Error, Hashable, Sendable, CustomStringConvertible {
        case notFound(String)
        case permissionDenied(String)
        case outsideRoot(String)
        case notARegularFile(String)
        case invalidPath(String)
        case tooManyFiles(Int)
        case unknownFile(OffloadedFileID)
        case readFailed(OffloadedFileID, errno: Int32)
        case shrank(OffloadedFileID, expected: Int, got: Int)

        /// The protocol's code for an ERROR answering this.
        public var code: CommandErrorCode {
            switch self {
            case .notFound, .invalidPath: .fileNotFound
            case .permissionDenied: .permissionDenied
            case .outsideRoot: .pathOutsideRoot
            case .notARegularFile: .permissionDenied
            case .tooManyFiles: .tooManyFiles
            case .unknownFile: .unknownFile
            case .readFailed: .readFailed
            case .shrank: .fileShrank
            }
        }

        public var description: String {
            switch self {
            case .notFound(let path): "no such file: \(path)"
            case .permissionDenied(let path): "permission denied: \(path)"
            case .outsideRoot(let path): "path leads outside the export root: \(path)"
            case .notARegularFile(let path): "not a regular file: \(path)"
            case .invalidPath(let path): "invalid path: \(path)"
            case .tooManyFiles(let limit): "too many open files (limit \(limit))"
            case .unknownFile(let file): "unknown \(file) (never opened, or closed)"
            case .readFailed(let file, let code): "read of \(file) failed: \(Errno(rawValue: code))"
            case .shrank(let file, let expected, let got): "\(file) shrank under a read: wanted \(expected) bytes, got \(got)"
            }
        }
    }

    public let root: String
    public let limit: Int
    private let rootDescriptor: Int32
    private var slots: [OpenFile?] = []
    private var generations: [UInt32] = []
    private var freeSlots: [Int] = []
    public private(set) var openCount = 0

    /// Opens the export root; every later open is confined beneath it.
    public init(root: String, limit: Int = 65536) throws(FileTable.Failure) {
        let descriptor = Glibc.open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else {
            throw errno == ENOENT ? .notFound(root) : errno == EACCES ? .permissionDenied(root) : .invalidPath(root)
        }
        self.root = root
        self.limit = limit
        rootDescriptor = descriptor
    }

    deinit {
        for file in slots { if let file { Glibc.close(file.descriptor) } }
        Glibc.close(rootDescriptor)
    }

    /// Opens `path`, relative to the root (a leading `/` means the root itself, as in a URL path).
    public func open(path: String) throws(FileTable.Failure) -> (OffloadedFileID, OffloadedFileStatus) {
        var relative = Substring(path)
        while relative.first == "/" { relative = relative.dropFirst() }
        guard !relative.isEmpty, !relative.utf8.contains(0) else { throw .invalidPath(path) }
        guard openCount < limit else { throw .tooManyFiles(limit) }
        let descriptor = String(relative).withCString { iotcp_open_beneath(rootDescriptor, $0) }
        guard descriptor >= 0 else {
            switch errno {
            case ENOENT, ENOTDIR: throw .notFound(path)
            case EACCES, EPERM: throw .permissionDenied(path)
            case EXDEV, ELOOP: throw .outsideRoot(path)
            default: throw .invalidPath(path)
            }
        }
        guard let status = Self.status(of: descriptor), status.mode & S_IFMT == S_IFREG else {
            Glibc.close(descriptor)
            throw .notARegularFile(path)
        }
        let slot: Int
        if let reused = freeSlots.popLast() {
            slot = reused
        } else {
            slot = slots.count
            slots.append(nil)
            generations.append(1)
        }
        slots[slot] = OpenFile(descriptor: descriptor, status: status)
        openCount += 1
        return (OffloadedFileID(slot: UInt32(slot), generation: generations[slot]), status)
    }

    public func file(_ id: OffloadedFileID) throws(FileTable.Failure) -> OpenFile {
        let slot = Int(id.slot)
        guard slot < slots.count, generations[slot] == id.generation, let file = slots[slot] else { throw .unknownFile(id) }
        return file
    }

    /// Refreshes the status from the file as it is now (it may have changed since it was opened).
    public func status(_ id: OffloadedFileID) throws(FileTable.Failure) -> OffloadedFileStatus {
        let open = try file(id)
        return Self.status(of: open.descriptor) ?? open.status
    }

    /// What `fstat` says of a descriptor, as the protocol's STAT carries it.
    private static func status(of descriptor: Int32) -> OffloadedFileStatus? {
        var information = stat()
        guard fstat(descriptor, &information) == 0 else { return nil }
        return OffloadedFileStatus(
            size: UInt64(information.st_size), modificationSeconds: Int64(information.st_mtim.tv_sec),
            modificationNanoseconds: UInt32(information.st_mtim.tv_nsec), mode: information.st_mode,
            inode: UInt64(information.st_ino), device: UInt64(information.st_dev))
    }

    public func close(_ id: OffloadedFileID) throws(FileTable.Failure) {
        let open = try file(id)
        Glibc.close(open.descriptor)
        let slot = Int(id.slot)
        slots[slot] = nil
        generations[slot] &+= 1
        if generations[slot] == 0 { generations[slot] = 1 }
        freeSlots.append(slot)
        openCount -= 1
    }

    /// Closes every open file (the host that opened them is gone); ids given out before stay invalid.
    public func closeAll() {
        for slot in slots.indices {
            guard let open = slots[slot] else { continue }
            Glibc.close(open.descriptor)
            slots[slot] = nil
            generations[slot] &+= 1
            if generations[slot] == 0 { generations[slot] = 1 }
            freeSlots.append(slot)
        }
        openCount = 0
    }

    /// Names the storage device under a device number (`st_dev`); NVMe through libnvme by default. Tests
    /// install their own.
    public var deviceProbe: (UInt64) -> StorageDevice? = { StorageDeviceProbe.nvmeNamespace(device: $0) }
    private var devices: [UInt64: StorageDevice?] = [:]

    /// The storage device under an open file, if the probe can name it (asked once per device number).
    public func device(of id: OffloadedFileID) throws(FileTable.Failure) -> StorageDevice? {
        let number = try status(id).device
        if let known = devices[number] { return known }
        let found = deviceProbe(number)
        devices[number] = .some(found)
        return found
    }

    /// How file bytes are read: pread unless the owner installs another reader (io_uring).
    public var reader: any FileReader = PreadReader()

    /// Reads exactly `buffer.count` bytes at `offset`; a read that ends early means the file shrank.
    public func read(_ id: OffloadedFileID, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(FileTable.Failure) {
        let open = try file(id)
        var done = 0
        while done < buffer.count {
            let count: Int
            do throws(FileReadError) {
                count = try reader.read(descriptor: open.descriptor, offset: offset + UInt64(done),
                                        into: UnsafeMutableRawBufferPointer(rebasing: buffer[done...]))
            } catch {
                if error.errno == EINTR { continue }
                throw .readFailed(id, errno: error.errno)
            }
            if count == 0 { throw .shrank(id, expected: buffer.count, got: done) }
            done += count
        }
    }
}
