import IOTCPCommon

/// Readiness of a socket, as interests to register and as what an event reports (epoll's flags).
public struct EventKinds: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    /// A read returns bytes or end of stream (EPOLLIN).
    public static let readable = EventKinds(rawValue: 1 << 0)
    /// A write or an offloaded write takes at least one byte (EPOLLOUT).
    public static let writable = EventKinds(rawValue: 1 << 1)
    /// A listener has connections waiting for `accept` (EPOLLIN on a listening socket).
    public static let acceptable = EventKinds(rawValue: 1 << 2)
    /// The peer closed its sending side (EPOLLRDHUP).
    public static let readClosed = EventKinds(rawValue: 1 << 3)
    /// The connection is over in both directions (EPOLLHUP). Always reported, registered or not.
    public static let hangUp = EventKinds(rawValue: 1 << 4)
    /// The connection failed: reset, timed out, or the NIC could not send its data (EPOLLERR). Always
    /// reported; `IOTCPStack.error(of:)` says what.
    public static let error = EventKinds(rawValue: 1 << 5)

    public static let always: EventKinds = [.hangUp, .error]

    public var description: String {
        let names: [(EventKinds, String)] = [(.readable, "readable"), (.writable, "writable"), (.acceptable, "acceptable"),
                                            (.readClosed, "readClosed"), (.hangUp, "hangUp"), (.error, "error")]
        return "[" + names.filter { contains($0.0) }.map(\.1).joined(separator: ", ") + "]"
    }
}

/// How a registration reports readiness.
public enum TriggerMode: Sendable {
    /// Reported by every `wait` while the condition holds (epoll's default): simplest to use correctly.
    case level
    /// Reported once each time the condition newly arises (EPOLLET): the application must drain the socket
    /// (read or write until would-block) before waiting again, or it may not hear of it again.
    case edge
}

/// What `IOTCPStack.wait` returns.
public enum StackEvent: Sendable {
    /// A registered socket is ready; `token` is the registration's.
    case socket(Socket, EventKinds, token: UInt64)
    /// An `offloadOpen` finished, with the file or the reason it failed. Always reported.
    case offloadOpened(OffloadRequest, Result<OffloadedFile, IOTCPError>, token: UInt64)
}

/// Why a call on an `IOTCPStack` failed.
public enum IOTCPError: Error, Hashable, Sendable, CustomStringConvertible {
    /// Nothing can be done now without blocking (EAGAIN): wait for the matching event.
    case wouldBlock
    /// The connection's own failure or a misuse of it.
    case tcp(TCPError)
    /// A socket that is closed, stale, or of the wrong kind for the call.
    case badSocket(String)
    /// A file id that is unknown, or already given to `offloadClose`.
    case badFile(OffloadedFileID)
    /// A path the API refuses before asking the NIC (empty, too long, a NUL byte).
    case invalidPath(String)
    /// The NIC refused or failed a command: its code and its explanation.
    case nic(code: CommandErrorCode, message: String)
    /// The channel to the NIC failed; the stack cannot continue.
    case channel(ChannelError)
    /// The task was cancelled while the call waited (`AsyncIOTCPStack`); nothing it was waiting for happened.
    case cancelled

    public var description: String {
        switch self {
        case .wouldBlock: "the operation would block"
        case .tcp(let error): error.description
        case .badSocket(let text): "bad socket: \(text)"
        case .badFile(let file): "unknown or closed offloaded \(file)"
        case .invalidPath(let text): "invalid path: \(text)"
        case .nic(let code, let message): "the NIC failed (\(code)): \(message)"
        case .channel(let error): "the channel to the NIC failed: \(error)"
        case .cancelled: "the task was cancelled while waiting"
        }
    }
}
