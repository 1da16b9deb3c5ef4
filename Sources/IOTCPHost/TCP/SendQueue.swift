import IOTCPCommon

/// What a connection has been asked to send and the peer has not yet acknowledged, in stream order: runs
/// of application bytes (kept here, in a ring, until acknowledged) and ranges of offloaded files (kept
/// only as file, offset and length: the bytes never come to the host).
struct SendQueue {
    enum Source: Equatable {
        /// Application bytes; `streamIndex` counts application bytes queued before this run.
        case bytes(streamIndex: UInt64)
        case file(OffloadedFileID, offset: UInt64)
        /// TLS records the NIC seals from a file range; the run's geometry is absolute, so a piece of it
        /// carries the whole run and the NIC finds its records from the piece's sequence number.
        case records(TLSRecordRun)

        var isFile: Bool {
            if case .file = self { return true }
            return false
        }
    }

    struct Entry: Equatable {
        var start: SequenceNumber
        var length: Int
        var source: Source
        var end: SequenceNumber { start + length }
    }

    /// A contiguous piece of one entry.
    struct Piece: Equatable {
        var sequence: SequenceNumber
        var length: Int
        var source: Source
    }

    private var entries: [Entry] = []
    private var firstEntry = 0
    private var ring = ByteRing()
    /// Application bytes ever queued (the next run's stream index).
    private var bytesQueued: UInt64 = 0
    /// Application bytes freed from the ring's front.
    private var bytesFreed: UInt64 = 0
    private(set) var acknowledged: SequenceNumber
    private(set) var end: SequenceNumber
    let byteCapacity: Int

    init(start: SequenceNumber, byteCapacity: Int) {
        acknowledged = start
        end = start
        self.byteCapacity = byteCapacity
    }

    /// Bytes queued and not yet acknowledged.
    var count: Int { end - acknowledged }

    var allocatedBytes: Int { ring.allocatedBytes }

    /// Frees the ring and the entry list once everything was acknowledged (TIME-WAIT).
    mutating func releaseStorage() {
        ring.releaseIfEmpty()
        if isEmpty {
            entries = []
            firstEntry = 0
        }
    }
    var isEmpty: Bool { firstEntry == entries.count }

    /// Copies in as many application bytes as the ring has room for; returns how many.
    mutating func append(bytes: UnsafeRawBufferPointer) -> Int {
        let accepted = min(bytes.count, byteCapacity - ring.count)
        guard accepted > 0 else { return 0 }
        ring.reserve(ring.count + accepted, limit: byteCapacity)
        ring.write(UnsafeRawBufferPointer(rebasing: bytes[0..<accepted]))
        if let last = entries.last, firstEntry < entries.count, case .bytes = last.source {
            entries[entries.count - 1].length += accepted
        } else {
            entries.append(Entry(start: end, length: accepted, source: .bytes(streamIndex: bytesQueued)))
        }
        bytesQueued += UInt64(accepted)
        end += accepted
        return accepted
    }

    /// Queues a file range; adjacent ranges of the same file merge.
    mutating func append(file: OffloadedFileID, offset: UInt64, length: Int) {
        guard length > 0 else { return }
        if firstEntry < entries.count, let last = entries.last, case .file(file, let lastOffset) = last.source,
           lastOffset + UInt64(last.length) == offset {
            entries[entries.count - 1].length += length
        } else {
            entries.append(Entry(start: end, length: length, source: .file(file, offset: offset)))
        }
        end += length
    }

    /// Queues a run of TLS records of `wireLength` bytes on the wire, starting where the queue ends (the
    /// run's `start` is set here).
    mutating func append(records run: TLSRecordRun, wireLength: Int) {
        guard wireLength > 0 else { return }
        // The next records of the same run (a server feeding one file as the queue drains) extend it, so a
        // large file stays one entry: pieces are found by walking the entries.
        if firstEntry < entries.count, case .records(var last) = entries[entries.count - 1].source, last.file == run.file,
           last.recordPlaintext == run.recordPlaintext, last.plaintext % UInt64(last.recordPlaintext) == 0,
           last.offset + last.plaintext == run.offset, last.firstRecord + UInt64(last.recordCount) == run.firstRecord,
           last.plaintext + run.plaintext <= 1 << 30 {
            last.plaintext += run.plaintext
            entries[entries.count - 1].source = .records(last)
            entries[entries.count - 1].length += wireLength
            end += wireLength
            return
        }
        var run = run
        run.start = end
        entries.append(Entry(start: end, length: wireLength, source: .records(run)))
        end += wireLength
    }

