import Testing
@testable import IOTCPCommon

/// A command with its bytes copied out, so decoded commands can be compared and kept.
enum OwnedCommand: Equatable {
    case plain(String)            // every kind without bytes, compared by its full description
    case error(FlowID, code: CommandErrorCode, failedKind: UInt8, reference: UInt64, text: [UInt8])
    case open(requestID: UInt32, flags: UInt32, path: [UInt8])
    case packetIn(FlowID, [UInt8])
    case packetOut(FlowID, [UInt8])
    case device(requestID: UInt32, file: OffloadedFileID, namespace: UInt32, model: [UInt8], serial: [UInt8])
    case tlsKeys(FlowID, version: TLSRecordVersion, key: [UInt8], iv: [UInt8])
    case established(HandshakeParameters, [UInt8])
    case redeliver([UInt8])
    case splice(FlowID, SpliceParameters, [UInt8])
    case sendWithHead(FlowID, SendRange, [UInt8])
    case teardownWithData(FlowID, TeardownParameters, SequenceNumber, [UInt8])

    init(_ command: Command) {
        switch command {
        case .error(let flow, let report):
            self = .error(flow, code: report.code, failedKind: report.failedKind, reference: report.reference, text: Array(report.text))
        case .open(let requestID, let flags, let path): self = .open(requestID: requestID, flags: flags, path: Array(path))
        case .packetIn(let flow, let packet): self = .packetIn(flow, Array(packet))
        case .packetOut(let flow, let packet): self = .packetOut(flow, Array(packet))
        case .device(let requestID, let file, let report):
            self = .device(requestID: requestID, file: file, namespace: report.namespace, model: Array(report.model), serial: Array(report.serial))
        case .tlsKeys(let flow, let keys): self = .tlsKeys(flow, version: keys.version, key: Array(keys.key), iv: Array(keys.iv))
        case .established(let parameters, let packet): self = .established(parameters, Array(packet))
        case .redeliver(let packet): self = .redeliver(Array(packet))
        case .splice(let flow, let parameters, let head): self = .splice(flow, parameters, Array(head))
        case .sendWithHead(let flow, let range, let head): self = .sendWithHead(flow, range, Array(head))
        case .teardownWithData(let flow, let parameters, let unacknowledged, let hostBytes):
            self = .teardownWithData(flow, parameters, unacknowledged, Array(hostBytes))
        default: self = .plain(String(describing: command))
        }
    }

    func withCommand<T>(_ body: (Command) -> T) -> T {
        switch self {
        case .plain: fatalError("plain commands are made by `SeededGenerator.command`, not rebuilt")
        case .error(let flow, let code, let failedKind, let reference, let text):
            return text.withUnsafeBytes { body(.error(flow, ErrorReport(code: code, failedKind: failedKind, reference: reference, text: $0))) }
        case .open(let requestID, let flags, let path):
            return path.withUnsafeBytes { body(.open(requestID: requestID, flags: flags, path: $0)) }
        case .packetIn(let flow, let packet): return packet.withUnsafeBytes { body(.packetIn(flow, packet: $0)) }
        case .packetOut(let flow, let packet): return packet.withUnsafeBytes { body(.packetOut(flow, packet: $0)) }
        case .tlsKeys(let flow, let version, let key, let iv):
            return key.withUnsafeBytes { key in iv.withUnsafeBytes { iv in body(.tlsKeys(flow, TLSKeys(version: version, key: key, iv: iv))) } }
        case .established(let parameters, let packet): return packet.withUnsafeBytes { body(.established(parameters, packet: $0)) }
        case .redeliver(let packet): return packet.withUnsafeBytes { body(.redeliver(packet: $0)) }
        case .splice(let flow, let parameters, let head): return head.withUnsafeBytes { body(.splice(flow, parameters, head: $0)) }
        case .sendWithHead(let flow, let range, let head): return head.withUnsafeBytes { body(.sendWithHead(flow, range, head: $0)) }
        case .teardownWithData(let flow, let parameters, let unacknowledged, let hostBytes):
            return hostBytes.withUnsafeBytes { body(.teardownWithData(flow, parameters, unacknowledged: unacknowledged, hostBytes: $0)) }
        case .device(let requestID, let file, let namespace, let model, let serial):
            return model.withUnsafeBytes { model in
                serial.withUnsafeBytes { serial in
                    body(.device(requestID: requestID, file: file, DeviceReport(namespace: namespace, model: model, serial: serial)))
                }
            }
        }
    }
}

extension SeededGenerator {
    mutating func template() -> SegmentTemplate {
        SegmentTemplate(
            acknowledgmentNumber: SequenceNumber(next32()), window: next16(), lastSegmentFlags: TCPFlags(rawValue: next8()),
            maximumSegmentSize: UInt16.random(in: 1...9000, using: &self),
            timestamps: Bool.random(using: &self) ? TCPTimestamps(value: next32(), echoReply: next32()) : nil)
    }

    mutating func bytes(_ range: ClosedRange<Int>, avoidingZero: Bool = false) -> [UInt8] {
        (0..<Int.random(in: range, using: &self)).map { _ in avoidingZero ? UInt8.random(in: 1...255, using: &self) : next8() }
    }

