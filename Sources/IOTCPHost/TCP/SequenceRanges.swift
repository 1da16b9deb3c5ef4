import IOTCPCommon

extension Array where Element == SACKBlock {
    /// Inserts `block` into ranges kept sorted and disjoint, merging it with every range it overlaps or
    /// touches; returns the range it ended up in. Used by both the receiver's reassembly map and the
    /// sender's SACK scoreboard. In place: a binary search for the first range it may touch, then one
    /// replacement of the ranges it absorbs, so an insert costs O(log n) plus what it merges and allocates
    /// nothing once the array has grown.
    ///
    /// With `limit`, a block that would add a range beyond `limit` ranges (merging with none) is not
    /// inserted and nil comes back: a peer sending many tiny disjoint pieces cannot grow the map without end.
    @discardableResult
    mutating func insertMerging(_ block: SACKBlock, limit: Int = .max) -> SACKBlock? {
        // The first range whose right edge reaches the block's left (ranges are disjoint, so right edges
        // are sorted too).
        var low = 0, high = count
        while low < high {
            let middle = (low + high) / 2
            if self[middle].right < block.left { low = middle + 1 } else { high = middle }
        }
        var end = low
        var merged = block
        while end < count && self[end].left <= merged.right {
            merged = SACKBlock(left: SequenceNumber.min(self[end].left, merged.left), right: SequenceNumber.max(self[end].right, merged.right))
            end += 1
        }
        if end == low && count >= limit { return nil }
        replaceSubrange(low..<end, with: CollectionOfOne(merged))
        return merged
    }
}
