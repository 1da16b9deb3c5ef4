/// Decodes the commands of one message without copying or allocating.
///
/// `init` checks the message header; `next()` returns the commands in order and nil at the end. A
/// malformed command throws; if the error `isRecoverable`, the next call goes on after it, otherwise the
/// reader is finished. Nothing in any input makes it trap or read outside the message.
public struct CommandReader {
    public let header: MessageHeader
    @usableFromInline let message: UnsafeRawBufferPointer
    @usableFromInline var offset: Int
    @usableFromInline var index: Int
    @usableFromInline var finished: Bool

    @inlinable
    public init(message bytes: UnsafeRawBufferPointer, maxMessageBytes: Int = Int(UInt32.max)) throws(CommandDecodeError) {
        header = try MessageHeader(parsing: bytes, maxMessageBytes: maxMessageBytes)
        message = UnsafeRawBufferPointer(rebasing: bytes[0..<Int(header.length)])
        offset = CommandProtocol.messageHeaderLength
        index = 0
        finished = false
    }

    @inlinable
    public mutating func next() throws(CommandDecodeError) -> Command? {
        guard !finished else { return nil }
        let remaining = message.count - offset
        if remaining == 0 {
            finished = true
            guard index == Int(header.commandCount) else {
                throw .countMismatch(declared: Int(header.commandCount), found: index)
            }
            return nil
        }
        let commandIndex = index
        guard remaining >= CommandProtocol.commandHeaderLength else {
            finished = true
            throw .truncatedCommand(index: commandIndex)
        }
        let rawKind = message[offset]
        let length = Int(message.littleEndian(UInt32.self, at: offset + 4))
        let flow = FlowID(message.littleEndian(UInt32.self, at: offset + 8))
        guard length >= CommandProtocol.commandHeaderLength, length <= remaining else {
            finished = true
            throw .truncatedCommand(index: commandIndex)
        }
        let start = offset + CommandProtocol.commandHeaderLength
        let body = UnsafeRawBufferPointer(rebasing: message[start..<(offset + length)])
        // From here the command's extent is known, so whatever is wrong with it, the next one can be read.
        offset += length
        index += 1
        guard let kind = CommandKind(rawValue: rawKind) else {
            throw .unknownKind(rawKind: rawKind, flow: flow, index: commandIndex)
        }
        let fixed = kind.fixedBodyLength
        guard kind.hasVariableBody ? body.count >= fixed : body.count == fixed else {
            throw .badLength(kind: kind, flow: flow, length: length, index: commandIndex)
        }
        if kind == .tlsKeys, TLSRecordVersion(rawValue: body.littleEndian(UInt16.self, at: 0)) == nil {
            throw .inconsistent(kind: kind, flow: flow, field: "version", index: commandIndex)
        }
        if kind == .tlsKeys, Int(body[2]) + Int(body[3]) != body.count - 4 {
            throw .inconsistent(kind: kind, flow: flow, field: "key and iv lengths", index: commandIndex)
        }
        if kind == .teardown, body.count > kind.fixedBodyLength && body.count < kind.fixedBodyLength + 4 {
            throw .badLength(kind: kind, flow: flow, length: length, index: commandIndex)
        }
        if kind == .flowReleased, FlowReleaseReason(rawValue: body[0]) == nil {
            throw .inconsistent(kind: kind, flow: flow, field: "reason", index: commandIndex)
        }
        if kind == .teardown, TeardownState(rawValue: body[10] >> 4) == nil {
            throw .inconsistent(kind: kind, flow: flow, field: "state", index: commandIndex)
        }
        if kind == .spliceEnded || kind == .spliceEndedIPv6, SpliceEndReason(rawValue: body[4]) == nil {
            throw .inconsistent(kind: kind, flow: flow, field: "reason", index: commandIndex)
        }
        if kind == .hello, StackRole(rawValue: body[2]) == nil {
            throw .inconsistent(kind: kind, flow: flow, field: "role", index: commandIndex)
        }
        let command = Self.decodeBody(kind: kind, flow: flow, body: body)
        if let field = command.validationFailure {
            throw .inconsistent(kind: kind, flow: flow, field: field, index: commandIndex)
        }
        if kind == .flowOpenIPv6, case .flowOpen(_, let endpoints) = command, endpoints.isIPv4 {
            // Two IPv4-mapped addresses: an IPv4 flow has its own command, and one flow one encoding.
            throw .inconsistent(kind: kind, flow: flow, field: "address families", index: commandIndex)
        }
        if kind == .spliceIPv6, case .splice(_, let parameters, _) = command, parameters.isIPv4 {
            throw .inconsistent(kind: kind, flow: flow, field: "address families", index: commandIndex)
        }
        if kind == .spliceEndedIPv6, case .spliceEnded(_, let report) = command, report.backendAddress.isIPv4 {
            throw .inconsistent(kind: kind, flow: flow, field: "address families", index: commandIndex)
        }
        return command
    }

