/// One SACK block (RFC 2018): the peer holds `[left, right)`.
public struct SACKBlock: Hashable, Sendable {
    public var left: SequenceNumber
    public var right: SequenceNumber
    @inlinable public init(left: SequenceNumber, right: SequenceNumber) {
        self.left = left
        self.right = right
    }
}

/// Up to four SACK blocks, stored inline so a parsed segment never allocates.
public struct SACKBlockList: RandomAccessCollection, Hashable, Sendable {
    public static let capacity = 4
    @usableFromInline var storage: (SACKBlock, SACKBlock, SACKBlock, SACKBlock)
    @inlinable public var count: Int { storedCount }
    @usableFromInline var storedCount: Int

    @inlinable
    public init() {
        let empty = SACKBlock(left: SequenceNumber(0), right: SequenceNumber(0))
        storage = (empty, empty, empty, empty)
        storedCount = 0
    }

    public init(_ blocks: some Sequence<SACKBlock>) {
        self.init()
        for block in blocks where count < Self.capacity { append(block) }
    }

    @inlinable public var startIndex: Int { 0 }
    @inlinable public var endIndex: Int { count }

    @inlinable
    public subscript(position: Int) -> SACKBlock {
        precondition(position >= 0 && position < count, "SACK block index out of range")
        switch position {
        case 0: return storage.0
        case 1: return storage.1
        case 2: return storage.2
        default: return storage.3
        }
    }

    /// Appends a block; returns false (and keeps the list) when four are already held.
    @discardableResult
    public mutating func append(_ block: SACKBlock) -> Bool {
        switch count {
        case 0: storage.0 = block
        case 1: storage.1 = block
        case 2: storage.2 = block
        case 3: storage.3 = block
        default: return false
        }
        storedCount += 1
        return true
    }

    public static func == (lhs: SACKBlockList, rhs: SACKBlockList) -> Bool { lhs.elementsEqual(rhs) }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(count)
        for block in self { hasher.combine(block) }
    }
}

/// RFC 7323 timestamps: the sender's clock and the echo of the peer's.
public struct TCPTimestamps: Hashable, Sendable {
    public var value: UInt32
    public var echoReply: UInt32
    @inlinable public init(value: UInt32, echoReply: UInt32) {
        self.value = value
        self.echoReply = echoReply
    }
}

/// The options of a TCP header that the stack understands. Unknown options are skipped by their
/// length when parsing and never emitted.
public struct TCPOptions: Hashable, Sendable {
    public var maximumSegmentSize: UInt16?
    /// The shift count as received (RFC 7323 §2.3 clamps it to 14 when used; the parser keeps it raw).
    public var windowScale: UInt8?
    public var sackPermitted: Bool
    public var sackBlocks: SACKBlockList
    public var timestamps: TCPTimestamps?

    public init(
        maximumSegmentSize: UInt16? = nil, windowScale: UInt8? = nil, sackPermitted: Bool = false,
        sackBlocks: SACKBlockList = SACKBlockList(), timestamps: TCPTimestamps? = nil
    ) {
        self.maximumSegmentSize = maximumSegmentSize
        self.windowScale = windowScale
        self.sackPermitted = sackPermitted
        self.sackBlocks = sackBlocks
        self.timestamps = timestamps
    }

    enum Kind {
        static let end: UInt8 = 0, noOperation: UInt8 = 1, maximumSegmentSize: UInt8 = 2, windowScale: UInt8 = 3
        static let sackPermitted: UInt8 = 4, sack: UInt8 = 5, timestamps: UInt8 = 8
    }

    /// Parses the option bytes between the fixed header and the data offset, strictly.
    ///
    /// A known option with the wrong length, or any option running past the end, is malformed
    /// (RFC 9293 §3.1 asks a receiver to be ready for impossible lengths); an end-of-list option stops
    /// parsing; anything unknown is skipped by its length.
    public init(parsing bytes: UnsafeRawBufferPointer) throws(WireError) {
        try self.init(parsing: bytes, lenient: false)
    }

    /// Parses the options as a receiving TCP should (and as Linux does): a known option with the wrong
    /// length is skipped by its length, and an impossible length (under 2, or past the end) ends the
    /// options there. What was understood is kept and the segment is not thrown away for the rest.
    public init(leniently bytes: UnsafeRawBufferPointer) {
        // The lenient parse never throws.
        self = (try? TCPOptions(parsing: bytes, lenient: true)) ?? TCPOptions()
    }

