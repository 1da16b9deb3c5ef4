/// Why a message or one of its commands could not be decoded.
///
/// Message-level errors drop the whole message. `unknownKind`, `badLength` and `inconsistent` drop only
/// that command: its length field was sane, so the reader goes on with the next one. `truncatedCommand`
/// drops the command and everything after it, since its length cannot be trusted to find the next.
public enum CommandDecodeError: Error, Hashable, Sendable, CustomStringConvertible {
    case truncatedMessage(available: Int)
    case badMagic(UInt32)
    case unsupportedVersion(UInt16)
    case oversizedMessage(length: Int, limit: Int)
    case badMessageLength(declared: Int, available: Int)
    case truncatedCommand(index: Int)
    case unknownKind(rawKind: UInt8, flow: FlowID, index: Int)
    case badLength(kind: CommandKind, flow: FlowID, length: Int, index: Int)
    case inconsistent(kind: CommandKind, flow: FlowID, field: String, index: Int)
    case countMismatch(declared: Int, found: Int)

    /// Whether the reader can go on with the next command after this error.
    public var isRecoverable: Bool {
        switch self {
        case .unknownKind, .badLength, .inconsistent: true
        default: false
        }
    }

    /// The code, failed kind and flow to put in the `ERROR` that answers this.
    public var errorReportFields: (code: CommandErrorCode, failedKind: UInt8, flow: FlowID) {
        switch self {
        case .unsupportedVersion: (.unsupportedVersion, 0, .none)
        case .unknownKind(let kind, let flow, _): (.unknownCommand, kind, flow)
        case .badLength(let kind, let flow, _, _), .inconsistent(let kind, let flow, _, _):
            (.malformedCommand, kind.rawValue, flow)
        default: (.malformedCommand, 0, .none)
        }
    }

    public var description: String {
        switch self {
        case .truncatedMessage(let available):
            "message truncated: \(available) bytes is less than a message header"
        case .badMagic(let magic):
            "not a command message (magic 0x\(String(magic, radix: 16)))"
        case .unsupportedVersion(let version):
            "command protocol version \(version) is not supported (this side speaks \(CommandProtocol.version))"
        case .oversizedMessage(let length, let limit):
            "message of \(length) bytes exceeds the limit of \(limit)"
        case .badMessageLength(let declared, let available):
            "message declares \(declared) bytes but \(available) are present"
        case .truncatedCommand(let index):
            "command #\(index) runs past the end of its message; it and the rest were dropped"
        case .unknownKind(let kind, let flow, let index):
            "command #\(index) has unknown kind \(kind) (\(flow)); dropped"
        case .badLength(let kind, let flow, let length, let index):
            "command #\(index) \(kind) (\(flow)) has impossible length \(length); dropped"
        case .inconsistent(let kind, let flow, let field, let index):
            "command #\(index) \(kind) (\(flow)) has an invalid \(field); dropped"
        case .countMismatch(let declared, let found):
            "message declares \(declared) commands but holds \(found)"
        }
    }
}
