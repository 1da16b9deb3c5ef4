// libFuzzer target for the host's TCP engine, compiled with IOTCPCommon's and IOTCPHost's sources by
// scripts/fuzz.sh. The input is a script: each step injects a segment from one of a few peers (fields
// drawn from the input, checksums right unless the input asks otherwise), moves time, or does what an
// application does (accept, write, offload, read, close, abort, ECHO). Invariants after every step:
// nothing traps; every connection's send sequence numbers are ordered (SND.UNA <= SND.NXT <= SND.MAX);
// the advertised receive window never moves left; the number of connections stays under the engine's
// capacity; what an application queued stays within its buffers.
import IOTCPCommon

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzEngine(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    var input = FuzzInput(UnsafeRawBufferPointer(start: start, count: count))
    var configuration = TCPConfiguration()
    configuration.receiveBufferBytes = 8192
    configuration.sendBufferBytes = 8192
    let local = IPv4Address(10, 0, 0, 1)
    var now = Instant.milliseconds(1000)
    let engine = TCPEngine(localAddress: local, configuration: configuration, secret: (1, 2), maximumConnections: 64, now: now)
    let listener = try? engine.listen(port: 80, backlog: 4)
    var output = DiscardingOutput()
    var handles: [TCPHandle] = []
    var edges: [TCPHandle: SequenceNumber] = [:]
    var buffer = [UInt8](repeating: 0, count: 4096)
    while let step = input.byte() {
        switch step % 8 {
        case 0, 1, 2:
            // A segment from one of four peers, aimed near what the connection expects.
            let peer = input.byte() ?? 0
            var tcp = TCPRepr(
                sourcePort: 40000 + UInt16(peer & 3), destinationPort: (peer & 0x80) != 0 ? 81 : 80,
                sequenceNumber: SequenceNumber(input.word()), acknowledgmentNumber: SequenceNumber(input.word()),
                flags: TCPFlags(rawValue: input.byte() ?? 0x10), window: UInt16(truncatingIfNeeded: input.word()), options: TCPOptions())
            let optionBits = input.byte() ?? 0
            if optionBits & 1 != 0 { tcp.options.maximumSegmentSize = UInt16(truncatingIfNeeded: input.word()) }
            if optionBits & 2 != 0 { tcp.options.windowScale = (input.byte() ?? 0) & 15 }
            if optionBits & 4 != 0 { tcp.options.sackPermitted = true }
            if optionBits & 8 != 0 { tcp.options.timestamps = TCPTimestamps(value: input.word(), echoReply: input.word()) }
            if optionBits & 16 != 0 {
                let left = SequenceNumber(input.word())
                tcp.options.sackBlocks = SACKBlockList([SACKBlock(left: left, right: left + Int((input.byte() ?? 1)) * 100)])
            }
            let payloadLength = Int(input.byte() ?? 0) * 8
            var packet = [UInt8](repeating: 0x61, count: 20 + tcp.headerLength + payloadLength)
            let corrupt = optionBits & 0x80 != 0
            packet.withUnsafeMutableBytes { raw in
                guard (try? IPv4Repr(source: IPv4Address(10, 0, 0, 2), destination: local, protocol: .tcp,
                                     payloadLength: tcp.headerLength + payloadLength).emit(into: raw)) != nil,
                      (try? tcp.emitHeader(into: UnsafeMutableRawBufferPointer(rebasing: raw[20...]))) != nil else { return }
                TCPRepr.fillChecksum(segment: UnsafeMutableRawBufferPointer(rebasing: raw[20...]), source: IPv4Address(10, 0, 0, 2), destination: local)
                if corrupt { raw[raw.count - 1] ^= 0x40 }
            }
            packet.withUnsafeBytes { engine.handlePacket($0, now: now, output: &output) }
        case 3:
            now = now + UInt64(input.byte() ?? 1) * 7 * Nanoseconds.millisecond
            engine.handleTimers(now: now, output: &output)
        case 4:
            if let listener, let handle = engine.accept(listener) { handles.append(handle) }
        case 5:
            guard !handles.isEmpty else { continue }
            let handle = handles[Int(input.byte() ?? 0) % handles.count]
            switch (input.byte() ?? 0) % 6 {
            case 0: _ = try? [UInt8](repeating: 1, count: Int(input.byte() ?? 0) * 40).withUnsafeBytes { try engine.write(handle, $0, now: now, output: &output) }
            case 1: _ = try? engine.writeFile(handle, file: OffloadedFileID(slot: 1, generation: 1), offset: 0, length: Int(input.word() & 0xFFFFF), now: now, output: &output)
            case 2: _ = try? buffer.withUnsafeMutableBytes { try engine.read(handle, into: $0, now: now, output: &output) }
            case 3: try? engine.close(handle, now: now, output: &output)
            case 4: try? engine.abort(handle, output: &output)
            default: try? engine.shutdownWrite(handle, now: now, output: &output)
            }
        case 6:
            guard !handles.isEmpty else { continue }
            let handle = handles[Int(input.byte() ?? 0) % handles.count]
            if let info = engine.info(of: handle) {
                engine.handleEcho(flow: handle.flow, sequenceEnd: info.sendMaximum, nicDelayNanoseconds: UInt64(input.byte() ?? 0) * 1_000_000,
                                  now: now, output: &output)
            }
        default:
            _ = engine.nextDeadline
            engine.drainEvents({ _, _ in }, listeners: { _ in }, settled: { _ in })
        }
        // Invariants.
        precondition(engine.connectionCount <= 64, "more connections than the engine holds")
        for handle in handles {
            guard let info = engine.info(of: handle) else { continue }
            precondition(info.sendUnacknowledged <= info.sendNext && info.sendNext <= info.sendMaximum, "send sequence out of order: \(info)")
            precondition(info.sendWindow >= 0 && info.queuedBytes >= 0)
            guard let edge = engine.receiveWindowEdge(of: handle) else { continue }
            if let previous = edges[handle], info.state.isSynchronized {
                precondition(edge >= previous, "the advertised window moved left")
            }
            edges[handle] = edge
        }
    }
    return 0
}

struct DiscardingOutput: CommandOutput {
    var scratch = [UInt8](repeating: 0, count: 70_000)
    mutating func emit(_ command: Command) {
        precondition(command.validationFailure == nil, "the engine emitted an invalid command: \(command.kind)")
    }
    mutating func emitPacket(flow: FlowID, length: Int, _ build: (UnsafeMutableRawBufferPointer) -> Void) {
        precondition(length <= scratch.count, "a packet of \(length) bytes")
        scratch.withUnsafeMutableBytes { build(UnsafeMutableRawBufferPointer(rebasing: $0[0..<length])) }
    }
}
