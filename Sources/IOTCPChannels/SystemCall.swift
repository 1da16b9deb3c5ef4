import CIOTCPSystem
import Glibc
import IOTCPCommon
import SystemPackage

/// Runs a system call that reports failure as -1 with `errno`, retrying on EINTR, and turns a failure
/// into a `ChannelError` naming the operation and the error in words.
@inline(__always)
func systemCall<Result: FixedWidthInteger>(_ operation: @autoclosure () -> String, _ body: () -> Result) throws(ChannelError) -> Result {
    while true {
        let result = body()
        if result != -1 { return result }
        let code = errno
        if code == EINTR { continue }
        throw ChannelError.system(operation: operation(), errno: code, message: Errno(rawValue: code).description)
    }
}

/// Nanoseconds on iotcp's one monotonic clock (channel deadlines; IOTCPRDMA's too).
@inline(__always)
public func monotonicNanoseconds() -> Int64 { iotcp_monotonic_nanoseconds() }
