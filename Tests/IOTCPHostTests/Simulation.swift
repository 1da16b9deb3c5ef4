import IOTCPCommon
import IOTCPNIC
@testable import IOTCPHost

/// Byte `offset` of offloaded file `file`: a pattern every side can recompute, so a transfer is checked
/// byte for byte without storing it.
@inline(__always)
func fileByte(_ file: OffloadedFileID, _ offset: UInt64) -> UInt8 {
    let mixedOffset = (offset &+ 1) &* 0x9E37_79B9_7F4A_7C15
    let mixedFile = file.rawValue &* 0xBF58_476D_1CE4_E5B9
    var x = mixedOffset ^ mixedFile
    x ^= x >> 31
    return UInt8(truncatingIfNeeded: x)
}

/// What the wire does to packets: one-way delay, jitter, and seeded loss, duplication, reordering and
/// corruption, the same in both directions.
struct WireConditions: CustomStringConvertible {
    var oneWayDelay: UInt64
    var jitter: UInt64 = 0
    var loss = 0.0
    var duplication = 0.0
    var reordering = 0.0
    var corruption = 0.0

    var description: String {
        "RTT \(Double(2 * oneWayDelay) / 1e6) ms, loss \(loss * 100)%, dup \(duplication * 100)%, reorder \(reordering * 100)%"
    }
}

/// Collects what an engine emits, copied out, for the simulation to route.
struct QueueOutput: CommandOutput {
    enum Item {
        case packet([UInt8])
        case command(NICCommand)
    }
    enum NICCommand {
        case flowOpen(FlowID, FlowEndpoints)
        case flowClose(FlowID)
        case send(FlowID, SendRange)
        case retransmit(FlowID, SequenceNumber, Int, SegmentTemplate)
        case acknowledged(FlowID, SequenceNumber)
    }

    var items: [Item] = []

    mutating func emit(_ command: Command) {
        switch command {
        case .flowOpen(let flow, let endpoints): items.append(.command(.flowOpen(flow, endpoints)))
        case .flowClose(let flow, _): items.append(.command(.flowClose(flow)))
        case .send(let flow, let range): items.append(.command(.send(flow, range)))
        case .retransmit(let flow, let sequence, let length, let template):
            items.append(.command(.retransmit(flow, sequence, Int(length), template)))
        case .acknowledged(let flow, let through): items.append(.command(.acknowledged(flow, through)))
        default: break
        }
    }

    mutating func emitPacket(flow: FlowID, length: Int, _ build: (UnsafeMutableRawBufferPointer) -> Void) {
        var bytes = [UInt8](repeating: 0, count: length)
        bytes.withUnsafeMutableBytes { build($0) }
        items.append(.packet(bytes))
    }
}

/// The NIC half as the simulation runs it: SEND and RETRANSMIT become segments built by the real
/// `SegmentBuilder` from file bytes; sent ranges stay in the real `RetransmitStore` (bufferless: the bytes
/// are a pattern, computed again on retransmission) until ACKD frees them.
struct SimulatedNIC {
    var flows: [FlowID: FlowEndpoints] = [:]
    var store = RetransmitStore(mode: .bufferless)
    var heldBytes: Int { store.heldBytes }
    /// Bytes still held when their flow closed: data the host never told the NIC it could free.
    var heldAtClose = 0
    var retransmitsNotFound = 0
    var commands = 0

    /// Returns the packets to transmit and the ECHO to send back (if any).
    mutating func handle(_ command: QueueOutput.NICCommand, nicDelayMilliseconds: UInt32) -> (packets: [[UInt8]], echo: (FlowID, SequenceNumber)?) {
        commands += 1
        switch command {
        case .flowOpen(let flow, let endpoints):
            flows[flow] = endpoints
            return ([], nil)
        case .flowClose(let flow):
            heldAtClose += store.removeFlow(flow)
            flows[flow] = nil
            return ([], nil)
        case .send(let flow, let range):
            guard let endpoints = flows[flow] else { return ([], nil) }
            store.record(flow: flow, RetransmitStore.Range(sequence: range.sequence, length: Int(range.length), file: range.file,
                                                           offset: range.offset, bytes: nil))
            let packets = build(endpoints, sequence: range.sequence, length: Int(range.length), template: range.template,
                                delay: nicDelayMilliseconds) { offset in fileByte(range.file, range.offset + UInt64(offset)) }
            return (packets, (flow, range.sequence + Int(range.length)))
        case .retransmit(let flow, let sequence, let length, let template):
            guard let endpoints = flows[flow] else { return ([], nil) }
            guard let pieces = store.pieces(flow: flow, sequence: sequence, length: length) else {
                retransmitsNotFound += 1
                return ([], nil)
            }
            var packets: [[UInt8]] = []
            for (stored, skip, take) in pieces {
                packets += build(endpoints, sequence: stored.sequence + skip, length: take, template: template, delay: 0) { offset in
                    fileByte(stored.file, stored.offset + UInt64(skip + offset))
                }
            }
            return (packets, nil)
        case .acknowledged(let flow, let through):
            store.acknowledge(flow: flow, through: through)
            return ([], nil)
        }
    }

