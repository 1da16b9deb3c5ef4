import IOTCPCommon

/// One turn of the engine (`poll`): reap reads, start new ones, and transmit ready chunks with flows taking
/// turns; received packets from the wire; answers to the host (ECHO, ERROR).
extension NICDataPlane {
    // MARK: - The turn

    /// Moves the I/O along: reaps finished reads, starts new ones (one submission for all), and sends what
    /// is ready, flows in turn, up to the turn's budget. Returns whether anything happened.
    @discardableResult
    public func poll<O: NICOutput>(now: Instant, output: inout O) -> Bool {
        clock = now
        flushRelayed(output: &output)
        var worked = reap(now: now) > 0
        startReads(now: now)
        disk.flush()
        // Reads of cached pages complete inside the submission: send them this turn.
        if reap(now: now) > 0 { worked = true }
        if transmitReady(now: now, output: &output) { worked = true }
        expireClosing(now: now, output: &output)
        expireSplices(now: now, output: &output)
        flushReleases(output: &output)
        // Buffers the wire let go of can start the next reads now rather than next turn.
        if !readingFlows.isEmpty {
            startReads(now: now)
            disk.flush()
        }
        return worked
    }

    func reap(now: Instant) -> Int {
        guard disk.inFlight > 0 else { return 0 }
        return disk.reap(now: now, limit: 1024) { tag, result in
            guard tag < UInt64(chunks.count) else { return }
            complete(UInt32(tag), result: result)
        }
    }

