/// The TLS records of one direction of a connection, in stream order: where each begins in the stream, its
/// record number and what its plaintext is. With it, any range of the stream can be rebuilt exactly by
/// sealing again the records it touches (sealing is deterministic) and cutting the range out: what the NIC
/// does for a retransmission instead of keeping ciphertext, whether the range covers whole records, parts of
/// two, or a few bytes in the middle of one.
///
/// Offsets are positions in the stream from an origin the owner chooses (where the first mapped record
/// begins), 64-bit so they never wrap; TCP sequence numbers map onto them by their distance from the
/// origin's sequence number.
public struct TLSRecordMap {
    /// Where a record's plaintext comes from: a range of an offloaded file, or bytes the host wrote (an HTTP
    /// head), kept by whoever keeps the host's bytes for retransmission.
    public enum Source: Equatable, Sendable {
        case file(id: UInt64, offset: UInt64)
        case bytes(tag: UInt64)
    }

    public struct Record: Equatable, Sendable {
        /// Offset of the record's first byte (its header) in the stream.
        public let start: UInt64
        public let number: UInt64
        public let contentType: TLSContentType
        public let source: Source
        public let plaintextLength: Int
        /// The record's bytes on the wire, header and tag included.
        public let wireLength: Int
        public var end: UInt64 { start + UInt64(wireLength) }
    }

    private var records: [Record] = []
    /// Records before this index are acknowledged and forgotten (dropped from the front in batches).
    private var first = 0
    public private(set) var nextNumber: UInt64
    public private(set) var end: UInt64

    /// A map whose first record will be number `firstNumber` at stream offset `origin`.
    public init(origin: UInt64 = 0, firstNumber: UInt64 = 0) {
        nextNumber = firstNumber
        end = origin
    }

    public var count: Int { records.count - first }

    /// Appends the next record: it starts where the stream ends and takes the next record number.
    @discardableResult
    public mutating func append(
        _ source: Source, plaintextLength: Int, contentType: TLSContentType = .applicationData,
        protection: TLSRecordProtection
    ) -> Record {
        let record = Record(start: end, number: nextNumber, contentType: contentType, source: source,
                            plaintextLength: plaintextLength, wireLength: protection.recordLength(plaintext: plaintextLength))
        records.append(record)
        nextNumber += 1
        end = record.end
        return record
    }

    /// The records that hold any byte of `range`, in order.
    public func records(covering range: Range<UInt64>) -> ArraySlice<Record> {
        guard !range.isEmpty else { return records[first..<first] }
        // The first record whose end is past the range's start.
        var low = first, high = records.count
        while low < high {
            let middle = (low + high) / 2
            if records[middle].end <= range.lowerBound { low = middle + 1 } else { high = middle }
        }
        var last = low
        while last < records.count && records[last].start < range.upperBound { last += 1 }
        return records[low..<last]
    }

    /// Forgets the records wholly before `offset` (acknowledged by the peer).
    public mutating func acknowledge(upTo offset: UInt64) {
        while first < records.count && records[first].end <= offset { first += 1 }
        if first > 64 && first * 2 > records.count {
            records.removeFirst(first)
            first = 0
        }
    }

    /// Rebuilds `range` of the stream into `output` (exactly `range.count` bytes), sealing each record it
    /// touches again with `plaintext(record)` as its content. Throws if a record is no longer in the map
    /// (already acknowledged) or its plaintext has the wrong length.
    public func rebuild(
        _ range: Range<UInt64>, protection: TLSRecordProtection, into output: UnsafeMutableRawBufferPointer,
        plaintext: (Record) throws -> [UInt8]
    ) throws -> Int {
        let covering = records(covering: range)
        guard let head = covering.first, head.start <= range.lowerBound,
              let tail = covering.last, tail.end >= range.upperBound
        else { throw TLSRecordError.truncated }
        guard output.count >= Int(range.count) else { throw TLSRecordError.outputTooShort(needed: Int(range.count), given: output.count) }
        var written = 0
        var sealed = [UInt8]()
        for record in covering {
            let content = try plaintext(record)
            guard content.count == record.plaintextLength else { throw TLSRecordError.badLength(content.count) }
            sealed = [UInt8](repeating: 0, count: record.wireLength)
            _ = try content.withUnsafeBytes { input in
                try sealed.withUnsafeMutableBytes {
                    try protection.seal(input, contentType: record.contentType, sequence: record.number, into: $0)
                }
            }
            let from = Int(max(range.lowerBound, record.start) - record.start)
            let to = Int(min(range.upperBound, record.end) - record.start)
            UnsafeMutableRawBufferPointer(rebasing: output[written...]).copyBytes(from: sealed[from..<to])
            written += to - from
        }
        return written
    }
}