    private func build(
        _ endpoints: FlowEndpoints, sequence: SequenceNumber, length: Int, template: SegmentTemplate, delay: UInt32,
        byte: (Int) -> UInt8
    ) -> [[UInt8]] {
        var packets: [[UInt8]] = []
        SegmentBuilder.forEachSegment(sequence: sequence, length: length, template: template) { seq, offset, chunk, isLast in
            var packet = [UInt8](repeating: 0, count: SegmentBuilder.packetLength(payloadLength: chunk, template: template))
            packet.withUnsafeMutableBytes { buffer in
                _ = try? SegmentBuilder.build(into: buffer, flow: endpoints, sequence: seq, payloadLength: chunk, isLast: isLast,
                                              template: template, nicDelayMilliseconds: delay) { payload in
                    for index in 0..<chunk { payload[index] = byte(offset + index) }
                }
            }
            packets.append(packet)
        }
        return packets
    }
}

/// A server engine offloading files through a simulated NIC to a client engine, over a simulated wire,
/// on a virtual clock. Everything random comes from one seed.
struct Simulation {
    static let serverAddress = IPv4Address(10, 0, 0, 1)
    static let clientAddress = IPv4Address(10, 0, 0, 2)
    static let port: UInt16 = 80

    struct InFlight {
        var deliverAt: UInt64
        var order: UInt64
        var bytes: [UInt8]
        var toClient: Bool
    }

    struct Transfer {
        var clientPort: UInt16
        var size: Int
        var file: OffloadedFileID
        var received = 0
        var finished = false
        var corrupt = false
        var handle: TCPHandle?
        /// When the last byte arrived (before the closing handshake and TIME-WAIT).
        var completedAt: Instant?
    }

    var now: Instant
    var server: TCPEngine
    var client: TCPEngine
    var serverOutput = QueueOutput()
    var clientOutput = QueueOutput()
    var nic = SimulatedNIC()
    var nicDelay: UInt64 = 50_000
    var wire: [InFlight] = []
    var echoes: [(UInt64, FlowID, SequenceNumber)] = []
    var conditions: WireConditions
    var random: SeededGenerator
    var order: UInt64 = 0
    var transfers: [Transfer] = []
    /// Server handle → (file, size, bytes queued so far).
    var serving: [TCPHandle: (file: OffloadedFileID, size: Int, queued: Int, closed: Bool)] = [:]
    var listener: TCPListenerID
    var packetsDelivered = 0
    var packetsDropped = 0
    private var buffer = [UInt8](repeating: 0, count: 256 * 1024)

    init(seed: UInt64, conditions: WireConditions, sizes: [Int], configuration: TCPConfiguration = TCPConfiguration()) {
        now = Instant.milliseconds(10_000)
        random = SeededGenerator(seed: seed)
        self.conditions = conditions
        server = TCPEngine(localAddress: Self.serverAddress, configuration: configuration, secret: (seed, ~seed), now: now)
        client = TCPEngine(localAddress: Self.clientAddress, configuration: configuration, secret: (~seed, seed), now: now)
        listener = try! server.listen(port: Self.port, backlog: 1024)
        for (index, size) in sizes.enumerated() {
            transfers.append(Transfer(clientPort: UInt16(20000 + index), size: size,
                                      file: OffloadedFileID(slot: UInt32(index + 1), generation: UInt32(truncatingIfNeeded: seed))))
        }
        for index in transfers.indices {
            transfers[index].handle = try! client.connect(to: Self.serverAddress, port: Self.port,
                                                          localPort: transfers[index].clientPort, now: now, output: &clientOutput)
        }
    }

    var allFinished: Bool { transfers.allSatisfy(\.finished) && server.connectionCount == 0 && client.connectionCount == 0 }

    /// Runs until every transfer is received, checked and closed on both sides, or `limit` passes.
    mutating func run(limit: UInt64 = 3_600 * Nanoseconds.second) -> Bool {
        let deadline = now + limit
        while !allFinished && now < deadline {
            step()
            guard let next = nextEventTime() else { return allFinished }
            now = Instant(nanoseconds: max(next, now.nanoseconds))
        }
        return allFinished
    }

    private func nextEventTime() -> UInt64? {
        var times: [UInt64] = []
        if let first = wire.first { times.append(first.deliverAt) }
        if let echo = echoes.map(\.0).min() { times.append(echo) }
        if let deadline = server.nextDeadline { times.append(deadline.nanoseconds) }
        if let deadline = client.nextDeadline { times.append(deadline.nanoseconds) }
        return times.min()
    }

