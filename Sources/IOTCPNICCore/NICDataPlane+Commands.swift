import IOTCPCommon

/// The host's commands: flows opened and closed, SENDs cut into chunks, ACKD, RETRANSMIT (from the store or
/// re-read) and PACKET_OUT (held behind queued data when it must keep its place).
extension NICDataPlane {
    // MARK: - Commands

    /// Executes one command from the host. `received` is when it arrived: the ECHO's delay counts from it.
    public func handle<O: NICOutput>(_ command: Command, received: Instant, now: Instant, output: inout O) {
        counters.commands += 1
        clock = now
        switch command {
        case .hello, .keepalive, .error, .opened, .stat, .echo, .packetIn, .device, .established, .spliceEnded, .flowReleased:
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
            openedStatus[file] = nil
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
            while let tag = flows[Int(index)].recordTags.first, tag.end <= through { flows[Int(index)].recordTags.removeFirst() }
        case .packetOut(let flow, let packet):
            packetOut(flow: flow, packet, now: now, output: &output)
        case .send(let flow, let range):
            counters.sends += 1
            send(flow: flow, range, head: UnsafeRawBufferPointer(start: nil, count: 0), received: received, output: &output)
        case .sendWithHead(let flow, let range, let head):
            counters.sends += 1
            send(flow: flow, range, head: head, received: received, output: &output)
        case .retransmit(let flow, let sequence, let length, let template):
            retransmit(flow: flow, sequence: sequence, length: Int(length), template: template, now: now, output: &output)
        case .tlsKeys(let flow, let keys):
            setKeys(flow: flow, keys, output: &output)
        case .sendRecords(let flow, let range):
            counters.sends += 1
            sendRecords(flow: flow, range, received: received, output: &output)
        case .listen(let options):
            listeners[options.port] = options.isListening ? options : nil
        case .teardown(let flow, let parameters):
            teardown(flow: flow, parameters, now: now, output: &output)
        case .teardownWithData(let flow, let parameters, let unacknowledged, let hostBytes):
            teardownWithData(flow: flow, parameters, unacknowledged: unacknowledged, hostBytes: hostBytes, now: now, output: &output)
        case .redeliver(let packet):
            redeliver(packet, output: &output)
        case .splice(let flow, let parameters, let head):
            splice(clientFlow: flow, parameters, head: head, now: now, output: &output)
        }
        flushReleases(output: &output)
    }

    func open<O: NICOutput>(requestID: UInt32, path: String, output: inout O) {
        do throws(FileFailure) {
            let (file, status) = try files.open(path: path)
            openedStatus[file] = status
            // STAT follows at once, so the host has the whole status without another round trip.
            output.reply(.opened(requestID: requestID, file: file, size: status.size))
            if let device = try files.device(of: file) { reply(device, requestID: requestID, file: file, output: &output) }
            output.reply(.stat(requestID: requestID, file: file, status: status))
        } catch {
            fail(error.code, kind: .open, flow: .none, reference: UInt64(requestID), error.description, output: &output)
        }
    }

    func openIndex(_ flow: FlowID) -> UInt32? {
        let index = Int(flow.index)
        guard index > 0, index < flows.count, flows[index].open, flows[index].id == flow else { return nil }
        return UInt32(index)
    }

    func openFlow<O: NICOutput>(_ flow: FlowID, _ endpoints: FlowEndpoints, output: inout O) {
        let index = Int(flow.index)
        guard index > 0, index < min(limits.maximumFlows, Int(FlowID.maximumIndex) + 1) else {
            fail(.tooManyFlows, kind: .flowOpen, flow: flow, reference: UInt64(flow.rawValue),
                 "flow index \(flow.index) outside 1..<\(limits.maximumFlows)", output: &output)
            return
        }
        while flows.count <= index { flows.append(FlowState()) }
        if flows[index].open { closeFlow(UInt32(index)) }  // the host reused an id without FLOW_CLOSE
        if endpoints.isIPv4 {
            let key = Self.key(of: endpoints)
            if let previous = flowsByEndpoints[key], previous != UInt32(index) { closeFlow(previous) }
            // The host opened these endpoints again (a new connection it accepted itself): the old ending is over.
            if let ending = closingByEndpoints.ipv4[key] { forgetClosing(Int(ending)) }
            flowsByEndpoints[key] = UInt32(index)
        } else {
            let key = EndpointKey6(endpoints)
            if let previous = flowsByEndpoints6[key], previous != UInt32(index) { closeFlow(previous) }
            if let ending = closingByEndpoints.ipv6[key] { forgetClosing(Int(ending)) }
            flowsByEndpoints6[key] = UInt32(index)
        }
        flows[index].open = true
        flows[index].id = flow
        flows[index].endpoints = endpoints
        flows[index].failed = false
        flows[index].sealer = nil
        flows[index].hasSentTimestamp = false
        openFlows += 1
    }

