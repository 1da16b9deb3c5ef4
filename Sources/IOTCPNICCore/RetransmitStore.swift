import IOTCPCommon

/// Sent file data the peer has not acknowledged, kept until the host's ACKD frees it so a RETRANSMIT can
/// be served. The ranges live with their flow (`StoredRange`s in sequence order); this type keeps the rules
/// and the totals over every flow.
///
/// Nothing is copied to keep it: a range holds on to the very buffer its disk read landed in and its frames
/// were sent from (`.buffered`, while the store is under its limit), or only the file range it came from,
/// read again if it must be retransmitted (`.bufferless`, Atlas's choice, and what `.buffered` falls back to
/// past its limit, so memory stays bounded and no connection fails for it).
public struct RetransmitStore: Sendable {
    public enum Mode: String, Sendable, CaseIterable {
        case buffered, bufferless
    }

    public let mode: Mode
    /// Bytes of buffers the store may keep (counted by whole buffers).
    public let limitBytes: Int
    /// Payload bytes sent and not yet acknowledged, over every flow, kept or described.
    public private(set) var heldBytes = 0
    /// Of those, the bytes kept in memory.
    public private(set) var bufferedBytes = 0
    /// Buffers kept now.
    public private(set) var buffersHeld = 0

    public init(mode: Mode, limitBytes: Int = 192 << 20) {
        self.mode = mode
        self.limitBytes = limitBytes
    }

    /// Whether one more buffer of `bufferSize` bytes may be kept now.
    public func hasRoom(bufferSize: Int) -> Bool {
        mode == .buffered && (buffersHeld + 1) * bufferSize <= limitBytes
    }

    public mutating func record(_ range: StoredRange, in ranges: inout FIFO<StoredRange>) {
        ranges.append(range)
        heldBytes += range.length
        if range.hasBuffer {
            bufferedBytes += range.length
            buffersHeld += 1
        }
    }

    /// ACKD: everything before `sequence` is acknowledged; each buffer wholly acknowledged goes to `release`.
    public mutating func acknowledge(through sequence: SequenceNumber, in ranges: inout FIFO<StoredRange>, release: (UInt32) -> Void) {
        while var range = ranges.first, range.sequence < sequence {
            if range.end <= sequence {
                ranges.removeFirst()
                forget(range, release: release)
                continue
            }
            let cut = sequence - range.sequence
            heldBytes -= cut
            if range.hasBuffer { bufferedBytes -= cut }
            range.advance(by: cut)
            ranges[ranges.startIndex] = range
            break
        }
    }

    /// FLOW_CLOSE: the flow's data is released whatever its state. Returns the bytes freed that way.
    @discardableResult
    public mutating func removeAll(in ranges: inout FIFO<StoredRange>, release: (UInt32) -> Void) -> Int {
        var freed = 0
        for range in ranges {
            freed += range.length
            forget(range, release: release)
        }
        ranges.removeAll(keepingCapacity: true)
        return freed
    }

    private mutating func forget(_ range: StoredRange, release: (UInt32) -> Void) {
        heldBytes -= range.length
        if range.hasBuffer {
            bufferedBytes -= range.length
            buffersHeld -= 1
            release(range.buffer)
        }
    }

    /// The stored pieces covering `[sequence, sequence + length)` in order, as (range index, bytes to skip
    /// in it, bytes to take), with the part at or after `unsentFrom` (data still queued on the NIC, which
    /// will go out anyway) left off. Nil if a part before `unsentFrom` is not stored (never sent, or
    /// already acknowledged).
    public static func pieces(
        of ranges: FIFO<StoredRange>, sequence: SequenceNumber, length: Int, unsentFrom: SequenceNumber?,
        into pieces: inout [(index: Int, skip: Int, length: Int)]
    ) -> Bool {
        pieces.removeAll(keepingCapacity: true)
        var cursor = sequence
        var end = sequence + length
        if let unsentFrom, unsentFrom < end { end = SequenceNumber.max(unsentFrom, sequence) }
        var index = 0
        while cursor < end {
            // Ranges are in sequence order; application bytes sent as packets may sit between them.
            while index < ranges.count && ranges[ranges.startIndex + index].end <= cursor { index += 1 }
            guard index < ranges.count else { return false }
            let range = ranges[ranges.startIndex + index]
            guard cursor >= range.sequence else { return false }
            let skip = cursor - range.sequence
            let take = min(range.length - skip, end - cursor)
            pieces.append((index, skip, take))
            cursor += take
        }
        return true
    }

    /// Bytes held for one flow.
    public static func heldBytes(_ ranges: FIFO<StoredRange>) -> Int { ranges.reduce(0) { $0 + $1.length } }
}

/// One sent range of file data: where it sits in the sequence space, which file bytes it carries, and
/// the buffer that still holds them (or `noBuffer`).
public struct StoredRange: Hashable, Sendable {
    public var sequence: SequenceNumber
    public var length: Int
    public var file: OffloadedFileID
    public var offset: UInt64
    /// The pool buffer holding the bytes, or `StoredRange.noBuffer`.
    public var buffer: UInt32
    /// Where the range's first byte sits in `buffer`.
    public var bufferOffset: Int
    /// Wire bytes of TLS records (`recordOverhead` > 0): the run they belong to, from which a retransmission
    /// finds the records a range touches, reads their plaintext and seals them again.
    public var recordRun = TLSRecordRun(start: SequenceNumber(0), recordPlaintext: 0, plaintext: 0, firstRecord: 0,
                                        file: OffloadedFileID(rawValue: 0), offset: 0)
    public var recordOverhead = 0

    public static let noBuffer = UInt32.max

    public init(sequence: SequenceNumber, length: Int, file: OffloadedFileID, offset: UInt64, buffer: UInt32 = noBuffer, bufferOffset: Int = 0) {
        self.sequence = sequence
        self.length = length
        self.file = file
        self.offset = offset
        self.buffer = buffer
        self.bufferOffset = bufferOffset
    }

    public var end: SequenceNumber { sequence + length }
    public var hasBuffer: Bool { buffer != Self.noBuffer }

    mutating func advance(by count: Int) {
        sequence = sequence + count
        length -= count
        if recordOverhead == 0 { offset += UInt64(count) }
        bufferOffset += count
    }
}
