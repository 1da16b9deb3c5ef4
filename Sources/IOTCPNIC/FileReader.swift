internal import CIOTCPURing
import Glibc

/// How the file table gets file bytes off the disk. `PreadReader` is the portable default; `URingReader`
/// submits the same reads to io_uring (liburing, wrapped in the C target CIOTCPURing). Either way a call
/// reads one range of one file; the table loops over short reads and calls a read of zero bytes before
/// the end a shrunken file.
public protocol FileReader: AnyObject {
    /// For logs and counters: "pread", "io_uring".
    var name: String { get }
    /// Reads up to `buffer.count` bytes of `descriptor` at `offset` into `buffer`: how many, 0 at the end.
    func read(descriptor: Int32, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(FileReadError) -> Int
}

/// `pread(2)`, one system call per range.
public final class PreadReader: FileReader {
    public init() {}
    public var name: String { "pread" }

    public func read(descriptor: Int32, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(FileReadError) -> Int {
        let count = pread(descriptor, buffer.baseAddress, buffer.count, off_t(offset))
        if count < 0 { throw FileReadError(errno: errno) }
        return count
    }
}

/// A failed read: the `errno` value (io_uring reports the same codes, negated, in its completions). Not
/// swift-system's `Errno` because a reader built on a C library cannot share a module with swift-system's
/// C headers (both define the kernel's io_uring structures).
public struct FileReadError: Error, Hashable, Sendable {
    public let errno: Int32
    public init(errno: Int32) { self.errno = errno }
}

/// Reads through io_uring (liburing): each range is one read submitted to the ring and reaped from its
/// completion queue. The NIC thread is the ring's only user; a read always completes before `read`
/// returns, so the caller's buffer is never written after it.
public final class URingReader: FileReader {
    private let ring: OpaquePointer

    /// Why the kernel refused a ring (old kernels, `kernel.io_uring_disabled`, seccomp), as an errno value;
    /// callers fall back to `PreadReader`.
    public init(entries: UInt32 = 64) throws(FileReadError) {
        var error: Int32 = 0
        guard let ring = iotcp_uring_create(entries, &error) else { throw FileReadError(errno: error) }
        self.ring = ring
    }

    deinit { iotcp_uring_destroy(ring) }

    public var name: String { "io_uring" }

    public func read(descriptor: Int32, offset: UInt64, into buffer: UnsafeMutableRawBufferPointer) throws(FileReadError) -> Int {
        let result = iotcp_uring_read(ring, descriptor, buffer.baseAddress, UInt32(clamping: buffer.count), offset)
        if result < 0 { throw FileReadError(errno: Int32(-result)) }
        return result
    }
}
