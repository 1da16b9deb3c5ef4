/// Encodes commands into one message, in place, in memory the caller provides (a channel's slot).
///
/// It is non-copyable because it stands for that memory until the message is committed: two copies
/// could both write, or one could write after the message was handed to the peer.
public struct CommandWriter: ~Copyable {
    public let buffer: UnsafeMutableRawBufferPointer
    /// Bytes written so far, the message header's 16 included.
    @inlinable public var length: Int { writtenBytes }
    @inlinable public var commandCount: Int { writtenCommands }
    @usableFromInline var writtenBytes: Int
    @usableFromInline var writtenCommands: Int

    /// Starts a message in `buffer`, which must hold at least a message header.
    @inlinable
    public init(buffer: UnsafeMutableRawBufferPointer) {
        precondition(buffer.count >= CommandProtocol.messageHeaderLength, "a message buffer must hold its header")
        self.buffer = buffer
        self.writtenBytes = CommandProtocol.messageHeaderLength
        self.writtenCommands = 0
    }

    /// Bytes still free for commands.
    @inlinable public var freeBytes: Int { buffer.count - length }
    @inlinable public var isEmpty: Bool { commandCount == 0 }

    /// Appends a command; returns false, writing nothing, when it does not fit (commit and start another
    /// message) or the message already holds the most commands its header can count.
    ///
    /// The command must be one a reader accepts (`Command.validationFailure` is nil): a path of 1 to 4,096
    /// bytes, a packet of 1 to 65,535. Values from users are checked by the API that takes them, so a
    /// failure here is a bug in the stack and traps.
    @inlinable
    @discardableResult
    public mutating func append(_ command: Command) -> Bool {
        precondition(command.validationFailure == nil, "invalid \(command.kind) command")
        let size = command.encodedLength
        guard size <= freeBytes, commandCount < Int(UInt16.max) else { return false }
        let at = length
        writeHeader(kind: command.kind, flow: command.flow, length: size, at: at)
        let body = UnsafeMutableRawBufferPointer(rebasing: buffer[(at + CommandProtocol.commandHeaderLength)..<(at + size)])
        Self.writeBody(of: command, into: body)
        writtenBytes += size
        writtenCommands += 1
        return true
    }

    /// Reserves a `PACKET_IN` or `PACKET_OUT` of `packetLength` bytes and returns the space for the packet,
    /// so a packet is built where it will be sent instead of being copied in. Nil when it does not fit.
    @inlinable
    public mutating func appendPacket(
        _ kind: CommandKind, flow: FlowID, packetLength: Int
    ) -> UnsafeMutableRawBufferPointer? {
        precondition(kind == .packetIn || kind == .packetOut, "only packet commands carry a packet")
        let size = CommandProtocol.commandHeaderLength + packetLength
        guard packetLength > 0, packetLength <= Int(UInt16.max), size <= freeBytes, commandCount < Int(UInt16.max)
        else { return nil }
        let at = length
        writeHeader(kind: kind, flow: flow, length: size, at: at)
        writtenBytes += size
        writtenCommands += 1
        return UnsafeMutableRawBufferPointer(rebasing: buffer[(at + CommandProtocol.commandHeaderLength)..<(at + size)])
    }

    /// Appends commands already encoded elsewhere (by another writer, without its message header), so a
    /// sender that had to hold commands back while the channel was full can move them into a slot later.
    /// Returns false, writing nothing, when they do not fit.
    @inlinable
    @discardableResult
    public mutating func appendEncoded(_ commands: UnsafeRawBufferPointer, count: Int) -> Bool {
        guard commands.count <= freeBytes, commandCount + count <= Int(UInt16.max) else { return false }
        if let source = commands.baseAddress, commands.count > 0 {
            (buffer.baseAddress! + length).copyMemory(from: source, byteCount: commands.count)
        }
        writtenBytes += commands.count
        writtenCommands += count
        return true
    }