    /// Forgets a flow: its stored bytes, queued chunks (reads in flight are abandoned and their buffers
    /// come back when they complete) and held packets.
    func closeFlow(_ index: UInt32) {
        let slot = Int(index)
        guard flows[slot].open else { return }
        if flows[slot].ending >= 0 {
            // Closed from elsewhere (the host reusing its id, or leaving) while an ending held it for its
            // data: that ending cannot go on without it.
            let ending = Int(flows[slot].ending)
            if detachEndingFlow(ending, reason: .reset) != nil { forgetClosing(ending) }
        }
        dropQueued(slot)
        let pool = self.pool
        store.removeAll(in: &flows[slot].sent) { pool.give($0) }
        let endpoints = flows[slot].endpoints
        if endpoints.isIPv4 {
            let key = Self.key(of: endpoints)
            if flowsByEndpoints[key] == index { flowsByEndpoints[key] = nil }
        } else {
            let key = EndpointKey6(endpoints)
            if flowsByEndpoints6[key] == index { flowsByEndpoints6[key] = nil }
        }
        flows[slot].open = false
        flows[slot].sealer = nil
        flows[slot].recordTags.removeAll()
        flows[slot].nextUntaggedRecord = 0
        flows[slot].generation &+= 1
        flows[slot].isReady = false
        flows[slot].isReading = false
        openFlows -= 1
    }

    /// Drops everything a flow has queued (not what it has sent).
    func dropQueued(_ slot: Int) {
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
        openedStatus.removeAll()
        listeners.removeAll()
        deferredHandshakes.removeAll()
        forgetAllClosing()
        forgetAllSplices()
        pendingReleases.removeAll()
    }

    // MARK: - SEND

    /// A SEND: the file range cut into chunks, each read and sent in turn. A head (host bytes the host
    /// retransmits itself, if need be) is kept until the first chunk leaves, in its first segment.
    func send<O: NICOutput>(flow: FlowID, _ range: SendRange, head: UnsafeRawBufferPointer, received: Instant, output: inout O) {
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
        guard head.count <= SendRange.maximumHeadLength, head.count < Int(range.template.maximumSegmentSize), length > 0 || head.isEmpty else {
            fail(.malformedCommand, kind: .send, flow: flow, reference: UInt64(range.sequence.rawValue),
                 "SEND with a head of \(head.count) bytes (at most \(SendRange.maximumHeadLength), under the MSS, before file bytes)",
                 output: &output)
            return
        }
        // With no room to keep the head, the range goes without it, as if its first bytes were lost: the peer
        // acknowledges up to them and the host, which still holds them, sends them again.
        let keepsHead = !head.isEmpty && deferredBytes + head.count <= limits.maximumDeferredBytes
        if !head.isEmpty && !keepsHead { counters.deferredDrops += 1 }
        guard queuedBytes + length <= limits.maximumQueuedBytes else {
            fail(.storeFull, kind: .send, flow: flow, reference: UInt64(range.sequence.rawValue),
                 "the NIC has \(queuedBytes) bytes queued to send (limit \(limits.maximumQueuedBytes))", output: &output)
            return
        }
        let chunkLength = chunkPayload(template: range.template)
        let start = range.sequence + head.count
        var offset = 0
        while offset < length {
            // The first chunk leaves room for the head, so it still fits one super-segment.
            let take = min(max(chunkLength - (offset == 0 ? head.count : 0), 1), length - offset)
            let lease: FileLease
            do throws(FileFailure) {
                lease = try files.lease(range.file)
            } catch {
                // Only the first lease can fail (the file is the same); nothing was queued for this SEND then.
                fail(error.code, kind: .send, flow: flow, reference: UInt64(range.sequence.rawValue), error.description, output: &output)
                return
            }
            let chunk = newChunk(flow: index, generation: flows[slot].generation, sequence: start + offset, length: take,
                                 file: range.file, fileOffset: range.offset + UInt64(offset), lease: lease,
                                 template: range.template, arrival: received)
            chunks[Int(chunk)].isLast = offset + take == length
            if offset == 0 && keepsHead {
                let held = newDeferredPacket()
                deferred[Int(held)].bytes.append(contentsOf: head)
                deferredBytes += head.count
                counters.payloadBytesCopied += head.count
                chunks[Int(chunk)].head = held
            }
            flows[slot].queue.append(.chunk(chunk))
            flows[slot].toRead.append(chunk)
            queuedBytes += take
            offset += take
        }
        flows[slot].queue.append(.echo(sequenceEnd: start + length, arrival: received))
        wantReads(index)
        considerReady(index)
    }