    @inlinable
    static func readTemplate(_ body: UnsafeRawBufferPointer, at offset: Int) -> SegmentTemplate {
        let hasTimestamps = body[offset + 7] & SegmentTemplate.hasTimestampsBit != 0
        return SegmentTemplate(
            acknowledgmentNumber: SequenceNumber(body.littleEndian(UInt32.self, at: offset)),
            window: body.littleEndian(UInt16.self, at: offset + 4),
            lastSegmentFlags: TCPFlags(rawValue: body[offset + 6]),
            maximumSegmentSize: body.littleEndian(UInt16.self, at: offset + 8),
            timestamps: hasTimestamps
                ? TCPTimestamps(
                    value: body.littleEndian(UInt32.self, at: offset + 12),
                    echoReply: body.littleEndian(UInt32.self, at: offset + 16))
                : nil)
    }

    @inlinable
    static func readSpliceConnection(_ body: UnsafeRawBufferPointer, at start: Int, ipv6: Bool) -> SpliceConnectionState {
        let offset = ipv6 ? start + 12 : start
        let flags = body[offset + 30]
        return SpliceConnectionState(
            remoteAddress: readAddress(body, at: start, ipv6: ipv6),
            remotePort: body.littleEndian(UInt16.self, at: offset + 4), localPort: body.littleEndian(UInt16.self, at: offset + 6),
            sendNext: SequenceNumber(body.littleEndian(UInt32.self, at: offset + 8)),
            receiveNext: SequenceNumber(body.littleEndian(UInt32.self, at: offset + 12)),
            timestamps: flags & SpliceConnectionState.timestampsBit != 0,
            timestampValue: body.littleEndian(UInt32.self, at: offset + 16), timestampEcho: body.littleEndian(UInt32.self, at: offset + 20),
            window: body.littleEndian(UInt16.self, at: offset + 24), localWindowShift: body[offset + 29],
            peerWindowShift: body[offset + 28], peerSegmentSize: body.littleEndian(UInt16.self, at: offset + 26),
            selectiveAcknowledgments: flags & SpliceConnectionState.selectiveAcknowledgmentsBit != 0)
    }

    /// An address as the splice commands carry it (see `CommandWriter.writeAddress`).
    @inlinable
    static func readAddress(_ body: UnsafeRawBufferPointer, at offset: Int, ipv6: Bool) -> IPAddress {
        ipv6 ? IPAddress(IPv6Address.load(from: body, at: offset)) : IPAddress(IPv4Address(rawValue: body.littleEndian(UInt32.self, at: offset)))
    }

