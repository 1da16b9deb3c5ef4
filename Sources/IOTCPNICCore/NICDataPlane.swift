/// The NIC half's command executor and I/O engine. It keeps no TCP state, only what the commands name:
/// flows' addresses, open files, data queued to send and data sent until ACKD. It makes no system call:
/// files come through a `FileService`, reads through a `DiskIO`, packets leave through a `NICOutput`.
///
/// A SEND is cut into chunks of up to one super-segment (64 KiB); each chunk is read from disk into a
/// pool buffer, asynchronously, many reads in flight across flows. A chunk leaves when its read is done and
/// it is at the head of its flow's queue (a flow's bytes leave in order); flows take turns, one chunk a
/// turn, so no flow waits behind another's disk reads or large file. Headers are built in front of the
/// payload in a scratch area and the wire gathers both: file bytes are copied by the kernel's read and by
/// the wire, never by this code. The buffer then stays in the retransmit store until ACKD.
///
/// ECHO tells the host a SEND's data left, and how long it was here: from the moment its command arrived
/// to the moment its last segment went to the wire, disk and queueing included. Each segment's TSval gets
/// the same delay (IO-TCP's rule), and so does a host packet held behind queued data.
///
/// `handle` takes commands; `poll` moves the I/O along (submit reads, reap completions, transmit) and is
/// called once per turn of the NIC's loop. Errors are answered with ERROR; nothing a command says makes
/// it trap, and nothing it started leaks.
public final class NICDataPlane {
    public let files: any FileService
    public let disk: any DiskIO
    public let pool: BufferPool
    public private(set) var store: RetransmitStore
    public let limits: Limits
    /// What the wire finishes for us; the runtime sets it from the wire and its settings each turn.
    public var offloads = WireOffloads.none
    public private(set) var counters = Counters()

    /// Bounds on what the host (or a flood) can make the NIC hold.
    public struct Limits: Hashable, Sendable {
        /// Flow ids must be below this (and above 0).
        public var maximumFlows = 1 << 20
        /// The longest SEND or RETRANSMIT accepted.
        public var maximumSendBytes = 16 << 20
        /// File bytes queued to send and not yet on the wire, over every flow; a SEND past it is refused.
        public var maximumQueuedBytes = 1 << 30
        /// Chunks of one flow read (or being read) ahead of the wire, each up to 64 KiB.
        public var readAheadChunks = 4
        /// Chunks read or being read ahead of the wire over every flow. Data read long before it leaves has
        /// left the CPU's caches by then and is read again from memory by the wire's copy: reads are started
        /// just ahead of the wire, many at once only where the disk is slow.
        public var maximumReadAheadChunks = 256
        /// Bytes transmitted per `poll`, so the wire and the host's commands are served between bursts.
        public var transmitBudgetBytes = 4 << 20
        /// Bytes of host packets held behind queued data, over every flow; past it they are dropped.
        public var maximumDeferredBytes = 8 << 20

        public init() {}
    }

    public struct Counters: Hashable, Sendable {
        public var packetsOut = 0
        public var bytesOut = 0
        public var packetsIn = 0
        public var malformedIn = 0
        /// IPv4 fragments received and dropped: nothing here reassembles (a TCP peer that does path MTU
        /// discovery, as every current one does, sets DF and never fragments; see Docs/limits.md).
        public var fragmentsIn = 0
        public var commands = 0
        public var errors = 0
        /// SEND commands executed (each a file range or bytes for one flow).
        public var sends = 0
        /// SENDs recorded without their bytes because the buffered store was at its limit.
        public var storeSpills = 0
        /// Disk reads started, their bytes, the failed ones, and the most in flight at once.
        public var reads = 0
        public var readBytes = 0
        public var readFailures = 0
        public var maximumReadsInFlight = 0
        /// Turns in which a read waited because every buffer was taken.
        public var bufferWaits = 0
        /// ECHOs sent, and the NIC delay they reported (sum and maximum, nanoseconds).
        public var echoes = 0
        public var echoDelayTotal: UInt64 = 0
        public var echoDelayMaximum: UInt64 = 0
        /// Packets the wire refused (full queue); data ones are tried again.
        public var wireRefusals = 0
        /// Host packets held behind queued data, and those dropped past the limit.
        public var deferredPackets = 0
        public var deferredDrops = 0
        /// Payload bytes this code copied (host packets held behind data): file bytes never are.
        public var payloadBytesCopied = 0
        /// Chunks sent straight from the page cache (a mapped file, resident: no read at all), and their bytes.
        public var mappedChunks = 0
        public var mappedBytes = 0
        /// RETRANSMITs (or parts) of data still queued here, which will leave anyway.
        public var retransmitsOfQueuedData = 0
        public var retransmittedBytes = 0
    }

    // MARK: - State