    // MARK: - TLS records

    func setKeys<O: NICOutput>(flow: FlowID, _ keys: TLSKeys, output: inout O) {
        guard let index = openIndex(flow) else {
            fail(.unknownFlow, kind: .tlsKeys, flow: flow, reference: 0, "TLS_KEYS for unknown \(flow)", output: &output)
            return
        }
        guard let factory = recordSealers, let sealer = factory.makeSealer(keys) else {
            fail(.unsupported, kind: .tlsKeys, flow: flow, reference: 0,
                 recordSealers == nil ? "this NIC seals no TLS records" : "TLS_KEYS with unusable keys", output: &output)
            return
        }
        let slot = Int(index)
        if flows[slot].sealer == nil {
            counters.tlsFlows += 1
        } else {
            // New keys (a KeyUpdate): the host sends them once everything before is acknowledged, so a
            // retransmission still waiting for its read here is stale, and must not be sealed under the new
            // key (its number belongs to the old one). Record numbers start again, and so do the tags.
            while let chunk = flows[slot].urgent.popFirst() {
                flows[slot].readAhead -= chunks[Int(chunk)].state == .waiting ? 0 : 1
                if chunks[Int(chunk)].state != .waiting { readAheadTotal -= 1 }
                abandon(chunk)
            }
            for _ in 0..<flows[slot].rereads { _ = flows[slot].toRead.popFirst() }
            flows[slot].rereads = 0
            flows[slot].recordTags.removeAll(keepingCapacity: true)
            flows[slot].nextUntaggedRecord = 0
        }
        flows[slot].sealer = sealer
    }

    /// SEND_RECORDS: chunks of whole records where the range allows (see `queueRecordChunks`); each reads its
    /// records' plaintext, seals them when the read is done, and sends its part of them.
    func sendRecords<O: NICOutput>(flow: FlowID, _ range: RecordSendRange, received: Instant, output: inout O) {
        guard let index = openIndex(flow) else {
            fail(.unknownFlow, kind: .sendRecords, flow: flow, reference: UInt64(range.sequence.rawValue),
                 "SEND_RECORDS for unknown \(flow)", output: &output)
            return
        }
        let slot = Int(index)
        if flows[slot].failed { return }
        guard let sealer = flows[slot].sealer else {
            fail(.malformedCommand, kind: .sendRecords, flow: flow, reference: UInt64(range.sequence.rawValue),
                 "SEND_RECORDS before TLS_KEYS", output: &output)
            return
        }
        let length = Int(range.length)
        let run = range.run
        let overhead = sealer.version.overhead
        let runEnd = run.start + run.wireLength(overhead: overhead)
        guard length <= limits.maximumSendBytes, range.template.maximumSegmentSize > 0, range.sequence + length <= runEnd,
              recordsPerChunk(run, overhead: overhead, template: range.template) > 0 else {
            fail(.malformedCommand, kind: .sendRecords, flow: flow, reference: UInt64(range.sequence.rawValue),
                 "SEND_RECORDS of \(length) bytes outside its run of \(run.wireLength(overhead: overhead)) or with MSS 0", output: &output)
            return
        }
        guard queuedBytes + length <= limits.maximumQueuedBytes else {
            fail(.storeFull, kind: .sendRecords, flow: flow, reference: UInt64(range.sequence.rawValue),
                 "the NIC has \(queuedBytes) bytes queued to send (limit \(limits.maximumQueuedBytes))", output: &output)
            return
        }
        do throws(FileFailure) {
            try queueRecordChunks(slot: slot, run: run, overhead: overhead, from: range.sequence, length: length,
                                  template: range.template, arrival: received, retransmission: false)
        } catch {
            fail(error.code, kind: .sendRecords, flow: flow, reference: UInt64(range.sequence.rawValue), error.description, output: &output)
            return
        }
        flows[slot].queue.append(.echo(sequenceEnd: range.sequence + length, arrival: received))
        wantReads(index)
        considerReady(index)
    }