    /// Decodes a body whose length has been checked against the kind.
    @inlinable
    static func decodeBody(kind: CommandKind, flow: FlowID, body: UnsafeRawBufferPointer) -> Command {
        func u16(_ at: Int) -> UInt16 { body.littleEndian(UInt16.self, at: at) }
        func u32(_ at: Int) -> UInt32 { body.littleEndian(UInt32.self, at: at) }
        func u64(_ at: Int) -> UInt64 { body.littleEndian(UInt64.self, at: at) }
        func rest(_ from: Int) -> UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: body[from...]) }
        switch kind {
        case .hello:
            // `next()` has rejected any other role byte.
            return .hello(Hello(
                protocolVersion: u16(0), role: StackRole(rawValue: body[2]) ?? .host,
                maxMessageBytes: u32(4), maxFlows: u32(8), maxOpenFiles: u32(12), features: u64(16)))
        case .keepalive:
            return .keepalive(nonce: u64(0))
        case .error:
            return .error(flow, ErrorReport(
                code: CommandErrorCode(rawValue: u16(0)), failedKind: body[2], reference: u64(4), text: rest(12)))
        case .open:
            return .open(requestID: u32(0), flags: u32(4), path: rest(8))
        case .opened:
            return .opened(requestID: u32(0), file: OffloadedFileID(rawValue: u64(4)), size: u64(12))
        case .fstat:
            return .fstat(requestID: u32(0), file: OffloadedFileID(rawValue: u64(4)))
        case .stat:
            return .stat(requestID: u32(0), file: OffloadedFileID(rawValue: u64(4)), status: OffloadedFileStatus(
                size: u64(12), modificationSeconds: Int64(bitPattern: u64(20)), modificationNanoseconds: u32(28),
                mode: u32(32), inode: u64(36), device: u64(44)))
        case .closeFile:
            return .closeFile(OffloadedFileID(rawValue: u64(0)))
        case .flowOpen:
            return .flowOpen(flow, FlowEndpoints(
                localAddress: IPv4Address(rawValue: u32(0)), remoteAddress: IPv4Address(rawValue: u32(4)),
                localPort: u16(8), remotePort: u16(10), remoteHardwareAddress: MACAddress(rawValue: u64(12)),
                maximumSegmentSize: u16(20)))
        case .flowOpenIPv6:
            return .flowOpen(flow, FlowEndpoints(
                localAddress: IPAddress(IPv6Address.load(from: body, at: 0)), remoteAddress: IPAddress(IPv6Address.load(from: body, at: 16)),
                localPort: u16(32), remotePort: u16(34), remoteHardwareAddress: MACAddress(rawValue: u64(36)),
                maximumSegmentSize: u16(44)))
        case .flowClose:
            return .flowClose(flow, reason: u32(0))
        case .send:
            let range = SendRange(
                sequence: SequenceNumber(u32(0)), length: u32(4), file: OffloadedFileID(rawValue: u64(8)),
                offset: u64(16), template: readTemplate(body, at: 24))
            return body.count > kind.fixedBodyLength ? .sendWithHead(flow, range, head: rest(kind.fixedBodyLength)) : .send(flow, range)
        case .retransmit:
            return .retransmit(flow, sequence: SequenceNumber(u32(0)), length: u32(4), template: readTemplate(body, at: 8))
        case .acknowledged:
            return .acknowledged(flow, through: SequenceNumber(u32(0)))
        case .echo:
            return .echo(flow, sequenceEnd: SequenceNumber(u32(0)), nicDelayNanoseconds: u64(8))
        case .packetIn:
            return .packetIn(flow, packet: rest(0))
        case .packetOut:
            return .packetOut(flow, packet: rest(0))
        case .device:
            return .device(requestID: u32(0), file: OffloadedFileID(rawValue: u64(4)), DeviceReport(
                namespace: u32(12), model: UnsafeRawBufferPointer(rebasing: body[16..<56]),
                serial: UnsafeRawBufferPointer(rebasing: body[56..<76])))
        case .tlsKeys:
            // Lengths are checked by `validationFailure`; here they are only kept inside the body.
            let keyLength = min(Int(body[2]), body.count - 4)
            let ivLength = min(Int(body[3]), body.count - 4 - keyLength)
            return .tlsKeys(flow, TLSKeys(
                version: TLSRecordVersion(rawValue: u16(0)) ?? .tls13,
                key: UnsafeRawBufferPointer(rebasing: body[4..<(4 + keyLength)]),
                iv: UnsafeRawBufferPointer(rebasing: body[(4 + keyLength)..<(4 + keyLength + ivLength)])))
        case .sendRecords:
            return .sendRecords(flow, RecordSendRange(
                sequence: SequenceNumber(u32(0)), length: u32(4), runStart: SequenceNumber(u32(8)), recordPlaintext: u16(12),
                file: OffloadedFileID(rawValue: u64(16)), offset: u64(24), runPlaintext: u64(32), firstRecord: u64(40),
                template: readTemplate(body, at: 48)))
        case .listen:
            return .listen(ListenerOptions(
                port: u16(0), maximumSegmentSize: u16(2), window: u16(4), windowShift: body[6],
                timestamps: body[7] & ListenerOptions.timestampsBit != 0,
                selectiveAcknowledgments: body[7] & ListenerOptions.selectiveAcknowledgmentsBit != 0,
                isListening: body[7] & ListenerOptions.listeningBit != 0,
                deferAccept: body[7] & ListenerOptions.deferAcceptBit != 0))
        case .established:
            return .established(HandshakeParameters(
                localInitialSequence: SequenceNumber(u32(0)), peerInitialSequence: SequenceNumber(u32(4)), peerSegmentSize: u16(8),
                peerWindowShift: body[10] == HandshakeParameters.noWindowShift ? nil : body[10],
                selectiveAcknowledgments: body[11] & HandshakeParameters.selectiveAcknowledgmentsBit != 0,
                timestamps: body[11] & HandshakeParameters.timestampsBit != 0, synAckTimestamp: u32(12),
                handshakeRoundTripMicroseconds: u32(16)), packet: rest(20))
        case .teardown:
            let parameters = TeardownParameters(
                finSequence: SequenceNumber(u32(0)), receiveNext: SequenceNumber(u32(4)), window: u16(8), windowShift: body[11],
                state: TeardownState(rawValue: body[10] >> 4) ?? .finWait1, timestamps: body[10] & TeardownParameters.timestampsBit != 0,
                timestampValue: u32(12), timestampEcho: u32(16), retransmissionTimeoutMilliseconds: u32(20), maximumRetransmissions: u16(32),
                timeWaitMilliseconds: u32(24), finWait2Milliseconds: u32(28))
            // `next()` has rejected a body between the two lengths.
            guard body.count >= kind.fixedBodyLength + 4 else { return .teardown(flow, parameters) }
            return .teardownWithData(flow, parameters, unacknowledged: SequenceNumber(u32(kind.fixedBodyLength)),
                                     hostBytes: rest(kind.fixedBodyLength + 4))
        case .flowReleased:
            return .flowReleased(flow, reason: FlowReleaseReason(rawValue: body[0]) ?? .reset)
        case .redeliver:
            return .redeliver(packet: rest(0))
        case .splice, .spliceIPv6:
            let ipv6 = kind == .spliceIPv6
            let side = SpliceConnectionState.encodedLength(ipv6: ipv6)
            let timers = 2 * side + (ipv6 ? 20 : 8)
            return .splice(flow, SpliceParameters(
                client: readSpliceConnection(body, at: 0, ipv6: ipv6), backend: readSpliceConnection(body, at: side, ipv6: ipv6),
                backendFlow: FlowID(u32(2 * side)), localAddress: readAddress(body, at: 2 * side + 4, ipv6: ipv6),
                retransmissionTimeoutMilliseconds: u32(timers), maximumRetransmissions: u16(timers + 12),
                idleTimeoutMilliseconds: u32(timers + 4), lingerMilliseconds: u32(timers + 8),
                acknowledgeClient: u16(timers + 14) & SpliceParameters.acknowledgeClientBit != 0), head: rest(timers + 16))
        case .spliceEnded, .spliceEndedIPv6:
            let ipv6 = kind == .spliceEndedIPv6
            let ports = ipv6 ? 40 : 28
            return .spliceEnded(flow, SpliceReport(
                backendFlow: FlowID(u32(0)), reason: SpliceEndReason(rawValue: body[4]) ?? .reset, clientBytes: u64(8),
                backendBytes: u64(16), backendAddress: readAddress(body, at: 24, ipv6: ipv6), backendPort: u16(ports),
                backendLocalPort: u16(ports + 2), clientClosedFirst: body[5] & SpliceReport.clientClosedFirstBit != 0))
        }
    }
}