    private init(parsing bytes: UnsafeRawBufferPointer, lenient: Bool) throws(WireError) {
        self.init()
        var offset = 0
        while offset < bytes.count {
            let kind = bytes[offset]
            if kind == Kind.end { break }
            if kind == Kind.noOperation {
                offset += 1
                continue
            }
            guard offset + 1 < bytes.count else {
                if lenient { return }
                throw .malformedOption(kind: kind)
            }
            let length = Int(bytes[offset + 1])
            guard length >= 2, offset + length <= bytes.count else {
                if lenient { return }
                throw .malformedOption(kind: kind)
            }
            var wellFormed = true
            switch kind {
            case Kind.maximumSegmentSize:
                if length == 4 { maximumSegmentSize = bytes.bigEndianUInt16(at: offset + 2) } else { wellFormed = false }
            case Kind.windowScale:
                if length == 3 { windowScale = bytes[offset + 2] } else { wellFormed = false }
            case Kind.sackPermitted:
                if length == 2 { sackPermitted = true } else { wellFormed = false }
            case Kind.sack:
                let blockBytes = length - 2
                guard blockBytes > 0, blockBytes % 8 == 0, blockBytes / 8 <= SACKBlockList.capacity else {
                    wellFormed = false
                    break
                }
                var blocks = SACKBlockList()
                var at = offset + 2
                while at < offset + length {
                    blocks.append(SACKBlock(
                        left: SequenceNumber(bytes.bigEndianUInt32(at: at)),
                        right: SequenceNumber(bytes.bigEndianUInt32(at: at + 4))))
                    at += 8
                }
                sackBlocks = blocks
            case Kind.timestamps:
                if length == 10 {
                    timestamps = TCPTimestamps(
                        value: bytes.bigEndianUInt32(at: offset + 2), echoReply: bytes.bigEndianUInt32(at: offset + 6))
                } else {
                    wellFormed = false
                }
            default:
                break
            }
            if !wellFormed && !lenient { throw .malformedOption(kind: kind) }
            offset += length
        }
    }

    /// Bytes the options take when emitted, a multiple of four.
    public var encodedLength: Int {
        var length = 0
        if maximumSegmentSize != nil { length += 4 }
        if timestamps != nil { length += 12 }  // SACK-permitted rides in the timestamps' two padding bytes
        else if sackPermitted { length += 4 }
        if windowScale != nil { length += 4 }
        if !sackBlocks.isEmpty { length += 4 + 8 * sackBlocks.count }
        return length
    }

    /// Writes the options in the layout Linux uses (MSS; SACK-permitted and timestamps; window scale;
    /// SACK blocks, each padded with NOPs to four bytes), so segments captured from Linux emit to the same
    /// bytes. Returns the bytes written.
    @discardableResult
    public func emit(into buffer: UnsafeMutableRawBufferPointer) throws(WireError) -> Int {
        let length = encodedLength
        guard length <= 40 else { throw .optionsTooLong(length) }
        guard buffer.count >= length else { throw .bufferTooSmall(needed: length, available: buffer.count) }
        var offset = 0
        func put(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
            buffer[offset] = a
            buffer[offset + 1] = b
            buffer[offset + 2] = c
            buffer[offset + 3] = d
            offset += 4
        }
        if let mss = maximumSegmentSize {
            put(Kind.maximumSegmentSize, 4, UInt8(mss >> 8), UInt8(mss & 0xFF))
        }
        if let timestamps {
            if sackPermitted { put(Kind.sackPermitted, 2, Kind.timestamps, 10) }
            else { put(Kind.noOperation, Kind.noOperation, Kind.timestamps, 10) }
            buffer.storeBigEndian(timestamps.value, at: offset)
            buffer.storeBigEndian(timestamps.echoReply, at: offset + 4)
            offset += 8
        } else if sackPermitted {
            put(Kind.noOperation, Kind.noOperation, Kind.sackPermitted, 2)
        }
        if let windowScale {
            put(Kind.noOperation, Kind.windowScale, 3, windowScale)
        }
        if !sackBlocks.isEmpty {
            put(Kind.noOperation, Kind.noOperation, Kind.sack, UInt8(2 + 8 * sackBlocks.count))
            for block in sackBlocks {
                buffer.storeBigEndian(block.left.rawValue, at: offset)
                buffer.storeBigEndian(block.right.rawValue, at: offset + 4)
                offset += 8
            }
        }
        return offset
    }
}
