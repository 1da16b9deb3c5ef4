import IOTCPCommon

/// The files the NIC has opened for the host, as the data plane needs them: open, status, close, and a
/// descriptor to read from. `FileTable` (IOTCPNIC) is the real one, confined beneath an export root;
/// `MemoryFiles` holds files in memory for simulations, fuzzing and tests.
///
/// Reads are asynchronous, so a read may still be in flight when the host closes its file. A read therefore
/// works on a `FileLease`: while any lease on a file is out, closing it retires its id at once (no new
/// command can name it) but keeps the descriptor open, so an in-flight read never lands on a descriptor
/// number that some later open has reused.
public protocol FileService: AnyObject {
    /// The most files open at once.
    var limit: Int { get }
    var openCount: Int { get }
    /// Opens `path` relative to the service's root.
    func open(path: String) throws(FileFailure) -> (OffloadedFileID, OffloadedFileStatus)
    /// The file's status as it is now.
    func status(_ file: OffloadedFileID) throws(FileFailure) -> OffloadedFileStatus
    /// The storage device under the file, if one can be named.
    func device(of file: OffloadedFileID) throws(FileFailure) -> StorageDevice?
    func close(_ file: OffloadedFileID) throws(FileFailure)
    /// Closes every file (the host that opened them is gone); ids given out stay invalid.
    func closeAll()
    /// A descriptor to read `file` through, valid until `release`.
    func lease(_ file: OffloadedFileID) throws(FileFailure) -> FileLease
    func release(_ lease: FileLease)
    /// The file's bytes as the page cache holds them, mapped read-only, valid while `lease` is out; nil where
    /// the service does not map files. Only the kernel may read this memory, in a gathered write: a file
    /// truncated under a mapping faults on access, which a system call reports as EFAULT but user code would
    /// take as SIGBUS.
    func mapping(_ lease: FileLease) -> UnsafeRawBufferPointer?
    /// Whether `[offset, offset + length)` of the file is in the page cache now, so that sending it from
    /// the mapping never waits on the disk.
    func isResident(_ lease: FileLease, offset: UInt64, length: Int) -> Bool
}

extension FileService {
    public func mapping(_ lease: FileLease) -> UnsafeRawBufferPointer? { nil }
    public func isResident(_ lease: FileLease, offset: UInt64, length: Int) -> Bool { false }
}

/// A file's descriptor lent for reads. `alignment` > 1 means the file was opened for direct I/O: every
/// read's offset, length and memory must be multiples of it.
public struct FileLease: Hashable, Sendable {
    public let slot: UInt32
    public let descriptor: Int32
    public let alignment: Int32

    public init(slot: UInt32, descriptor: Int32, alignment: Int32 = 1) {
        self.slot = slot
        self.descriptor = descriptor
        self.alignment = alignment
    }
}

/// Why a file could not be opened, read or named.
public enum FileFailure: Error, Hashable, Sendable, CustomStringConvertible {
    case notFound(String)
    case permissionDenied(String)
    case outsideRoot(String)
    case notARegularFile(String)
    case invalidPath(String)
    case tooManyFiles(Int)
    /// The NIC's process is out of descriptors (EMFILE, ENFILE): a resource limit, never "not found".
    case outOfDescriptors(String)
    case unknownFile(OffloadedFileID)
    case readFailed(OffloadedFileID, errno: Int32)
    case shrank(OffloadedFileID, expected: Int, got: Int)

    /// The protocol's code for an ERROR answering this.
    public var code: CommandErrorCode {
        switch self {
        case .notFound, .invalidPath: .fileNotFound
        case .permissionDenied, .notARegularFile: .permissionDenied
        case .outsideRoot: .pathOutsideRoot
        case .tooManyFiles, .outOfDescriptors: .tooManyFiles
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
        case .outOfDescriptors(let path): "out of file descriptors opening \(path)"
        case .unknownFile(let file): "unknown \(file) (never opened, or closed)"
        case .readFailed(let file, let code): "read of \(file) failed: \(ErrnoName.describe(code))"
        case .shrank(let file, let expected, let got): "\(file) shrank under a read: wanted \(expected) bytes, got \(got)"
        }
    }
}

/// Names for the errno values reads meet, without the C library (this module makes no system calls).
public enum ErrnoName {
    public static func describe(_ code: Int32) -> String {
        let name: String? = switch code {
        case 1: "EPERM"
        case 2: "ENOENT"
        case 4: "EINTR"
        case 5: "EIO (input/output error)"
        case 9: "EBADF"
        case 11: "EAGAIN"
        case 12: "ENOMEM"
        case 13: "EACCES"
        case 14: "EFAULT"
        case 21: "EISDIR"
        case 22: "EINVAL (misaligned direct I/O?)"
        case 24: "EMFILE"
        case 28: "ENOSPC"
        case 61: "ENODATA"
        case 75: "EOVERFLOW"
        case 95: "EOPNOTSUPP"
        case 125: "ECANCELED"
        default: nil
        }
        return name.map { "\($0), errno \(code)" } ?? "errno \(code)"
    }
}
