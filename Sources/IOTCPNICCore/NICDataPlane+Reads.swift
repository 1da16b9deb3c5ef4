import IOTCPCommon

/// Disk reads: which chunks are read next (retransmissions first, read-ahead bounded per flow and overall),
/// their submission to the `DiskIO`, and their completions.
extension NICDataPlane {
    // MARK: - Reads

    func wantReads(_ index: UInt32) {
        let slot = Int(index)
        guard !flows[slot].isReading, !flows[slot].toRead.isEmpty else { return }
        flows[slot].isReading = true
        readingFlows.append(FlowTicket(index: index, generation: flows[slot].generation))
    }

    /// Starts reads, one chunk per flow in turn, while the disk takes them and buffers last.
    func startReads(now: Instant) {
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
    func sendFromPageCache(_ chunk: UInt32) -> Bool {
        let slot = Int(chunk)
        guard offloads.checksum, !chunks[slot].isRecord, chunks[slot].holdsLease, let mapping = files.mapping(chunks[slot].lease) else { return false }
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

    func startRead(_ chunk: UInt32, buffer: UInt32, now: Instant) {
        let slot = Int(chunk)
        let alignment = UInt64(max(chunks[slot].lease.alignment, 1))
        let start = chunks[slot].fileOffset / alignment * alignment
        let payloadStart = Int(chunks[slot].fileOffset - start)
        let needed = payloadStart + chunks[slot].fileBytes
        // A record's plaintext lands after room for its header, so it is sealed where it lies.
        let readInto = chunks[slot].isRecord ? Self.recordHeadroom : 0
        chunks[slot].buffer = buffer
        chunks[slot].readStart = start
        chunks[slot].readInto = readInto
        chunks[slot].payloadStart = readInto + payloadStart
        chunks[slot].readLength = (needed + Int(alignment) - 1) / Int(alignment) * Int(alignment)
        chunks[slot].readDone = 0
        chunks[slot].state = .reading
        submitRead(chunk, now: now)
    }

    func submitRead(_ chunk: UInt32, now: Instant) {
        let slot = Int(chunk)
        let done = chunks[slot].readDone
        let buffer = chunks[slot].buffer
        let slab = pool.slab(of: buffer)
        let read = DiskRead(
            descriptor: chunks[slot].lease.descriptor, offset: chunks[slot].readStart + UInt64(done),
            length: chunks[slot].readLength - done, destination: pool.address(buffer) + chunks[slot].readInto + done,
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

    func complete(_ chunk: UInt32, result: Int) {
        let slot = Int(chunk)
        guard chunks[slot].state == .reading else { return }
        if chunks[slot].cancelled {
            freeChunk(chunk)
            return
        }
        let needed = chunks[slot].payloadStart - chunks[slot].readInto + chunks[slot].fileBytes
        if result > 0 {
            counters.readBytes += result
            chunks[slot].readDone += result
            if chunks[slot].readDone < needed {
                // A short read: ask for the rest (0 next time means the file ended early).
                submitRead(chunk, now: clock)
                return
            }
            chunks[slot].state = .ready
            if chunks[slot].isRecord { seal(chunk) }
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

    /// Whether `file` has the size and modification time it had when opened.
    func fileUnchanged(_ file: OffloadedFileID) -> Bool {
        guard let opened = openedStatus[file], let now = try? files.status(file) else { return false }
        return now.size == opened.size && now.modificationSeconds == opened.modificationSeconds
            && now.modificationNanoseconds == opened.modificationNanoseconds && now.inode == opened.inode
    }

    /// Lays out the records read into the chunk's buffer (their plaintext arrived end to end; each moves up
    /// to leave room for the headers and tags before it, the last first), seals each in place, and points
    /// the chunk at its part of them.
    func seal(_ chunk: UInt32) {
        let slot = Int(chunk)
        guard let sealer = flows[Int(chunks[slot].flow)].sealer, sealer.version.overhead == chunks[slot].recordOverhead else {
            chunks[slot].state = .failed
            chunks[slot].failure = 22  // EINVAL: the flow has no keys, or other ones (cannot happen while its chunks are queued)
            return
        }
        let run = chunks[slot].run
        let stride = run.recordPlaintext + sealer.version.overhead
        let sealedBefore = chunks[slot].isRetransmission || (chunks[slot].sequence - run.start) % stride != 0
        if sealedBefore, !fileUnchanged(run.file) {
            // A retransmission, or a record a SEND began inside: its number was sealed before. Sealing it again
            // over bytes that may differ would reuse the nonce; the flow fails instead (ESTALE).
            counters.changedFileReseals += 1
            chunks[slot].state = .failed
            chunks[slot].failure = Self.changedRecordFailure
            return
        }
        let header = sealer.version.headerLength
        let base = pool.address(chunks[slot].buffer)
        let firstAt = chunks[slot].payloadStart - header  // where the first record starts
        var index = chunks[slot].recordCount - 1
        while index >= 0 {
            let record = chunks[slot].firstRecord + index
            let plaintext = run.plaintextLength(ofRecord: record)
            let recordAt = firstAt + index * stride
            if index > 0 {
                let source = base + chunks[slot].payloadStart + index * run.recordPlaintext
                (base + recordAt + header).copyMemory(from: UnsafeRawPointer(source), byteCount: plaintext)  // moves up; memmove semantics
            }
            guard let sealed = sealer.seal(record: base + recordAt, plaintextLength: plaintext, number: run.firstRecord + UInt64(record),
                                           contentType: TLSContentTypeCode.applicationData),
                  sealed == plaintext + sealer.version.overhead else {
                chunks[slot].state = .failed
                chunks[slot].failure = 22
                return
            }
            if sealedBefore, let kept = keptTag(run.firstRecord + UInt64(record), flow: Int(chunks[slot].flow)) {
                let tag = UnsafeRawPointer(base + recordAt + sealed - 16)
                guard tag.loadUnaligned(as: UInt64.self) == kept.low, (tag + 8).loadUnaligned(as: UInt64.self) == kept.high else {
                    // Other bytes under the same number: this record must not leave (see `changedFileReseals`).
                    counters.changedFileReseals += 1
                    chunks[slot].state = .failed
                    chunks[slot].failure = Self.changedRecordFailure
                    return
                }
            }
            counters.recordsSealed += 1
            counters.sealedBytes += plaintext
            index -= 1
        }
        let firstStart = run.start + chunks[slot].firstRecord * stride
        chunks[slot].payloadStart = firstAt + (chunks[slot].sequence - firstStart)
    }
}
