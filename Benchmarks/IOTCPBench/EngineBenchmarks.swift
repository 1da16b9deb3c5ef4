import Foundation
import IOTCPCommon
import IOTCPHost

/// An output that only counts, so the benchmark measures the engine, not a recorder.
struct CountingOutput: CommandOutput {
    var commands = 0
    var packets = 0
    var lastSendEnd = SequenceNumber(0)
    private var scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 64)

    mutating func emit(_ command: Command) {
        commands += 1
        if case .send(_, let range) = command { lastSendEnd = range.sequence + Int(range.length) }
    }

    mutating func emitPacket(flow: FlowID, length: Int, _ build: (UnsafeMutableRawBufferPointer) -> Void) {
        packets += 1
        build(UnsafeMutableRawBufferPointer(rebasing: scratch[0..<length]))
    }
}

/// A peer that writes the packets a Linux client would send, into reusable memory.
struct PeerPackets {
    static let server = IPv4Address(10, 77, 0, 2)
    static let client = IPv4Address(10, 77, 0, 1)

    static func packet(
        port: UInt16, sequence: UInt32, acknowledgment: UInt32, flags: TCPFlags, window: UInt16, options: TCPOptions,
        into buffer: UnsafeMutableRawBufferPointer
    ) -> Int {
        let tcp = TCPRepr(sourcePort: port, destinationPort: 80, sequenceNumber: SequenceNumber(sequence),
                          acknowledgmentNumber: SequenceNumber(acknowledgment), flags: flags, window: window, options: options)
        try! IPv4Repr(source: client, destination: server, protocol: .tcp, payloadLength: tcp.headerLength).emit(into: buffer)
        let segment = UnsafeMutableRawBufferPointer(rebasing: buffer[20..<(20 + tcp.headerLength)])
        _ = try! tcp.emitHeader(into: segment)
        TCPRepr.fillChecksum(segment: segment, source: client, destination: server)
        return 20 + tcp.headerLength
    }

    /// Completes a handshake from `port`; returns the server's ISN.
    static func handshake(_ engine: inout TCPEngine, output: inout CountingOutput, port: UInt16, now: Instant) -> UInt32 {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 128, alignment: 8)
        defer { buffer.deallocate() }
        var synOptions = TCPOptions(maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true,
                                    timestamps: TCPTimestamps(value: 1, echoReply: 0))
        var length = packet(port: port, sequence: 1000, acknowledgment: 0, flags: .syn, window: 64240, options: synOptions, into: buffer)
        var iss: UInt32 = 0
        var capture = SynAckCapture()
        engine.handlePacket(UnsafeRawBufferPointer(rebasing: buffer[0..<length]), now: now, output: &capture)
        iss = capture.sequence
        synOptions = TCPOptions(timestamps: TCPTimestamps(value: 2, echoReply: capture.timestamp))
        length = packet(port: port, sequence: 1001, acknowledgment: iss &+ 1, flags: .ack, window: 65535, options: synOptions, into: buffer)
        engine.handlePacket(UnsafeRawBufferPointer(rebasing: buffer[0..<length]), now: now, output: &output)
        return iss
    }
}

/// Reads the SYN-ACK's sequence number and timestamp.
struct SynAckCapture: CommandOutput {
    var sequence: UInt32 = 0
    var timestamp: UInt32 = 0
    mutating func emit(_ command: Command) {}
    mutating func emitPacket(flow: FlowID, length: Int, _ build: (UnsafeMutableRawBufferPointer) -> Void) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: length, alignment: 8)
        defer { buffer.deallocate() }
        build(buffer)
        if let ip = try? IPv4PacketView(UnsafeRawBufferPointer(buffer)), let view = try? TCPSegmentView(ip.payload),
           let tcp = try? TCPRepr(view) {
            sequence = tcp.sequenceNumber.rawValue
            timestamp = tcp.options.timestamps?.value ?? 0
        }
    }
}

