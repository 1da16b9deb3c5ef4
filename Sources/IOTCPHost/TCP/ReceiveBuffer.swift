import IOTCPCommon

/// Received bytes waiting for the application, and out-of-order bytes waiting for the gap before them.
/// Both live in one ring that grows up to the receive window, so reassembly copies each byte once and
/// allocates nothing per segment; the ring itself is allocated with the first byte.
struct ReceiveBuffer {
    private var ring = ByteRing()
    let capacity: Int
    /// Out-of-order ranges held, sorted, disjoint, all beyond `next`; at most `maximumRanges` (a segment
    /// that would add one more is dropped, unacknowledged: the sender sends it again).
    private(set) var outOfOrder: [SACKBlock] = []
    static let maximumRanges = 64
    /// Segments dropped because they would have made one range too many.
    private(set) var rangesRefused = 0
    /// The range that the most recent out-of-order segment landed in (RFC 2018: reported first).
    private var mostRecent: SequenceNumber?

    init(capacity: Int) { self.capacity = capacity }

    var allocatedBytes: Int { ring.allocatedBytes }

    /// Frees the ring if the application has read everything, and forgets out-of-order ranges: nothing
    /// more will be accepted (TIME-WAIT).
    mutating func releaseStorage() {
        outOfOrder = []
        mostRecent = nil
        ring.releaseIfEmpty()
    }

    /// In-order bytes the application can read.
    var readable: Int { ring.count }
    /// Free space: what the window may offer.
    var free: Int { capacity - ring.count }

    /// Stores `bytes`, which start `offset` bytes after the next expected sequence number `next`, and
    /// returns how many in-order bytes became readable. Bytes beyond the free space are dropped.
    mutating func store(_ bytes: UnsafeRawBufferPointer, at sequence: SequenceNumber, next: SequenceNumber) -> Int {
        var data = bytes
        var start = sequence
        // Trim what was already received, and what does not fit in the window.
        if start < next {
            let skip = min(next - start, data.count)
            data = UnsafeRawBufferPointer(rebasing: data[skip...])
            start = next
        }
        let offset = start - next
        let room = free - offset
        guard room > 0, !data.isEmpty else { return 0 }
        if data.count > room { data = UnsafeRawBufferPointer(rebasing: data[0..<room]) }
        if offset > 0 {
            guard let range = outOfOrder.insertMerging(SACKBlock(left: start, right: start + data.count), limit: Self.maximumRanges) else {
                rangesRefused += 1
                return 0
            }
            mostRecent = range.left
            ring.reserve(ring.count + offset + data.count, limit: capacity)
            ring.write(data, at: ring.count + offset)
            return 0
        }
        ring.reserve(ring.count + offset + data.count, limit: capacity)
        ring.write(data, at: ring.count + offset)
        var advanced = data.count
        // The gap is filled up to here: absorb out-of-order ranges that now touch the in-order data.
        var frontier = next + advanced
        while let first = outOfOrder.first, first.left <= frontier {
            if first.right > frontier {
                advanced += first.right - frontier
                frontier = first.right
            }
            outOfOrder.removeFirst()
        }
        ring.commit(advanced)
        if let recent = mostRecent, recent < frontier { mostRecent = nil }
        return advanced
    }

    /// Up to `limit` SACK blocks: the one holding the latest arrival first, then the rest from the highest.
    func sackBlocks(limit: Int) -> SACKBlockList {
        var list = SACKBlockList()
        guard limit > 0, !outOfOrder.isEmpty else { return list }
        if let recent = mostRecent, let block = outOfOrder.first(where: { $0.left <= recent && recent < $0.right }) {
            list.append(block)
        }
        for block in outOfOrder.reversed() where list.count < limit && !list.contains(block) {
            list.append(block)
        }
        return list
    }

    /// Copies up to `buffer.count` in-order bytes to the application and frees them.
    mutating func read(into buffer: UnsafeMutableRawBufferPointer) -> Int {
        let amount = min(buffer.count, ring.count)
        guard amount > 0 else { return 0 }
        ring.read(at: 0, count: amount, into: UnsafeMutableRawBufferPointer(rebasing: buffer[0..<amount]))
        ring.discard(amount)
        return amount
    }
}