    private mutating func step() {
        // Packets due arrive.
        while let first = wire.first, first.deliverAt <= now.nanoseconds {
            wire.removeFirst()
            packetsDelivered += 1
            first.bytes.withUnsafeBytes { raw in
                if first.toClient { client.handlePacket(raw, now: now, output: &clientOutput) }
                else { server.handlePacket(raw, now: now, output: &serverOutput) }
            }
        }
        // ECHOs due reach the host.
        var due: [(FlowID, SequenceNumber)] = []
        echoes.removeAll { echo in
            if echo.0 <= now.nanoseconds { due.append((echo.1, echo.2)); return true }
            return false
        }
        for (flow, end) in due { server.handleEcho(flow: flow, sequenceEnd: end, nicDelayNanoseconds: nicDelay, now: now) }
        server.handleTimers(now: now, output: &serverOutput)
        client.handleTimers(now: now, output: &clientOutput)
        runApplications()
        route()
    }

    private mutating func runApplications() {
        // Server: accept, and queue each connection's file as the send queue makes room; close when all queued.
        while let handle = server.accept(listener) {
            let port = server.endpoints(of: handle)!.remotePort
            guard let transfer = transfers.first(where: { $0.clientPort == port }) else { continue }
            serving[handle] = (transfer.file, transfer.size, 0, false)
        }
        for (handle, job) in serving {
            var job = job
            if job.queued < job.size, let taken = try? server.writeFile(
                handle, file: job.file, offset: UInt64(job.queued), length: job.size - job.queued, now: now, output: &serverOutput) {
                job.queued += taken
            }
            if job.queued == job.size && !job.closed {
                try? server.close(handle, now: now, output: &serverOutput)
                job.closed = true
            }
            serving[handle] = server.state(of: handle) == nil ? nil : job
        }
        // Client: read, check every byte against the file, close at end of stream.
        for index in transfers.indices where !transfers[index].finished {
            guard let handle = transfers[index].handle else { continue }
            while true {
                let count = readAvailable(handle)
                if count > 0 {
                    let start = transfers[index].received
                    let file = transfers[index].file
                    for offset in 0..<count where buffer[offset] != fileByte(file, UInt64(start + offset)) {
                        transfers[index].corrupt = true
                        break
                    }
                    transfers[index].received += count
                    if transfers[index].received == transfers[index].size { transfers[index].completedAt = now }
                    continue
                }
                let state = client.state(of: handle)
                if count == 0 && (state == .closeWait || state == .closed) {
                    try? client.close(handle, now: now, output: &clientOutput)
                    transfers[index].finished = true
                }
                break
            }
        }
    }

    /// Reads what the client connection has; -1 when it failed.
    private mutating func readAvailable(_ handle: TCPHandle) -> Int {
        var count = -1
        let time = now
        buffer.withUnsafeMutableBytes { raw in
            count = (try? client.read(handle, into: raw, now: time, output: &clientOutput)) ?? -1
        }
        return count
    }

    private mutating func route() {
        let serverItems = serverOutput.items
        serverOutput.items.removeAll()
        for item in serverItems {
            switch item {
            case .packet(let bytes): transmit(bytes, toClient: true, after: 0)
            case .command(let command):
                let (packets, echo) = nic.handle(command, nicDelayMilliseconds: UInt32(nicDelay / Nanoseconds.millisecond))
                for packet in packets { transmit(packet, toClient: true, after: nicDelay) }
                if let (flow, end) = echo { echoes.append((now.nanoseconds + nicDelay, flow, end)) }
            }
        }
        let clientItems = clientOutput.items
        clientOutput.items.removeAll()
        for case .packet(let bytes) in clientItems { transmit(bytes, toClient: false, after: 0) }
    }

    private mutating func transmit(_ bytes: [UInt8], toClient: Bool, after extra: UInt64) {
        if Double.random(in: 0..<1, using: &random) < conditions.loss {
            packetsDropped += 1
            return
        }
        let copies = Double.random(in: 0..<1, using: &random) < conditions.duplication ? 2 : 1
        for _ in 0..<copies {
            var packet = bytes
            if Double.random(in: 0..<1, using: &random) < conditions.corruption {
                packet[Int.random(in: 20..<packet.count, using: &random)] ^= 0x40
            }
            var delay = conditions.oneWayDelay + extra
            if conditions.jitter > 0 { delay += UInt64.random(in: 0...conditions.jitter, using: &random) }
            if Double.random(in: 0..<1, using: &random) < conditions.reordering {
                delay += UInt64.random(in: 0...max(conditions.oneWayDelay, 1_000_000), using: &random)
            }
            order += 1
            let item = InFlight(deliverAt: now.nanoseconds + delay, order: order, bytes: packet, toClient: toClient)
            let index = wire.firstIndex { $0.deliverAt > item.deliverAt } ?? wire.count
            wire.insert(item, at: index)
        }
    }
}
