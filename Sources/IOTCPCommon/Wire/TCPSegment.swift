/// The control bits of a TCP header (RFC 9293 §3.1, plus ECN's CWR and ECE from RFC 3168).
public struct TCPFlags: OptionSet, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }

    public static let fin = TCPFlags(rawValue: 0x01)
    public static let syn = TCPFlags(rawValue: 0x02)
    public static let rst = TCPFlags(rawValue: 0x04)
    public static let psh = TCPFlags(rawValue: 0x08)
    public static let ack = TCPFlags(rawValue: 0x10)
    public static let urg = TCPFlags(rawValue: 0x20)
    public static let ece = TCPFlags(rawValue: 0x40)
    public static let cwr = TCPFlags(rawValue: 0x80)

    public var description: String {
        let names: [(TCPFlags, String)] = [
            (.fin, "FIN"), (.syn, "SYN"), (.rst, "RST"), (.psh, "PSH"), (.ack, "ACK"), (.urg, "URG"), (.ece, "ECE"), (.cwr, "CWR"),
        ]
        let set = names.filter { contains($0.0) }.map(\.1)
        return set.isEmpty ? "none" : set.joined(separator: "|")
    }
}

/// A checked view of a TCP segment: header, options and data.
public struct TCPSegmentView {
    public static let minimumHeaderLength = 20

    public let bytes: UnsafeRawBufferPointer

    /// Checks the fixed header and that the data offset lies within the segment.
    @inlinable
    public init(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.minimumHeaderLength else {
            throw .truncated(layer: .tcp, needed: Self.minimumHeaderLength, available: bytes.count)
        }
        let headerLength = Int(bytes[12] >> 4) * 4
        guard headerLength >= Self.minimumHeaderLength else { throw .badHeaderLength(layer: .tcp, value: headerLength) }
        guard headerLength <= bytes.count else {
            throw .truncated(layer: .tcp, needed: headerLength, available: bytes.count)
        }
        self.bytes = bytes
    }

    @inlinable public var sourcePort: UInt16 { bytes.bigEndianUInt16(at: 0) }
    @inlinable public var destinationPort: UInt16 { bytes.bigEndianUInt16(at: 2) }
    @inlinable public var sequenceNumber: SequenceNumber { SequenceNumber(bytes.bigEndianUInt32(at: 4)) }
    @inlinable public var acknowledgmentNumber: SequenceNumber { SequenceNumber(bytes.bigEndianUInt32(at: 8)) }
    @inlinable public var headerLength: Int { Int(bytes[12] >> 4) * 4 }
    @inlinable public var flags: TCPFlags { TCPFlags(rawValue: bytes[13]) }
    @inlinable public var window: UInt16 { bytes.bigEndianUInt16(at: 14) }
    @inlinable public var checksum: UInt16 { bytes.bigEndianUInt16(at: 16) }
    @inlinable public var urgentPointer: UInt16 { bytes.bigEndianUInt16(at: 18) }
    @inlinable public var optionBytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: bytes[Self.minimumHeaderLength..<headerLength])
    }
    @inlinable public var payload: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[headerLength...]) }

    /// The sequence space the segment occupies: its data plus one each for SYN and FIN.
    @inlinable public var sequenceLength: Int {
        payload.count + (flags.contains(.syn) ? 1 : 0) + (flags.contains(.fin) ? 1 : 0)
    }

    /// Whether the checksum verifies over the pseudo-header (IPv4's or IPv6's) and the whole segment.
    @inlinable
    public func checksumVerifies<Address: PseudoHeaderAddress>(source: Address, destination: Address) -> Bool {
        var sum = InternetChecksum()
        Address.addPseudoHeader(to: &sum, source: source, destination: destination, protocol: .tcp, length: bytes.count)
        sum.add(bytes: bytes)
        return sum.verifies
    }
}

