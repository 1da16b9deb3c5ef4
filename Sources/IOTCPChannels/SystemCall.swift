import IOTCPCommon
import IOTCPSystem

/// The channels' form of `IOTCPSystem.systemCall`: the same retry on EINTR, the failure as a `ChannelError`
/// naming the call and the error in words.
@inline(__always)
func systemCall<Result: FixedWidthInteger>(_ operation: @autoclosure () -> String, _ body: () -> Result) throws(ChannelError) -> Result {
    do throws(SystemCallError) {
        return try IOTCPSystem.systemCall(operation(), body)
    } catch {
        throw ChannelError(error)
    }
}

extension ChannelError {
    /// A failed system call, as a channel error.
    public init(_ failure: SystemCallError) {
        self = .system(operation: failure.operation, errno: failure.errno.rawValue, message: failure.errno.description)
    }
}
