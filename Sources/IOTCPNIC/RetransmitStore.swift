import IOTCPCommon

/// Sent data the peer has not acknowledged, per flow, kept until the host's ACKD frees it, so a
/// RETRANSMIT can be served.
///
/// Two modes: `.buffered` keeps the bytes, under a byte limit: a range sent while the limit is reached is
/// kept the bufferless way instead (its file range, read again if it must be retransmitted), so memory stays
/// bounded and no connection fails for it. `.bufferless` keeps only which file range each sequence range
/// came from for every range (Atlas's choice: no buffer, one more disk read on loss).
public struct RetransmitStore {
    public enum Mode: String, Sendable, CaseIterable {
        case buffered, bufferless
    }

    public struct Range {
        public var sequence: SequenceNumber
        public var length: Int
        public var file: OffloadedFileID
        public var offset: UInt64
        /// The bytes, in buffered mode.
        public var bytes: [UInt8]?
        public var end: SequenceNumber { sequence + length }

        public init(sequence: SequenceNumber, length: Int, file: OffloadedFileID, offset: UInt64, bytes: [UInt8]?) {
            self.sequence = sequence
            self.length = length
            self.file = file
            self.offset = offset
            self.bytes = bytes
        }
    }

    public let mode: Mode
    public let limitBytes: Int
    /// Bytes of file data sent and not yet acknowledged, over every flow, kept or described.
    public private(set) var heldBytes = 0
    /// Of those, the bytes kept in memory (the limit applies to these).
    public private(set) var bufferedBytes = 0
    private var flows: [FlowID: [Range]] = [:]

    public init(mode: Mode, limitBytes: Int = 256 << 20) {
        self.mode = mode
        self.limitBytes = limitBytes
    }

    /// Whether `length` more bytes may be kept in memory now.
    public func hasRoom(for length: Int) -> Bool { mode == .buffered && bufferedBytes + length <= limitBytes }

    public mutating func record(flow: FlowID, _ range: Range) {
        flows[flow, default: []].append(range)
        heldBytes += range.length
        if range.bytes != nil { bufferedBytes += range.length }
    }

    /// ACKD: everything before `sequence` is acknowledged.
    public mutating func acknowledge(flow: FlowID, through sequence: SequenceNumber) {
        guard var ranges = flows[flow] else { return }
        var freed = 0, freedBuffered = 0
        var kept = 0
        for index in ranges.indices {
            var range = ranges[index]
            if range.end <= sequence {
                freed += range.length
                if range.bytes != nil { freedBuffered += range.length }
                continue
            }
            if range.sequence < sequence {
                let cut = sequence - range.sequence
                freed += cut
                if range.bytes != nil { freedBuffered += cut }
                range.sequence = sequence
                range.length -= cut
                range.offset += UInt64(cut)
                if let bytes = range.bytes { range.bytes = Array(bytes[cut...]) }
            }
            ranges[kept] = range
            kept += 1
        }
        ranges.removeLast(ranges.count - kept)
        flows[flow] = ranges
        heldBytes -= freed
        bufferedBytes -= freedBuffered
    }

    /// The stored pieces covering `[sequence, sequence + length)`, in order; nil if any part is missing.
    public func pieces(flow: FlowID, sequence: SequenceNumber, length: Int) -> [(range: Range, skip: Int, length: Int)]? {
        guard let ranges = flows[flow] else { return nil }
        var result: [(Range, Int, Int)] = []
        var cursor = sequence
        let end = sequence + length
        while cursor < end {
            guard let range = ranges.first(where: { cursor >= $0.sequence && cursor < $0.end }) else { return nil }
            let skip = cursor - range.sequence
            let take = min(range.length - skip, end - cursor)
            result.append((range, skip, take))
            cursor += take
        }
        return result
    }

    /// FLOW_CLOSE: the flow's data is released whatever its state. Returns the bytes freed that way.
    @discardableResult
    public mutating func removeFlow(_ flow: FlowID) -> Int {
        let ranges = flows.removeValue(forKey: flow) ?? []
        let freed = ranges.reduce(0) { $0 + $1.length }
        heldBytes -= freed
        bufferedBytes -= ranges.reduce(0) { $0 + ($1.bytes == nil ? 0 : $1.length) }
        return freed
    }

    public func heldBytes(flow: FlowID) -> Int { flows[flow]?.reduce(0) { $0 + $1.length } ?? 0 }
}