    /// Cuts the wire bytes `[from, from + length)` of a run into chunks of whole records where it can (a
    /// super-segment's worth, and what a buffer holds with the records laid out), and queues them: for the
    /// wire in order, or, for a retransmission, ahead of it. Each chunk holds a lease on the file; if the
    /// first cannot be had nothing is queued, if a later one cannot the flow is failed.
    func queueRecordChunks(
        slot: Int, run: TLSRecordRun, overhead: Int, from start: SequenceNumber, length: Int, template: SegmentTemplate,
        arrival: Instant, retransmission: Bool
    ) throws(FileFailure) {
        let perChunk = recordsPerChunk(run, overhead: overhead, template: template)
        let stride = run.recordPlaintext + overhead
        var cursor = start
        let end = start + length
        while cursor < end {
            let (first, firstStart) = run.record(containing: cursor, overhead: overhead)
            let count = min(perChunk, run.recordCount - first)
            let take = min(end - cursor, (firstStart + count * stride) - cursor)
            let last = run.record(containing: cursor + (take - 1), overhead: overhead).index
            let lease: FileLease
            do throws(FileFailure) { lease = try files.lease(run.file) } catch {
                if cursor != start {
                    flows[slot].failed = true
                    dropQueued(slot)
                }
                throw error
            }
            let plaintextStart = UInt64(first) * UInt64(run.recordPlaintext)
            let plaintextEnd = min(UInt64(last + 1) * UInt64(run.recordPlaintext), run.plaintext)
            let chunk = newChunk(flow: UInt32(slot), generation: flows[slot].generation, sequence: cursor, length: take, file: run.file,
                                 fileOffset: run.offset + plaintextStart, lease: lease, template: template, arrival: arrival)
            chunks[Int(chunk)].run = run
            chunks[Int(chunk)].recordOverhead = overhead
            chunks[Int(chunk)].firstRecord = first
            chunks[Int(chunk)].recordCount = last - first + 1
            chunks[Int(chunk)].recordPlaintext = Int(plaintextEnd - plaintextStart)
            if retransmission {
                chunks[Int(chunk)].isRetransmission = true
                flows[slot].urgent.append(chunk)
                flows[slot].toRead.insert(chunk, at: flows[slot].toRead.startIndex + flows[slot].rereads)
                flows[slot].rereads += 1
            } else {
                chunks[Int(chunk)].isLast = cursor + take == end
                flows[slot].queue.append(.chunk(chunk))
                flows[slot].toRead.append(chunk)
                queuedBytes += take
            }
            cursor += take
        }
    }

    /// Whole records one chunk carries: as many as fit a super-segment and, laid out with their headers and
    /// tags after the read's alignment and headroom, a buffer (0: not even one fits a buffer).
    func recordsPerChunk(_ run: TLSRecordRun, overhead: Int, template: SegmentTemplate) -> Int {
        let stride = run.recordPlaintext + overhead
        let room = pool.bufferSize - Self.recordHeadroom - 2 * pool.alignment
        let byBuffer = room / stride
        let superSegment = SegmentBuilder.superSegmentPayload(packetLimit: Int(UInt16.max), template: template)
        // A chunk that starts inside a record touches one more than it holds whole.
        let byWire = max(superSegment / stride, 1)
        return min(byBuffer - 1, byWire)
    }

    /// Room kept in front of a record's plaintext in its buffer for the record header (a multiple of any
    /// direct-I/O alignment up to it, so the read still lands aligned).
    static let recordHeadroom = 4096

    /// Payload bytes of one chunk: a super-segment's worth (a whole number of segments, so the wire's cuts
    /// and ours agree) that also fits a buffer with room to align a direct read.
    func chunkPayload(template: SegmentTemplate) -> Int {
        let segment = Int(template.maximumSegmentSize)
        let room = pool.bufferSize - 2 * pool.alignment
        let superSegment = SegmentBuilder.superSegmentPayload(packetLimit: Int(UInt16.max), template: template)
        let size = superSegment > 0 ? superSegment : segment
        return max(min(size, room / segment * segment), min(segment, room))
    }

