import IOTCPCommon

extension Array where Element == SACKBlock {
    /// Inserts `block` into ranges kept sorted and disjoint, merging it with every range it overlaps or
    /// touches; returns the range it ended up in. Used by both the receiver's reassembly map and the
    /// sender's SACK scoreboard.
    @discardableResult
    mutating func insertMerging(_ block: SACKBlock) -> SACKBlock {
        var merged = block
        var kept: [SACKBlock] = []
        kept.reserveCapacity(count + 1)
        var inserted = false
        for existing in self {
            if existing.right < merged.left {
                kept.append(existing)
            } else if existing.left > merged.right {
                if !inserted {
                    kept.append(merged)
                    inserted = true
                }
                kept.append(existing)
            } else {
                merged = SACKBlock(left: SequenceNumber.min(existing.left, merged.left),
                                   right: SequenceNumber.max(existing.right, merged.right))
            }
        }
        if !inserted { kept.append(merged) }
        self = kept
        return merged
    }
}
