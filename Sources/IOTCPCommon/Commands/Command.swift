/// `SEND`: put `length` bytes of a file, from `offset`, on the wire as sequence numbers
/// `[sequence, sequence + length)`, in segments shaped by `template`.
public struct SendRange: Hashable, Sendable {
    public var sequence: SequenceNumber
    public var length: UInt32
    public var file: OffloadedFileID
    public var offset: UInt64
    public var template: SegmentTemplate

    /// The most bytes a SEND's head may carry (and it must be fewer than the template's MSS).
    public static let maximumHeadLength = 4096

    public init(sequence: SequenceNumber, length: UInt32, file: OffloadedFileID, offset: UInt64, template: SegmentTemplate) {
        self.sequence = sequence
        self.length = length
        self.file = file
        self.offset = offset
        self.template = template
    }
}

/// `ERROR`: a command failed. `text` is UTF-8 for people; programs act on `code`.
public struct ErrorReport {
    public var code: CommandErrorCode
    /// The kind of the command that failed, raw, since it may be one the sender did not know.
    public var failedKind: UInt8
    /// The request id, file id or sequence number the failure concerns, by kind.
    public var reference: UInt64
    public var text: UnsafeRawBufferPointer

    public init(code: CommandErrorCode, failedKind: UInt8, reference: UInt64, text: UnsafeRawBufferPointer) {
        self.code = code
        self.failedKind = failedKind
        self.reference = reference
        self.text = text
    }

    public var textString: String { String(decoding: text, as: UTF8.self) }
}

/// `DEVICE`: the storage device under an opened file, when the NIC can name it (an NVMe namespace, through
/// libnvme). `model` and `serial` are ASCII as the controller reports them (at most 40 and 20 bytes, padded
/// with spaces on the wire); like an error's text they point into the message or the caller's memory.
public struct DeviceReport {
    public var namespace: UInt32
    public var model: UnsafeRawBufferPointer
    public var serial: UnsafeRawBufferPointer

    public static let modelLength = 40
    public static let serialLength = 20

    public init(namespace: UInt32, model: UnsafeRawBufferPointer, serial: UnsafeRawBufferPointer) {
        self.namespace = namespace
        self.model = model
        self.serial = serial
    }

    public var modelString: String { Self.trimmed(model) }
    public var serialString: String { Self.trimmed(serial) }

    static func trimmed(_ bytes: UnsafeRawBufferPointer) -> String {
        var end = bytes.count
        while end > 0 && (bytes[end - 1] == 0x20 || bytes[end - 1] == 0) { end -= 1 }
        return String(decoding: UnsafeRawBufferPointer(rebasing: bytes[0..<end]), as: UTF8.self)
    }
}

/// One command, as decoded from a message or about to be encoded into one.
///
/// Cases with byte payloads (`open`'s path, packets, error text) point into the message they were read
/// from, or into memory the caller owns when encoding: such a command is valid only while that memory
/// is. That is the price of decoding without a copy or an allocation; copy out what must outlive the
/// message.
public enum Command {
    case hello(Hello)
    case keepalive(nonce: UInt64)
    case error(FlowID, ErrorReport)
    case open(requestID: UInt32, flags: UInt32, path: UnsafeRawBufferPointer)
    case opened(requestID: UInt32, file: OffloadedFileID, size: UInt64)
    case fstat(requestID: UInt32, file: OffloadedFileID)
    case stat(requestID: UInt32, file: OffloadedFileID, status: OffloadedFileStatus)
    case closeFile(OffloadedFileID)
    case flowOpen(FlowID, FlowEndpoints)
    case flowClose(FlowID, reason: UInt32)
    case send(FlowID, SendRange)
    /// SEND with a head: `head` (bytes the host holds, at most `SendRange.maximumHeadLength` and fewer than
    /// the template's MSS) occupies `[range.sequence, range.sequence + head.count)` and leaves in the first
    /// segment, the file range's bytes right after it. The NIC never sends the head again: the host
    /// retransmits it itself.
    case sendWithHead(FlowID, SendRange, head: UnsafeRawBufferPointer)
    case retransmit(FlowID, sequence: SequenceNumber, length: UInt32, template: SegmentTemplate)
    /// ACKD: the peer acknowledged everything before `through`; the NIC may free it.
    case acknowledged(FlowID, through: SequenceNumber)
    /// ECHO: a SEND's data up to `sequenceEnd` is on the wire; it waited `nicDelayNanoseconds` on the NIC.
    case echo(FlowID, sequenceEnd: SequenceNumber, nicDelayNanoseconds: UInt64)
    /// A received IPv4 packet (from the IP header on) for the host.
    case packetIn(FlowID, packet: UnsafeRawBufferPointer)
    /// An IPv4 packet the host built, for the NIC to frame and transmit.
    case packetOut(FlowID, packet: UnsafeRawBufferPointer)
    /// Sent between OPENED and STAT when the opened file's device is known.
    case device(requestID: UInt32, file: OffloadedFileID, DeviceReport)
    /// TLS_KEYS: the flow's record keys for the NIC (kept until FLOW_CLOSE; never logged).
    case tlsKeys(FlowID, TLSKeys)
    /// SEND_RECORDS: part of a run of TLS records, sealed on the NIC from a file range.
    case sendRecords(FlowID, RecordSendRange)
    /// LISTEN: answer SYNs to a port on the NIC, with SYN cookies (or stop).
    case listen(ListenerOptions)
    /// ESTABLISHED: a handshake the NIC completed, and the client's ACK that completed it (IPv4 on).
    case established(HandshakeParameters, packet: UnsafeRawBufferPointer)
    /// TEARDOWN: the connection's ending is the NIC's from now; the host has forgotten it.
    case teardown(FlowID, TeardownParameters)
    /// TEARDOWN with data: the ending handed over while the data before the FIN is unacknowledged from
    /// `unacknowledged` on. `hostBytes` are the bytes there that the host sent itself (a response's head); the
    /// file bytes after them went by SEND and are the NIC's already. The NIC retransmits all of it, the FIN
    /// after it, and answers FLOW_RELEASED once it no longer needs the flow's id.
    case teardownWithData(FlowID, TeardownParameters, unacknowledged: SequenceNumber, hostBytes: UnsafeRawBufferPointer)
    /// FLOW_RELEASED: the NIC is done with a flow handed over with data; the host may reuse its id.
    case flowReleased(FlowID, reason: FlowReleaseReason)
    /// REDELIVER: a received IPv4 packet the NIC forwarded for a connection the host had just handed over
    /// (TEARDOWN): the NIC, which has it now, takes the packet as if from the wire.
    case redeliver(packet: UnsafeRawBufferPointer)
    /// SPLICE: two connections joined on the NIC (the flow is the client's); `head` goes to the backend first.
    /// Boxed: its 136 bytes of parameters (three 16-byte addresses since SPLICE6) made every command 160
    /// bytes, and every command moved through reader, sender and handlers paid for it in copies (a tenth of
    /// the 4 KiB rate); one allocation per splice is cheap beside that.
    indirect case splice(FlowID, SpliceParameters, head: UnsafeRawBufferPointer)
    /// SPLICE_ENDED: the NIC has forgotten a splice (the flow is the client's).
    case spliceEnded(FlowID, SpliceReport)