    /// The longest piece starting at `sequence` within one entry, at most `limit` bytes.
    func piece(at sequence: SequenceNumber, limit: Int) -> Piece? {
        guard sequence >= acknowledged, sequence < end, limit > 0 else { return nil }
        var index = firstEntry
        while index < entries.count, entries[index].end <= sequence { index += 1 }
        guard index < entries.count else { return nil }
        let entry = entries[index]
        let skip = sequence - entry.start
        let length = min(entry.length - skip, limit)
        switch entry.source {
        case .bytes(let streamIndex):
            return Piece(sequence: sequence, length: length, source: .bytes(streamIndex: streamIndex + UInt64(skip)))
        case .file(let file, let offset):
            return Piece(sequence: sequence, length: length, source: .file(file, offset: offset + UInt64(skip)))
        case .records:
            return Piece(sequence: sequence, length: length, source: entry.source)
        }
    }

    /// How the queue is made from `sequence` (not before `acknowledged`) to its end: the application bytes
    /// at its front (how many), then only data the NIC sent (file ranges, TLS records); nil when application
    /// bytes come after such data. A response handed over with its ending must be laid out so: the NIC keeps
    /// the data it sent, and the host's bytes go with the hand-over.
    func leadingBytes(from sequence: SequenceNumber) -> Int? {
        var index = firstEntry
        while index < entries.count, entries[index].end <= sequence { index += 1 }
        var bytes = 0
        var pastBytes = false
        while index < entries.count {
            let entry = entries[index]
            if case .bytes = entry.source {
                if pastBytes { return nil }
                bytes += entry.start < sequence ? entry.end - sequence : entry.length
            } else {
                pastBytes = true
            }
            index += 1
        }
        return bytes
    }

    /// Copies the application bytes of a piece into `buffer`.
    func copy(_ piece: Piece, into buffer: UnsafeMutableRawBufferPointer) {
        guard case .bytes(let streamIndex) = piece.source else { return }
        ring.read(at: Int(streamIndex - bytesFreed), count: piece.length, into: buffer)
    }

    /// Frees everything before `sequence`.
    mutating func acknowledge(through sequence: SequenceNumber) {
        guard sequence > acknowledged else { return }
        let limit = sequence > end ? end : sequence
        while firstEntry < entries.count {
            let entry = entries[firstEntry]
            let covered = min(limit - entry.start, entry.length)
            guard covered > 0 else { break }
            if case .bytes(let streamIndex) = entry.source {
                let releaseTo = streamIndex + UInt64(covered)
                if releaseTo > bytesFreed {
                    ring.discard(Int(releaseTo - bytesFreed))
                    bytesFreed = releaseTo
                }
            }
            if covered == entry.length {
                firstEntry += 1
            } else {
                entries[firstEntry].start = entry.start + covered
                entries[firstEntry].length -= covered
                if case .bytes(let streamIndex) = entry.source {
                    entries[firstEntry].source = .bytes(streamIndex: streamIndex + UInt64(covered))
                } else if case .file(let file, let offset) = entry.source {
                    entries[firstEntry].source = .file(file, offset: offset + UInt64(covered))
                }
                break
            }
        }
        // Compact now and then so the array does not grow with the life of the connection.
        if firstEntry == entries.count {
            entries.removeAll(keepingCapacity: true)
            firstEntry = 0
        } else if firstEntry > 32 && firstEntry * 2 > entries.count {
            entries.removeFirst(firstEntry)
            firstEntry = 0
        }
        acknowledged = limit
    }

    /// Free room for application bytes.
    var freeByteCapacity: Int { byteCapacity - ring.count }
}