/// The header fields and options of a TCP segment, to parse into and emit from. The data itself is not
/// held: the view gives it on parse, and on emit the caller places it after the header (the NIC reads it
/// from disk straight into that place), then calls `fillChecksum`.
public struct TCPRepr: Hashable, Sendable {
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var sequenceNumber: SequenceNumber
    /// Kept as sent even when ACK is clear, so parse and emit are exact inverses.
    public var acknowledgmentNumber: SequenceNumber
    public var flags: TCPFlags
    public var window: UInt16
    public var urgentPointer: UInt16
    public var options: TCPOptions

    public init(
        sourcePort: UInt16, destinationPort: UInt16, sequenceNumber: SequenceNumber,
        acknowledgmentNumber: SequenceNumber = SequenceNumber(0), flags: TCPFlags, window: UInt16,
        urgentPointer: UInt16 = 0, options: TCPOptions = TCPOptions()
    ) {
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.sequenceNumber = sequenceNumber
        self.acknowledgmentNumber = acknowledgmentNumber
        self.flags = flags
        self.window = window
        self.urgentPointer = urgentPointer
        self.options = options
    }

    /// Reads the header and its options from a checked view. The checksum is not verified here: the
    /// caller knows whether the device already did (`TCPSegmentView.checksumVerifies`).
    public init(_ segment: TCPSegmentView) throws(WireError) {
        self.init(
            sourcePort: segment.sourcePort, destinationPort: segment.destinationPort,
            sequenceNumber: segment.sequenceNumber, acknowledgmentNumber: segment.acknowledgmentNumber,
            flags: segment.flags, window: segment.window, urgentPointer: segment.urgentPointer,
            options: TCPOptions(leniently: segment.optionBytes))
    }

    public var headerLength: Int { TCPSegmentView.minimumHeaderLength + options.encodedLength }

    /// Writes the header (checksum field zero) at the start of `buffer`; returns its length.
    @discardableResult
    public func emitHeader(into buffer: UnsafeMutableRawBufferPointer) throws(WireError) -> Int {
        let length = headerLength
        guard length <= 60 else { throw .optionsTooLong(options.encodedLength) }
        guard buffer.count >= length else { throw .bufferTooSmall(needed: length, available: buffer.count) }
        buffer.storeBigEndian(sourcePort, at: 0)
        buffer.storeBigEndian(destinationPort, at: 2)
        buffer.storeBigEndian(sequenceNumber.rawValue, at: 4)
        buffer.storeBigEndian(acknowledgmentNumber.rawValue, at: 8)
        buffer[12] = UInt8(length / 4) << 4
        buffer[13] = flags.rawValue
        buffer.storeBigEndian(window, at: 14)
        buffer.storeBigEndian(UInt16(0), at: 16)
        buffer.storeBigEndian(urgentPointer, at: 18)
        try options.emit(into: UnsafeMutableRawBufferPointer(rebasing: buffer[TCPSegmentView.minimumHeaderLength...]))
        return length
    }

    /// Computes and stores the checksum of a complete segment (header and data) in place, over IPv4 or IPv6.
    @inlinable
    public static func fillChecksum<Address: PseudoHeaderAddress>(
        segment: UnsafeMutableRawBufferPointer, source: Address, destination: Address
    ) {
        segment.storeBigEndian(UInt16(0), at: 16)
        var sum = InternetChecksum()
        Address.addPseudoHeader(to: &sum, source: source, destination: destination, protocol: .tcp, length: segment.count)
        sum.add(bytes: UnsafeRawBufferPointer(segment))
        segment.storeBigEndian(sum.checksum, at: 16)
    }

    /// Stores only the pseudo-header sum, as a device doing checksum offload (virtio's NEEDS_CSUM) expects.
    @inlinable
    public static func fillPseudoHeaderChecksum<Address: PseudoHeaderAddress>(
        segment: UnsafeMutableRawBufferPointer, source: Address, destination: Address
    ) {
        var sum = InternetChecksum()
        Address.addPseudoHeader(to: &sum, source: source, destination: destination, protocol: .tcp, length: segment.count)
        segment.storeBigEndian(sum.foldedSum, at: 16)
    }
}