    @inlinable
    public var kind: CommandKind {
        switch self {
        case .hello: .hello
        case .keepalive: .keepalive
        case .error: .error
        case .open: .open
        case .opened: .opened
        case .fstat: .fstat
        case .stat: .stat
        case .closeFile: .closeFile
        case .flowOpen(_, let endpoints): endpoints.isIPv4 ? .flowOpen : .flowOpenIPv6
        case .flowClose: .flowClose
        case .send, .sendWithHead: .send
        case .retransmit: .retransmit
        case .acknowledged: .acknowledged
        case .echo: .echo
        case .packetIn: .packetIn
        case .packetOut: .packetOut
        case .device: .device
        case .tlsKeys: .tlsKeys
        case .sendRecords: .sendRecords
        case .listen: .listen
        case .established: .established
        case .teardown, .teardownWithData: .teardown
        case .flowReleased: .flowReleased
        case .redeliver: .redeliver
        case .splice(_, let parameters, _): parameters.isIPv4 ? .splice : .spliceIPv6
        case .spliceEnded(_, let report): report.backendAddress.isIPv4 ? .spliceEnded : .spliceEndedIPv6
        }
    }

    @inlinable
    public var flow: FlowID {
        switch self {
        case .error(let flow, _), .flowOpen(let flow, _), .flowClose(let flow, _), .send(let flow, _), .sendWithHead(let flow, _, _),
             .retransmit(let flow, _, _, _), .acknowledged(let flow, _), .echo(let flow, _, _),
             .packetIn(let flow, _), .packetOut(let flow, _), .tlsKeys(let flow, _), .sendRecords(let flow, _),
             .teardown(let flow, _), .teardownWithData(let flow, _, _, _), .flowReleased(let flow, _), .splice(let flow, _, _),
             .spliceEnded(let flow, _):
            flow
        default:
            .none
        }
    }

    /// Bytes of the variable part after the fixed body.
    @inlinable
    var variableBodyLength: Int {
        switch self {
        case .error(_, let report): Swift.min(report.text.count, CommandProtocol.maxErrorTextLength)
        case .open(_, _, let path): path.count
        case .packetIn(_, let packet), .packetOut(_, let packet), .established(_, let packet), .redeliver(let packet): packet.count
        case .tlsKeys(_, let keys): keys.key.count + keys.iv.count
        case .splice(_, _, let head), .sendWithHead(_, _, let head): head.count
        case .teardownWithData(_, _, _, let hostBytes): 4 + hostBytes.count
        default: 0
        }
    }

    /// Bytes this command takes in a message, header included.
    @inlinable
    public var encodedLength: Int {
        CommandProtocol.commandHeaderLength + kind.fixedBodyLength + variableBodyLength
    }
}
