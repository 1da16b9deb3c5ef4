import IOTCPCommon

/// Where the data plane's work goes: packets to the wire, and answers to the host.
public protocol NICOutput {
    /// An IPv4 packet of `length` bytes for the wire, built in place by `build`. With `segmentSize` > 0
    /// it is a TCP super-segment (only sent when `NICDataPlane.superSegmentLimit` allows them): the wire cuts
    /// it into segments of that many payload bytes and finishes the TCP checksum.
    mutating func transmit(length: Int, segmentSize: Int, _ build: (UnsafeMutableRawBufferPointer) -> Void)
    /// A command for the host: OPENED, STAT, ECHO, ERROR, PACKET_IN.
    mutating func reply(_ command: Command)
}

extension NICOutput {
    /// An ordinary packet.
    @inlinable
    public mutating func transmit(length: Int, _ build: (UnsafeMutableRawBufferPointer) -> Void) {
        transmit(length: length, segmentSize: 0, build)
    }
}

/// The NIC half's command executor, without I/O of its own beyond reading files: it keeps no TCP state,
/// only what the commands name (flows' addresses, open files, sent data until ACKD).
///
/// - SEND: each segment is built from the host's template with the file bytes read straight into the
///   packet, then ECHO tells the host the range is on the wire and how long it waited here.
/// - RETRANSMIT: the bytes come from the store (buffered) or from the file again (bufferless).
/// - Errors (unknown flow or file, a missing or unreadable file, a file that shrank) are
///   answered with ERROR; nothing a command says makes it trap.
public final class NICDataPlane {
    public let files: FileTable
    public private(set) var store: RetransmitStore
    private var flows: [FlowID: FlowEndpoints] = [:]
    /// The flow a received segment belongs to, by its remote address and ports.
    private var flowsByEndpoints: [EndpointKey: FlowID] = [:]

    struct EndpointKey: Hashable {
        var remoteAddress: UInt32
        var remotePort: UInt16
        var localPort: UInt16
    }
    private var scratch = [UInt8](repeating: 0, count: 65536)
    /// The largest IPv4 packet a SEND may leave in, when the wire can cut TCP super-segments itself
    /// (a TAP with a vnet header): up to 65,535 bytes, 45 segments at MSS 1448 in one write. 0 (the
    /// default) cuts every segment here. The runtime sets it for a clean wire only: fault injection and
    /// capture see real segments.
    public var superSegmentLimit = 0
    public private(set) var counters = Counters()

    public struct Counters: Hashable, Sendable {
        public var packetsOut = 0
        public var bytesOut = 0
        public var packetsIn = 0
        public var malformedIn = 0
        public var commands = 0
        public var errors = 0
        /// SENDs recorded without their bytes because the buffered store was at its limit.
        public var storeSpills = 0
    }

    public init(files: FileTable, retransmitMode: RetransmitStore.Mode = .buffered, storeLimitBytes: Int = 256 << 20) {
        self.files = files
        store = RetransmitStore(mode: retransmitMode, limitBytes: storeLimitBytes)
    }

    /// Executes one command from the host. `received` is when it arrived: the ECHO's delay counts from it.
    public func handle<O: NICOutput>(_ command: Command, received: Instant, now: Instant, output: inout O) {
        counters.commands += 1
        switch command {
        case .hello, .keepalive, .error, .opened, .stat, .echo, .packetIn, .device:
            break  // not for the NIC to act on
        case .open(let requestID, _, let path):
            let text = String(decoding: path, as: UTF8.self)
            do throws(FileTable.Failure) {
                let (file, status) = try files.open(path: text)
                // STAT follows at once, so the host has the whole status without another round trip.
                output.reply(.opened(requestID: requestID, file: file, size: status.size))
                if let device = try files.device(of: file) { reply(device, requestID: requestID, file: file, output: &output) }
                output.reply(.stat(requestID: requestID, file: file, status: status))
            } catch {
                fail(error.code, kind: .open, flow: .none, reference: UInt64(requestID), error.description, output: &output)
            }
        case .fstat(let requestID, let file):
            do throws(FileTable.Failure) {
                output.reply(.stat(requestID: requestID, file: file, status: try files.status(file)))
            } catch {
                fail(error.code, kind: .fstat, flow: .none, reference: UInt64(requestID), error.description, output: &output)
            }
        case .closeFile(let file):
            do throws(FileTable.Failure) { try files.close(file) } catch {
                fail(error.code, kind: .closeFile, flow: .none, reference: file.rawValue, error.description, output: &output)
            }
        case .flowOpen(let flow, let endpoints):
            flows[flow] = endpoints
            flowsByEndpoints[EndpointKey(remoteAddress: endpoints.remoteAddress.rawValue, remotePort: endpoints.remotePort,
                                         localPort: endpoints.localPort)] = flow
        case .flowClose(let flow, _):
            if let endpoints = flows.removeValue(forKey: flow) {
                flowsByEndpoints[EndpointKey(remoteAddress: endpoints.remoteAddress.rawValue, remotePort: endpoints.remotePort,
                                             localPort: endpoints.localPort)] = nil
            }
            store.removeFlow(flow)
        case .acknowledged(let flow, let through):
            store.acknowledge(flow: flow, through: through)
        case .packetOut(_, let packet):
            output.transmit(length: packet.count) { $0.copyMemory(from: packet) }
            counters.packetsOut += 1
            counters.bytesOut += packet.count
        case .send(let flow, let range):
            send(flow: flow, range, received: received, now: now, output: &output)
        case .retransmit(let flow, let sequence, let length, let template):
            retransmit(flow: flow, sequence: sequence, length: Int(length), template: template, output: &output)
        }
    }

