internal import CIOTCPSystem
import Glibc
@_exported import SystemPackage

/// A system call that failed: its name (with what it was called on) and the error, as swift-system's `Errno`.
public struct SystemCallError: Error, Hashable, Sendable, CustomStringConvertible {
    public let operation: String
    public let errno: Errno

    public init(_ operation: String, errno: Errno) {
        self.operation = operation
        self.errno = errno
    }

    /// The failure the calling thread's `errno` describes.
    public init(_ operation: String) {
        self.init(operation, errno: Errno(rawValue: Glibc.errno))
    }

    public var description: String { "\(operation): \(errno)" }
}

/// iotcp's one way to make a system call that reports failure as -1 with `errno`: retried while it is
/// interrupted (EINTR), and any other failure thrown with the call's name.
@inline(__always)
public func systemCall<Result: FixedWidthInteger>(
    _ operation: @autoclosure () -> String, _ body: () -> Result
) throws(SystemCallError) -> Result {
    while true {
        let result = body()
        if result != -1 { return result }
        let code = Glibc.errno
        if code == EINTR { continue }
        throw SystemCallError(operation(), errno: Errno(rawValue: code))
    }
}

/// The same retry for a call whose failures the caller tells apart itself (EAGAIN as "not now", say): the
/// result as the call returned it, with `errno` still set for the caller when it is -1.
@inline(__always)
public func retryingOnInterrupt<Result: FixedWidthInteger>(_ body: () -> Result) -> Result {
    while true {
        let result = body()
        if result != -1 || Glibc.errno != EINTR { return result }
    }
}

/// Nanoseconds on iotcp's one monotonic clock (CLOCK_MONOTONIC): the host stack's `monotonicNow`, channel
/// deadlines and the NIC's loop all read it.
@inline(__always)
public func monotonicNanoseconds() -> Int64 { iotcp_monotonic_nanoseconds() }
