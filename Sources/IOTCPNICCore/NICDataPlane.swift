import IOTCPCommon

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
///
/// Why one type of about 1,100 lines: commands, reads and transmission all work on the same per-flow queues
/// and chunk table, each in place and within one turn. What stands alone is its own type (`RetransmitStore`,
/// `SegmentBuilder`, `BufferPool`, `FIFO`, `FileService`, `DiskIO`); the engine's rules are split by concern
/// into files: this one (state, setup, listings), `+Commands` (SEND, ACKD, RETRANSMIT, PACKET_OUT), `+Reads`
/// and `+Turn` (`poll`, transmission, the wire, answers). Its members are therefore internal, not private.
public final class NICDataPlane {
    public let files: any FileService
    public let disk: any DiskIO
    public let pool: BufferPool
    @exclusivity(unchecked) public internal(set) var store: RetransmitStore
    public let limits: Limits
    /// What the wire finishes for us; the runtime sets it from the wire and its settings each turn.
    @exclusivity(unchecked) public var offloads = WireOffloads.none
    /// Seals TLS records for flows given TLS_KEYS; without it TLS_KEYS and SEND_RECORDS are refused.
    @exclusivity(unchecked) public var recordSealers: (any RecordSealerFactory)?
    @exclusivity(unchecked) public internal(set) var counters = Counters()

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
        /// Connections whose ending the NIC holds at once (TEARDOWN); past it a handed-over one is reset.
        public var maximumClosingConnections = 1 << 18
        /// Splices relayed at once (SPLICE); past it both connections of a new one are reset.
        public var maximumSplices = 1 << 16
        /// Bytes of heads not yet acknowledged by their backends, over every splice.
        public var maximumSpliceHeadBytes = 64 << 20
        /// Handshakes a deferring port remembers between their bare ACK and their first data (about 60
        /// bytes each); past it a handshake is handed over at its bare ACK instead.
        public var maximumDeferredHandshakes = 1 << 16

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
        /// TLS records sealed here (each retransmission of one counts again), and their plaintext bytes.
        public var recordsSealed = 0
        public var sealedBytes = 0
        /// Flows given TLS keys.
        public var tlsFlows = 0
        /// Data segments whose TSval was moved up to the flow's latest, so it would not go backwards.
        public var timestampsHeldBack = 0
        /// Records that would have been sealed a second time from a file changed since it was opened (the
        /// flow was failed instead: the same nonce over other bytes would give the key away).
        public var changedFileReseals = 0
        /// SYNs to a LISTEN port answered here with a cookie (no state kept), ACKs whose cookie was good
        /// (the host was sent ESTABLISHED), and ACKs to such a port that matched no cookie (passed to the host,
        /// which resets them). Nothing is kept per handshake, so a request that arrives before the host's
        /// FLOW_OPEN brings the cookie back too and counts again: `handshakesCompleted` can exceed the
        /// connections made, which the host counts exactly (`TCPStatistics.handshakesFromNIC`).
        public var synCookiesSent = 0
        public var handshakesCompleted = 0
        public var cookiesRejected = 0
        /// Handshakes' bare ACKs dropped on a port that defers accepts until the client's first data.
        public var acceptsDeferred = 0
        /// Deferred handshakes accepted from a later segment, their first data lost or overtaken.
        public var deferredAcceptsOutOfOrder = 0
        /// Handshakes handed over at their bare ACK because the table of deferred ones was full.
        public var deferralsRefused = 0
        /// Connections handed over with TEARDOWN; FINs sent (retransmissions included) and the
        /// retransmissions alone; endings completed (last ACK, or TIME-WAIT over), given up (FIN never
        /// acknowledged, FIN-WAIT-2 over), reset (by the peer, or data after the close); TIME-WAITs ended
        /// by a new SYN (RFC 6191); hand-overs refused for want of room (reset instead).
        public var teardowns = 0
        public var finsSent = 0
        public var finRetransmissions = 0
        public var closingFinished = 0
        public var closingAbandoned = 0
        public var closingReset = 0
        public var timeWaitReused = 0
        public var teardownOverflows = 0
        /// Challenge ACKs a closing connection did not send (more than one per 100 ms).
        public var challengesSuppressed = 0
        /// Endings handed over with data (TEARDOWN with data, counted in `teardowns` too); those whose data
        /// the peer acknowledged whole; timeouts that sent their data again; FLOW_RELEASEDs answered.
        public var endingsWithData = 0
        public var endingDataAcknowledged = 0
        public var endingDataResends = 0
        public var flowsReleased = 0
        /// Packets the host gave back (REDELIVER) for connections it had just handed over.
        public var redelivered = 0
        /// SPLICEs taken, and refused (no room, or connections that cannot be joined: both reset); segments
        /// and payload bytes relayed between spliced peers; segments not passed on (a SYN, bytes the host
        /// had already received); splices finished (both FINs acknowledged), reset by a peer, reset for
        /// idleness; head retransmissions.
        public var splices = 0
        public var spliceRefusals = 0
        public var splicedSegments = 0
        public var splicedBytes = 0
        public var spliceDrops = 0
        /// Relayed data segments dropped because the queue in front of the NIC was standing
        /// (`StandingQueueControl`).
        public var spliceQueueDrops = 0
        public var splicesFinished = 0
        public var splicesReset = 0
        public var spliceIdleResets = 0
        public var spliceHeadResends = 0
        /// Super-segments the wire handed over: relayed whole on a splice, or cut at the sender's MSS for
        /// everything else.
        public var superSegmentsRelayed = 0
        public var superSegmentsCut = 0
        /// Relayed packets joined onto the one before (`PendingRelay`).
        public var relayedSegmentsJoined = 0
        /// Relayed pure ACKs left out for a later one of the same batch.
        public var acknowledgmentsThinned = 0
    }

    // MARK: - State
    //
    // Every stored property is `@exclusivity(unchecked)`, as the host engine's are (`TCPEngine`): a data plane
    // is driven by one thread, and no method holds an access to one of them across a call that takes it again
    // (the checked builds' tests would have trapped). Under short connections the runtime's bookkeeping for
    // them, the runtime's (`NICRuntime`) and the wire's was 3.5% of the NIC thread (`perf record`).

    @exclusivity(unchecked) var flows: [FlowState] = []
    /// Each open file's size and modification time when it was opened: a TLS record is sealed a second time
    /// only from the same bytes (same record number, same nonce), so a file changed since is never re-sealed.
    @exclusivity(unchecked) var openedStatus: [OffloadedFileID: OffloadedFileStatus] = [:]
    @exclusivity(unchecked) var flowsByEndpoints: [EndpointKey: UInt32] = [:]
    /// IPv6 flows by endpoints (their endings and splices have tables of their own too).
    @exclusivity(unchecked) var flowsByEndpoints6: [EndpointKey6: UInt32] = [:]
    @exclusivity(unchecked) var openFlows = 0
    @exclusivity(unchecked) var chunks: [Chunk] = []
    @exclusivity(unchecked) var freeChunks: [UInt32] = []
    @exclusivity(unchecked) var deferred: [DeferredPacket] = []
    @exclusivity(unchecked) var freeDeferred: [UInt32] = []
    @exclusivity(unchecked) var deferredBytes = 0
    /// Flows whose queue head can go now, in turn order.
    @exclusivity(unchecked) var readyFlows = FIFO<FlowTicket>()
    /// Flows with chunks waiting for a read to start, in turn order.
    @exclusivity(unchecked) var readingFlows = FIFO<FlowTicket>()
    @exclusivity(unchecked) var queuedBytes = 0
    /// Chunks read or being read and not yet sent, over every flow.
    @exclusivity(unchecked) var readAheadTotal = 0
    /// A segment's headers, and a SEND's head after them (`SendRange.maximumHeadLength`).
    let headers = UnsafeMutableRawBufferPointer.allocate(byteCount: 256 + SendRange.maximumHeadLength, alignment: 16)
    @exclusivity(unchecked) var pieceScratch: [(index: Int, skip: Int, length: Int)] = []
    @exclusivity(unchecked) var registeredSlabs: [Bool] = []
    /// The time of the latest `handle` or `poll`.
    @exclusivity(unchecked) var clock = Instant.zero
    /// Whether the queue of frames in front of the NIC is standing, and which relayed segment to drop.
    @exclusivity(unchecked) public var standingQueue = StandingQueueControl()
    /// Ports whose SYNs are answered here (LISTEN), with what their SYN-ACKs offer: one entry per port at
    /// most, so the host cannot make this grow past 65,535 small entries, and a SYN flood never does.
    @exclusivity(unchecked) var listeners: [UInt16: ListenerOptions] = [:]
    /// Deferring ports' handshakes between their bare ACK and their first data (bounded).
    @exclusivity(unchecked) var deferredHandshakes: DeferredHandshakes
    /// Keys the cookies of SYNs answered here; fresh per data plane (tests set their own).
    @exclusivity(unchecked) public var cookies = SYNCookies.random()
    /// Where a cookie SYN-ACK or a closing connection's segment is built (IPv4 and TCP headers with options:
    /// at most 60 + 60 bytes).
    let setupScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 128, alignment: 16)
    /// Connections whose ending the host handed over (TEARDOWN), their free entries, their index by
    /// endpoints, and the wheel of their deadlines (FIN retransmission, FIN-WAIT-2, TIME-WAIT).
    @exclusivity(unchecked) var closing: [ClosingConnection] = []
    @exclusivity(unchecked) var freeClosing: [Int32] = []
    @exclusivity(unchecked) var closingByEndpoints = EndpointIndex<Int32>()
    @exclusivity(unchecked) var closingWheel = TimerWheel(tick: Nanoseconds.millisecond, bucketCount: 1024, start: .zero)
    @exclusivity(unchecked) var closingDue: [Int] = []
    /// Flows handed over with data that were released since the last flush (FLOW_RELEASED to send).
    @exclusivity(unchecked) var pendingReleases: [PendingRelease] = []
    /// Splices (SPLICE), their free entries, their index by either peer's endpoints (entry << 1, and 1 for
    /// the backend), the wheel of their deadlines, the head bytes they hold, and where a relayed packet is
    /// rewritten (the largest IPv4 packet).
    @exclusivity(unchecked) var splices: [SpliceConnection] = []
    @exclusivity(unchecked) var freeSplices: [Int32] = []
    @exclusivity(unchecked) var splicesByEndpoints = EndpointIndex<Int32>()
    @exclusivity(unchecked) var spliceWheel = TimerWheel(tick: Nanoseconds.millisecond, bucketCount: 1024, start: .zero)
    @exclusivity(unchecked) var spliceDue: [Int] = []
    @exclusivity(unchecked) var spliceHeadBytes = 0
    let spliceScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
    /// One piece of a super-segment being cut (`receive(packet:offload:)`).
    let segmentScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 16)
    /// Relayed packets held for joining (`PendingRelay`), how many, the next to give way when all are
    /// taken, and their bytes (64 KiB each).
    @exclusivity(unchecked) var pendingRelays = [PendingRelay](repeating: PendingRelay(), count: NICDataPlane.coalescingFlows)
    @exclusivity(unchecked) var pendingRelayCount = 0
    @exclusivity(unchecked) var pendingRelayVictim = 0
    let relayCoalescing = UnsafeMutableRawBufferPointer.allocate(
        byteCount: NICDataPlane.coalescingFlows * NICDataPlane.coalescingBytes, alignment: 64)

    struct EndpointKey: Hashable {
        var remoteAddress: UInt32
        var remotePort: UInt16
        var localPort: UInt16

        /// One word into the hasher rather than three fields: every packet from the wire looks one up, and
        /// each field was a call into the standard library's hasher.
        func hash(into hasher: inout Hasher) {
            hasher.combine(UInt64(remoteAddress) << 32 | UInt64(remotePort) << 16 | UInt64(localPort))
        }
    }

    /// An IPv6 flow's key: its own table, so the IPv4 one keeps its one-word keys.
    struct EndpointKey6: Hashable {
        var remoteAddress: IPv6Address
        var ports: UInt32

        init(remoteAddress: IPv6Address, remotePort: UInt16, localPort: UInt16) {
            self.remoteAddress = remoteAddress
            ports = UInt32(remotePort) << 16 | UInt32(localPort)
        }

        init(_ endpoints: FlowEndpoints) {
            self.init(remoteAddress: endpoints.remoteAddress.bits, remotePort: endpoints.remotePort, localPort: endpoints.localPort)
        }
    }

    /// An IPv4 flow's key (the mapped address keeps the IPv4 address in its low 32 bits). Endings and
    /// splices are keyed the same way (IPv6 ones by `EndpointKey6`).
    static func key(of endpoints: FlowEndpoints) -> EndpointKey {
        EndpointKey(remoteAddress: UInt32(truncatingIfNeeded: endpoints.remoteAddress.bits.low), remotePort: endpoints.remotePort,
                    localPort: endpoints.localPort)
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
        /// The flow's TLS record keys (TLS_KEYS), dropped, and so erased, at FLOW_CLOSE.
        var sealer: (any RecordSealing)?
        /// The tag each record sent and not yet acknowledged got when first sealed, in record order: a record
        /// sealed again (a retransmission read anew) must come out the same, or it does not leave.
        var recordTags = FIFO<RecordTag>()
        /// Records below this number already have their tag kept (or were acknowledged).
        var nextUntaggedRecord: UInt64 = 0
        /// The TSval of the flow's latest data segment from here, so no later one goes out with an older one
        /// (the peer's PAWS check would drop it, RFC 7323 §5): a chunk's delay is counted in whole
        /// milliseconds from its own SEND, and two chunks' roundings can disagree by one.
        var lastTimestamp: UInt32 = 0
        var hasSentTimestamp = false
        /// The closing entry whose ending holds this flow for its data (TEARDOWN with data), or -1: the
        /// peer's segments go to it, and no ECHO goes up.
        var ending: Int32 = -1
    }

    struct RecordTag {
        var number: UInt64
        var end: SequenceNumber
        var low: UInt64
        var high: UInt64
    }

    /// A chunk's failure when sealing a record again would not give the bytes first sent (ESTALE).
    static let changedRecordFailure: Int32 = 116

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
        /// The first chunk of a SEND with a head: the deferred packet holding the head, which goes in the
        /// chunk's first segment, before its payload, at `sequence` minus its length (`noHead` otherwise).
        var head = NICDataPlane.noHead
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
        /// Where the payload starts in the buffer (a record's slice, once sealed), and where the read landed.
        var payloadStart = 0
        var readInto = 0
        /// Payload bytes already on the wire (a refused write stops mid-chunk).
        var sent = 0
        var failure: Int32 = 0
        var template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(0), window: 0, maximumSegmentSize: 1)
        var arrival = Instant.zero
        /// TLS records (`recordOverhead` > 0): the chunk's wire bytes lie in records `firstRecord ..<
        /// firstRecord + recordCount` of `run`; it reads their whole plaintext (`recordPlaintext` bytes from
        /// `fileOffset`), lays the records out and seals them in place, and sends its part of them.
        var run = TLSRecordRun(start: SequenceNumber(0), recordPlaintext: 0, plaintext: 0, firstRecord: 0,
                               file: OffloadedFileID(rawValue: 0), offset: 0)
        var recordOverhead = 0
        var firstRecord = 0
        var recordCount = 0
        var recordPlaintext = 0
        var isRecord: Bool { recordOverhead > 0 }
        /// File bytes the chunk reads: its payload, or its records' plaintext.
        var fileBytes: Int { isRecord ? recordPlaintext : length }
    }

    static let noHead = UInt32.max

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
        deferredHandshakes = DeferredHandshakes(capacity: limits.maximumDeferredHandshakes)
        store = RetransmitStore(mode: retransmitMode, limitBytes: storeLimitBytes)
        let plane = Unmanaged.passUnretained(self)
        self.pool.slabAdded = { slab, memory in plane.takeUnretainedValue().adopt(slab: slab, memory: memory) }
    }

    deinit {
        // Reads in flight write into the pool's memory: let them finish before it goes.
        drain()
        headers.deallocate()
        setupScratch.deallocate()
        spliceScratch.deallocate()
        segmentScratch.deallocate()
        relayCoalescing.deallocate()
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

    func adopt(slab: Int, memory: UnsafeMutableRawBufferPointer) {
        while registeredSlabs.count <= slab { registeredSlabs.append(false) }
        registeredSlabs[slab] = disk.register(slab: slab, memory: memory)
    }

    public var flowCount: Int { openFlows }
    /// Ports whose SYNs this data plane answers (LISTEN).
    public var listenerCount: Int { listeners.count }
    /// Handshakes a deferring port holds between their bare ACK and their first data.
    public var deferredHandshakeCount: Int { deferredHandshakes.count }
    /// Reads in flight or waiting for a buffer, chunks waiting for the wire: work the loop must come back for.
    public var hasPendingWork: Bool { !readyFlows.isEmpty || !readingFlows.isEmpty || disk.inFlight > 0 }
    /// Whether a chunk can leave now (the loop should not sleep).
    public var hasReadyWork: Bool { !readyFlows.isEmpty }
    /// Bytes queued to send and not yet on the wire.
    public var queuedByteCount: Int { queuedBytes }
    /// Bytes of the host's held here: packets waiting behind file data, and SEND heads not yet sent.
    public var deferredByteCount: Int { deferredBytes }
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
            let local = "\(endpoints.localAddress.urlHost):\(endpoints.localPort)"
            let peer = "\(endpoints.remoteAddress.urlHost):\(endpoints.remotePort)"
            let unacknowledged = flow.sent.reduce(0) { $0 + $1.length }
            let state = flow.failed ? "failed" : flow.isReady ? "ready" : flow.isReading ? "reading" : flow.queue.isEmpty ? "idle" : "waiting"
            func pad(_ text: String, _ width: Int) -> String { text + String(repeating: " ", count: max(0, width - text.count)) }
            lines.append(pad("\(flow.id.index).\(flow.id.generation)", 12) + pad(local, 22) + pad(peer, 22)
                         + pad("\(unacknowledged)", 9) + pad("\(flow.queue.count)", 8) + pad("\(flow.readAhead)", 9) + state)
        }
        return lines.joined(separator: "\n")
    }
}