    /// Forgets every flow, frees every held byte and closes every file: the host that named them is gone.
    public func reset() {
        flows.removeAll()
        flowsByEndpoints.removeAll()
        store = RetransmitStore(mode: store.mode, limitBytes: store.limitBytes)
        files.closeAll()
    }

    public var flowCount: Int { flows.count }

    /// A packet from the wire: a TCP segment goes to the host as PACKET_IN, tagged with its flow when the
    /// NIC knows it (a SYN for a listener, or a stray, goes untagged and the host decides). Anything that is
    /// not well-formed IPv4/TCP is dropped and counted here, never handed on.
    public func receive<O: NICOutput>(packet: UnsafeRawBufferPointer, output: inout O) {
        guard packet.count <= Int(UInt16.max), let ip = try? IPv4PacketView(packet), ip.protocol == .tcp,
              let segment = try? TCPSegmentView(ip.payload)
        else {
            counters.malformedIn += 1
            return
        }
        let key = EndpointKey(remoteAddress: ip.source.rawValue, remotePort: segment.sourcePort, localPort: segment.destinationPort)
        counters.packetsIn += 1
        output.reply(.packetIn(flowsByEndpoints[key] ?? .none, packet: ip.bytes))
    }

    private func send<O: NICOutput>(flow: FlowID, _ range: SendRange, received: Instant, now: Instant, output: inout O) {
        guard let endpoints = flows[flow] else {
            fail(.unknownFlow, kind: .send, flow: flow, reference: UInt64(range.sequence.rawValue), "SEND for unknown \(flow)", output: &output)
            return
        }
        let length = Int(range.length)
        // Buffered, the bytes are kept while the store has room; past its limit the range is kept as its
        // file range, to be read again if it is ever retransmitted: memory stays bounded, nothing fails.
        let keepBytes = store.hasRoom(for: length)
        if store.mode == .buffered && !keepBytes { counters.storeSpills += 1 }
        // Read the whole range once (one disk read per SEND, Atlas's point), keep it if buffered.
        let bytes: [UInt8]
        do throws(FileTable.Failure) {
            bytes = try read(range.file, offset: range.offset, length: length)
        } catch {
            fail(error.code, kind: .send, flow: flow, reference: UInt64(range.sequence.rawValue), error.description, output: &output)
            return
        }
        let delay = now - received
        transmit(endpoints, sequence: range.sequence, bytes: bytes, template: range.template,
                 delayMilliseconds: UInt32(min(delay / 1_000_000, UInt64(UInt32.max))), output: &output)
        store.record(flow: flow, RetransmitStore.Range(
            sequence: range.sequence, length: length, file: range.file, offset: range.offset,
            bytes: keepBytes ? bytes : nil))
        output.reply(.echo(flow, sequenceEnd: range.sequence + length, nicDelayNanoseconds: delay))
    }