    /// A random valid command of the given kind, handed to `body` while its bytes are alive.
    mutating func command<T>(_ kind: CommandKind, _ body: (Command, OwnedCommand) -> T) -> T {
        let flow = FlowID(UInt32.random(in: 1...UInt32.max, using: &self))
        let file = OffloadedFileID(rawValue: next())
        let owned: OwnedCommand
        let command: Command
        switch kind {
        case .hello:
            command = .hello(Hello(protocolVersion: next16(), role: Bool.random(using: &self) ? .host : .nic,
                                   maxMessageBytes: UInt32.random(in: 16...UInt32.max, using: &self), maxFlows: next32(),
                                   maxOpenFiles: next32(), features: next()))
        case .keepalive: command = .keepalive(nonce: next())
        case .opened: command = .opened(requestID: next32(), file: file, size: next())
        case .fstat: command = .fstat(requestID: next32(), file: file)
        case .stat:
            command = .stat(requestID: next32(), file: file, status: OffloadedFileStatus(
                size: next(), modificationSeconds: Int64(bitPattern: next()), modificationNanoseconds: next32(),
                mode: next32(), inode: next(), device: next()))
        case .closeFile: command = .closeFile(file)
        case .flowOpen:
            command = .flowOpen(flow, FlowEndpoints(
                localAddress: IPv4Address(rawValue: next32()), remoteAddress: IPv4Address(rawValue: next32()),
                localPort: next16(), remotePort: next16(), remoteHardwareAddress: MACAddress(rawValue: next()),
                maximumSegmentSize: UInt16.random(in: 1...UInt16.max, using: &self)))
        case .flowOpenIPv6:
            // Not IPv4-mapped (the first half is never zero), so the command is FLOW_OPEN6.
            command = .flowOpen(flow, FlowEndpoints(
                localAddress: IPAddress(IPv6Address(high: next() | 1 << 63, low: next())),
                remoteAddress: IPAddress(IPv6Address(high: next() | 1 << 63, low: next())),
                localPort: next16(), remotePort: next16(), remoteHardwareAddress: MACAddress(rawValue: next()),
                maximumSegmentSize: UInt16.random(in: 1...UInt16.max, using: &self)))
        case .flowClose: command = .flowClose(flow, reason: next32())
        case .send:
            let range = SendRange(
                sequence: SequenceNumber(next32()), length: UInt32.random(in: 1...UInt32.max, using: &self), file: file,
                offset: next() >> 1, template: template())
            if Bool.random(using: &self) {
                // With a head: under the MSS and at most 4,096 bytes.
                let limit = min(Int(range.template.maximumSegmentSize) - 1, SendRange.maximumHeadLength)
                if limit >= 1 {
                    owned = .sendWithHead(flow, range, bytes(1...limit))
                    return owned.withCommand { body($0, owned) }
                }
            }
            command = .send(flow, range)
        case .retransmit:
            command = .retransmit(flow, sequence: SequenceNumber(next32()), length: UInt32.random(in: 1...1 << 20, using: &self),
                                  template: template())
        case .acknowledged: command = .acknowledged(flow, through: SequenceNumber(next32()))
        case .echo: command = .echo(flow, sequenceEnd: SequenceNumber(next32()), nicDelayNanoseconds: next())
        case .error:
            owned = .error(flow, code: CommandErrorCode(rawValue: next16()), failedKind: next8(), reference: next(), text: bytes(0...256))
            return owned.withCommand { body($0, owned) }
        case .open:
            owned = .open(requestID: next32(), flags: next32(), path: bytes(1...300, avoidingZero: true))
            return owned.withCommand { body($0, owned) }
        case .packetIn:
            owned = .packetIn(flow, bytes(1...1600))
            return owned.withCommand { body($0, owned) }
        case .packetOut:
            owned = .packetOut(flow, bytes(1...1600))
            return owned.withCommand { body($0, owned) }
        case .device:
            // Full-width fields, so what is decoded is exactly what was given (shorter ones come back padded).
            var model: [UInt8] = [], serial: [UInt8] = []
            for _ in 0..<40 { model.append(UInt8.random(in: 0x21...0x7E, using: &self)) }
            for _ in 0..<20 { serial.append(UInt8.random(in: 0x21...0x7E, using: &self)) }
            owned = .device(requestID: next32(), file: file, namespace: next32(), model: model, serial: serial)
            return owned.withCommand { body($0, owned) }
        case .tlsKeys:
            let version: TLSRecordVersion = Bool.random(using: &self) ? .tls13 : .tls12
            owned = .tlsKeys(flow, version: version, key: bytes(Bool.random(using: &self) ? 16...16 : 32...32),
                             iv: bytes(TLSKeys.ivLength(version)...TLSKeys.ivLength(version)))
            return owned.withCommand { body($0, owned) }
        case .sendRecords:
            let recordPlaintext = UInt16.random(in: 1...16_384, using: &self)
            let runPlaintext = UInt64.random(in: 1...(1 << 24), using: &self)
            let records = (runPlaintext + UInt64(recordPlaintext) - 1) / UInt64(recordPlaintext)
            let wire = runPlaintext + records * 22
            let into = UInt64.random(in: 0..<wire, using: &self)
            let length = UInt64.random(in: 1...min(wire - into, UInt64(UInt32.max)), using: &self)
            let runStart = SequenceNumber(next32())
            command = .sendRecords(flow, RecordSendRange(
                sequence: runStart + Int(into), length: UInt32(length), runStart: runStart, recordPlaintext: recordPlaintext,
                file: file, offset: next() >> 2, runPlaintext: runPlaintext, firstRecord: next(), template: template()))
        case .listen:
            let listening = Bool.random(using: &self)
            command = .listen(ListenerOptions(
                port: UInt16.random(in: 1...UInt16.max, using: &self), maximumSegmentSize: UInt16.random(in: 1...UInt16.max, using: &self),
                window: next16(), windowShift: UInt8.random(in: 0...14, using: &self), timestamps: Bool.random(using: &self),
                selectiveAcknowledgments: Bool.random(using: &self), isListening: listening, deferAccept: Bool.random(using: &self)))
        case .redeliver:
            owned = .redeliver(bytes(1...1600))
            return owned.withCommand { body($0, owned) }
        case .teardown:
            let withData = Bool.random(using: &self)
            // With data, our FIN is unacknowledged (FIN-WAIT-1, CLOSING or LAST-ACK).
            let parameters = TeardownParameters(
                finSequence: SequenceNumber(next32()), receiveNext: SequenceNumber(next32()), window: next16(),
                windowShift: UInt8.random(in: 0...14, using: &self),
                state: TeardownState(rawValue: UInt8.random(in: 1...(withData ? 3 : 5), using: &self))!,
                timestamps: Bool.random(using: &self), timestampValue: next32(), timestampEcho: next32(),
                retransmissionTimeoutMilliseconds: UInt32.random(in: 1...UInt32.max, using: &self), maximumRetransmissions: next16(),
                timeWaitMilliseconds: next32(), finWait2Milliseconds: next32())
            guard withData else {
                command = .teardown(flow, parameters)
                break
            }
            let unacknowledged = Int.random(in: 1...TeardownParameters.maximumDataLength, using: &self)
            owned = .teardownWithData(flow, parameters, parameters.finSequence - unacknowledged,
                                      bytes(0...min(unacknowledged, SendRange.maximumHeadLength)))
            return owned.withCommand { body($0, owned) }
        case .flowReleased:
            command = .flowReleased(flow, reason: FlowReleaseReason(rawValue: UInt8.random(in: 0...3, using: &self))!)
        case .splice, .spliceIPv6:
            let timestamps = Bool.random(using: &self)
            // One family throughout: IPv4, or IPv6 never IPv4-mapped (its first half is never zero).
            let ipv6 = kind == .spliceIPv6
            func address() -> IPAddress {
                ipv6 ? IPAddress(IPv6Address(high: next() | 1 << 63, low: next())) : IPAddress(IPv4Address(rawValue: next32()))
            }
            func side() -> SpliceConnectionState {
                SpliceConnectionState(
                    remoteAddress: address(), remotePort: UInt16.random(in: 1...UInt16.max, using: &self),
                    localPort: UInt16.random(in: 1...UInt16.max, using: &self), sendNext: SequenceNumber(next32()),
                    receiveNext: SequenceNumber(next32()), timestamps: timestamps, timestampValue: next32(), timestampEcho: next32(),
                    window: next16(), localWindowShift: UInt8.random(in: 0...14, using: &self),
                    peerWindowShift: UInt8.random(in: 0...14, using: &self), peerSegmentSize: UInt16.random(in: 1...UInt16.max, using: &self),
                    selectiveAcknowledgments: Bool.random(using: &self))
            }
            owned = .splice(flow, SpliceParameters(
                client: side(), backend: side(), backendFlow: FlowID(UInt32.random(in: 1...UInt32.max, using: &self)),
                localAddress: address(), retransmissionTimeoutMilliseconds: UInt32.random(in: 1...UInt32.max, using: &self),
                maximumRetransmissions: next16(), idleTimeoutMilliseconds: UInt32.random(in: 1...UInt32.max, using: &self),
                lingerMilliseconds: next32(), acknowledgeClient: Bool.random(using: &self)), bytes(0...2000))
            return owned.withCommand { body($0, owned) }
        case .spliceEnded, .spliceEndedIPv6:
            let backendAddress = kind == .spliceEndedIPv6
                ? IPAddress(IPv6Address(high: next() | 1 << 63, low: next())) : IPAddress(IPv4Address(rawValue: next32()))
            command = .spliceEnded(flow, SpliceReport(
                backendFlow: FlowID(UInt32.random(in: 1...UInt32.max, using: &self)),
                reason: SpliceEndReason(rawValue: UInt8.random(in: 0...5, using: &self))!, clientBytes: next(), backendBytes: next(),
                backendAddress: backendAddress, backendPort: next16(), backendLocalPort: next16(),
                clientClosedFirst: Bool.random(using: &self)))
        case .established:
            let shift: UInt8? = Bool.random(using: &self) ? UInt8.random(in: 0...14, using: &self) : nil
            owned = .established(HandshakeParameters(
                localInitialSequence: SequenceNumber(next32()), peerInitialSequence: SequenceNumber(next32()),
                peerSegmentSize: UInt16.random(in: 1...UInt16.max, using: &self), peerWindowShift: shift,
                selectiveAcknowledgments: Bool.random(using: &self), timestamps: Bool.random(using: &self), synAckTimestamp: next32(),
                handshakeRoundTripMicroseconds: next32()),
                bytes(40...1600))
            return owned.withCommand { body($0, owned) }
        }
        return body(command, OwnedCommand(command))
    }
}

