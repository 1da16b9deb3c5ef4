/// The TLS record versions whose records the NIC seals.
public enum TLSRecordVersion: UInt16, Sendable, Hashable, CustomStringConvertible {
    case tls12 = 0x0303
    case tls13 = 0x0304

    /// Bytes before a record's plaintext: the 5-byte header, and TLS 1.2's 8-byte explicit nonce.
    @inlinable public var headerLength: Int { self == .tls13 ? 5 : 13 }
    /// Bytes after it: TLS 1.3's inner content type, and the 16-byte AES-GCM tag.
    @inlinable public var trailerLength: Int { self == .tls13 ? 17 : 16 }
    /// What a record adds to its plaintext on the wire.
    @inlinable public var overhead: Int { headerLength + trailerLength }

    public var description: String { self == .tls13 ? "TLS 1.3" : "TLS 1.2" }
}

/// `TLS_KEYS`: the keys and IV the NIC seals a flow's outgoing records with, from now until FLOW_CLOSE (or
/// the next TLS_KEYS, after a KeyUpdate). `key` is 16 or 32 bytes (AES-128/256-GCM); `iv` is TLS 1.3's
/// 12-byte write IV or TLS 1.2's 4-byte salt. Both point into the message or the caller's memory.
public struct TLSKeys {
    public var version: TLSRecordVersion
    public var key: UnsafeRawBufferPointer
    public var iv: UnsafeRawBufferPointer

    public init(version: TLSRecordVersion, key: UnsafeRawBufferPointer, iv: UnsafeRawBufferPointer) {
        self.version = version
        self.key = key
        self.iv = iv
    }

    public static func ivLength(_ version: TLSRecordVersion) -> Int { version == .tls13 ? 12 : 4 }
}

/// `SEND_RECORDS`: put the wire bytes `[sequence, sequence + length)` of a run of TLS records on the wire.
///
/// A run is a file range cut into records of `recordPlaintext` bytes (the last one shorter), numbered from
/// `firstRecord`, laid end to end in the sequence space from `runStart`: record i carries the file bytes
/// from `offset + i * recordPlaintext` and starts at `runStart + i * (recordPlaintext + overhead)`. The host
/// chose all of it, so it knows every record's place; the NIC reads each record's plaintext, seals it with
/// the flow's TLS_KEYS and sends the part of it inside the range (a record cut by the range, or by a
/// retransmission, is sealed again whole and cut the same way, so the bytes are always the ones first sent).
public struct RecordSendRange: Hashable, Sendable {
    public var sequence: SequenceNumber
    public var length: UInt32
    public var runStart: SequenceNumber
    public var recordPlaintext: UInt16
    public var file: OffloadedFileID
    public var offset: UInt64
    public var runPlaintext: UInt64
    public var firstRecord: UInt64
    public var template: SegmentTemplate

    public init(
        sequence: SequenceNumber, length: UInt32, runStart: SequenceNumber, recordPlaintext: UInt16, file: OffloadedFileID,
        offset: UInt64, runPlaintext: UInt64, firstRecord: UInt64, template: SegmentTemplate
    ) {
        self.sequence = sequence
        self.length = length
        self.runStart = runStart
        self.recordPlaintext = recordPlaintext
        self.file = file
        self.offset = offset
        self.runPlaintext = runPlaintext
        self.firstRecord = firstRecord
        self.template = template
    }

    /// The most plaintext one record may carry (RFC 8446 §5.1).
    public static let maximumRecordPlaintext = 1 << 14

    /// The record geometry of the run this range is part of.
    public var run: TLSRecordRun {
        TLSRecordRun(start: runStart, recordPlaintext: Int(recordPlaintext), plaintext: runPlaintext, firstRecord: firstRecord,
                     file: file, offset: offset)
    }
}

/// A file range cut into TLS records laid end to end in the sequence space: where each record lies on the
/// wire and which file bytes it carries. Both halves compute the same answers from the same numbers.
public struct TLSRecordRun: Hashable, Sendable {
    public var start: SequenceNumber
    public var recordPlaintext: Int
    public var plaintext: UInt64
    public var firstRecord: UInt64
    public var file: OffloadedFileID
    public var offset: UInt64

    public init(start: SequenceNumber, recordPlaintext: Int, plaintext: UInt64, firstRecord: UInt64, file: OffloadedFileID, offset: UInt64) {
        self.start = start
        self.recordPlaintext = recordPlaintext
        self.plaintext = plaintext
        self.firstRecord = firstRecord
        self.file = file
        self.offset = offset
    }

    /// Records in the run.
    @inlinable public var recordCount: Int {
        recordPlaintext > 0 ? Int((plaintext + UInt64(recordPlaintext) - 1) / UInt64(recordPlaintext)) : 0
    }

    /// Wire bytes of the whole run.
    @inlinable public func wireLength(overhead: Int) -> Int { Int(plaintext) + recordCount * overhead }

    /// Plaintext bytes of record `index` (0-based within the run).
    @inlinable public func plaintextLength(ofRecord index: Int) -> Int {
        Int(min(UInt64(recordPlaintext), plaintext - UInt64(index) * UInt64(recordPlaintext)))
    }

    /// The index of the record holding wire byte `sequence`, and where that record starts.
    @inlinable public func record(containing sequence: SequenceNumber, overhead: Int) -> (index: Int, start: SequenceNumber) {
        let stride = recordPlaintext + overhead
        let index = (sequence - start) / stride
        return (index, start + index * stride)
    }
}
