import Glibc
import IOTCPEmbedded

/// A failure on its way to a C caller: the errno it sets and the text `iotcp_last_error` gives.
struct CFailure: Error {
    let code: Int32
    let text: String

    init(_ code: Int32, _ text: String) {
        self.code = code
        self.text = text
    }

    init(_ error: IOTCPError) {
        self.init(Self.errno(for: error), error.description)
    }

    static func errno(for error: IOTCPError) -> Int32 {
        switch error {
        case .wouldBlock: EAGAIN
        case .tcp(let tcp):
            switch tcp {
            case .connectionReset: ECONNRESET
            case .connectionRefused: ECONNREFUSED
            case .timedOut: ETIMEDOUT
            case .nicFailed: EIO
            case .invalidHandle: EBADF
            case .notConnected: ENOTCONN
            case .alreadyClosing: EPIPE
            case .portInUse: EADDRINUSE
            case .noFreePort: EADDRNOTAVAIL
            case .tooManyConnections: EMFILE
            case .invalidArgument: EINVAL
            case .cannotSplice: EOPNOTSUPP
            }
        case .badSocket, .badFile: EBADF
        case .invalidPath: EINVAL
        case .nic(let code, _): errno(for: code)
        case .channel: EIO
        case .cancelled: ECANCELED
        }
    }

    static func errno(for code: CommandErrorCode) -> Int32 {
        switch code {
        case .fileNotFound: ENOENT
        case .permissionDenied, .pathOutsideRoot: EACCES
        case .tooManyFiles, .tooManyFlows: EMFILE
        case .readFailed, .fileShrank: EIO
        case .unknownFile: EBADF
        default: EIO
        }
    }
}

/// The calling thread's last failure text, for `iotcp_last_error`.
enum LastError {
    nonisolated(unsafe) private static var key: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key) { free($0) }
        return key
    }()

    static func set(_ text: String) {
        let previous = pthread_getspecific(key)
        pthread_setspecific(key, strdup(text))
        free(previous)
    }

    static var text: UnsafePointer<CChar>? {
        pthread_getspecific(key).map { UnsafePointer($0.assumingMemoryBound(to: CChar.self)) }
    }
}

/// Runs a C entry point's body: its failure sets errno and the thread's last error, and returns `failed`.
@inline(__always)
func answer<Result>(_ failed: Result, _ body: () throws(CFailure) -> Result) -> Result {
    do throws(CFailure) {
        return try body()
    } catch {
        LastError.set(error.text)
        Glibc.errno = error.code
        return failed
    }
}

/// The same for calls into the stack, whose errors are `IOTCPError`.
@inline(__always)
func stackCall<Result>(_ body: () throws(IOTCPError) -> Result) throws(CFailure) -> Result {
    do throws(IOTCPError) { return try body() } catch { throw CFailure(error) }
}