/// Decodes every command of a message, collecting commands and errors.
func decodeAll(_ message: UnsafeRawBufferPointer, limit: Int = Int(UInt32.max)) -> (commands: [OwnedCommand], errors: [CommandDecodeError]) {
    var commands: [OwnedCommand] = [], errors: [CommandDecodeError] = []
    do {
        var reader = try CommandReader(message: message, maxMessageBytes: limit)
        while true {
            do {
                guard let command = try reader.next() else { break }
                commands.append(OwnedCommand(command))
            } catch {
                errors.append(error)
                if !error.isRecoverable { break }
            }
        }
    } catch {
        errors.append(error)
    }
    return (commands, errors)
}

@Suite("Command protocol")
struct CommandCodecTests {
    @Test("every kind round-trips, many to a message, and re-encodes to identical bytes")
    func roundTrip() {
        var random = SeededGenerator(seed: 20)
        for round in 0..<300 {
            var buffer = [UInt8](repeating: 0, count: 64 * 1024)
            var expected: [OwnedCommand] = []
            let encoded: [UInt8] = buffer.withUnsafeMutableBytes { raw in
                var writer = CommandWriter(buffer: raw)
                while true {
                    let kind = CommandKind.allCases[Int.random(in: 0..<CommandKind.allCases.count, using: &random)]
                    let appended = random.command(kind) { command, owned in
                        guard writer.append(command) else { return false }
                        expected.append(owned)
                        return true
                    }
                    if !appended { break }
                }
                return Array(writer.finish(sequence: UInt32(round)))
            }
            #expect(expected.count > 10)
            encoded.withUnsafeBytes { message in
                let (commands, errors) = decodeAll(message)
                #expect(errors.isEmpty)
                #expect(commands == expected)
                let header = try! MessageHeader(parsing: message, maxMessageBytes: 1 << 20)
                #expect(header.sequence == UInt32(round))
                #expect(Int(header.commandCount) == expected.count)
                #expect(Int(header.length) == encoded.count)
                // Decoding and encoding again gives the same bytes.
                var again = [UInt8](repeating: 0, count: encoded.count)
                again.withUnsafeMutableBytes { raw in
                    var writer = CommandWriter(buffer: raw)
                    var reader = try! CommandReader(message: message)
                    while let command = try! reader.next() {
                        let appended = writer.append(command)
                        #expect(appended)
                    }
                    _ = writer.finish(sequence: UInt32(round))
                }
                #expect(again == encoded)
            }
        }
    }

    @Test("a command value stays small: the large, rare SPLICE is boxed, so moving commands costs no more than their common cases")
    func commandStaysSmall() {
        // Every command is moved by value through the reader, the sender and the handlers; at 160 bytes
        // (SPLICE's parameters inline) those moves became memmove calls costing about a tenth of the 4 KiB rate.
        #expect(MemoryLayout<Command>.size <= 96, "Command is \(MemoryLayout<Command>.size) bytes")
        #expect(MemoryLayout<SpliceParameters>.size > 96, "SPLICE's parameters would not fit, hence the box")
    }