extension Command {
    /// The field that makes this command invalid, or nil when a peer may act on it.
    ///
    /// Both sides apply the same rules: the writer refuses to encode what the reader would reject.
    @inlinable
    static func sendValidationFailure(flow: FlowID, _ range: SendRange, headLength: Int) -> String? {
        if flow == .none { return "flow id" }
        if range.length == 0 { return "length" }
        if range.offset > UInt64.max - UInt64(range.length) { return "offset" }
        if range.template.maximumSegmentSize == 0 { return "maximum segment size" }
        if headLength > SendRange.maximumHeadLength || headLength >= Int(range.template.maximumSegmentSize) { return "head length" }
        return nil
    }

    @inlinable
    static func teardownValidationFailure(flow: FlowID, _ parameters: TeardownParameters) -> String? {
        if flow == .none { return "flow id" }
        if parameters.retransmissionTimeoutMilliseconds == 0 { return "retransmission timeout" }
        if parameters.windowShift > 14 { return "window shift" }
        return nil
    }

    public var validationFailure: String? {
        switch self {
        case .hello(let hello):
            if hello.maxMessageBytes < UInt32(CommandProtocol.messageHeaderLength) { return "maxMessageBytes" }
            return nil
        case .error(_, let report):
            return report.text.count > CommandProtocol.maxErrorTextLength ? "text length" : nil
        case .open(_, _, let path):
            if path.isEmpty || path.count > CommandProtocol.maxPathLength { return "path length" }
            if path.contains(0) { return "path (contains NUL)" }
            return nil
        case .flowOpen(let flow, let endpoints):
            if flow == .none { return "flow id" }
            if endpoints.maximumSegmentSize == 0 { return "maximum segment size" }
            // An IPv4-mapped address in FLOW_OPEN6 would alias an IPv4 flow; a pair of two families is nonsense.
            if endpoints.localAddress.isIPv4 != endpoints.remoteAddress.isIPv4 { return "address families" }
            return nil
        case .send(let flow, let range):
            return Self.sendValidationFailure(flow: flow, range, headLength: 0)
        case .sendWithHead(let flow, let range, let head):
            return Self.sendValidationFailure(flow: flow, range, headLength: head.count)
        case .retransmit(let flow, _, let length, let template):
            if flow == .none { return "flow id" }
            if length == 0 { return "length" }
            if template.maximumSegmentSize == 0 { return "maximum segment size" }
            return nil
        case .tlsKeys(let flow, let keys):
            if flow == .none { return "flow id" }
            if keys.key.count != 16 && keys.key.count != 32 { return "key length" }
            if keys.iv.count != TLSKeys.ivLength(keys.version) { return "iv length" }
            return nil
        case .sendRecords(let flow, let range):
            if flow == .none { return "flow id" }
            if range.length == 0 { return "length" }
            if range.recordPlaintext == 0 || Int(range.recordPlaintext) > RecordSendRange.maximumRecordPlaintext { return "record plaintext" }
            if range.runPlaintext == 0 || range.runPlaintext > UInt64(UInt32.max) { return "run plaintext" }
            if range.offset > UInt64.max - range.runPlaintext { return "offset" }
            // The range lies inside the run whatever the version's overhead (at most 29 bytes a record).
            if range.sequence < range.runStart { return "sequence" }
            let records = (range.runPlaintext + UInt64(range.recordPlaintext) - 1) / UInt64(range.recordPlaintext)
            // A run must fit half the sequence space, or sequence arithmetic could not place its records.
            if range.runPlaintext + records * 29 >= 1 << 31 { return "run plaintext" }
            if range.firstRecord > UInt64.max - records { return "first record" }
            if UInt64(range.sequence - range.runStart) + UInt64(range.length) > range.runPlaintext + records * 29 { return "length" }
            if range.template.maximumSegmentSize == 0 { return "maximum segment size" }
            return nil
        case .acknowledged(let flow, _), .echo(let flow, _, _), .flowClose(let flow, _):
            return flow == .none ? "flow id" : nil
        case .packetIn(_, let packet), .packetOut(_, let packet), .redeliver(let packet):
            if packet.isEmpty || packet.count > Int(UInt16.max) { return "packet length" }
            return nil
        case .listen(let options):
            if options.port == 0 { return "port" }
            if options.isListening && options.maximumSegmentSize == 0 { return "maximum segment size" }
            if options.windowShift > 14 { return "window shift" }
            return nil
        case .teardown(let flow, let parameters):
            return Self.teardownValidationFailure(flow: flow, parameters)
        case .teardownWithData(let flow, let parameters, let unacknowledged, let hostBytes):
            if let field = Self.teardownValidationFailure(flow: flow, parameters) { return field }
            // Our FIN cannot be acknowledged while data before it is not.
            if parameters.state == .finWait2 || parameters.state == .timeWait { return "state" }
            if unacknowledged >= parameters.finSequence || parameters.finSequence - unacknowledged > TeardownParameters.maximumDataLength {
                return "unacknowledged"
            }
            if hostBytes.count > SendRange.maximumHeadLength || unacknowledged + hostBytes.count > parameters.finSequence {
                return "host bytes"
            }
            return nil
        case .flowReleased(let flow, _):
            return flow == .none ? "flow id" : nil
        case .splice(let flow, let parameters, let head):
            if flow == .none || parameters.backendFlow == .none { return "flow id" }
            if head.count > SpliceParameters.maximumHeadLength { return "head length" }
            for side in [parameters.client, parameters.backend] {
                if side.peerSegmentSize == 0 { return "peer segment size" }
                if side.localWindowShift > 14 || side.peerWindowShift > 14 { return "window shift" }
                if side.remotePort == 0 || side.localPort == 0 { return "port" }
            }
            if parameters.client.timestamps != parameters.backend.timestamps { return "timestamps" }
            // Relayed by rewriting in place: one family throughout (an IPv4-mapped address in SPLICE6 too).
            if !parameters.familiesAgree { return "address families" }
            if parameters.retransmissionTimeoutMilliseconds == 0 { return "retransmission timeout" }
            if parameters.idleTimeoutMilliseconds == 0 { return "idle timeout" }
            return nil
        case .spliceEnded(let flow, let report):
            return flow == .none || report.backendFlow == .none ? "flow id" : nil
        case .established(let parameters, let packet):
            if packet.count < 40 || packet.count > Int(UInt16.max) { return "packet length" }
            if parameters.peerSegmentSize == 0 { return "peer segment size" }
            if let shift = parameters.peerWindowShift, shift > 14 { return "peer window shift" }
            return nil
        default:
            return nil
        }
    }
}