/// Nanoseconds of engine work per ACK received for an offloaded transfer: parse and verify the packet,
/// find the connection, process the ACK (RTT, congestion window, send queue), and emit what follows
/// (SEND for the opened window, ACKD every 64 KiB), as PACKET_IN would have it done.
func acknowledgmentCost(acks total: Int) -> (nanosecondsPerAck: Double, commandsPerAck: Double) {
    var now = Instant.milliseconds(1000)
    var configuration = TCPConfiguration()
    configuration.fileQueueBytes = 64 << 20
    var engine = TCPEngine(localAddress: PeerPackets.server, configuration: configuration, secret: (7, 9), now: now)
    _ = try! engine.listen(port: 80)
    var output = CountingOutput()
    let iss = PeerPackets.handshake(&engine, output: &output, port: 40000, now: now)
    let handle = engine.accept(TCPListenerID(port: 80))!
    let file = OffloadedFileID(slot: 1, generation: 1)
    var queuedOffset: UInt64 = 0
    func refill() {
        let taken = (try? engine.writeFile(handle, file: file, offset: queuedOffset, length: 64 << 20, now: now, output: &output)) ?? 0
        queuedOffset += UInt64(taken)
    }
    refill()

    // Each ACK acknowledges two more segments of what the engine has sent, and is written just before it
    // is handed over; the cost of writing alone is measured the same way and taken off.
    let packet = UnsafeMutableRawBufferPointer.allocate(byteCount: 128, alignment: 64)
    defer { packet.deallocate() }
    var acked = iss &+ 1
    var tsValue: UInt32 = 10
    let commandsBefore = output.commands
    let batch = 65_536
    var withEngine: UInt64 = 0
    var processed = 0
    while processed < total {
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<batch {
            let next = SequenceNumber(acked) + 2896
            acked = (next > output.lastSendEnd ? output.lastSendEnd : next).rawValue
            tsValue &+= 1
            let length = PeerPackets.packet(port: 40000, sequence: 1001, acknowledgment: acked, flags: .ack, window: 65535,
                                            options: TCPOptions(timestamps: TCPTimestamps(value: tsValue, echoReply: 1)), into: packet)
            now = now + 1000
            engine.handlePacket(UnsafeRawBufferPointer(rebasing: packet[0..<length]), flow: handle.flow, now: now, output: &output)
            if output.commands & 63 == 0 { engine.handleEcho(flow: handle.flow, sequenceEnd: output.lastSendEnd, nicDelayNanoseconds: 0, now: now, output: &output) }
            // Keep the file queue from running dry (an application's sendfile loop would do the same).
            if tsValue & 4095 == 0 { refill() }
        }
        withEngine += DispatchTime.now().uptimeNanoseconds - start
        processed += batch
        refill()
    }
    var buildOnly: UInt64 = 0
    var sink: UInt32 = 0
    for _ in 0..<(total / batch) {
        let start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<batch {
            acked &+= 2896
            tsValue &+= 1
            let length = PeerPackets.packet(port: 40000, sequence: 1001, acknowledgment: acked, flags: .ack, window: 65535,
                                            options: TCPOptions(timestamps: TCPTimestamps(value: tsValue, echoReply: 1)), into: packet)
            sink &+= UInt32(length) &+ UInt32(packet[length - 1])
        }
        buildOnly += DispatchTime.now().uptimeNanoseconds - start
    }
    consume(sink)
    let elapsed = withEngine > buildOnly ? withEngine - buildOnly : 0
    return (Double(elapsed) / Double(processed), Double(output.commands - commandsBefore) / Double(processed))
}

/// Resident bytes per established, idle connection, measured with `count` of them open.
func memoryPerConnection(count: Int) -> (bytesPerConnection: Double, controlBlockBytes: Int) {
    let now = Instant.milliseconds(1000)
    var engine = TCPEngine(localAddress: PeerPackets.server, secret: (3, 4), now: now)
    _ = try! engine.listen(port: 80, backlog: count)
    var output = CountingOutput()
    // Warm up the allocator and the tables with a first batch, so growth is what is measured.
    let before = residentBytes()
    for index in 0..<count {
        _ = PeerPackets.handshake(&engine, output: &output, port: UInt16(1024 + index), now: now)
    }
    var accepted = 0
    while engine.accept(TCPListenerID(port: 80)) != nil { accepted += 1 }
    let after = residentBytes()
    precondition(accepted == count && engine.connectionCount == count, "every handshake must complete")
    return (Double(after - before) / Double(count), TCPEngine.controlBlockBytes)
}

/// Resident set size from /proc/self/statm.
func residentBytes() -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
    let fields = text.split(separator: " ")
    return (Int(fields[1]) ?? 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
}