    private func retransmit<O: NICOutput>(
        flow: FlowID, sequence: SequenceNumber, length: Int, template: SegmentTemplate, output: inout O
    ) {
        guard let endpoints = flows[flow] else {
            fail(.unknownFlow, kind: .retransmit, flow: flow, reference: UInt64(sequence.rawValue), "RETRANSMIT for unknown \(flow)", output: &output)
            return
        }
        guard let pieces = store.pieces(flow: flow, sequence: sequence, length: length) else {
            fail(.malformedCommand, kind: .retransmit, flow: flow, reference: UInt64(sequence.rawValue),
                 "RETRANSMIT of data never sent or already acknowledged", output: &output)
            return
        }
        for (range, skip, take) in pieces {
            let bytes: [UInt8]
            if let stored = range.bytes {
                bytes = Array(stored[skip..<(skip + take)])
            } else {
                do throws(FileTable.Failure) {
                    bytes = try read(range.file, offset: range.offset + UInt64(skip), length: take)
                } catch {
                    fail(error.code, kind: .retransmit, flow: flow, reference: UInt64(sequence.rawValue), error.description, output: &output)
                    return
                }
            }
            transmit(endpoints, sequence: range.sequence + skip, bytes: bytes, template: template, delayMilliseconds: 0, output: &output)
        }
    }

    /// `length` bytes of the file, read straight into a new array's uninitialised storage (no zeroing
    /// first: the read fills every byte, or it fails and the array is empty).
    private func read(_ file: OffloadedFileID, offset: UInt64, length: Int) throws(FileTable.Failure) -> [UInt8] {
        var failure: FileTable.Failure?
        let bytes = [UInt8](unsafeUninitializedCapacity: length) { buffer, count in
            do throws(FileTable.Failure) {
                try files.read(file, offset: offset, into: UnsafeMutableRawBufferPointer(buffer))
                count = length
            } catch {
                failure = error
                count = 0
            }
        }
        if let failure { throw failure }
        return bytes
    }

    /// The range as segments, or, when the wire cuts super-segments and the range is longer than one MSS,
    /// as pieces of whole MSS multiples that the wire cuts and finishes the checksums of.
    private func transmit<O: NICOutput>(
        _ endpoints: FlowEndpoints, sequence: SequenceNumber, bytes: [UInt8], template: SegmentTemplate,
        delayMilliseconds: UInt32, output: inout O
    ) {
        let mss = max(Int(template.maximumSegmentSize), 1)
        let headers = SegmentBuilder.packetLength(payloadLength: 0, template: template)
        let superPayload = superSegmentLimit > 0 ? SegmentBuilder.superSegmentPayload(packetLimit: superSegmentLimit, template: template) : 0
        let piece = superPayload > 0 && bytes.count > mss ? superPayload : mss
        bytes.withUnsafeBytes { source in
            SegmentBuilder.forEachSegment(sequence: sequence, length: bytes.count, template: template, pieceLength: piece) { seq, offset, chunk, isLast in
                let length = headers + chunk
                let segmentSize = chunk > mss ? mss : 0
                output.transmit(length: length, segmentSize: segmentSize) { buffer in
                    _ = try? SegmentBuilder.build(
                        into: buffer, flow: endpoints, sequence: seq, payloadLength: chunk, isLast: isLast, template: template,
                        nicDelayMilliseconds: delayMilliseconds, checksumOffload: segmentSize > 0
                    ) { payload in payload.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[offset..<(offset + chunk)])) }
                }
                // Counted as the segments the wire carries.
                let segments = (chunk + mss - 1) / mss
                counters.packetsOut += segments
                counters.bytesOut += length + (segments - 1) * headers
            }
        }
    }

    /// DEVICE, between OPENED and STAT.
    private func reply<O: NICOutput>(_ device: StorageDevice, requestID: UInt32, file: OffloadedFileID, output: inout O) {
        var model = device.model, serial = device.serial
        model.withUTF8 { model in
            serial.withUTF8 { serial in
                output.reply(.device(requestID: requestID, file: file, DeviceReport(
                    namespace: device.namespace, model: UnsafeRawBufferPointer(model), serial: UnsafeRawBufferPointer(serial))))
            }
        }
    }

    private func fail<O: NICOutput>(
        _ code: CommandErrorCode, kind: CommandKind, flow: FlowID, reference: UInt64, _ text: String, output: inout O
    ) {
        counters.errors += 1
        var message = text
        message.withUTF8 { bytes in
            let cut = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[0..<min(bytes.count, CommandProtocol.maxErrorTextLength)])
            output.reply(.error(flow, ErrorReport(code: code, failedKind: kind.rawValue, reference: reference, text: cut)))
        }
    }
}