    /// A chunk waiting for its read: `length` bytes of `file` from `fileOffset`, for the flow at `flow`
    /// (of `generation`), stream position `sequence`; it holds `lease` until it is let go.
    func newChunk(
        flow: UInt32, generation: UInt32, sequence: SequenceNumber, length: Int, file: OffloadedFileID, fileOffset: UInt64,
        lease: FileLease, template: SegmentTemplate, arrival: Instant
    ) -> UInt32 {
        let index: UInt32
        if let reused = freeChunks.popLast() {
            index = reused
        } else {
            index = UInt32(chunks.count)
            chunks.append(Chunk())
        }
        var chunk = Chunk()
        chunk.state = .waiting
        chunk.flow = flow
        chunk.flowGeneration = generation
        chunk.sequence = sequence
        chunk.length = length
        chunk.file = file
        chunk.fileOffset = fileOffset
        chunk.lease = lease
        chunk.holdsLease = true
        chunk.template = template
        chunk.arrival = arrival
        chunks[Int(index)] = chunk
        return index
    }

    /// Lets a chunk go: its buffer and lease come back now, or, if its read is in flight, when it completes.
    func abandon(_ chunk: UInt32) {
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

    func freeChunk(_ chunk: UInt32) {
        let slot = Int(chunk)
        if chunks[slot].buffer != StoredRange.noBuffer { pool.give(chunks[slot].buffer) }
        if chunks[slot].holdsLease { files.release(chunks[slot].lease) }
        if chunks[slot].head != Self.noHead { freeDeferredPacket(chunks[slot].head) }
        chunks[slot] = Chunk()
        freeChunks.append(chunk)
    }

    // MARK: - RETRANSMIT

    /// Returns whether all of it was sent or queued to be (false: an ERROR went up, or the flow had failed).
    @discardableResult
    func retransmit<O: NICOutput>(
        flow: FlowID, sequence: SequenceNumber, length: Int, template: SegmentTemplate, now: Instant, output: inout O
    ) -> Bool {
        guard let index = openIndex(flow) else {
            fail(.unknownFlow, kind: .retransmit, flow: flow, reference: UInt64(sequence.rawValue), "RETRANSMIT for unknown \(flow)", output: &output)
            return false
        }
        let slot = Int(index)
        guard length <= limits.maximumSendBytes, template.maximumSegmentSize > 0 else {
            fail(.malformedCommand, kind: .retransmit, flow: flow, reference: UInt64(sequence.rawValue),
                 "RETRANSMIT of \(length) bytes with MSS \(template.maximumSegmentSize)", output: &output)
            return false
        }
        if flows[slot].failed { return false }
        let unsent = firstUnsent(slot)
        guard RetransmitStore.pieces(of: flows[slot].sent, sequence: sequence, length: length, unsentFrom: unsent, into: &pieceScratch) else {
            fail(.malformedCommand, kind: .retransmit, flow: flow, reference: UInt64(sequence.rawValue),
                 "RETRANSMIT of data never sent or already acknowledged", output: &output)
            return false
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
                sendStored(UnsafeRawBufferPointer(rebasing: memory[start..<(start + take)]), flow: slot, endpoints: endpoints,
                           sequence: range.sequence + skip, template: template, output: &output)
                counters.retransmittedBytes += take
            } else if range.recordOverhead > 0 {
                // TLS records: read their plaintext again and seal them under the same numbers.
                do throws(FileFailure) {
                    try queueRecordChunks(slot: slot, run: range.recordRun, overhead: range.recordOverhead, from: range.sequence + skip,
                                          length: take, template: template, arrival: now, retransmission: true)
                } catch {
                    if !stale {
                        fail(error.code, kind: .retransmit, flow: flow, reference: UInt64(sequence.rawValue), error.description, output: &output)
                    }
                    stale = true
                    continue
                }
                wantReads(index)
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
                let chunk = newChunk(flow: index, generation: flows[slot].generation, sequence: range.sequence + skip, length: take,
                                     file: range.file, fileOffset: range.offset + UInt64(skip), lease: lease,
                                     template: template, arrival: now)
                chunks[Int(chunk)].isRetransmission = true
                flows[slot].urgent.append(chunk)
                flows[slot].toRead.insert(chunk, at: flows[slot].toRead.startIndex + flows[slot].rereads)
                flows[slot].rereads += 1
                wantReads(index)
            }
        }
        return !stale
    }

