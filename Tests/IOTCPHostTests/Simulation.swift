import IOTCPCommon
import IOTCPNICCore
@testable import IOTCPHost

/// Byte `offset` of the file with `key`: a pattern every side can recompute, so a transfer is checked
/// byte for byte without storing it.
@inline(__always)
func fileByte(_ key: UInt64, _ offset: UInt64) -> UInt8 {
    let mixedOffset = (offset &+ 1) &* 0x9E37_79B9_7F4A_7C15
    let mixedFile = key &* 0xBF58_476D_1CE4_E5B9
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
        case sendWithHead(FlowID, SendRange, [UInt8])
        case retransmit(FlowID, SequenceNumber, Int, SegmentTemplate)
        case acknowledged(FlowID, SequenceNumber)
    }

    var items: [Item] = []

    mutating func emit(_ command: Command) {
        switch command {
        case .flowOpen(let flow, let endpoints): items.append(.command(.flowOpen(flow, endpoints)))
        case .flowClose(let flow, _): items.append(.command(.flowClose(flow)))
        case .send(let flow, let range): items.append(.command(.send(flow, range)))
        case .sendWithHead(let flow, let range, let head): items.append(.command(.sendWithHead(flow, range, Array(head))))
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

/// The NIC half as the simulation runs it: the real `NICDataPlane` (the same I/O engine iotcp-nic runs),
/// over files in memory whose bytes are a pattern, read by a disk that takes `diskDelay` per read. Its
/// segments and ECHOs come out when the reads are done, with the delay the NIC really saw.
final class SimulatedNIC {
    let files = MemoryFiles()
    let disk: MemoryDisk
    let plane: NICDataPlane
    var output = Collector()
    var heldBytes: Int { plane.store.heldBytes }
    /// Bytes still held when their flow closed: data the host never told the NIC it could free.
    var heldAtClose = 0
    var retransmitsNotFound = 0
    var commands = 0
    /// SENDs that carried a response head.
    var sendsWithHead = 0

    struct Collector: NICOutput {
        var packets: [[UInt8]] = []
        var echoes: [(FlowID, SequenceNumber, UInt64)] = []
        var errors: [(kind: UInt8, text: String)] = []

        mutating func transmit(headers: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, offload: PacketOffload?) -> TransmitResult {
            packets.append(Array(headers) + Array(payload))
            return .sent
        }

        mutating func reply(_ command: Command) {
            switch command {
            case .echo(let flow, let end, let delay): echoes.append((flow, end, delay))
            case .error(_, let report): errors.append((report.failedKind, report.textString))
            default: break
            }
        }
    }

    init(diskDelay: UInt64) {
        disk = MemoryDisk(files: files)
        disk.delayNanoseconds = diskDelay
        plane = NICDataPlane(files: files, disk: disk, pool: BufferPool(capacityBytes: 64 << 20), retransmitMode: .buffered,
                             storeLimitBytes: 32 << 20)
    }

    /// A file of `size` pattern bytes, opened: its id for the host.
    func addFile(key: UInt64, size: Int) -> OffloadedFileID {
        files.add("\(key)", size: size) { fileByte(key, $0) }
        return try! files.open(path: "\(key)").0
    }

    func handle(_ command: QueueOutput.NICCommand, now: Instant) {
        commands += 1
        switch command {
        case .flowOpen(let flow, let endpoints):
            plane.handle(.flowOpen(flow, endpoints), received: now, now: now, output: &output)
        case .flowClose(let flow):
            heldAtClose += plane.heldBytes(flow: flow)
            plane.handle(.flowClose(flow, reason: 0), received: now, now: now, output: &output)
        case .send(let flow, let range):
            plane.handle(.send(flow, range), received: now, now: now, output: &output)
        case .sendWithHead(let flow, let range, let head):
            sendsWithHead += 1
            head.withUnsafeBytes { plane.handle(.sendWithHead(flow, range, head: $0), received: now, now: now, output: &output) }
        case .retransmit(let flow, let sequence, let length, let template):
            plane.handle(.retransmit(flow, sequence: sequence, length: UInt32(length), template: template), received: now, now: now, output: &output)
        case .acknowledged(let flow, let through):
            plane.handle(.acknowledged(flow, through: through), received: now, now: now, output: &output)
        }
    }

    /// Moves the disk and the transmit queues along; returns what left and what the host hears.
    func poll(now: Instant) -> Collector {
        plane.poll(now: now, output: &output)
        retransmitsNotFound += output.errors.filter { $0.kind == CommandKind.retransmit.rawValue }.count
        defer { output = Collector() }
        return output
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
        /// What the file's bytes are made from (`fileByte`).
        var key: UInt64
        /// A response head the server writes before the file (with `more`, so it leaves as a SEND's head):
        /// that many bytes of `fileByte(~key, ...)`; 0 without heads.
        var headLength = 0
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
    let nic: SimulatedNIC
    /// What each disk read takes on the NIC.
    let nicDelay: UInt64 = 50_000
    var wire: [InFlight] = []
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

    /// The stack's defaults but for SYN-ACKs: at 20% loss each way, a server that gives up a half-open connection after
    /// 5 SYN-ACKs (as Linux) does so about once in 500 handshakes, and the simulated client, which only listens,
    /// then waits for ever (as a Linux client would). Transfers are what these runs check, so the handshake
    /// gets as many tries as data does.
    static var defaultConfiguration: TCPConfiguration {
        var configuration = TCPConfiguration()
        configuration.maximumSynRetransmissions = configuration.maximumRetransmissions
        configuration.maximumOrphanRetransmissions = configuration.maximumRetransmissions
        return configuration
    }

    init(seed: UInt64, conditions: WireConditions, sizes: [Int], configuration: TCPConfiguration = Simulation.defaultConfiguration,
         heads: Bool = false) {
        now = Instant.milliseconds(10_000)
        random = SeededGenerator(seed: seed)
        self.conditions = conditions
        server = TCPEngine(localAddress: Self.serverAddress, configuration: configuration, secret: (seed, ~seed), now: now)
        client = TCPEngine(localAddress: Self.clientAddress, configuration: configuration, secret: (~seed, seed), now: now)
        listener = try! server.listen(port: Self.port, backlog: 1024)
        if heads { server.nicOffersHeads(true) }
        let nic = SimulatedNIC(diskDelay: nicDelay)
        self.nic = nic
        for (index, size) in sizes.enumerated() {
            let key = seed &* 1_000_003 &+ UInt64(index)
            transfers.append(Transfer(clientPort: UInt16(20000 + index), size: size, file: nic.addFile(key: key, size: size), key: key,
                                      headLength: heads ? 1 + Int(key % 700) : 0))
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
        if let due = nic.disk.nextDue { times.append(due.nanoseconds) }
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
        // Reads done on the NIC: their segments leave, their ECHOs reach the host.
        deliverFromNIC()
        server.handleTimers(now: now, output: &serverOutput)
        client.handleTimers(now: now, output: &clientOutput)
        runApplications()
        // The applications' turn is over: handshake ACKs their writes did not carry go now, as a stack's would.
        server.sendOwedAcknowledgments(now: now, output: &serverOutput)
        client.sendOwedAcknowledgments(now: now, output: &clientOutput)
        route()
    }

    private mutating func runApplications() {
        // Server: accept, and queue each connection's file as the send queue makes room; close when all queued.
        while let handle = server.accept(listener) {
            let port = server.endpoints(of: handle)!.remotePort
            guard let transfer = transfers.first(where: { $0.clientPort == port }) else { continue }
            serving[handle] = (transfer.file, transfer.size, 0, false)
            if transfer.headLength > 0 {
                // Far less than the send queue holds: taken whole.
                let head = (0..<transfer.headLength).map { fileByte(~transfer.key, UInt64($0)) }
                let time = now
                _ = head.withUnsafeBytes { try? server.write(handle, $0, more: true, now: time, output: &serverOutput) }
            }
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
                    let key = transfers[index].key, head = transfers[index].headLength
                    for offset in 0..<count {
                        let position = start + offset
                        let expected = position < head ? fileByte(~key, UInt64(position)) : fileByte(key, UInt64(position - head))
                        if buffer[offset] != expected {
                            transfers[index].corrupt = true
                            break
                        }
                    }
                    transfers[index].received += count
                    if transfers[index].received == head + transfers[index].size { transfers[index].completedAt = now }
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
        // Until the host has nothing more to say: an ECHO can free room for the next SEND at once.
        while !serverOutput.items.isEmpty {
            let serverItems = serverOutput.items
            serverOutput.items.removeAll()
            for item in serverItems {
                switch item {
                case .packet(let bytes): transmit(bytes, toClient: true, after: 0)
                case .command(let command):
                    nic.handle(command, now: now)
                }
            }
            deliverFromNIC()
        }
        let clientItems = clientOutput.items
        clientOutput.items.removeAll()
        for case .packet(let bytes) in clientItems { transmit(bytes, toClient: false, after: 0) }
    }

    /// What the NIC sends once its reads are done: segments onto the wire, ECHOs (with the delay the NIC
    /// measured) to the host.
    private mutating func deliverFromNIC() {
        let out = nic.poll(now: now)
        for packet in out.packets { transmit(packet, toClient: true, after: 0) }
        for (flow, end, delay) in out.echoes { server.handleEcho(flow: flow, sequenceEnd: end, nicDelayNanoseconds: delay, now: now, output: &serverOutput) }
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
