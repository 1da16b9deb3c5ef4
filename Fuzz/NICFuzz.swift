// libFuzzer target for the NIC's command executor and I/O engine (NICDataPlane), compiled with
// IOTCPCommon's and IOTCPNICCore's sources by scripts/fuzz.sh. The host is the untrusted party here: the
// input is a stream of commands it might send (any flow ids, ranges, lengths, files, packets, in any
// order), interleaved with turns of the loop on a disk that completes reads late, out of order, or with
// errors, and a wire that sometimes refuses. Invariants: nothing traps; memory held stays under its
// limits throughout; and once the host is gone (reset) and the reads are done, every buffer, chunk,
// lease and stored byte has come back.
import IOTCPCommon

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzNIC(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    var input = FuzzInput(UnsafeRawBufferPointer(start: start, count: count))
    let files = MemoryFiles(limit: 8)
    files.add("a", fileA)
    files.add("b", [1, 2, 3])
    files.add("empty", [])
    let disk = MemoryDisk(files: files, capacity: 32, shuffleSeed: UInt64(input.byte() ?? 0))
    disk.delayNanoseconds = UInt64(input.byte() ?? 0) * 100_000
    var failEvery = Int(input.byte() ?? 0)
    disk.failures = { read in failEvery > 0 && Int(read.offset) % (failEvery * 4096 + 1) == 0 ? 5 : nil }
    var limits = NICDataPlane.Limits()
    limits.maximumFlows = 64
    limits.maximumSendBytes = 1 << 20
    limits.maximumQueuedBytes = 4 << 20
    limits.maximumReadAheadChunks = 8
    let plane = NICDataPlane(files: files, disk: disk, pool: BufferPool(capacityBytes: 2 << 20),
                             retransmitMode: (input.byte() ?? 0) & 1 == 0 ? .buffered : .bufferless,
                             storeLimitBytes: 1 << 20, limits: limits)
    var output = FuzzNICOutput()
    var now = Instant.milliseconds(1)
    var opened: [OffloadedFileID] = []
    let paths = ["a", "b", "empty", "../a", "/a", "missing", "a/..", ""]
    while let step = input.byte() {
        plane.offloads = step & 0x80 != 0 ? .all : .none
        output.refuse = step & 0x40 != 0
        let flow = FlowID(UInt32(input.byte() ?? 0) % 80)
        switch step % 10 {
        case 0:
            let path = paths[Int(input.byte() ?? 0) % paths.count]
            Array(path.utf8).withUnsafeBytes { plane.handle(.open(requestID: 1, flags: 0, path: $0), received: now, now: now, output: &output) }
            if let id = output.opened.popLast() { opened.append(id) }
        case 1:
            plane.handle(.flowOpen(flow, FlowEndpoints(
                localAddress: IPv4Address(10, 0, 0, 2), remoteAddress: IPv4Address(10, 0, 0, UInt8(input.byte() ?? 1)),
                localPort: 80, remotePort: UInt16(truncatingIfNeeded: input.word()), remoteHardwareAddress: .zero,
                maximumSegmentSize: 1448)), received: now, now: now, output: &output)
        case 2, 3:
            let file = opened.isEmpty || (input.byte() ?? 0) == 0xFF ? OffloadedFileID(rawValue: UInt64(input.word())) : opened[Int(input.byte() ?? 0) % opened.count]
            let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(input.word()), window: 100, lastSegmentFlags: .psh,
                                           maximumSegmentSize: UInt16(truncatingIfNeeded: input.word() % 9000),
                                           timestamps: (input.byte() ?? 0) & 1 == 0 ? nil : TCPTimestamps(value: 1, echoReply: 2))
            plane.handle(.send(flow, SendRange(sequence: SequenceNumber(input.word()), length: input.word() % (1 << 21), file: file,
                                               offset: UInt64(input.word() % 300_000), template: template)),
                         received: now, now: now, output: &output)
        case 4:
            let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(0), window: 1, maximumSegmentSize: 1448)
            plane.handle(.retransmit(flow, sequence: SequenceNumber(input.word()), length: input.word() % (1 << 21), template: template),
                         received: now, now: now, output: &output)
        case 5:
            plane.handle(.acknowledged(flow, through: SequenceNumber(input.word())), received: now, now: now, output: &output)
        case 6:
            plane.handle(.flowClose(flow, reason: 0), received: now, now: now, output: &output)
        case 7:
            let packet = (0..<Int(input.byte() ?? 0)).map { _ in input.byte() ?? 0 }
            packet.withUnsafeBytes { plane.handle(.packetOut(flow, packet: $0), received: now, now: now, output: &output) }
            packet.withUnsafeBytes { plane.receive(packet: $0, output: &output) }
        case 8:
            if let file = opened.randomElement() { plane.handle(.closeFile(file), received: now, now: now, output: &output) }
            failEvery = Int(input.byte() ?? 0)
        default:
            now = now + UInt64(input.byte() ?? 0) * 50_000
            plane.poll(now: now, output: &output)
        }
        precondition(plane.pool.inUse <= plane.pool.capacity)
        precondition(plane.store.heldBytes >= 0 && plane.store.bufferedBytes >= 0 && plane.queuedByteCount >= 0)
        precondition(plane.store.buffersHeld * plane.pool.bufferSize <= plane.store.limitBytes, "the store kept more than its limit")
    }
    // The host goes away: everything must come back once the reads in flight are done.
    plane.reset()
    output.refuse = false
    for _ in 0..<1000 where disk.inFlight > 0 || plane.hasPendingWork {
        now = now + 1_000_000_000
        plane.poll(now: now, output: &output)
    }
    precondition(plane.pool.inUse == 0, "\(plane.pool.inUse) buffers leaked")
    precondition(plane.chunksInUse == 0, "\(plane.chunksInUse) chunks leaked")
    precondition(files.leasesOut == 0 && files.openCount == 0, "leases or files leaked")
    precondition(plane.store.heldBytes == 0 && plane.queuedByteCount == 0 && plane.flowCount == 0)
    return 0
}

/// Made once: copying an array into MemoryFiles shares its storage.
let fileA: [UInt8] = (0..<200_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }

struct FuzzNICOutput: NICOutput {
    var refuse = false
    var opened: [OffloadedFileID] = []
    mutating func transmit(headers: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, offload: PacketOffload?) -> TransmitResult {
        if refuse { return .refused }
        // Touch every byte, as a wire would.
        var sum = 0
        for byte in headers { sum &+= Int(byte) }
        for byte in payload { sum &+= Int(byte) }
        precondition(payload.isEmpty || headers.count <= 120, "data headers are built here, at most IPv4 20 + TCP 60")
        precondition(headers.count + payload.count <= 65_535 && sum >= 0)
        return .sent
    }
    mutating func reply(_ command: Command) {
        precondition(command.validationFailure == nil, "the NIC sent an invalid \(command.kind)")
        if case .opened(_, let file, _) = command { opened.append(file) }
    }
}