    /// Whether the flow's next piece of work can go now.
    func headIsReady(_ slot: Int) -> Bool {
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

    func considerReady(_ index: UInt32) {
        let slot = Int(index)
        guard flows[slot].open, !flows[slot].isReady, headIsReady(slot) else { return }
        flows[slot].isReady = true
        readyFlows.append(FlowTicket(index: index, generation: flows[slot].generation))
    }

    func transmitReady<O: NICOutput>(now: Instant, output: inout O) -> Bool {
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
    func serve<O: NICOutput>(_ slot: Int, now: Instant, budget: inout Int, output: inout O) -> Bool {
        if let chunk = flows[slot].urgent.first, chunks[Int(chunk)].state == .ready || chunks[Int(chunk)].state == .failed {
            if chunks[Int(chunk)].state == .failed && chunks[Int(chunk)].failure == Self.changedRecordFailure {
                // The file changed under a record that must be sent again: it cannot be, so the flow ends.
                fail(.readFailed, kind: .retransmit, flow: flows[slot].id, reference: UInt64(chunks[Int(chunk)].sequence.rawValue),
                     "\(chunks[Int(chunk)].file) changed since its TLS records were sealed; a record is never sealed again from other bytes",
                     output: &output)
                flows[slot].failed = true
                dropQueued(slot)
                endingDataFailed(slot, now: now, output: &output)
                return true
            }
            let rereadFailed = chunks[Int(chunk)].state == .failed
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
            if flows[slot].ending >= 0 {
                // An ending the NIC holds has no host timer to try again: a failed re-read resets the peer. Its
                // FIN waits for the bytes it resent to be read and sent, so it never passes them.
                if rereadFailed {
                    endingDataFailed(slot, now: now, output: &output)
                } else if flows[slot].urgent.isEmpty {
                    sendEndingData(Int(flows[slot].ending), now: now, output: &output)
                }
            }
            return true
        }
        var sentChunk = false
        while let item = flows[slot].queue.first {
            switch item {
            case .echo where flows[slot].ending >= 0:
                // The host has forgotten the connection; its ending's timer runs from the data's leaving.
                let ending = Int(flows[slot].ending)
                closingWheel.schedule(ending, at: now + closing[ending].timeout)
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
    func transmit<O: NICOutput>(_ chunk: UInt32, now: Instant, budget: inout Int, output: inout O) -> TransmitResult {
        let slot = Int(chunk)
        let flow = Int(chunks[slot].flow)
        let endpoints = flows[flow].endpoints
        let template = chunks[slot].template
        let segment = Int(template.maximumSegmentSize)
        let delay = (now - chunks[slot].arrival) / 1_000_000
        let delayMilliseconds = monotonicDelay(flow: flow, template: template, delay: UInt32(min(delay, UInt64(UInt32.max))))
        let source: UnsafeRawPointer
        if let mapped = chunks[slot].mapped {
            source = mapped
        } else {
            source = UnsafeRawPointer(pool.address(chunks[slot].buffer) + chunks[slot].payloadStart)
        }
        let headLength = chunks[slot].head == Self.noHead ? 0 : deferred[Int(chunks[slot].head)].bytes.count
        let networkHeaderLength = endpoints.remoteAddress.headerLength
        let superSegments = offloads.superSegmentLimit > 0
            && SegmentBuilder.superSegmentPayload(packetLimit: offloads.superSegmentLimit, template: template,
                                                  networkHeaderLength: networkHeaderLength) >= headLength + chunks[slot].length
        while chunks[slot].sent < chunks[slot].length {
            let remaining = chunks[slot].length - chunks[slot].sent
            // A SEND's head goes first, in the first segment, placed right after the headers.
            let prefix = chunks[slot].sent == 0 ? headLength : 0
            let piece = superSegments ? remaining : min(segment - prefix, remaining)
            let payload = UnsafeRawBufferPointer(start: source + chunks[slot].sent, count: piece)
            let isLast = chunks[slot].isLast && piece == remaining
            let offloaded = offloads.checksum || prefix + piece > segment
            if prefix > 0 {
                let at = SegmentBuilder.packetLength(payloadLength: 0, template: template, networkHeaderLength: networkHeaderLength)
                deferred[Int(chunks[slot].head)].bytes.withUnsafeBytes {
                    UnsafeMutableRawBufferPointer(rebasing: headers[at..<(at + prefix)]).copyMemory(from: $0)
                }
            }
            let headerLength: Int
            do throws(WireError) {
                headerLength = try SegmentBuilder.buildHeaders(
                    into: headers, flow: endpoints, sequence: chunks[slot].sequence + chunks[slot].sent - prefix, prefixLength: prefix,
                    payload: payload, isLast: isLast, template: template, nicDelayMilliseconds: delayMilliseconds,
                    checksum: offloaded ? .offloaded : .full)
            } catch {
                // A template no segment can be built from (options too long): nothing leaves, nothing stale.
                counters.errors += 1
                chunks[slot].sent = chunks[slot].length
                return .sent
            }
            let offload = offloaded ? PacketOffload(
                segmentSize: prefix + piece > segment ? UInt16(segment) : 0, headerLength: UInt16(headerLength),
                transportStart: UInt16(networkHeaderLength)) : nil
            let result = output.transmit(headers: UnsafeRawBufferPointer(rebasing: headers[0..<(headerLength + prefix)]), payload: payload,
                                         offload: offload)
            guard result == .sent else {
                if result == .refused { counters.wireRefusals += 1 }
                return result
            }
            let segments = (prefix + piece + segment - 1) / segment
            counters.packetsOut += segments
            counters.bytesOut += prefix + piece + segments * headerLength
            chunks[slot].sent += piece
            budget -= piece
            if prefix > 0 {
                freeDeferredPacket(chunks[slot].head)
                chunks[slot].head = Self.noHead
            }
        }
        return .sent
    }

    /// Keeps the tag of each record of a chunk that left, the first time the record left: a later sealing of
    /// it (a retransmission read anew) is checked against it before anything goes out.
    func keepTags(of chunk: UInt32, flow: Int) {
        let slot = Int(chunk)
        let run = chunks[slot].run
        let overhead = chunks[slot].recordOverhead
        let stride = run.recordPlaintext + overhead
        let firstStart = run.start + chunks[slot].firstRecord * stride
        let firstAt = chunks[slot].payloadStart - (chunks[slot].sequence - firstStart)
        let base = UnsafeRawPointer(pool.address(chunks[slot].buffer))
        for index in 0..<chunks[slot].recordCount {
            let record = chunks[slot].firstRecord + index
            let number = run.firstRecord + UInt64(record)
            guard number >= flows[flow].nextUntaggedRecord else { continue }
            let length = run.plaintextLength(ofRecord: record) + overhead
            let tag = base + firstAt + index * stride + length - 16
            flows[flow].recordTags.append(RecordTag(
                number: number, end: firstStart + index * stride + length,
                low: tag.loadUnaligned(as: UInt64.self), high: (tag + 8).loadUnaligned(as: UInt64.self)))
            flows[flow].nextUntaggedRecord = number + 1
        }
    }

    /// The tag a record got when first sealed, if it was kept.
    func keptTag(_ number: UInt64, flow: Int) -> RecordTag? {
        for tag in flows[flow].recordTags {
            if tag.number == number { return tag }
            if tag.number > number { return nil }
        }
        return nil
    }

    /// `delay` raised, if need be, so the flow's next TSval (the template's plus the delay) is not older than
    /// the last one sent; records it as the last.
    func monotonicDelay(flow: Int, template: SegmentTemplate, delay: UInt32) -> UInt32 {
        guard let timestamps = template.timestamps else { return delay }
        var delay = delay
        let value = timestamps.value &+ delay
        if flows[flow].hasSentTimestamp {
            let behind = flows[flow].lastTimestamp &- value
            if behind != 0 && behind < 1 << 31 {
                delay &+= behind
                counters.timestampsHeldBack += 1
            }
        }
        flows[flow].lastTimestamp = timestamps.value &+ delay
        flows[flow].hasSentTimestamp = true
        return delay
    }

    /// After a chunk left: its buffer goes to the store (or back to the pool, keeping only the file range).
    func keepSent(_ chunk: UInt32, slot: Int) {
        let index = Int(chunk)
        var range = StoredRange(sequence: chunks[index].sequence, length: chunks[index].length, file: chunks[index].file,
                                offset: chunks[index].fileOffset)
        if chunks[index].isRecord {
            range.recordRun = chunks[index].run
            range.recordOverhead = chunks[index].recordOverhead
            keepTags(of: chunk, flow: slot)
        }
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
    func readFailed<O: NICOutput>(_ chunk: UInt32, slot: Int, output: inout O) {
        let index = Int(chunk)
        let code = chunks[index].failure
        let failure: FileFailure = code == 0
            ? .shrank(chunks[index].file, expected: chunks[index].payloadStart + chunks[index].length, got: chunks[index].readDone)
            : .readFailed(chunks[index].file, errno: code)
        fail(failure.code, kind: .send, flow: flows[Int(slot)].id, reference: UInt64(chunks[index].sequence.rawValue),
             failure.description, output: &output)
        flows[slot].failed = true
        dropQueued(slot)
        endingDataFailed(slot, now: clock, output: &output)
    }

    // MARK: - From the wire

    /// A packet from the wire: a TCP segment goes to the host as PACKET_IN, tagged with its flow when the
    /// NIC knows it (a stray goes untagged and the host decides). A SYN to a LISTEN port is answered here
    /// with a cookie, and an ACK bringing a good cookie back goes to the host as ESTABLISHED. Anything that
    /// is not well-formed IPv4/TCP is dropped and counted here, never handed on. `now` defaults to the time
    /// of the latest `poll` or command.
    public func receive<O: NICOutput>(packet: UnsafeRawBufferPointer, now: Instant? = nil, output: inout O) {
        if let now { clock = now }
        if packet.count > 0 && packet[0] >> 4 == 6 {
            receiveIPv6(packet: packet, output: &output)
            return
        }
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
        // Spliced peers first: the host has forgotten both connections.
        if !splicesByEndpoints.ipv4.isEmpty, let spliced = splicesByEndpoints.ipv4[key],
           relaySpliced(ip: ip, segment: segment, found: spliced, output: &output) { return }
        guard let index = flowsByEndpoints[key] else {
            if !closingByEndpoints.ipv4.isEmpty, let found = closingByEndpoints.ipv4[key],
               receiveClosing(Int(found), source: IPAddress(ip.source), destination: IPAddress(ip.destination), segment: segment,
                              output: &output) { return }
            if let listener = listeners[segment.destinationPort],
               answerSetup(ip: ip, segment: segment, listener: listener, output: &output) { return }
            output.reply(.packetIn(.none, packet: ip.bytes))
            return
        }
        if receiveForEnding(Int(index), source: IPAddress(ip.source), destination: IPAddress(ip.destination), segment: segment,
                            output: &output) { return }
        output.reply(.packetIn(flows[Int(index)].id, packet: ip.bytes))
    }

    /// An IPv6 TCP segment: to the host, tagged with its flow when the NIC knows it; a SYN to a LISTEN port is
    /// answered with a cookie and a good cookie's ACK goes up as ESTABLISHED, a spliced peer's segment is
    /// relayed and one of an ending the host handed over is taken here, as over IPv4. Anything else goes to
    /// the host untagged; so does a Packet Too Big the link passed on (the host finds the connection from
    /// its quote).
    func receiveIPv6<O: NICOutput>(packet: UnsafeRawBufferPointer, output: inout O) {
        guard let ip = try? IPv6PacketView(packet) else {
            counters.malformedIn += 1
            return
        }
        if ip.upperLayerProtocol == .icmpv6 {
            counters.packetsIn += 1
            output.reply(.packetIn(.none, packet: ip.bytes))
            return
        }
        guard ip.upperLayerProtocol == .tcp, let segment = try? TCPSegmentView(ip.upperLayer) else {
            counters.malformedIn += 1
            return
        }
        counters.packetsIn += 1
        let key = EndpointKey6(remoteAddress: ip.source, remotePort: segment.sourcePort, localPort: segment.destinationPort)
        let source = IPAddress(ip.source), destination = IPAddress(ip.destination)
        // Spliced peers first: the host has forgotten both connections.
        if !splicesByEndpoints.ipv6.isEmpty, let spliced = splicesByEndpoints.ipv6[key],
           relaySpliced(packet: ip.bytes, source: source, destination: destination, segment: segment, found: spliced, output: &output) {
            return
        }
        if let flow = flowsByEndpoints6.isEmpty ? nil : flowsByEndpoints6[key] {
            if receiveForEnding(Int(flow), source: source, destination: destination, segment: segment, output: &output) { return }
            output.reply(.packetIn(flows[Int(flow)].id, packet: ip.bytes))
            return
        }
        if !closingByEndpoints.ipv6.isEmpty, let found = closingByEndpoints.ipv6[key],
           receiveClosing(Int(found), source: source, destination: destination, segment: segment, output: &output) { return }
        // A handshake to a LISTEN port is answered here with a cookie, as over IPv4.
        if let listener = listeners[segment.destinationPort],
           answerSetup(source: source, destination: destination, packet: ip.bytes, segment: segment,
                       listener: listener, output: &output) { return }
        output.reply(.packetIn(.none, packet: ip.bytes))
    }

    // MARK: - Answers

    /// DEVICE, between OPENED and STAT.
    func reply<O: NICOutput>(_ device: StorageDevice, requestID: UInt32, file: OffloadedFileID, output: inout O) {
        var model = device.model, serial = device.serial
        model.withUTF8 { model in
            serial.withUTF8 { serial in
                output.reply(.device(requestID: requestID, file: file, DeviceReport(
                    namespace: device.namespace, model: UnsafeRawBufferPointer(model), serial: UnsafeRawBufferPointer(serial))))
            }
        }
    }

    func fail<O: NICOutput>(
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