    /// The first sequence number of the flow's file data still queued here, if any.
    func firstUnsent(_ slot: Int) -> SequenceNumber? {
        // A chunk the wire refused midway counts as unsent as a whole: it is stored only once it all left.
        for item in flows[slot].queue {
            if case .chunk(let chunk) = item { return chunks[Int(chunk)].sequence }
        }
        return nil
    }

    /// A stored range sent again, cut at the template's MSS (or as super-segments), from where it lies.
    func sendStored<O: NICOutput>(
        _ bytes: UnsafeRawBufferPointer, flow: Int, endpoints: FlowEndpoints, sequence: SequenceNumber, template: SegmentTemplate,
        output: inout O
    ) {
        let segment = Int(template.maximumSegmentSize)
        let networkHeaderLength = endpoints.remoteAddress.headerLength
        let superPayload = offloads.superSegmentLimit > 0
            ? SegmentBuilder.superSegmentPayload(packetLimit: offloads.superSegmentLimit, template: template,
                                                 networkHeaderLength: networkHeaderLength) : 0
        let pieceLength = superPayload > 0 && bytes.count > segment ? superPayload : segment
        var offset = 0
        while offset < bytes.count {
            let piece = min(pieceLength, bytes.count - offset)
            let payload = UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + piece)])
            let offloaded = offloads.checksum || piece > segment
            guard let headerLength = try? SegmentBuilder.buildHeaders(
                into: headers, flow: endpoints, sequence: sequence + offset, payload: payload, isLast: false, template: template,
                nicDelayMilliseconds: monotonicDelay(flow: flow, template: template, delay: 0), checksum: offloaded ? .offloaded : .full)
            else { return }
            let offload = offloaded ? PacketOffload(
                segmentSize: piece > segment ? UInt16(segment) : 0, headerLength: UInt16(headerLength),
                transportStart: UInt16(networkHeaderLength)) : nil
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

    func packetOut<O: NICOutput>(flow: FlowID, _ packet: UnsafeRawBufferPointer, now: Instant, output: inout O) {
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

    /// Where the TCP header of a host-built packet starts: after IPv4's header (its IHL), or after IPv6's
    /// fixed header (the host writes no extension headers); nil when the packet is too short for it.
    static func transportOffset(_ packet: UnsafeRawBufferPointer) -> Int? {
        guard packet.count >= 20 else { return nil }
        let offset = packet[0] >> 4 == 6 ? IPv6PacketView.headerLength : Int(packet[0] & 0x0F) * 4
        guard offset >= 20, packet.count >= offset + 20 else { return nil }
        return offset
    }

    /// Whether a host-built IP/TCP packet carries data, SYN or FIN (anything the peer must take in order).
    static func occupiesSequenceSpace(_ packet: UnsafeRawBufferPointer) -> Bool {
        guard let ipHeader = transportOffset(packet) else { return false }
        let tcpHeader = Int(packet[ipHeader + 12] >> 4) * 4
        let flags = packet[ipHeader + 13]
        return packet.count > ipHeader + tcpHeader || flags & 0x03 != 0
    }

    func newDeferredPacket() -> UInt32 {
        if let reused = freeDeferred.popLast() { return reused }
        deferred.append(DeferredPacket())
        return UInt32(deferred.count - 1)
    }

    func freeDeferredPacket(_ index: UInt32) {
        deferredBytes -= deferred[Int(index)].bytes.count
        deferred[Int(index)].bytes.removeAll(keepingCapacity: true)
        freeDeferred.append(index)
    }

    /// A held host packet leaves, its TSval moved on by the time it waited here (as for file data, so the
    /// peer's timestamps stay in order and its RTT samples stay the wire's). `deferred` is borrowed across
    /// `output.transmit`, and the data plane's state is exclusivity-unchecked: a `NICOutput` must put the
    /// bytes on its wire and return, never call back into this data plane.
    func transmitDeferred<O: NICOutput>(_ index: UInt32, now: Instant, output: inout O) -> Bool {
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
        guard let ip = transportOffset(UnsafeRawBufferPointer(packet)) else { return }
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
}