    @Test("a SEND is laid out as the protocol document says")
    func sendLayout() {
        var buffer = [UInt8](repeating: 0, count: 128)
        let bytes: [UInt8] = buffer.withUnsafeMutableBytes { raw in
            var writer = CommandWriter(buffer: raw)
            let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(0x0A0B_0C0D), window: 0x1234, lastSegmentFlags: .psh,
                                           maximumSegmentSize: 1448, timestamps: TCPTimestamps(value: 7, echoReply: 9))
            writer.append(.send(FlowID(5), SendRange(sequence: SequenceNumber(0x0102_0304), length: 65536,
                                                     file: OffloadedFileID(slot: 3, generation: 2), offset: 4096, template: template)))
            return Array(writer.finish(sequence: 0x77))
        }
        #expect(bytes.count == 16 + 12 + 44)
        #expect(Array(bytes[0..<16]) == [0x49, 0x54, 0x43, 0x50, 1, 0, 1, 0, 72, 0, 0, 0, 0x77, 0, 0, 0])
        #expect(Array(bytes[16..<28]) == [11, 0, 0, 0, 56, 0, 0, 0, 5, 0, 0, 0])
        #expect(Array(bytes[28..<36]) == [0x04, 0x03, 0x02, 0x01, 0x00, 0x00, 0x01, 0x00])
        #expect(Array(bytes[36..<44]) == [3, 0, 0, 0, 2, 0, 0, 0])
        #expect(Array(bytes[44..<52]) == [0, 0x10, 0, 0, 0, 0, 0, 0])
        #expect(Array(bytes[52..<72]) == [0x0D, 0x0C, 0x0B, 0x0A, 0x34, 0x12, 0x08, 0x01, 0xA8, 0x05, 0, 0, 7, 0, 0, 0, 9, 0, 0, 0])
    }

    @Test("a SEND with a head carries it after the fixed body; a head as long as the MSS is refused")
    func sendHeadLayout() {
        var buffer = [UInt8](repeating: 0, count: 128)
        let head: [UInt8] = [0x48, 0x54, 0x54, 0x50, 0x2F]
        let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(1), window: 2, maximumSegmentSize: 6)
        let range = SendRange(sequence: SequenceNumber(0x0102_0304), length: 9, file: OffloadedFileID(slot: 3, generation: 2), offset: 4,
                              template: template)
        let bytes: [UInt8] = buffer.withUnsafeMutableBytes { raw in
            var writer = CommandWriter(buffer: raw)
            _ = head.withUnsafeBytes { writer.append(.sendWithHead(FlowID(5), range, head: $0)) }
            return Array(writer.finish(sequence: 1))
        }
        #expect(bytes.count == 16 + 12 + 44 + 5)
        #expect(Array(bytes[16..<28]) == [11, 0, 0, 0, 61, 0, 0, 0, 5, 0, 0, 0], "kind SEND, its length counting the head")
        #expect(Array(bytes[28..<32]) == [0x04, 0x03, 0x02, 0x01] && Array(bytes[72...]) == head)
        bytes.withUnsafeBytes { raw in
            var reader = try! CommandReader(message: raw)
            guard case .sendWithHead(let flow, let decoded, let decodedHead)? = try? reader.next() else {
                Issue.record("not decoded as a SEND with a head")
                return
            }
            #expect(flow == FlowID(5) && decoded == range && Array(decodedHead) == head)
        }
        // Six bytes of head under an MSS of 6: no file byte could share the first segment.
        var long = bytes
        long.insert(0x31, at: 72)
        let total = long.count
        long.withUnsafeMutableBytes { raw in
            raw.storeLittleEndian(UInt32(total), at: 8)
            raw.storeLittleEndian(UInt32(62), at: 16 + 4)
        }
        long.withUnsafeBytes { raw in
            var reader = try! CommandReader(message: raw)
            #expect(throws: CommandDecodeError.inconsistent(kind: .send, flow: FlowID(5), field: "head length", index: 0)) { try reader.next() }
        }
    }

    @Test("FLOW_OPEN6 carries 16-byte addresses in network order; an IPv4 flow stays FLOW_OPEN; mixed families are refused")
    func flowOpenIPv6Layout() {
        let endpoints = FlowEndpoints(localAddress: IPAddress("fd77::2")!, remoteAddress: IPAddress("fd77::1:5")!, localPort: 0x1F90,
                                      remotePort: 0xA000, remoteHardwareAddress: MACAddress(rawValue: 0x0000_0A0B_0C0D_0E0F),
                                      maximumSegmentSize: 1440)
        var buffer = [UInt8](repeating: 0, count: 128)
        let bytes: [UInt8] = buffer.withUnsafeMutableBytes { raw in
            var writer = CommandWriter(buffer: raw)
            writer.append(.flowOpen(FlowID(7), endpoints))
            writer.append(.flowOpen(FlowID(8), flowEndpoints4))
            return Array(writer.finish(sequence: 1))
        }
        #expect(bytes.count == 16 + 12 + 48 + 12 + 24)
        #expect(Array(bytes[16..<28]) == [26, 0, 0, 0, 60, 0, 0, 0, 7, 0, 0, 0], "kind 26, FLOW_OPEN6")
        #expect(Array(bytes[28..<44]) == [0xFD, 0x77] + [UInt8](repeating: 0, count: 13) + [2])
        #expect(Array(bytes[44..<60]) == [0xFD, 0x77] + [UInt8](repeating: 0, count: 10) + [0, 1, 0, 5])
        #expect(Array(bytes[60..<76]) == [0x90, 0x1F, 0x00, 0xA0, 0x0F, 0x0E, 0x0D, 0x0C, 0x0B, 0x0A, 0, 0, 0xA0, 0x05, 0, 0])
        #expect(bytes[76] == 9, "the IPv4 flow is FLOW_OPEN (kind 9)")
        bytes.withUnsafeBytes { raw in
            var reader = try! CommandReader(message: raw)
            guard case .flowOpen(FlowID(7), let decoded)? = try? reader.next(), case .flowOpen(FlowID(8), let decoded4)? = try? reader.next() else {
                Issue.record("not decoded as two FLOW_OPENs")
                return
            }
            #expect(decoded == endpoints && decoded4 == flowEndpoints4)
        }
        // The remote address made IPv4-mapped: a pair of two families.
        var mixed = bytes
        mixed.replaceSubrange(44..<60, with: [UInt8](repeating: 0, count: 10) + [0xFF, 0xFF, 10, 77, 0, 1])
        mixed.withUnsafeBytes { raw in
            var reader = try! CommandReader(message: raw)
            #expect(throws: CommandDecodeError.inconsistent(kind: .flowOpenIPv6, flow: FlowID(7), field: "address families", index: 0)) {
                try reader.next()
            }
        }
    }

    @Test("LISTEN and ESTABLISHED are laid out as the protocol document says")
    func setupLayout() {
        var buffer = [UInt8](repeating: 0, count: 256)
        let packet: [UInt8] = (0..<40).map { UInt8($0) }
        let parameters = HandshakeParameters(
            localInitialSequence: SequenceNumber(0x1122_3344), peerInitialSequence: SequenceNumber(0x5566_7788), peerSegmentSize: 1460,
            peerWindowShift: 7, selectiveAcknowledgments: true, timestamps: true, synAckTimestamp: 0xA1B2_C3D4)
        let bytes: [UInt8] = buffer.withUnsafeMutableBytes { raw in
            var writer = CommandWriter(buffer: raw)
            writer.append(.listen(ListenerOptions(port: 8080, maximumSegmentSize: 1460, window: 65535, windowShift: 3,
                                                  timestamps: true, selectiveAcknowledgments: false)))
            _ = packet.withUnsafeBytes { writer.append(.established(parameters, packet: $0)) }
            var unscaled = parameters
            unscaled.peerWindowShift = nil
            unscaled.timestamps = false
            _ = packet.withUnsafeBytes { writer.append(.established(unscaled, packet: $0)) }
            return Array(writer.finish(sequence: 1))
        }
        #expect(bytes.count == 16 + (12 + 8) + 2 * (12 + 20 + 40))
        #expect(Array(bytes[16..<36]) == [20, 0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 0x90, 0x1F, 0xB4, 0x05, 0xFF, 0xFF, 3, 0b011])
        // A deferred accept is bit 3 of the same flags byte.
        let deferring = ListenerOptions(port: 8080, maximumSegmentSize: 1460, window: 65535, windowShift: 3, selectiveAcknowledgments: false,
                                        deferAccept: true)
        let deferred: [UInt8] = buffer.withUnsafeMutableBytes { raw in
            var writer = CommandWriter(buffer: raw)
            writer.append(.listen(deferring))
            return Array(writer.finish(sequence: 1))
        }
        #expect(deferred[16 + 19] == 0b1011)
        deferred.withUnsafeBytes { raw in
            let (commands, errors) = decodeAll(raw)
            #expect(errors.isEmpty && commands == [.plain(String(describing: Command.listen(deferring)))])
        }
        #expect(Array(bytes[36..<48]) == [21, 0, 0, 0, 72, 0, 0, 0, 0, 0, 0, 0])
        #expect(Array(bytes[48..<68]) == [0x44, 0x33, 0x22, 0x11, 0x88, 0x77, 0x66, 0x55, 0xB4, 0x05, 7, 0b11,
                                          0xD4, 0xC3, 0xB2, 0xA1, 0, 0, 0, 0])
        #expect(Array(bytes[68..<108]) == packet)
        #expect(Array(bytes[120..<140]) == [0x44, 0x33, 0x22, 0x11, 0x88, 0x77, 0x66, 0x55, 0xB4, 0x05, 0xFF, 0b01,
                                           0xD4, 0xC3, 0xB2, 0xA1, 0, 0, 0, 0])
        bytes.withUnsafeBytes { raw in
            let (commands, errors) = decodeAll(raw)
            #expect(errors.isEmpty)
            var unscaled = parameters
            unscaled.peerWindowShift = nil
            unscaled.timestamps = false
            #expect(Array(commands.dropFirst()) == [.established(parameters, packet), .established(unscaled, packet)])
        }
        // A stop names only the port; a window shift past 14 or an ESTABLISHED too short for a TCP/IP header is refused.
        let refused: [([UInt8], CommandDecodeError)] = [
            ([20, 0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 80, 0, 0xB4, 0x05, 0, 0, 15, 1],
             .inconsistent(kind: .listen, flow: .none, field: "window shift", index: 1)),
            ([21, 0, 0, 0, 33, 0, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 1, count: 21),
             .inconsistent(kind: .established, flow: .none, field: "packet length", index: 1)),
        ]
        for (middle, expected) in refused {
            message(middle: middle).withUnsafeBytes { raw in
                let (commands, errors) = decodeAll(raw)
                #expect(errors == [expected] && commands.count == 2)
            }
        }
    }

    @Test("a TEARDOWN is laid out as the protocol document says")
    func teardownLayout() {
        var buffer = [UInt8](repeating: 0, count: 128)
        let parameters = TeardownParameters(
            finSequence: SequenceNumber(0x0102_0304), receiveNext: SequenceNumber(0x0506_0708), window: 0x0A0B, windowShift: 7, state: .lastAck,
            timestamps: true, timestampValue: 0x1112_1314, timestampEcho: 0x2122_2324, retransmissionTimeoutMilliseconds: 200,
            maximumRetransmissions: 8, timeWaitMilliseconds: 60_000, finWait2Milliseconds: 30_000)
        let bytes: [UInt8] = buffer.withUnsafeMutableBytes { raw in
            var writer = CommandWriter(buffer: raw)
            writer.append(.teardown(FlowID(9), parameters))
            return Array(writer.finish(sequence: 1))
        }
        #expect(bytes.count == 16 + 12 + 36)
        #expect(Array(bytes[16..<28]) == [22, 0, 0, 0, 48, 0, 0, 0, 9, 0, 0, 0])
        #expect(Array(bytes[28..<64]) == [0x04, 0x03, 0x02, 0x01, 0x08, 0x07, 0x06, 0x05, 0x0B, 0x0A, 0x32, 7,
                                          0x14, 0x13, 0x12, 0x11, 0x24, 0x23, 0x22, 0x21, 200, 0, 0, 0,
                                          0x60, 0xEA, 0, 0, 0x30, 0x75, 0, 0, 8, 0, 0, 0])
        bytes.withUnsafeBytes { raw in
            let (commands, errors) = decodeAll(raw)
            #expect(errors.isEmpty && commands == [.plain(String(describing: Command.teardown(FlowID(9), parameters)))])
        }
    }

    @Test("a TEARDOWN with data carries the first unacknowledged byte and the host's bytes after TEARDOWN's fields; FLOW_RELEASED its reason")
    func teardownWithDataLayout() throws {
        var buffer = [UInt8](repeating: 0, count: 160)
        let parameters = TeardownParameters(
            finSequence: SequenceNumber(0x0102_0304), receiveNext: SequenceNumber(0x0506_0708), window: 0x0A0B, windowShift: 7, state: .finWait1,
            timestamps: true, timestampValue: 0x1112_1314, timestampEcho: 0x2122_2324, retransmissionTimeoutMilliseconds: 200,
            maximumRetransmissions: 8, timeWaitMilliseconds: 60_000, finWait2Milliseconds: 30_000)
        let head = Array("HTTP/1.1 200 OK\r\n\r\n".utf8)
        let unacknowledged = SequenceNumber(0x0102_0304 - 1_000)
        let bytes: [UInt8] = buffer.withUnsafeMutableBytes { raw in
            var writer = CommandWriter(buffer: raw)
            head.withUnsafeBytes { _ = writer.append(.teardownWithData(FlowID(9), parameters, unacknowledged: unacknowledged, hostBytes: $0)) }
            _ = writer.append(.flowReleased(FlowID(9), reason: .abandoned))
            return Array(writer.finish(sequence: 1))
        }
        let length = 12 + 36 + 4 + head.count
        #expect(bytes.count == 16 + length + 12 + 4)
        #expect(Array(bytes[16..<28]) == [22, 0, 0, 0, UInt8(length), 0, 0, 0, 9, 0, 0, 0], "TEARDOWN's kind, a longer body")
        #expect(Array(bytes[28..<40]) == [0x04, 0x03, 0x02, 0x01, 0x08, 0x07, 0x06, 0x05, 0x0B, 0x0A, 0x12, 7], "state 1 in the high bits")
        #expect(Array(bytes[64..<68]) == [0x1C, 0xFF, 0x01, 0x01], "the first unacknowledged byte at 36")
        #expect(Array(bytes[68..<(68 + head.count)]) == head)
        #expect(Array(bytes[(16 + length)...]) == [29, 0, 0, 0, 16, 0, 0, 0, 9, 0, 0, 0, 2, 0, 0, 0])
        bytes.withUnsafeBytes { raw in
            let (commands, errors) = decodeAll(raw)
            #expect(errors.isEmpty)
            #expect(commands == [.teardownWithData(FlowID(9), parameters, unacknowledged, head),
                                 .plain(String(describing: Command.flowReleased(FlowID(9), reason: .abandoned)))])
        }
        // Refused: a body between the two lengths, the data not before the FIN or longer than the most, host bytes
        // past the FIN, our FIN taken for acknowledged, an unknown reason.
        let body = Array(bytes[28..<(28 + 36)])
        func teardown(_ body: [UInt8]) -> [UInt8] { [22, 0, 0, 0, UInt8(12 + body.count), 0, 0, 0, 9, 0, 0, 0] + body }
        func sequence(_ value: UInt32) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }
        var finWait2 = body
        finWait2[10] = 0x42
        let cases: [([UInt8], CommandDecodeError)] = [
            (teardown(body + [1, 2]), .badLength(kind: .teardown, flow: FlowID(9), length: 50, index: 1)),
            (teardown(body + sequence(0x0102_0304)), .inconsistent(kind: .teardown, flow: FlowID(9), field: "unacknowledged", index: 1)),
            (teardown(body + sequence(0x0102_0304 - 70_000)), .inconsistent(kind: .teardown, flow: FlowID(9), field: "unacknowledged", index: 1)),
            (teardown(body + sequence(0x0102_0304 - 2) + [1, 2, 3]), .inconsistent(kind: .teardown, flow: FlowID(9), field: "host bytes", index: 1)),
            (teardown(finWait2 + sequence(0x0102_0304 - 2)), .inconsistent(kind: .teardown, flow: FlowID(9), field: "state", index: 1)),
            ([29, 0, 0, 0, 16, 0, 0, 0, 9, 0, 0, 0, 4, 0, 0, 0], .inconsistent(kind: .flowReleased, flow: FlowID(9), field: "reason", index: 1)),
        ]
        for (middle, expectedError) in cases {
            message(middle: middle).withUnsafeBytes { raw in
                let (commands, errors) = decodeAll(raw)
                #expect(errors == [expectedError])
                #expect(commands.count == 2, "both ACKDs around \(expectedError) decode")
            }
        }
    }

    @Test("a SPLICE is laid out as the protocol document says, head after the fixed part; SPLICE_ENDED too")
    func spliceLayout() {
        let client = SpliceConnectionState(
            remoteAddress: IPAddress(IPv4Address(10, 0, 0, 1)), remotePort: 0x0102, localPort: 80, sendNext: SequenceNumber(0x1112_1314),
            receiveNext: SequenceNumber(0x2122_2324), timestamps: true, timestampValue: 0x3132_3334, timestampEcho: 0x4142_4344,
            window: 0x0506, localWindowShift: 7, peerWindowShift: 9, peerSegmentSize: 1448, selectiveAcknowledgments: true)
        var backend = client
        backend.remoteAddress = IPAddress(IPv4Address(10, 0, 0, 9))
        backend.selectiveAcknowledgments = false
        let parameters = SpliceParameters(
            client: client, backend: backend, backendFlow: FlowID(0x0A0B_0C0D), localAddress: IPAddress(IPv4Address(10, 0, 0, 2)),
            retransmissionTimeoutMilliseconds: 200, maximumRetransmissions: 15, idleTimeoutMilliseconds: 300_000, lingerMilliseconds: 5_000)
        let head = Array("GET / HTTP/1.1\r\n\r\n".utf8)
        var buffer = [UInt8](repeating: 0, count: 256)
        let report = SpliceReport(backendFlow: FlowID(0x0A0B_0C0D), reason: .finished, clientBytes: 7, backendBytes: 0x0102_0304,
                                  backendAddress: IPAddress(IPv4Address(10, 0, 0, 9)), backendPort: 8080, backendLocalPort: 33000,
                                  clientClosedFirst: true)
        let bytes: [UInt8] = buffer.withUnsafeMutableBytes { raw in
            var writer = CommandWriter(buffer: raw)
            head.withUnsafeBytes { _ = writer.append(.splice(FlowID(9), parameters, head: $0)) }
            writer.append(.spliceEnded(FlowID(9), report))
            return Array(writer.finish(sequence: 1))
        }
        #expect(bytes.count == 16 + 12 + 88 + head.count + 12 + 32)
        #expect(Array(bytes[16..<28]) == [24, 0, 0, 0, UInt8(100 + head.count), 0, 0, 0, 9, 0, 0, 0])
        #expect(Array(bytes[28..<60]) == [1, 0, 0, 10, 0x02, 0x01, 80, 0, 0x14, 0x13, 0x12, 0x11, 0x24, 0x23, 0x22, 0x21,
                                          0x34, 0x33, 0x32, 0x31, 0x44, 0x43, 0x42, 0x41, 0x06, 0x05, 0xA8, 0x05, 9, 7, 3, 0])
        #expect(bytes[28 + 32] == 9 && bytes[28 + 35] == 10 && bytes[28 + 62] == 1, "the backend's address, and only timestamps set")
        #expect(Array(bytes[(28 + 64)..<(28 + 88)]) == [0x0D, 0x0C, 0x0B, 0x0A, 2, 0, 0, 10, 200, 0, 0, 0, 0xE0, 0x93, 0x04, 0,
                                                        0x88, 0x13, 0, 0, 15, 0, 0, 0])
        #expect(Array(bytes[(28 + 88)..<(28 + 88 + head.count)]) == head)
        let ended = 28 + 88 + head.count
        #expect(Array(bytes[ended..<(ended + 12)]) == [25, 0, 0, 0, 44, 0, 0, 0, 9, 0, 0, 0])
        #expect(Array(bytes[(ended + 12)..<(ended + 44)]) == [0x0D, 0x0C, 0x0B, 0x0A, 0, 1, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0,
                                                              4, 3, 2, 1, 0, 0, 0, 0, 9, 0, 0, 10, 0x90, 0x1F, 0xE8, 0x80],
                "reason 0 (finished), flags bit 0: the client closed first")
        bytes.withUnsafeBytes { raw in
            let (commands, errors) = decodeAll(raw)
            #expect(errors.isEmpty && commands.count == 2)
            #expect(commands.first == .splice(FlowID(9), parameters, head))
            #expect(commands.last == .plain(String(describing: Command.spliceEnded(FlowID(9), report))))
        }
        // The NIC acknowledging the client: flags bit 0 after the retransmission count, nothing else moved.
        var acknowledging = parameters
        acknowledging.acknowledgeClient = true
        let flagged: [UInt8] = buffer.withUnsafeMutableBytes { raw in
            var writer = CommandWriter(buffer: raw)
            head.withUnsafeBytes { _ = writer.append(.splice(FlowID(9), acknowledging, head: $0)) }
            return Array(writer.finish(sequence: 1))
        }
        #expect(Array(flagged[(28 + 86)..<(28 + 88)]) == [1, 0])
        #expect(Array(flagged[28..<(28 + 86)]) == Array(bytes[28..<(28 + 86)]))
        flagged.withUnsafeBytes { raw in
            let (commands, errors) = decodeAll(raw)
            #expect(errors.isEmpty && commands == [.splice(FlowID(9), acknowledging, head)])
        }
    }

    @Test("SPLICE6 and SPLICE_ENDED6: SPLICE's fields with 16-byte addresses in network order; a mapped or mixed one is refused")
    func splice6Layout() throws {
        let clientAddress = try #require(IPAddress("fd77::1")), backendAddress = try #require(IPAddress("fd77::9"))
        let client = SpliceConnectionState(
            remoteAddress: clientAddress, remotePort: 0x0102, localPort: 80, sendNext: SequenceNumber(0x1112_1314),
            receiveNext: SequenceNumber(0x2122_2324), timestamps: true, timestampValue: 0x3132_3334, timestampEcho: 0x4142_4344,
            window: 0x0506, localWindowShift: 7, peerWindowShift: 9, peerSegmentSize: 1428, selectiveAcknowledgments: true)
        var backend = client
        backend.remoteAddress = backendAddress
        let parameters = SpliceParameters(
            client: client, backend: backend, backendFlow: FlowID(0x0A0B_0C0D), localAddress: try #require(IPAddress("fd77::2")),
            retransmissionTimeoutMilliseconds: 200, maximumRetransmissions: 15, idleTimeoutMilliseconds: 300_000, lingerMilliseconds: 5_000)
        let report = SpliceReport(backendFlow: FlowID(0x0A0B_0C0D), reason: .reset, clientBytes: 7, backendBytes: 8,
                                  backendAddress: backendAddress, backendPort: 8080, backendLocalPort: 33000)
        let head = Array("GET / HTTP/1.1\r\n\r\n".utf8)
        func encoded(_ parameters: SpliceParameters, _ report: SpliceReport) -> [UInt8] {
            var buffer = [UInt8](repeating: 0, count: 512)
            return buffer.withUnsafeMutableBytes { raw in
                var writer = CommandWriter(buffer: raw)
                head.withUnsafeBytes { _ = writer.append(.splice(FlowID(9), parameters, head: $0)) }
                writer.append(.spliceEnded(FlowID(9), report))
                return Array(writer.finish(sequence: 1))
            }
        }
        let bytes = encoded(parameters, report)
        let fd77: [UInt8] = [0xFD, 0x77, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        #expect(bytes.count == 16 + 12 + 124 + head.count + 12 + 44)
        #expect(Array(bytes[16..<28]) == [27, 0, 0, 0, UInt8(136 + head.count), 0, 0, 0, 9, 0, 0, 0], "kind 27, SPLICE6")
        #expect(Array(bytes[28..<72]) == fd77 + [1, 0x02, 0x01, 80, 0, 0x14, 0x13, 0x12, 0x11, 0x24, 0x23, 0x22, 0x21,
                                                 0x34, 0x33, 0x32, 0x31, 0x44, 0x43, 0x42, 0x41, 0x06, 0x05, 0x94, 0x05, 9, 7, 3, 0])
        #expect(Array(bytes[72..<88]) == fd77 + [9], "the backend's record starts with its address")
        #expect(Array(bytes[(28 + 88)..<(28 + 124)]) == [0x0D, 0x0C, 0x0B, 0x0A] + fd77 + [2, 200, 0, 0, 0, 0xE0, 0x93, 0x04, 0,
                                                                                        0x88, 0x13, 0, 0, 15, 0, 0, 0])
        #expect(Array(bytes[(28 + 124)..<(28 + 124 + head.count)]) == head)
        let ended = 28 + 124 + head.count
        #expect(Array(bytes[ended..<(ended + 12)]) == [28, 0, 0, 0, 56, 0, 0, 0, 9, 0, 0, 0], "kind 28, SPLICE_ENDED6")
        #expect(Array(bytes[(ended + 12 + 24)..<(ended + 12 + 44)]) == fd77 + [9, 0x90, 0x1F, 0xE8, 0x80])
        bytes.withUnsafeBytes { raw in
            let (commands, errors) = decodeAll(raw)
            #expect(errors.isEmpty && commands.count == 2)
            #expect(commands.first == .splice(FlowID(9), parameters, head))
            #expect(commands.last == .plain(String(describing: Command.spliceEnded(FlowID(9), report))))
        }
        // A SPLICE6 whose addresses are IPv4-mapped is refused, as is a splice across families (never written).
        func sixteen(_ address: IPAddress) -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: 16)
            bytes.withUnsafeMutableBytes { address.bits.store(to: $0, at: 0) }
            return bytes
        }
        var mapped = bytes
        for record in [28, 72] { mapped.replaceSubrange(record..<(record + 16), with: sixteen(IPAddress(IPv4Address(10, 0, 0, 1)))) }
        mapped.replaceSubrange(120..<136, with: sixteen(IPAddress(IPv4Address(10, 0, 0, 2))))
        mapped.withUnsafeBytes { raw in
            #expect(decodeAll(raw).errors.first == .inconsistent(kind: .spliceIPv6, flow: FlowID(9), field: "address families", index: 0))
        }
        var mixed = parameters
        mixed.backend.remoteAddress = IPAddress(IPv4Address(10, 0, 0, 9))
        #expect(Command.splice(FlowID(9), mixed, head: UnsafeRawBufferPointer(start: nil, count: 0)).validationFailure == "address families")
    }

    @Test("a DEVICE is laid out as the protocol document says: short names padded with spaces, read back trimmed")
    func deviceLayout() throws {
        var buffer = [UInt8](repeating: 0, count: 128)
        let bytes: [UInt8] = buffer.withUnsafeMutableBytes { raw in
            var writer = CommandWriter(buffer: raw)
            _ = Array("QEMU NVMe Ctrl".utf8).withUnsafeBytes { model in
                Array("deadbeef".utf8).withUnsafeBytes { serial in
                    writer.append(.device(requestID: 9, file: OffloadedFileID(slot: 3, generation: 2),
                                          DeviceReport(namespace: 1, model: model, serial: serial)))
                }
            }
            return Array(writer.finish(sequence: 1))
        }
        #expect(bytes.count == 16 + 12 + 76)
        #expect(Array(bytes[16..<28]) == [17, 0, 0, 0, 88, 0, 0, 0, 0, 0, 0, 0])
        #expect(Array(bytes[28..<44]) == [9, 0, 0, 0, 3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0])
        #expect(Array(bytes[44..<84]) == Array("QEMU NVMe Ctrl".utf8) + [UInt8](repeating: 0x20, count: 26))
        #expect(Array(bytes[84..<104]) == Array("deadbeef".utf8) + [UInt8](repeating: 0x20, count: 12))
        try bytes.withUnsafeBytes { raw in
            var reader = try CommandReader(message: raw)
            guard case .device(let request, let file, let report)? = try reader.next() else {
                Issue.record("not decoded as DEVICE")
                return
            }
            #expect(request == 9 && file == OffloadedFileID(slot: 3, generation: 2) && report.namespace == 1)
            #expect(report.modelString == "QEMU NVMe Ctrl" && report.serialString == "deadbeef")
        }
    }

    /// A message holding an ACKD, then `middle`, then another ACKD, to see what the reader makes of `middle`.
    func message(middle: [UInt8], declaredCount: UInt16 = 3) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 16)
        func ackd(_ flow: UInt8, _ sequence: UInt8) -> [UInt8] { [13, 0, 0, 0, 16, 0, 0, 0, flow, 0, 0, 0, sequence, 0, 0, 0] }
        bytes += ackd(1, 10) + middle + ackd(2, 20)
        bytes.withUnsafeMutableBytes { MessageHeader(commandCount: declaredCount, length: UInt32($0.count), sequence: 0).emit(into: $0) }
        return bytes
    }

    @Test("an unknown kind or a bad command is dropped, and the next command still decodes")
    func recoverableErrors() {
        let cases: [([UInt8], CommandDecodeError)] = [
            ([99, 0, 0, 0, 12, 0, 0, 0, 7, 0, 0, 0], .unknownKind(rawKind: 99, flow: FlowID(7), index: 1)),
            ([13, 0, 0, 0, 14, 0, 0, 0, 7, 0, 0, 0, 1, 2], .badLength(kind: .acknowledged, flow: FlowID(7), length: 14, index: 1)),
            ([13, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4], .inconsistent(kind: .acknowledged, flow: .none, field: "flow id", index: 1)),
            ([4, 0, 0, 0, 20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0], .inconsistent(kind: .open, flow: .none, field: "path length", index: 1)),
            ([4, 0, 0, 0, 22, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x2F, 0], .inconsistent(kind: .open, flow: .none, field: "path (contains NUL)", index: 1)),
            ([1, 0, 0, 0, 36, 0, 0, 0, 0, 0, 0, 0, 1, 0, 9] + [UInt8](repeating: 0xFF, count: 21), .inconsistent(kind: .hello, flow: .none, field: "role", index: 1)),
            ([15, 0, 0, 0, 12, 0, 0, 0, 3, 0, 0, 0], .inconsistent(kind: .packetIn, flow: FlowID(3), field: "packet length", index: 1)),
        ]
        for (middle, expectedError) in cases {
            message(middle: middle).withUnsafeBytes { raw in
                let (commands, errors) = decodeAll(raw)
                #expect(errors == [expectedError])
                #expect(commands.count == 2, "both ACKDs around \(expectedError) decode")
            }
        }
    }

    @Test("message-level damage drops the message with a precise error")
    func fatalErrors() {
        let good = message(middle: [])
        func errors(_ bytes: [UInt8], limit: Int = 1 << 20) -> [CommandDecodeError] {
            bytes.withUnsafeBytes { decodeAll($0, limit: limit).errors }
        }
        #expect(errors(Array(good.prefix(15))) == [.truncatedMessage(available: 15)])
        var badMagic = good; badMagic[0] = 0
        #expect(errors(badMagic) == [.badMagic(0x5043_5400)])
        var badVersion = good; badVersion[4] = 9
        #expect(errors(badVersion) == [.unsupportedVersion(9)])
        #expect(errors(good, limit: 40) == [.oversizedMessage(length: good.count, limit: 40)])
        #expect(errors(Array(good.prefix(40))) == [.badMessageLength(declared: good.count, available: 40)])
        #expect(errors(message(middle: [], declaredCount: 5)) == [.countMismatch(declared: 5, found: 2)])
        // A command whose length runs past the message: it and the rest are dropped, the first ACKD survives.
        let overrun = message(middle: [13, 0, 0, 0, 0xFF, 0, 0, 0, 1, 0, 0, 0])
        overrun.withUnsafeBytes { raw in
            let (commands, errs) = decodeAll(raw)
            #expect(commands.count == 1)
            #expect(errs == [.truncatedCommand(index: 1)])
        }
        let tooShort = message(middle: [13, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0])
        #expect(errors(tooShort) == [.truncatedCommand(index: 1)])
    }

    @Test("the writer stops at the slot's end and at the header's command count")
    func writerLimits() {
        var buffer = [UInt8](repeating: 0, count: 16 + 16 * 3 + 15)
        buffer.withUnsafeMutableBytes { raw in
            var writer = CommandWriter(buffer: raw)
            for n in 0..<3 {
                let appended = writer.append(.acknowledged(FlowID(1), through: SequenceNumber(UInt32(n))))
                #expect(appended)
            }
            let fourth = writer.append(.acknowledged(FlowID(1), through: SequenceNumber(3)))
            #expect(!fourth)
            let tooLong = writer.appendPacket(.packetOut, flow: FlowID(1), packetLength: 4)
            #expect(tooLong == nil)
            let fits = writer.appendPacket(.packetOut, flow: FlowID(1), packetLength: 3)
            #expect(fits?.count == 3)
            let free = writer.freeBytes
            #expect(free == 0)
        }
    }

    /// Random bytes, and real messages with random damage, through the reader: it must never trap or
    /// read outside the message (run under the address sanitizer by the fuzz target too).
    @Test("random and mutated messages never crash the decoder")
    func hostileMessages() {
        var random = SeededGenerator(seed: 21)
        var decoded = 0
        for round in 0..<20_000 {
            var bytes: [UInt8]
            if round % 3 == 0 {
                bytes = random.bytes(0...200)
            } else {
                bytes = [UInt8](repeating: 0, count: 2048)
                let length = bytes.withUnsafeMutableBytes { raw in
                    var writer = CommandWriter(buffer: raw)
                    for _ in 0..<Int.random(in: 1...8, using: &random) {
                        let kind = CommandKind.allCases.randomElement(using: &random)!
                        random.command(kind) { command, _ in _ = writer.append(command) }
                    }
                    return writer.finish(sequence: 0).count
                }
                bytes.removeLast(bytes.count - length)
                for _ in 0..<Int.random(in: 1...4, using: &random) {
                    bytes[Int.random(in: 0..<bytes.count, using: &random)] = random.next8()
                }
                if Bool.random(using: &random) { bytes.removeLast(Int.random(in: 0...bytes.count, using: &random)) }
            }
            bytes.withUnsafeBytes { raw in decoded += decodeAll(raw, limit: 4096).commands.count }
        }
        #expect(decoded > 10_000, "damaged messages still yield their undamaged commands")
    }
}

private let flowEndpoints4 = FlowEndpoints(localAddress: IPv4Address(10, 77, 0, 2), remoteAddress: IPv4Address(10, 77, 0, 1), localPort: 80,
                                           remotePort: 40000, remoteHardwareAddress: MACAddress(rawValue: 0x0202_0304_0506), maximumSegmentSize: 1460)