    private var flows: [FlowState] = []
    private var flowsByEndpoints: [EndpointKey: UInt32] = [:]
    private var openFlows = 0
    private var chunks: [Chunk] = []
    private var freeChunks: [UInt32] = []
    private var deferred: [DeferredPacket] = []
    private var freeDeferred: [UInt32] = []
    private var deferredBytes = 0
    /// Flows whose queue head can go now, in turn order.
    private var readyFlows = FIFO<FlowTicket>()
    /// Flows with chunks waiting for a read to start, in turn order.
    private var readingFlows = FIFO<FlowTicket>()
    private var queuedBytes = 0
    /// Chunks read or being read and not yet sent, over every flow.
    private var readAheadTotal = 0
    private let headers = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 16)
    private var pieceScratch: [(index: Int, skip: Int, length: Int)] = []
    private var registeredSlabs: [Bool] = []
    /// The time of the latest `handle` or `poll`.
    private var clock = Instant.zero

    struct EndpointKey: Hashable {
        var remoteAddress: UInt32
        var remotePort: UInt16
        var localPort: UInt16
    }

    struct FlowTicket {
        var index: UInt32
        var generation: UInt32
    }

    struct FlowState {
        var open = false
        /// The id the host opened the flow with (index and the host's generation), given back in every
        /// answer about it.
        var id = FlowID.none
        var generation: UInt32 = 0
        var endpoints = FlowEndpoints(localAddress: IPv4Address(rawValue: 0), remoteAddress: IPv4Address(rawValue: 0), localPort: 0, remotePort: 0,
                                      remoteHardwareAddress: .zero, maximumSegmentSize: 0)
        /// Sent and not yet acknowledged (the retransmit store's ranges for this flow).
        var sent = FIFO<StoredRange>()
        /// In stream order: chunks of SENDs, host packets held behind them, ECHO marks.
        var queue = FIFO<WorkItem>()
        /// Chunks of RETRANSMITs that needed a read; they go before the queue.
        var urgent = FIFO<UInt32>()
        /// Chunks waiting for their read to start, in order (retransmissions first).
        var toRead = FIFO<UInt32>()
        /// Of those, the retransmissions at its front (kept in the order they were asked for: the urgent
        /// queue sends them in that order, and must not wait on a later one for its turn).
        var rereads = 0
        /// Chunks read or being read and not yet sent.
        var readAhead = 0
        var isReady = false
        var isReading = false
        /// A read failed: the host was told and is ending the connection; later data is dropped.
        var failed = false
    }

    enum WorkItem {
        case chunk(UInt32)
        case packet(UInt32)
        case echo(sequenceEnd: SequenceNumber, arrival: Instant)
    }

    struct Chunk {
        enum State: UInt8 { case waiting, reading, ready, failed, free }
        var state = State.free
        var cancelled = false
        var isRetransmission = false
        /// The last chunk of its SEND: the template's last-segment flags go on its last segment.
        var isLast = false
        var flow: UInt32 = 0
        var flowGeneration: UInt32 = 0
        var sequence = SequenceNumber(0)
        var length = 0
        var file = OffloadedFileID(rawValue: 0)
        var fileOffset: UInt64 = 0
        var lease = FileLease(slot: 0, descriptor: -1)
        var holdsLease = false
        var buffer = StoredRange.noBuffer
        /// The payload in the file's mapping, when the page cache held it (no buffer, no read).
        var mapped: UnsafeRawPointer?
        /// The page cache was found not to hold the bytes (the read goes to the disk's workers).
        var missesCache = false
        /// Where the read began in the file (aligned down for direct I/O), how much of it is needed, and
        /// how much has arrived.
        var readStart: UInt64 = 0
        var readLength = 0
        var readDone = 0
        /// Where the payload starts in the buffer.
        var payloadStart = 0
        /// Payload bytes already on the wire (a refused write stops mid-chunk).
        var sent = 0
        var failure: Int32 = 0
        var template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(0), window: 0, maximumSegmentSize: 1)
        var arrival = Instant.zero
    }

    struct DeferredPacket {
        var bytes: [UInt8] = []
        var arrival = Instant.zero
        /// Its TSval was moved on already (a refused write is tried again unchanged).
        var timestampMoved = false
    }

    // MARK: - Setup

    public init(
        files: any FileService, disk: any DiskIO, pool: BufferPool? = nil, retransmitMode: RetransmitStore.Mode = .buffered,
        storeLimitBytes: Int = 192 << 20, limits: Limits = Limits()
    ) {
        self.files = files
        self.disk = disk
        // The store's buffers plus room for reads in flight and chunks waiting for the wire.
        self.pool = pool ?? BufferPool(capacityBytes: storeLimitBytes + 64 << 20)
        self.limits = limits
        store = RetransmitStore(mode: retransmitMode, limitBytes: storeLimitBytes)
        let plane = Unmanaged.passUnretained(self)
        self.pool.slabAdded = { slab, memory in plane.takeUnretainedValue().adopt(slab: slab, memory: memory) }
    }

    deinit {
        // Reads in flight write into the pool's memory: let them finish before it goes.
        drain()
        headers.deallocate()
    }

    /// Waits for every read in flight (abandoned ones included) and takes their buffers back.
    public func drain() {
        let far = Instant(nanoseconds: UInt64.max / 2)
        var spins = 0
        while disk.inFlight > 0 && spins < 100_000_000 {
            disk.flush()
            _ = disk.reap(now: far, limit: 1024) { tag, result in
                if tag < UInt64(chunks.count) { complete(UInt32(tag), result: result) }
            }
            spins += 1
        }
    }

    private func adopt(slab: Int, memory: UnsafeMutableRawBufferPointer) {
        while registeredSlabs.count <= slab { registeredSlabs.append(false) }
        registeredSlabs[slab] = disk.register(slab: slab, memory: memory)
    }

    public var flowCount: Int { openFlows }
    /// Reads in flight or waiting for a buffer, chunks waiting for the wire: work the loop must come back for.
    public var hasPendingWork: Bool { !readyFlows.isEmpty || !readingFlows.isEmpty || disk.inFlight > 0 }
    /// Whether a chunk can leave now (the loop should not sleep).
    public var hasReadyWork: Bool { !readyFlows.isEmpty }
    /// Bytes queued to send and not yet on the wire.
    public var queuedByteCount: Int { queuedBytes }
    public var chunksInUse: Int { chunks.count - freeChunks.count }

    /// The I/O engine's queues, for an operator wondering why nothing moves: chunks by state, flows waiting
    /// to transmit and to read, and the read-ahead in use.
    public var queueSummary: String {
        var states = [0, 0, 0, 0, 0]
        for chunk in chunks { states[Int(chunk.state.rawValue)] += 1 }
        var heads: [String: Int] = [:]
        for flow in flows where flow.open {
            let head: String
            switch flow.queue.first {
            case .none: head = "empty"
            case .packet: head = "packet"
            case .echo: head = "echo"
            case .chunk(let chunk): head = "\(chunks[Int(chunk)].state)"
            }
            heads["\(head)\(flow.isReady ? "+ready" : "")\(flow.isReading ? "+reading" : "") ra\(flow.readAhead) tr\(flow.toRead.count > 0 ? 1 : 0)", default: 0] += 1
        }
        return "heads \(heads.sorted { $0.value > $1.value }.prefix(6)); chunks waiting \(states[0]) reading \(states[1]) ready \(states[2]) failed \(states[3]); "
            + "flows ready \(readyFlows.count) reading \(readingFlows.count); read-ahead \(readAheadTotal)/\(limits.maximumReadAheadChunks); "
            + "disk in flight \(disk.inFlight)"
    }

    /// Every open flow as an operator lists it (`ss -tn` style): the id the host gave it, its endpoints,
    /// the bytes sent and held for retransmission, the work queued, and what it waits for. Diagnostics only.
    public var flowListing: String {
        var lines = ["Flow        Local Address:Port    Peer Address:Port       Unacked  Queued  Reading  State"]
        for flow in flows where flow.open {
            let endpoints = flow.endpoints
            let local = "\(endpoints.localAddress):\(endpoints.localPort)"
            let peer = "\(endpoints.remoteAddress):\(endpoints.remotePort)"
            let unacknowledged = flow.sent.reduce(0) { $0 + $1.length }
            let state = flow.failed ? "failed" : flow.isReady ? "ready" : flow.isReading ? "reading" : flow.queue.isEmpty ? "idle" : "waiting"
            func pad(_ text: String, _ width: Int) -> String { text + String(repeating: " ", count: max(0, width - text.count)) }
            lines.append(pad("\(flow.id.index).\(flow.id.generation)", 12) + pad(local, 22) + pad(peer, 22)
                         + pad("\(unacknowledged)", 9) + pad("\(flow.queue.count)", 8) + pad("\(flow.readAhead)", 9) + state)
        }
        return lines.joined(separator: "\n")
    }

    // MARK: - Commands

    /// Executes one command from the host. `received` is when it arrived: the ECHO's delay counts from it.
    public func handle<O: NICOutput>(_ command: Command, received: Instant, now: Instant, output: inout O) {
        counters.commands += 1
        clock = now
        switch command {
        case .hello, .keepalive, .error, .opened, .stat, .echo, .packetIn, .device:
            break  // not for the NIC to act on
        case .open(let requestID, _, let path):
            open(requestID: requestID, path: String(decoding: path, as: UTF8.self), output: &output)
        case .fstat(let requestID, let file):
            do throws(FileFailure) {
                output.reply(.stat(requestID: requestID, file: file, status: try files.status(file)))
            } catch {
                fail(error.code, kind: .fstat, flow: .none, reference: UInt64(requestID), error.description, output: &output)
            }
        case .closeFile(let file):
            do throws(FileFailure) { try files.close(file) } catch {
                fail(error.code, kind: .closeFile, flow: .none, reference: file.rawValue, error.description, output: &output)
            }
        case .flowOpen(let flow, let endpoints):
            openFlow(flow, endpoints, output: &output)
        case .flowClose(let flow, _):
            if let index = openIndex(flow) { closeFlow(index) }
        case .acknowledged(let flow, let through):
            guard let index = openIndex(flow) else { return }
            let pool = self.pool
            store.acknowledge(through: through, in: &flows[Int(index)].sent) { pool.give($0) }
        case .packetOut(let flow, let packet):
            packetOut(flow: flow, packet, now: now, output: &output)
        case .send(let flow, let range):
            counters.sends += 1
            send(flow: flow, range, received: received, output: &output)
        case .retransmit(let flow, let sequence, let length, let template):
            retransmit(flow: flow, sequence: sequence, length: Int(length), template: template, now: now, output: &output)
        }
    }

    private func open<O: NICOutput>(requestID: UInt32, path: String, output: inout O) {
        do throws(FileFailure) {
            let (file, status) = try files.open(path: path)
            // STAT follows at once, so the host has the whole status without another round trip.
            output.reply(.opened(requestID: requestID, file: file, size: status.size))
            if let device = try files.device(of: file) { reply(device, requestID: requestID, file: file, output: &output) }
            output.reply(.stat(requestID: requestID, file: file, status: status))
        } catch {
            fail(error.code, kind: .open, flow: .none, reference: UInt64(requestID), error.description, output: &output)
        }
    }

    private func openIndex(_ flow: FlowID) -> UInt32? {
        let index = Int(flow.index)
        guard index > 0, index < flows.count, flows[index].open, flows[index].id == flow else { return nil }
        return UInt32(index)
    }

    private func openFlow<O: NICOutput>(_ flow: FlowID, _ endpoints: FlowEndpoints, output: inout O) {
        let index = Int(flow.index)
        guard index > 0, index < min(limits.maximumFlows, Int(FlowID.maximumIndex) + 1) else {
            fail(.tooManyFlows, kind: .flowOpen, flow: flow, reference: UInt64(flow.rawValue),
                 "flow index \(flow.index) outside 1..<\(limits.maximumFlows)", output: &output)
            return
        }
        while flows.count <= index { flows.append(FlowState()) }
        if flows[index].open { closeFlow(UInt32(index)) }  // the host reused an id without FLOW_CLOSE
        let key = EndpointKey(remoteAddress: endpoints.remoteAddress.rawValue, remotePort: endpoints.remotePort, localPort: endpoints.localPort)
        if let previous = flowsByEndpoints[key], previous != UInt32(index) { closeFlow(previous) }
        flows[index].open = true
        flows[index].id = flow
        flows[index].endpoints = endpoints
        flows[index].failed = false
        flowsByEndpoints[key] = UInt32(index)
        openFlows += 1
    }

    /// Forgets a flow: its stored bytes, queued chunks (reads in flight are abandoned and their buffers
    /// come back when they complete) and held packets.
    private func closeFlow(_ index: UInt32) {
        let slot = Int(index)
        guard flows[slot].open else { return }
        dropQueued(slot)
        let pool = self.pool
        store.removeAll(in: &flows[slot].sent) { pool.give($0) }
        let endpoints = flows[slot].endpoints
        let key = EndpointKey(remoteAddress: endpoints.remoteAddress.rawValue, remotePort: endpoints.remotePort, localPort: endpoints.localPort)
        if flowsByEndpoints[key] == index { flowsByEndpoints[key] = nil }
        flows[slot].open = false
        flows[slot].generation &+= 1
        flows[slot].isReady = false
        flows[slot].isReading = false
        openFlows -= 1
    }

    /// Drops everything a flow has queued (not what it has sent).
    private func dropQueued(_ slot: Int) {
        while let item = flows[slot].queue.popFirst() {
            switch item {
            case .chunk(let chunk): abandon(chunk)
            case .packet(let packet): freeDeferredPacket(packet)
            case .echo: break
            }
        }
        while let chunk = flows[slot].urgent.popFirst() { abandon(chunk) }
        flows[slot].toRead.removeAll(keepingCapacity: true)
        flows[slot].rereads = 0
        readAheadTotal -= flows[slot].readAhead
        flows[slot].readAhead = 0
    }

    /// Forgets every flow, frees every held byte and closes every file: the host that named them is gone.
    /// Reads still in flight finish into buffers nobody will send; `poll` takes them back.
    public func reset() {
        for index in flows.indices where flows[index].open { closeFlow(UInt32(index)) }
        files.closeAll()
    }

    // MARK: - SEND

    private func send<O: NICOutput>(flow: FlowID, _ range: SendRange, received: Instant, output: inout O) {
        guard let index = openIndex(flow) else {
            fail(.unknownFlow, kind: .send, flow: flow, reference: UInt64(range.sequence.rawValue), "SEND for unknown \(flow)", output: &output)
            return
        }
        let slot = Int(index)
        if flows[slot].failed { return }
        let length = Int(range.length)
        guard length <= limits.maximumSendBytes, range.template.maximumSegmentSize > 0 else {
            fail(.malformedCommand, kind: .send, flow: flow, reference: UInt64(range.sequence.rawValue),
                 "SEND of \(length) bytes with MSS \(range.template.maximumSegmentSize) (at most \(limits.maximumSendBytes) bytes, MSS > 0)",
                 output: &output)
            return
        }
        guard queuedBytes + length <= limits.maximumQueuedBytes else {
            fail(.storeFull, kind: .send, flow: flow, reference: UInt64(range.sequence.rawValue),
                 "the NIC has \(queuedBytes) bytes queued to send (limit \(limits.maximumQueuedBytes))", output: &output)
            return
        }
        let chunkLength = chunkPayload(template: range.template)
        var offset = 0
        while offset < length {
            let take = min(chunkLength, length - offset)
            let lease: FileLease
            do throws(FileFailure) {
                lease = try files.lease(range.file)
            } catch {
                // Only the first lease can fail (the file is the same); nothing was queued for this SEND then.
                fail(error.code, kind: .send, flow: flow, reference: UInt64(range.sequence.rawValue), error.description, output: &output)
                return
            }
            let chunk = newChunk()
            chunks[Int(chunk)].flow = index
            chunks[Int(chunk)].flowGeneration = flows[slot].generation
            chunks[Int(chunk)].sequence = range.sequence + offset
            chunks[Int(chunk)].length = take
            chunks[Int(chunk)].file = range.file
            chunks[Int(chunk)].fileOffset = range.offset + UInt64(offset)
            chunks[Int(chunk)].lease = lease
            chunks[Int(chunk)].holdsLease = true
            chunks[Int(chunk)].template = range.template
            chunks[Int(chunk)].isLast = offset + take == length
            chunks[Int(chunk)].arrival = received
            flows[slot].queue.append(.chunk(chunk))
            flows[slot].toRead.append(chunk)
            queuedBytes += take
            offset += take
        }
        flows[slot].queue.append(.echo(sequenceEnd: range.sequence + length, arrival: received))
        wantReads(index)
        considerReady(index)
    }

    /// Payload bytes of one chunk: a super-segment's worth (a whole number of segments, so the wire's cuts
    /// and ours agree) that also fits a buffer with room to align a direct read.
    private func chunkPayload(template: SegmentTemplate) -> Int {
        let segment = Int(template.maximumSegmentSize)
        let room = pool.bufferSize - 2 * pool.alignment
        let superSegment = SegmentBuilder.superSegmentPayload(packetLimit: Int(UInt16.max), template: template)
        let size = superSegment > 0 ? superSegment : segment
        return max(min(size, room / segment * segment), min(segment, room))
    }

    private func newChunk() -> UInt32 {
        let index: UInt32
        if let reused = freeChunks.popLast() {
            index = reused
        } else {
            index = UInt32(chunks.count)
            chunks.append(Chunk())
        }
        chunks[Int(index)] = Chunk()
        chunks[Int(index)].state = .waiting
        return index
    }

    /// Lets a chunk go: its buffer and lease come back now, or, if its read is in flight, when it completes.
    private func abandon(_ chunk: UInt32) {
        let slot = Int(chunk)
        if !chunks[slot].isRetransmission && chunks[slot].sent < chunks[slot].length {
            queuedBytes -= chunks[slot].length - chunks[slot].sent
        }
        if chunks[slot].state == .reading {
            chunks[slot].cancelled = true
        } else {
            freeChunk(chunk)
        }
    }

    private func freeChunk(_ chunk: UInt32) {
        let slot = Int(chunk)
        if chunks[slot].buffer != StoredRange.noBuffer { pool.give(chunks[slot].buffer) }
        if chunks[slot].holdsLease { files.release(chunks[slot].lease) }
        chunks[slot] = Chunk()
        freeChunks.append(chunk)
    }

    // MARK: - Reads

    private func wantReads(_ index: UInt32) {
        let slot = Int(index)
        guard !flows[slot].isReading, !flows[slot].toRead.isEmpty else { return }
        flows[slot].isReading = true
        readingFlows.append(FlowTicket(index: index, generation: flows[slot].generation))
    }

    /// Starts reads, one chunk per flow in turn, while the disk takes them and buffers last.
    private func startReads(now: Instant) {
        var visits = readingFlows.count
        while visits > 0, let ticket = readingFlows.first {
            visits -= 1
            let slot = Int(ticket.index)
            guard flows[slot].open, flows[slot].generation == ticket.generation, flows[slot].isReading else {
                readingFlows.removeFirst()
                continue
            }
            guard let chunk = flows[slot].toRead.first else {
                flows[slot].isReading = false
                readingFlows.removeFirst()
                continue
            }
            if flows[slot].readAhead >= limits.readAheadChunks && !chunks[Int(chunk)].isRetransmission {
                // This flow has enough read ahead of the wire; it is visited again once some leaves.
                flows[slot].isReading = false
                readingFlows.removeFirst()
                continue
            }
            guard readAheadTotal < limits.maximumReadAheadChunks else { return }
            if !sendFromPageCache(chunk) {
                guard disk.inFlight < disk.capacity else { return }
                guard let buffer = pool.take() else {
                    counters.bufferWaits += 1
                    return
                }
                startRead(chunk, buffer: buffer, now: now)
            }
            readingFlows.removeFirst()
            flows[slot].toRead.removeFirst()
            if chunks[Int(chunk)].isRetransmission { flows[slot].rereads -= 1 }
            flows[slot].readAhead += 1
            readAheadTotal += 1
            if flows[slot].toRead.isEmpty {
                flows[slot].isReading = false
            } else {
                readingFlows.append(ticket)
            }
        }
    }

    /// Where the wire finishes checksums (so no code here reads the payload) and the page cache holds the
    /// chunk's bytes, the chunk is ready at once: it will be sent from the file's mapping, with no read and
    /// no buffer. The chunk keeps its lease until it has left, which keeps the mapping.
    private func sendFromPageCache(_ chunk: UInt32) -> Bool {
        let slot = Int(chunk)
        guard offloads.checksum, chunks[slot].holdsLease, let mapping = files.mapping(chunks[slot].lease) else { return false }
        let offset = chunks[slot].fileOffset, length = chunks[slot].length
        guard offset + UInt64(length) <= UInt64(mapping.count) else { return false }
        guard files.isResident(chunks[slot].lease, offset: offset, length: length) else {
            chunks[slot].missesCache = true
            return false
        }
        chunks[slot].mapped = UnsafeRawPointer(mapping.baseAddress! + Int(offset))
        chunks[slot].state = .ready
        counters.mappedChunks += 1
        counters.mappedBytes += length
        considerReady(chunks[slot].flow)
        return true
    }

    private func startRead(_ chunk: UInt32, buffer: UInt32, now: Instant) {
        let slot = Int(chunk)
        let alignment = UInt64(max(chunks[slot].lease.alignment, 1))
        let start = chunks[slot].fileOffset / alignment * alignment
        let payloadStart = Int(chunks[slot].fileOffset - start)
        let needed = payloadStart + chunks[slot].length
        chunks[slot].buffer = buffer
        chunks[slot].readStart = start
        chunks[slot].payloadStart = payloadStart
        chunks[slot].readLength = (needed + Int(alignment) - 1) / Int(alignment) * Int(alignment)
        chunks[slot].readDone = 0
        chunks[slot].state = .reading
        submitRead(chunk, now: now)
    }

    private func submitRead(_ chunk: UInt32, now: Instant) {
        let slot = Int(chunk)
        let done = chunks[slot].readDone
        let buffer = chunks[slot].buffer
        let slab = pool.slab(of: buffer)
        let read = DiskRead(
            descriptor: chunks[slot].lease.descriptor, offset: chunks[slot].readStart + UInt64(done),
            length: chunks[slot].readLength - done, destination: pool.address(buffer) + done,
            registeredSlab: slab < registeredSlabs.count && registeredSlabs[slab] ? Int32(slab) : -1,
            missesCache: chunks[slot].missesCache, tag: UInt64(chunk))
        if disk.submit(read, now: now) {
            counters.reads += 1
            counters.maximumReadsInFlight = max(counters.maximumReadsInFlight, disk.inFlight)
        } else {
            // Only a disk that lied about its room refuses here; fail the chunk rather than lose it.
            complete(chunk, result: -11)
        }
    }

    private func complete(_ chunk: UInt32, result: Int) {
        let slot = Int(chunk)
        guard chunks[slot].state == .reading else { return }
        if chunks[slot].cancelled {
            freeChunk(chunk)
            return
        }
        let needed = chunks[slot].payloadStart + chunks[slot].length
        if result > 0 {
            counters.readBytes += result
            chunks[slot].readDone += result
            if chunks[slot].readDone < needed {
                // A short read: ask for the rest (0 next time means the file ended early).
                submitRead(chunk, now: clock)
                return
            }
            chunks[slot].state = .ready
        } else {
            counters.readFailures += 1
            chunks[slot].state = .failed
            chunks[slot].failure = result == 0 ? 0 : Int32(truncatingIfNeeded: -result)
        }
        if chunks[slot].holdsLease {
            files.release(chunks[slot].lease)
            chunks[slot].holdsLease = false
        }
        considerReady(chunks[slot].flow)
    }

    // MARK: - The turn

    /// Moves the I/O along: reaps finished reads, starts new ones (one submission for all), and sends what
    /// is ready, flows in turn, up to the turn's budget. Returns whether anything happened.
    @discardableResult
    public func poll<O: NICOutput>(now: Instant, output: inout O) -> Bool {
        clock = now
        var worked = reap(now: now) > 0
        startReads(now: now)
        disk.flush()
        // Reads of cached pages complete inside the submission: send them this turn.
        if reap(now: now) > 0 { worked = true }
        if transmitReady(now: now, output: &output) { worked = true }
        // Buffers the wire let go of can start the next reads now rather than next turn.
        if !readingFlows.isEmpty {
            startReads(now: now)
            disk.flush()
        }
        return worked
    }

    private func reap(now: Instant) -> Int {
        guard disk.inFlight > 0 else { return 0 }
        return disk.reap(now: now, limit: 1024) { tag, result in
            guard tag < UInt64(chunks.count) else { return }
            complete(UInt32(tag), result: result)
        }
    }

    /// Whether the flow's next piece of work can go now.
    private func headIsReady(_ slot: Int) -> Bool {
        if let chunk = flows[slot].urgent.first, chunks[Int(chunk)].state == .ready || chunks[Int(chunk)].state == .failed {
            return true
        }
        switch flows[slot].queue.first {
        case .none: return false
        case .packet, .echo: return true
        case .chunk(let chunk):
            let state = chunks[Int(chunk)].state
            return state == .ready || state == .failed
        }
    }

    private func considerReady(_ index: UInt32) {
        let slot = Int(index)
        guard flows[slot].open, !flows[slot].isReady, headIsReady(slot) else { return }
        flows[slot].isReady = true
        readyFlows.append(FlowTicket(index: index, generation: flows[slot].generation))
    }

    private func transmitReady<O: NICOutput>(now: Instant, output: inout O) -> Bool {
        var budget = limits.transmitBudgetBytes
        var worked = false
        while budget > 0, let ticket = readyFlows.popFirst() {
            let slot = Int(ticket.index)
            guard flows[slot].open, flows[slot].generation == ticket.generation, flows[slot].isReady else { continue }
            flows[slot].isReady = false
            worked = true
            if !serve(slot, now: now, budget: &budget, output: &output) {
                // The wire is full: this flow goes first next turn, and nobody else tries now.
                flows[slot].isReady = true
                readyFlows.prepend(ticket)
                return worked
            }
            considerReady(ticket.index)
            if flows[slot].readAhead < limits.readAheadChunks { wantReads(ticket.index) }
        }
        return worked
    }

    /// One turn of one flow: a retransmission that waited for its read, or the queue's head items up to and
    /// including one chunk. Returns false if the wire refused a packet.
    private func serve<O: NICOutput>(_ slot: Int, now: Instant, budget: inout Int, output: inout O) -> Bool {
        if let chunk = flows[slot].urgent.first, chunks[Int(chunk)].state == .ready || chunks[Int(chunk)].state == .failed {
            if chunks[Int(chunk)].state == .ready {
                let result = transmit(chunk, now: now, budget: &budget, output: &output)
                if result == .refused { return false }
                if result == .sent { counters.retransmittedBytes += chunks[Int(chunk)].length }
            }
            // A failed re-read is left to the host's timer: it sends the RETRANSMIT again or gives up.
            flows[slot].urgent.removeFirst()
            flows[slot].readAhead -= 1
            readAheadTotal -= 1
            freeChunk(chunk)
            return true
        }
        var sentChunk = false
        while let item = flows[slot].queue.first {
            switch item {
            case .echo(let end, let arrival):
                let delay = now - arrival
                output.reply(.echo(flows[slot].id, sequenceEnd: end, nicDelayNanoseconds: delay))
                counters.echoes += 1
                counters.echoDelayTotal &+= delay
                counters.echoDelayMaximum = max(counters.echoDelayMaximum, delay)
            case .packet(let packet):
                guard transmitDeferred(packet, now: now, output: &output) else { return false }
                freeDeferredPacket(packet)
            case .chunk(let chunk):
                if sentChunk { return true }
                switch chunks[Int(chunk)].state {
                case .ready:
                    let result = transmit(chunk, now: now, budget: &budget, output: &output)
                    if result == .refused { return false }
                    if result == .unreadablePayload {
                        // The file was cut short under its mapping: as a read that came back short.
                        chunks[Int(chunk)].state = .failed
                        chunks[Int(chunk)].failure = 0
                        chunks[Int(chunk)].readDone = chunks[Int(chunk)].sent
                        readFailed(chunk, slot: slot, output: &output)
                        return true
                    }
                    flows[slot].readAhead -= 1
                    readAheadTotal -= 1
                    queuedBytes -= chunks[Int(chunk)].length
                    keepSent(chunk, slot: slot)
                    sentChunk = true
                case .failed:
                    readFailed(chunk, slot: slot, output: &output)
                    return true
                default:
                    return true
                }
            }
            flows[slot].queue.removeFirst()
        }
        return true
    }

    /// Puts a chunk on the wire from its buffer (or the page cache's mapping), as one super-segment when the
    /// wire cuts them, else segment by segment. `.refused`: what went before stays sent, the rest goes next
    /// time.
    private func transmit<O: NICOutput>(_ chunk: UInt32, now: Instant, budget: inout Int, output: inout O) -> TransmitResult {
        let slot = Int(chunk)
        let flow = Int(chunks[slot].flow)
        let endpoints = flows[flow].endpoints
        let template = chunks[slot].template
        let segment = Int(template.maximumSegmentSize)
        let delay = (now - chunks[slot].arrival) / 1_000_000
        let delayMilliseconds = UInt32(min(delay, UInt64(UInt32.max)))
        let source: UnsafeRawPointer
        if let mapped = chunks[slot].mapped {
            source = mapped
        } else {
            source = UnsafeRawPointer(pool.address(chunks[slot].buffer) + chunks[slot].payloadStart)
        }
        let superSegments = offloads.superSegmentLimit > 0
            && SegmentBuilder.superSegmentPayload(packetLimit: offloads.superSegmentLimit, template: template) >= chunks[slot].length
        while chunks[slot].sent < chunks[slot].length {
            let remaining = chunks[slot].length - chunks[slot].sent
            let piece = superSegments ? remaining : min(segment, remaining)
            let payload = UnsafeRawBufferPointer(start: source + chunks[slot].sent, count: piece)
            let isLast = chunks[slot].isLast && piece == remaining
            let offloaded = offloads.checksum || piece > segment
            let headerLength: Int
            do throws(WireError) {
                headerLength = try SegmentBuilder.buildHeaders(
                    into: headers, flow: endpoints, sequence: chunks[slot].sequence + chunks[slot].sent, payload: payload,
                    isLast: isLast, template: template, nicDelayMilliseconds: delayMilliseconds, checksum: offloaded ? .offloaded : .full)
            } catch {
                // A template no segment can be built from (options too long): nothing leaves, nothing stale.
                counters.errors += 1
                chunks[slot].sent = chunks[slot].length
                return .sent
            }
            let offload = offloaded ? PacketOffload(
                segmentSize: piece > segment ? UInt16(segment) : 0, headerLength: UInt16(headerLength),
                transportStart: UInt16(IPv4Repr.headerLength)) : nil
            let result = output.transmit(headers: UnsafeRawBufferPointer(rebasing: headers[0..<headerLength]), payload: payload, offload: offload)
            guard result == .sent else {
                if result == .refused { counters.wireRefusals += 1 }
                return result
            }
            let segments = (piece + segment - 1) / segment
            counters.packetsOut += segments
            counters.bytesOut += piece + segments * headerLength
            chunks[slot].sent += piece
            budget -= piece
        }
        return .sent
    }

    /// After a chunk left: its buffer goes to the store (or back to the pool, keeping only the file range).
    private func keepSent(_ chunk: UInt32, slot: Int) {
        let index = Int(chunk)
        var range = StoredRange(sequence: chunks[index].sequence, length: chunks[index].length, file: chunks[index].file,
                                offset: chunks[index].fileOffset)
        if chunks[index].mapped != nil {
            // Sent from the page cache: a retransmission finds it there again (or reads it).
        } else if store.hasRoom(bufferSize: pool.bufferSize) {
            range.buffer = chunks[index].buffer
            range.bufferOffset = chunks[index].payloadStart
            chunks[index].buffer = StoredRange.noBuffer
        } else if store.mode == .buffered {
            counters.storeSpills += 1
        }
        store.record(range, in: &flows[slot].sent)
        freeChunk(chunk)
    }

    /// A read failed mid-flow: the host hears which and why, and the flow's queued data is dropped (the
    /// stream cannot continue past a hole; the host ends the connection).
    private func readFailed<O: NICOutput>(_ chunk: UInt32, slot: Int, output: inout O) {
        let index = Int(chunk)
        let code = chunks[index].failure
        let failure: FileFailure = code == 0
            ? .shrank(chunks[index].file, expected: chunks[index].payloadStart + chunks[index].length, got: chunks[index].readDone)
            : .readFailed(chunks[index].file, errno: code)
        fail(failure.code, kind: .send, flow: flows[Int(slot)].id, reference: UInt64(chunks[index].sequence.rawValue),
             failure.description, output: &output)
        flows[slot].failed = true
        dropQueued(slot)
    }

    // MARK: - RETRANSMIT

    private func retransmit<O: NICOutput>(
        flow: FlowID, sequence: SequenceNumber, length: Int, template: SegmentTemplate, now: Instant, output: inout O
    ) {
        guard let index = openIndex(flow) else {
            fail(.unknownFlow, kind: .retransmit, flow: flow, reference: UInt64(sequence.rawValue), "RETRANSMIT for unknown \(flow)", output: &output)
            return
        }
        let slot = Int(index)
        guard length <= limits.maximumSendBytes, template.maximumSegmentSize > 0 else {
            fail(.malformedCommand, kind: .retransmit, flow: flow, reference: UInt64(sequence.rawValue),
                 "RETRANSMIT of \(length) bytes with MSS \(template.maximumSegmentSize)", output: &output)
            return
        }
        if flows[slot].failed { return }
        let unsent = firstUnsent(slot)
        guard RetransmitStore.pieces(of: flows[slot].sent, sequence: sequence, length: length, unsentFrom: unsent, into: &pieceScratch) else {
            fail(.malformedCommand, kind: .retransmit, flow: flow, reference: UInt64(sequence.rawValue),
                 "RETRANSMIT of data never sent or already acknowledged", output: &output)
            return
        }
        if let unsent, sequence + length > unsent { counters.retransmitsOfQueuedData += 1 }
        let endpoints = flows[slot].endpoints
        var stale = false
        for (rangeIndex, skip, take) in pieceScratch {
            let range = flows[slot].sent[flows[slot].sent.startIndex + rangeIndex]
            if range.hasBuffer {
                // From the very buffer the data first left from: no read, no copy.
                let memory = UnsafeRawBufferPointer(pool.memory(range.buffer))
                let start = range.bufferOffset + skip
                sendStored(UnsafeRawBufferPointer(rebasing: memory[start..<(start + take)]), endpoints: endpoints,
                           sequence: range.sequence + skip, template: template, output: &output)
                counters.retransmittedBytes += take
            } else {
                // Bufferless: read the file range again, and send it when the read is done.
                let lease: FileLease
                do throws(FileFailure) { lease = try files.lease(range.file) } catch {
                    if !stale {
                        fail(error.code, kind: .retransmit, flow: flow, reference: UInt64(sequence.rawValue), error.description, output: &output)
                    }
                    stale = true
                    continue
                }
                let chunk = newChunk()
                chunks[Int(chunk)].isRetransmission = true
                chunks[Int(chunk)].flow = index
                chunks[Int(chunk)].flowGeneration = flows[slot].generation
                chunks[Int(chunk)].sequence = range.sequence + skip
                chunks[Int(chunk)].length = take
                chunks[Int(chunk)].file = range.file
                chunks[Int(chunk)].fileOffset = range.offset + UInt64(skip)
                chunks[Int(chunk)].lease = lease
                chunks[Int(chunk)].holdsLease = true
                chunks[Int(chunk)].template = template
                chunks[Int(chunk)].arrival = now
                flows[slot].urgent.append(chunk)
                flows[slot].toRead.insert(chunk, at: flows[slot].toRead.startIndex + flows[slot].rereads)
                flows[slot].rereads += 1
                wantReads(index)
            }
        }
    }

    /// The first sequence number of the flow's file data still queued here, if any.
    private func firstUnsent(_ slot: Int) -> SequenceNumber? {
        // A chunk the wire refused midway counts as unsent as a whole: it is stored only once it all left.
        for item in flows[slot].queue {
            if case .chunk(let chunk) = item { return chunks[Int(chunk)].sequence }
        }
        return nil
    }

    /// A stored range sent again, cut at the template's MSS (or as super-segments), from where it lies.
    private func sendStored<O: NICOutput>(
        _ bytes: UnsafeRawBufferPointer, endpoints: FlowEndpoints, sequence: SequenceNumber, template: SegmentTemplate, output: inout O
    ) {
        let segment = Int(template.maximumSegmentSize)
        let superPayload = offloads.superSegmentLimit > 0
            ? SegmentBuilder.superSegmentPayload(packetLimit: offloads.superSegmentLimit, template: template) : 0
        let pieceLength = superPayload > 0 && bytes.count > segment ? superPayload : segment
        var offset = 0
        while offset < bytes.count {
            let piece = min(pieceLength, bytes.count - offset)
            let payload = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + piece)])
            let offloaded = offloads.checksum || piece > segment
            guard let headerLength = try? SegmentBuilder.buildHeaders(
                into: headers, flow: endpoints, sequence: sequence + offset, payload: payload, isLast: false, template: template,
                nicDelayMilliseconds: 0, checksum: offloaded ? .offloaded : .full)
            else { return }
            let offload = offloaded ? PacketOffload(
                segmentSize: piece > segment ? UInt16(segment) : 0, headerLength: UInt16(headerLength),
                transportStart: UInt16(IPv4Repr.headerLength)) : nil
            // A refused retransmission is lost as on a wire: the host's timer sends it again.
            if output.transmit(headers: UnsafeRawBufferPointer(rebasing: headers[0..<headerLength]), payload: payload, offload: offload) == .sent {
                let segments = (piece + segment - 1) / segment
                counters.packetsOut += segments
                counters.bytesOut += piece + segments * headerLength
            } else {
                counters.wireRefusals += 1
            }
            offset += piece
        }
    }

    // MARK: - PACKET_OUT

    private func packetOut<O: NICOutput>(flow: FlowID, _ packet: UnsafeRawBufferPointer, now: Instant, output: inout O) {
        if let index = openIndex(flow), !flows[Int(index)].queue.isEmpty, Self.occupiesSequenceSpace(packet) {
            // Data or a FIN after file data still queued here must not overtake it: the peer would see a
            // hole, answer with duplicate ACKs, and the host would retransmit what was never lost.
            guard deferredBytes + packet.count <= limits.maximumDeferredBytes else {
                counters.deferredDrops += 1
                return
            }
            let held = newDeferredPacket()
            deferred[Int(held)].bytes.append(contentsOf: packet)
            deferred[Int(held)].arrival = now
            deferred[Int(held)].timestampMoved = false
            deferredBytes += packet.count
            counters.deferredPackets += 1
            counters.payloadBytesCopied += packet.count
            flows[Int(index)].queue.append(.packet(held))
            considerReady(index)
            return
        }
        if output.transmit(headers: packet, payload: UnsafeRawBufferPointer(start: nil, count: 0), offload: nil) == .sent {
            counters.packetsOut += 1
            counters.bytesOut += packet.count
        } else {
            counters.wireRefusals += 1
        }
    }

    /// Whether a host-built IPv4/TCP packet carries data, SYN or FIN (anything the peer must take in order).
    static func occupiesSequenceSpace(_ packet: UnsafeRawBufferPointer) -> Bool {
        guard packet.count >= 20 else { return false }
        let ipHeader = Int(packet[0] & 0x0F) * 4
        guard ipHeader >= 20, packet.count >= ipHeader + 20 else { return false }
        let tcpHeader = Int(packet[ipHeader + 12] >> 4) * 4
        let flags = packet[ipHeader + 13]
        return packet.count > ipHeader + tcpHeader || flags & 0x03 != 0
    }

    private func newDeferredPacket() -> UInt32 {
        if let reused = freeDeferred.popLast() { return reused }
        deferred.append(DeferredPacket())
        return UInt32(deferred.count - 1)
    }

    private func freeDeferredPacket(_ index: UInt32) {
        deferredBytes -= deferred[Int(index)].bytes.count
        deferred[Int(index)].bytes.removeAll(keepingCapacity: true)
        freeDeferred.append(index)
    }

    /// A held host packet leaves, its TSval moved on by the time it waited here (as for file data, so the
    /// peer's timestamps stay in order and its RTT samples stay the wire's).
    private func transmitDeferred<O: NICOutput>(_ index: UInt32, now: Instant, output: inout O) -> Bool {
        let waited = (now - deferred[Int(index)].arrival) / 1_000_000
        let move = !deferred[Int(index)].timestampMoved && waited > 0
        deferred[Int(index)].timestampMoved = true
        return deferred[Int(index)].bytes.withUnsafeMutableBytes { packet in
            if move { Self.addToTimestamp(packet, milliseconds: UInt32(min(waited, UInt64(UInt32.max)))) }
            guard output.transmit(headers: UnsafeRawBufferPointer(packet), payload: UnsafeRawBufferPointer(start: nil, count: 0), offload: nil) == .sent else {
                counters.wireRefusals += 1
                return false
            }
            counters.packetsOut += 1
            counters.bytesOut += packet.count
            return true
        }
    }

    /// Adds `milliseconds` to a TCP segment's TSval, keeping its checksum right (RFC 1624).
    static func addToTimestamp(_ packet: UnsafeMutableRawBufferPointer, milliseconds: UInt32) {
        guard packet.count >= 40 else { return }
        let ip = Int(packet[0] & 0x0F) * 4
        guard packet.count >= ip + 20 else { return }
        let tcpHeader = Int(packet[ip + 12] >> 4) * 4
        guard tcpHeader > 20, packet.count >= ip + tcpHeader else { return }
        var offset = ip + 20
        let end = ip + tcpHeader
        while offset < end {
            let kind = packet[offset]
            if kind == 0 { return }
            if kind == 1 { offset += 1; continue }
            guard offset + 1 < end else { return }
            let length = Int(packet[offset + 1])
            guard length >= 2, offset + length <= end else { return }
            if kind == 8 && length == 10 {
                let old = UnsafeRawBufferPointer(packet).bigEndianUInt32(at: offset + 2)
                let new = old &+ milliseconds
                packet.storeBigEndian(new, at: offset + 2)
                let checksum = UnsafeRawBufferPointer(packet).bigEndianUInt16(at: ip + 16)
                packet.storeBigEndian(InternetChecksum.update(checksum: checksum, old: old, new: new), at: ip + 16)
                return
            }
            offset += length
        }
    }

    // MARK: - From the wire

    /// A packet from the wire: a TCP segment goes to the host as PACKET_IN, tagged with its flow when the
    /// NIC knows it (a SYN for a listener, or a stray, goes untagged and the host decides). Anything that is
    /// not well-formed IPv4/TCP is dropped and counted here, never handed on.
    public func receive<O: NICOutput>(packet: UnsafeRawBufferPointer, output: inout O) {
        let ip: IPv4PacketView
        do throws(WireError) {
            guard packet.count <= Int(UInt16.max) else { throw .bufferTooSmall(needed: packet.count, available: Int(UInt16.max)) }
            ip = try IPv4PacketView(packet)
        } catch {
            if error == .fragmented { counters.fragmentsIn += 1 } else { counters.malformedIn += 1 }
            return
        }
        guard ip.protocol == .tcp, let segment = try? TCPSegmentView(ip.payload) else {
            counters.malformedIn += 1
            return
        }
        let key = EndpointKey(remoteAddress: ip.source.rawValue, remotePort: segment.sourcePort, localPort: segment.destinationPort)
        counters.packetsIn += 1
        let flow = flowsByEndpoints[key].map { flows[Int($0)].id } ?? .none
        output.reply(.packetIn(flow, packet: ip.bytes))
    }

    // MARK: - Answers

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

    /// Bytes held for one flow (tests, diagnostics).
    public func heldBytes(flow: FlowID) -> Int {
        guard let index = openIndex(flow) else { return 0 }
        return RetransmitStore.heldBytes(flows[Int(index)].sent)
    }
}