    /// The commands written so far, without the message header.
    @inlinable
    public var encodedCommands: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: buffer[CommandProtocol.messageHeaderLength..<length])
    }

    /// Writes the message header and returns the finished message's bytes.
    @inlinable
    public mutating func finish(sequence: UInt32) -> UnsafeRawBufferPointer {
        MessageHeader(commandCount: UInt16(commandCount), length: UInt32(length), sequence: sequence)
            .emit(into: buffer)
        return UnsafeRawBufferPointer(rebasing: buffer[0..<length])
    }

    @inlinable
    func writeHeader(kind: CommandKind, flow: FlowID, length size: Int, at offset: Int) {
        buffer[offset] = kind.rawValue
        buffer[offset + 1] = 0
        buffer.storeLittleEndian(UInt16(0), at: offset + 2)
        buffer.storeLittleEndian(UInt32(size), at: offset + 4)
        buffer.storeLittleEndian(flow.rawValue, at: offset + 8)
    }

    @inlinable
    static func writeSend(_ range: SendRange, into body: UnsafeMutableRawBufferPointer) {
        body.storeLittleEndian(range.sequence.rawValue, at: 0)
        body.storeLittleEndian(range.length, at: 4)
        body.storeLittleEndian(range.file.rawValue, at: 8)
        body.storeLittleEndian(range.offset, at: 16)
        writeTemplate(range.template, into: body, at: 24)
    }

    @inlinable
    static func writeTemplate(_ template: SegmentTemplate, into body: UnsafeMutableRawBufferPointer, at offset: Int) {
        body.storeLittleEndian(template.acknowledgmentNumber.rawValue, at: offset)
        body.storeLittleEndian(template.window, at: offset + 4)
        body[offset + 6] = template.lastSegmentFlags.rawValue
        body[offset + 7] = template.timestamps == nil ? 0 : SegmentTemplate.hasTimestampsBit
        body.storeLittleEndian(template.maximumSegmentSize, at: offset + 8)
        body.storeLittleEndian(UInt16(0), at: offset + 10)
        body.storeLittleEndian(template.timestamps?.value ?? 0, at: offset + 12)
        body.storeLittleEndian(template.timestamps?.echoReply ?? 0, at: offset + 16)
    }

    @inlinable
    static func writeSpliceConnection(_ side: SpliceConnectionState, into body: UnsafeMutableRawBufferPointer, at start: Int) {
        let offset = start + writeAddress(side.remoteAddress, into: body, at: start) - 4
        body.storeLittleEndian(side.remotePort, at: offset + 4)
        body.storeLittleEndian(side.localPort, at: offset + 6)
        body.storeLittleEndian(side.sendNext.rawValue, at: offset + 8)
        body.storeLittleEndian(side.receiveNext.rawValue, at: offset + 12)
        body.storeLittleEndian(side.timestampValue, at: offset + 16)
        body.storeLittleEndian(side.timestampEcho, at: offset + 20)
        body.storeLittleEndian(side.window, at: offset + 24)
        body.storeLittleEndian(side.peerSegmentSize, at: offset + 26)
        body[offset + 28] = side.peerWindowShift
        body[offset + 29] = side.localWindowShift
        body[offset + 30] = (side.timestamps ? SpliceConnectionState.timestampsBit : 0)
            | (side.selectiveAcknowledgments ? SpliceConnectionState.selectiveAcknowledgmentsBit : 0)
        body[offset + 31] = 0
    }

    /// An address as the splice commands carry it: IPv4 in 4 bytes little-endian (as FLOW_OPEN), IPv6 in 16
    /// in network order (as FLOW_OPEN6). Returns the bytes written.
    @inlinable
    static func writeAddress(_ address: IPAddress, into body: UnsafeMutableRawBufferPointer, at offset: Int) -> Int {
        if let v4 = address.ipv4 {
            body.storeLittleEndian(v4.rawValue, at: offset)
            return 4
        }
        address.bits.store(to: body, at: offset)
        return 16
    }

    @inlinable
    static func copy(_ bytes: UnsafeRawBufferPointer, count: Int, into body: UnsafeMutableRawBufferPointer, at offset: Int) {
        guard count > 0, let source = bytes.baseAddress else { return }
        (body.baseAddress! + offset).copyMemory(from: source, byteCount: count)
    }

    /// A fixed-width ASCII field: the bytes, cut at `length`, then spaces (as NVMe pads its strings).
    @inlinable
    static func padded(_ bytes: UnsafeRawBufferPointer, length: Int, into body: UnsafeMutableRawBufferPointer, at offset: Int) {
        let count = Swift.min(bytes.count, length)
        copy(bytes, count: count, into: body, at: offset)
        for index in count..<length { body[offset + index] = 0x20 }
    }

    @inlinable
    static func writeTeardown(_ parameters: TeardownParameters, into body: UnsafeMutableRawBufferPointer) {
        body.storeLittleEndian(parameters.finSequence.rawValue, at: 0)
        body.storeLittleEndian(parameters.receiveNext.rawValue, at: 4)
        body.storeLittleEndian(parameters.window, at: 8)
        body[10] = parameters.state.rawValue << 4 | (parameters.timestamps ? TeardownParameters.timestampsBit : 0)
        body[11] = parameters.windowShift
        body.storeLittleEndian(parameters.timestampValue, at: 12)
        body.storeLittleEndian(parameters.timestampEcho, at: 16)
        body.storeLittleEndian(parameters.retransmissionTimeoutMilliseconds, at: 20)
        body.storeLittleEndian(parameters.timeWaitMilliseconds, at: 24)
        body.storeLittleEndian(parameters.finWait2Milliseconds, at: 28)
        body.storeLittleEndian(parameters.maximumRetransmissions, at: 32)
        body.storeLittleEndian(UInt16(0), at: 34)
    }

    @inlinable
    static func writeBody(of command: Command, into body: UnsafeMutableRawBufferPointer) {
        switch command {
        case .hello(let hello):
            body.storeLittleEndian(hello.protocolVersion, at: 0)
            body[2] = hello.role.rawValue
            body[3] = 0
            body.storeLittleEndian(hello.maxMessageBytes, at: 4)
            body.storeLittleEndian(hello.maxFlows, at: 8)
            body.storeLittleEndian(hello.maxOpenFiles, at: 12)
            body.storeLittleEndian(hello.features, at: 16)
        case .keepalive(let nonce):
            body.storeLittleEndian(nonce, at: 0)
        case .error(_, let report):
            body.storeLittleEndian(report.code.rawValue, at: 0)
            body[2] = report.failedKind
            body[3] = 0
            body.storeLittleEndian(report.reference, at: 4)
            copy(report.text, count: Swift.min(report.text.count, CommandProtocol.maxErrorTextLength), into: body, at: 12)
        case .open(let requestID, let flags, let path):
            body.storeLittleEndian(requestID, at: 0)
            body.storeLittleEndian(flags, at: 4)
            copy(path, count: path.count, into: body, at: 8)
        case .opened(let requestID, let file, let size):
            body.storeLittleEndian(requestID, at: 0)
            body.storeLittleEndian(file.rawValue, at: 4)
            body.storeLittleEndian(size, at: 12)
        case .device(let requestID, let file, let report):
            body.storeLittleEndian(requestID, at: 0)
            body.storeLittleEndian(file.rawValue, at: 4)
            body.storeLittleEndian(report.namespace, at: 12)
            padded(report.model, length: DeviceReport.modelLength, into: body, at: 16)
            padded(report.serial, length: DeviceReport.serialLength, into: body, at: 56)
        case .fstat(let requestID, let file):
            body.storeLittleEndian(requestID, at: 0)
            body.storeLittleEndian(file.rawValue, at: 4)
        case .stat(let requestID, let file, let status):
            body.storeLittleEndian(requestID, at: 0)
            body.storeLittleEndian(file.rawValue, at: 4)
            body.storeLittleEndian(status.size, at: 12)
            body.storeLittleEndian(status.modificationSeconds, at: 20)
            body.storeLittleEndian(status.modificationNanoseconds, at: 28)
            body.storeLittleEndian(status.mode, at: 32)
            body.storeLittleEndian(status.inode, at: 36)
            body.storeLittleEndian(status.device, at: 44)
        case .closeFile(let file):
            body.storeLittleEndian(file.rawValue, at: 0)
        case .flowOpen(_, let endpoints):
            if let local = endpoints.localAddress.ipv4, let remote = endpoints.remoteAddress.ipv4 {
                body.storeLittleEndian(local.rawValue, at: 0)
                body.storeLittleEndian(remote.rawValue, at: 4)
                body.storeLittleEndian(endpoints.localPort, at: 8)
                body.storeLittleEndian(endpoints.remotePort, at: 10)
                body.storeLittleEndian(endpoints.remoteHardwareAddress.rawValue, at: 12)
                body.storeLittleEndian(endpoints.maximumSegmentSize, at: 20)
                body.storeLittleEndian(UInt16(0), at: 22)
            } else {
                // FLOW_OPEN6: the addresses in network order, as in the IPv6 header.
                endpoints.localAddress.bits.store(to: body, at: 0)
                endpoints.remoteAddress.bits.store(to: body, at: 16)
                body.storeLittleEndian(endpoints.localPort, at: 32)
                body.storeLittleEndian(endpoints.remotePort, at: 34)
                body.storeLittleEndian(endpoints.remoteHardwareAddress.rawValue, at: 36)
                body.storeLittleEndian(endpoints.maximumSegmentSize, at: 44)
                body.storeLittleEndian(UInt16(0), at: 46)
            }
        case .flowClose(_, let reason):
            body.storeLittleEndian(reason, at: 0)
        case .send(_, let range):
            Self.writeSend(range, into: body)
        case .sendWithHead(_, let range, let head):
            Self.writeSend(range, into: body)
            copy(head, count: head.count, into: body, at: CommandKind.send.fixedBodyLength)
        case .retransmit(_, let sequence, let length, let template):
            body.storeLittleEndian(sequence.rawValue, at: 0)
            body.storeLittleEndian(length, at: 4)
            writeTemplate(template, into: body, at: 8)
        case .acknowledged(_, let through):
            body.storeLittleEndian(through.rawValue, at: 0)
        case .echo(_, let sequenceEnd, let delay):
            body.storeLittleEndian(sequenceEnd.rawValue, at: 0)
            body.storeLittleEndian(UInt32(0), at: 4)
            body.storeLittleEndian(delay, at: 8)
        case .packetIn(_, let packet), .packetOut(_, let packet), .redeliver(let packet):
            copy(packet, count: packet.count, into: body, at: 0)
        case .tlsKeys(_, let keys):
            body.storeLittleEndian(keys.version.rawValue, at: 0)
            body[2] = UInt8(truncatingIfNeeded: keys.key.count)
            body[3] = UInt8(truncatingIfNeeded: keys.iv.count)
            copy(keys.key, count: keys.key.count, into: body, at: 4)
            copy(keys.iv, count: keys.iv.count, into: body, at: 4 + keys.key.count)
        case .sendRecords(_, let range):
            body.storeLittleEndian(range.sequence.rawValue, at: 0)
            body.storeLittleEndian(range.length, at: 4)
            body.storeLittleEndian(range.runStart.rawValue, at: 8)
            body.storeLittleEndian(range.recordPlaintext, at: 12)
            body.storeLittleEndian(UInt16(0), at: 14)
            body.storeLittleEndian(range.file.rawValue, at: 16)
            body.storeLittleEndian(range.offset, at: 24)
            body.storeLittleEndian(range.runPlaintext, at: 32)
            body.storeLittleEndian(range.firstRecord, at: 40)
            writeTemplate(range.template, into: body, at: 48)
        case .listen(let options):
            body.storeLittleEndian(options.port, at: 0)
            body.storeLittleEndian(options.maximumSegmentSize, at: 2)
            body.storeLittleEndian(options.window, at: 4)
            body[6] = options.windowShift
            body[7] = (options.isListening ? ListenerOptions.listeningBit : 0)
                | (options.timestamps ? ListenerOptions.timestampsBit : 0)
                | (options.selectiveAcknowledgments ? ListenerOptions.selectiveAcknowledgmentsBit : 0)
                | (options.deferAccept ? ListenerOptions.deferAcceptBit : 0)
        case .established(let parameters, let packet):
            body.storeLittleEndian(parameters.localInitialSequence.rawValue, at: 0)
            body.storeLittleEndian(parameters.peerInitialSequence.rawValue, at: 4)
            body.storeLittleEndian(parameters.peerSegmentSize, at: 8)
            body[10] = parameters.peerWindowShift ?? HandshakeParameters.noWindowShift
            body[11] = (parameters.selectiveAcknowledgments ? HandshakeParameters.selectiveAcknowledgmentsBit : 0)
                | (parameters.timestamps ? HandshakeParameters.timestampsBit : 0)
            body.storeLittleEndian(parameters.synAckTimestamp, at: 12)
            body.storeLittleEndian(parameters.handshakeRoundTripMicroseconds, at: 16)
            copy(packet, count: packet.count, into: body, at: 20)
        case .teardownWithData(_, let parameters, let unacknowledged, let hostBytes):
            writeTeardown(parameters, into: body)
            body.storeLittleEndian(unacknowledged.rawValue, at: CommandKind.teardown.fixedBodyLength)
            copy(hostBytes, count: hostBytes.count, into: body, at: CommandKind.teardown.fixedBodyLength + 4)
        case .flowReleased(_, let reason):
            body.storeLittleEndian(UInt32(reason.rawValue), at: 0)
        case .teardown(_, let parameters):
            writeTeardown(parameters, into: body)
        case .splice(_, let parameters, let head):
            // SPLICE6 is SPLICE with each address 12 bytes longer: the fields after one move along.
            let side = SpliceConnectionState.encodedLength(ipv6: !parameters.isIPv4)
            writeSpliceConnection(parameters.client, into: body, at: 0)
            writeSpliceConnection(parameters.backend, into: body, at: side)
            body.storeLittleEndian(parameters.backendFlow.rawValue, at: 2 * side)
            let rest = 2 * side + 4 + writeAddress(parameters.localAddress, into: body, at: 2 * side + 4)
            body.storeLittleEndian(parameters.retransmissionTimeoutMilliseconds, at: rest)
            body.storeLittleEndian(parameters.idleTimeoutMilliseconds, at: rest + 4)
            body.storeLittleEndian(parameters.lingerMilliseconds, at: rest + 8)
            body.storeLittleEndian(parameters.maximumRetransmissions, at: rest + 12)
            body.storeLittleEndian(parameters.acknowledgeClient ? SpliceParameters.acknowledgeClientBit : 0, at: rest + 14)
            copy(head, count: head.count, into: body, at: rest + 16)
        case .spliceEnded(_, let report):
            body.storeLittleEndian(report.backendFlow.rawValue, at: 0)
            body[4] = report.reason.rawValue
            body[5] = report.clientClosedFirst ? SpliceReport.clientClosedFirstBit : 0
            body.storeLittleEndian(UInt16(0), at: 6)
            body.storeLittleEndian(report.clientBytes, at: 8)
            body.storeLittleEndian(report.backendBytes, at: 16)
            let ports = 24 + writeAddress(report.backendAddress, into: body, at: 24)
            body.storeLittleEndian(report.backendPort, at: ports)
            body.storeLittleEndian(report.backendLocalPort, at: ports + 2)
        }
    }
}

extension SegmentTemplate {
    /// Bit 0 of the template's option byte: the timestamps fields are meaningful.
    @usableFromInline static let hasTimestampsBit: UInt8 = 1
}
