import IOTCPCommon

/// RFC 6675's scoreboard: the ranges above SND.UNA the peer said it holds (SACK), sorted and disjoint, and
/// the questions loss recovery asks of them (IsLost, NextSeg, SetPipe). No state of the connection but the
/// blocks: the sequence numbers it needs come in as arguments.
struct SACKScoreboard {
    private(set) var blocks: [SACKBlock] = []
    /// A peer reporting thousands of tiny holes gets the first this many kept: SACK is advice.
    static let maximumBlocks = 64

    var isEmpty: Bool { blocks.isEmpty }

    /// Takes the blocks of one ACK, ignoring those that claim what was never sent or start below
    /// `unacknowledged` (the later of SND.UNA and the ACK's own acknowledgment): RFC 2883's D-SACKs, blocks
    /// of an older ACK that arrived late, and anything claiming to hold out of order what is acknowledged
    /// (a block that started at SND.UNA would be skipped by every retransmission and never acknowledged).
    /// Returns the first byte and the end of what they newly cover (nil when nothing is new): lost
    /// retransmission detection asks whether bytes sent after a retransmission arrived before it.
    @discardableResult
    mutating func record(_ reported: SACKBlockList, unacknowledged: SequenceNumber, sendMaximum: SequenceNumber) -> NewlyCovered? {
        var newly: NewlyCovered?
        for block in reported {
            guard block.left < block.right, block.right <= sendMaximum, block.left > unacknowledged else { continue }
            let uncovered = uncovered(from: block.left, to: block.right)
            // A block past the limit is dropped: it must not count as news on every ACK that repeats it.
            guard blocks.insertMerging(block, limit: Self.maximumBlocks) != nil,
                  let uncovered else { continue }
            newly = NewlyCovered(first: SequenceNumber.min(newly?.first ?? uncovered.first, uncovered.first),
                                 end: SequenceNumber.max(newly?.end ?? uncovered.end, uncovered.end))
        }
        return newly
    }

    /// The lowest and the end of the highest bytes one ACK's SACK blocks covered for the first time.
    struct NewlyCovered: Equatable {
        var first: SequenceNumber
        var end: SequenceNumber
    }

    /// The first byte of `left..<right` no block covers and the end of the last such byte, or nil when the
    /// blocks cover it all.
    func uncovered(from left: SequenceNumber, to right: SequenceNumber) -> NewlyCovered? {
        var first: SequenceNumber?
        var end = left
        var cursor = left
        for block in blocks where block.right > cursor {
            if block.left >= right { break }
            if cursor < block.left {
                if first == nil { first = cursor }
                end = block.left
            }
            cursor = SequenceNumber.max(cursor, block.right)
            if cursor >= right { break }
        }
        if cursor < right {
            if first == nil { first = cursor }
            end = right
        }
        guard let first else { return nil }
        return NewlyCovered(first: first, end: end)
    }

    /// Drops what a cumulative ACK through `acknowledged` made history.
    mutating func acknowledge(through acknowledged: SequenceNumber) {
        blocks.removeAll { $0.right <= acknowledged }
        if let first = blocks.first, first.left < acknowledged { blocks[0].left = acknowledged }
    }

    /// Forgets every block (the peer reneged on them); `releasingStorage` also gives back the array's memory
    /// (a connection entering TIME-WAIT keeps nothing it no longer needs).
    mutating func clear(releasingStorage: Bool = false) {
        if releasingStorage { blocks = [] } else { blocks.removeAll(keepingCapacity: true) }
    }

    /// The end of the SACKed block holding `sequence`, if one does.
    func end(ofBlockContaining sequence: SequenceNumber) -> SequenceNumber? {
        for block in blocks where block.right > sequence {
            return block.left <= sequence ? block.right : nil
        }
        return nil
    }

    /// The start of the first SACKed block above `sequence`.
    func start(ofBlockAfter sequence: SequenceNumber) -> SequenceNumber? {
        blocks.first { $0.left > sequence }?.left
    }

    var sackedBytes: Int { blocks.reduce(0) { $0 + ($1.right - $1.left) } }

    /// The SACKed bytes below `end`.
    func sackedBytes(below end: SequenceNumber) -> Int {
        var total = 0
        for block in blocks {
            guard block.left < end else { break }
            total += SequenceNumber.min(block.right, end) - block.left
        }
        return total
    }

    /// RFC 6675's DupThresh.
    static let duplicateThreshold = 3

    /// RFC 6675 IsLost: more than `threshold` bytes ((DupThresh - 1) * SMSS) SACKed above `sequence`, or
    /// DupThresh discontiguous SACKed ranges above it. The byte rule alone (RFC 3517's DupThresh * SMSS)
    /// missed three short segments, which a file sent in pieces the window admits makes common. Below
    /// `lostBelow` every unSACKed byte is lost (the reordering window passed with data above it SACKed:
    /// `TCPConnection+ReorderTimer.swift`).
    func isLost(_ sequence: SequenceNumber, threshold: Int, lostBelow: SequenceNumber? = nil) -> Bool {
        if let lostBelow, sequence < lostBelow { return true }
        var above = 0
        var ranges = 0
        for block in blocks where block.right > sequence + 1 {
            above += block.right - SequenceNumber.max(block.left, sequence + 1)
            ranges += 1
        }
        return above > threshold || ranges >= Self.duplicateThreshold
    }

    /// Whether some unSACKed range from `start` below a SACKed block is not lost by IsLost (nor below `lostBelow`).
    func hasHoleNotLost(from start: SequenceNumber, threshold: Int, lostBelow: SequenceNumber?) -> Bool {
        var cursor = start
        for block in blocks where block.right > cursor {
            if cursor < block.left && !isLost(cursor, threshold: threshold, lostBelow: lostBelow) { return true }
            cursor = block.right
        }
        return false
    }

    /// RFC 6675 NextSeg rule 1: the first range from `start` that is unSACKed and lost, at most a segment.
    func nextLostRange(from start: SequenceNumber, segmentSize: Int, threshold: Int,
                       lostBelow: SequenceNumber? = nil) -> (SequenceNumber, Int)? {
        var cursor = start
        for block in blocks {
            if block.right <= cursor { continue }
            if cursor < block.left {
                if isLost(cursor, threshold: threshold, lostBelow: lostBelow) {
                    return (cursor, min(block.left - cursor, segmentSize))
                }
                return nil
            }
            cursor = block.right
        }
        return nil
    }

    /// RFC 6675 SetPipe, by ranges: of the `outstanding` bytes from `unacknowledged`, those neither SACKed nor
    /// lost, plus the lost ones already retransmitted (below `highRetransmitted`). Only what lies below SND.NXT
    /// (`unacknowledged + outstanding`) counts: after a Packet Too Big SND.NXT goes back below SACKed data.
    func pipe(outstanding: Int, unacknowledged: SequenceNumber, highRetransmitted: SequenceNumber, threshold: Int,
              lostBelow: SequenceNumber? = nil) -> Int {
        let end = unacknowledged + outstanding
        var lostNotRetransmitted = 0
        var cursor = unacknowledged
        for block in blocks {
            let holeEnd = SequenceNumber.min(block.left, end)
            if cursor < holeEnd, isLost(cursor, threshold: threshold, lostBelow: lostBelow) {
                let holeStart = SequenceNumber.max(cursor, highRetransmitted)
                if holeStart < holeEnd { lostNotRetransmitted += holeEnd - holeStart }
            }
            cursor = SequenceNumber.max(cursor, block.right)
            if cursor >= end { break }
        }
        return max(outstanding - sackedBytes(below: end) - lostNotRetransmitted, 0)
    }
}