/// A byte ring whose storage is allocated on first use, so an idle connection holds none, and grows with
/// what it holds up to the connection's buffer size. A short connection (a request of a few hundred bytes,
/// a response head) then takes a few KiB from the allocator's small bins instead of two 256 KiB blocks:
/// freeing those made the allocator consolidate its heap for every connection, a tenth of a short
/// request's host CPU.
///
/// The storage is not zeroed: a ring is only ever read where it was written, and zeroing 256 KiB for a
/// connection that sends a 300-byte HTTP head (its file goes by offload) made the kernel fault in and
/// clear every page of it, 15% of a busy file server's host thread.
struct ByteRing {
    private var storage: ByteRingStorage?
    private var head = 0
    private(set) var count = 0

    private var capacity: Int { storage?.capacity ?? 0 }
    /// Bytes of storage allocated.
    var allocatedBytes: Int { capacity }

    /// The smallest storage a ring starts with.
    static let initialCapacity = 4096

    /// Makes room for `needed` bytes from the front (held, or written ahead of them by `write(_:at:)`), growing
    /// by doubling from `initialCapacity` but never past `limit`.
    mutating func reserve(_ needed: Int, limit: Int) {
        let current = capacity
        guard needed > current, current < limit else { return }
        var grown = max(current, Self.initialCapacity)
        while grown < needed { grown *= 2 }
        let larger = ByteRingStorage(capacity: min(grown, limit))
        if let storage {
            // Everything the old ring could hold moves, from the front, in order: held bytes and those
            // written ahead of them (out-of-order data) keep their offsets.
            let first = current - head
            larger.bytes.copyMemory(from: storage.bytes + head, byteCount: first)
            (larger.bytes + first).copyMemory(from: storage.bytes, byteCount: head)
        }
        storage = larger
        head = 0
    }

    /// Appends bytes; the caller has checked they fit.
    mutating func write(_ bytes: UnsafeRawBufferPointer) {
        write(bytes, at: count)
        count += bytes.count
    }

    /// Writes bytes at `offset` from the front without counting them as held (receive reassembly).
    mutating func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        guard !bytes.isEmpty, let storage else { return }
        let capacity = storage.capacity
        var position = (head + offset) % capacity
        var remaining = bytes
        while !remaining.isEmpty {
            let chunk = min(remaining.count, capacity - position)
            (storage.bytes + position).copyMemory(from: remaining.baseAddress!, byteCount: chunk)
            remaining = UnsafeRawBufferPointer(rebasing: remaining[chunk...])
            position = 0
        }
    }

    /// Counts `n` more bytes (already written with `write(_:at:)`) as held.
    mutating func commit(_ n: Int) { count += n }

    /// Copies `count` bytes starting `offset` bytes from the front into `buffer`.
    func read(at offset: Int, count length: Int, into buffer: UnsafeMutableRawBufferPointer) {
        guard length > 0, let storage else { return }
        let capacity = storage.capacity
        var position = (head + offset) % capacity
        var written = 0
        while written < length {
            let chunk = min(length - written, capacity - position)
            (buffer.baseAddress! + written).copyMemory(from: storage.bytes + position, byteCount: chunk)
            written += chunk
            position = 0
        }
    }

    /// Lets the storage go if nothing is held, so a connection that is only waiting out TIME-WAIT keeps
    /// no buffer (a server closing first holds one such connection per recent client for 60 s).
    mutating func releaseIfEmpty() {
        guard count == 0 else { return }
        storage = nil
        head = 0
    }

    mutating func discard(_ n: Int) {
        let amount = min(n, count)
        guard amount > 0 else { return }
        head = (head + amount) % capacity
        count -= amount
    }
}

/// The memory behind a `ByteRing`, uninitialised until written, freed with the last ring using it.
final class ByteRingStorage {
    let bytes: UnsafeMutableRawPointer
    let capacity: Int

    init(capacity: Int) {
        self.capacity = capacity
        bytes = .allocate(byteCount: capacity, alignment: 64)
    }

    deinit { bytes.deallocate() }
}
