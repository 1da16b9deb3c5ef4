extension IPProtocol {
    /// IPv6 Next Header values of the extension headers the parser walks (RFC 8200 §4), and ICMPv6's.
    public static let hopByHopOptions = IPProtocol(rawValue: 0)
    public static let routing = IPProtocol(rawValue: 43)
    public static let fragment = IPProtocol(rawValue: 44)
    public static let icmpv6 = IPProtocol(rawValue: 58)
    public static let noNextHeader = IPProtocol(rawValue: 59)
    public static let destinationOptions = IPProtocol(rawValue: 60)
}

/// A checked view of an IPv6 packet (RFC 8200), its extension headers walked to the upper layer.
///
/// Construction verifies version 6 and a payload length within the buffer, and walks the extension headers
/// a host must process: Hop-by-Hop Options (first only) and Destination Options, whose options are read by
/// their type bits (Pad1, PadN and Router Alert are known; an unknown one is skipped or discards the packet
/// as its two high bits say); a Routing header (accepted only with no segments left: the stack routes
/// nothing); a Fragment header (accepted only as an atomic fragment, RFC 6946, since the stack does not
/// reassemble). Any other Next Header value ends the walk as the upper layer: TCP, ICMPv6, or one the
/// caller does not know and answers with a Parameter Problem at `upperLayerPointer`. Errors carry the
/// offset a Parameter Problem needs (`WireError.ipv6ParameterProblem`). Bytes past the payload length
/// (Ethernet padding) are not part of the packet.
public struct IPv6PacketView {
    public static let headerLength = 40

    /// The packet, cut to its header and payload length.
    public let bytes: UnsafeRawBufferPointer
    /// Where the upper-layer header starts, after any extension headers.
    public let upperLayerOffset: Int
    /// The protocol of the upper layer.
    public let upperLayerProtocol: IPProtocol
    /// The offset of the Next Header field that names the upper layer (6 when there are no extension headers).
    public let upperLayerPointer: Int

    @inlinable
    public init(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.headerLength else {
            throw .truncated(layer: .ipv6, needed: Self.headerLength, available: bytes.count)
        }
        guard bytes[0] >> 4 == 6 else { throw .unsupportedVersion(bytes[0] >> 4) }
        let total = Self.headerLength + Int(bytes.bigEndianUInt16(at: 4))
        guard total <= bytes.count else { throw .truncated(layer: .ipv6, needed: total, available: bytes.count) }
        let packet = UnsafeRawBufferPointer(rebasing: bytes[0..<total])
        var next = IPProtocol(rawValue: packet[6])
        var pointer = 6
        var offset = Self.headerLength
        walk: while true {
            switch next {
            case .hopByHopOptions, .destinationOptions:
                if next == .hopByHopOptions && offset != Self.headerLength {
                    throw .unrecognizedNextHeader(next.rawValue, pointer: pointer)
                }
                let end = try Self.extensionHeaderEnd(packet, at: offset, unit: 8, extra: 1)
                try Self.checkOptions(packet, from: offset + 2, to: end, hopByHop: next == .hopByHopOptions)
                pointer = offset
                next = IPProtocol(rawValue: packet[offset])
                offset = end
            case .routing:
                let end = try Self.extensionHeaderEnd(packet, at: offset, unit: 8, extra: 1)
                guard end - offset >= 4 else { throw .truncated(layer: .ipv6, needed: offset + 4, available: total) }
                // Segments left: a node that is not the final destination would have to route it on.
                if packet[offset + 3] != 0 { throw .unsupportedRoutingHeader(type: packet[offset + 2], pointer: offset + 2) }
                pointer = offset
                next = IPProtocol(rawValue: packet[offset])
                offset = end
            case .fragment:
                guard offset + 8 <= total else { throw .truncated(layer: .ipv6, needed: offset + 8, available: total) }
                // Fragment offset and More Fragments both zero: an atomic fragment, the whole packet.
                guard packet.bigEndianUInt16(at: offset + 2) & 0xFFF9 == 0 else { throw .fragmented }
                pointer = offset
                next = IPProtocol(rawValue: packet[offset])
                offset += 8
            default:
                break walk
            }
        }
        self.bytes = packet
        self.upperLayerOffset = offset
        self.upperLayerProtocol = next
        self.upperLayerPointer = pointer
    }

    /// The end of the extension header at `offset` from its length byte (`(length + extra) * unit` bytes).
    @inlinable
    static func extensionHeaderEnd(_ packet: UnsafeRawBufferPointer, at offset: Int, unit: Int, extra: Int) throws(WireError) -> Int {
        guard offset + 2 <= packet.count else { throw .truncated(layer: .ipv6, needed: offset + 2, available: packet.count) }
        let end = offset + (Int(packet[offset + 1]) + extra) * unit
        guard end <= packet.count else { throw .truncated(layer: .ipv6, needed: end, available: packet.count) }
        return end
    }

    /// Reads the type-length-value options of a Hop-by-Hop or Destination Options header (RFC 8200 §4.2).
    @inlinable
    static func checkOptions(_ packet: UnsafeRawBufferPointer, from start: Int, to end: Int, hopByHop: Bool) throws(WireError) {
        var index = start
        while index < end {
            let type = packet[index]
            if type == 0 { index += 1; continue }  // Pad1
            guard index + 2 <= end, index + 2 + Int(packet[index + 1]) <= end else { throw .badExtensionHeader(pointer: index) }
            switch type {
            case 1: break  // PadN
            case 5 where hopByHop: break  // Router Alert (RFC 2711): MLD carries it; nothing for a host to do
            default:
                // 00: skip it and go on; 01, 10, 11: discard the packet (10 and 11 with a Parameter Problem).
                if type >> 6 != 0 { throw .unrecognizedIPv6Option(type: type, pointer: index) }
            }
            index += 2 + Int(packet[index + 1])
        }
    }

    @inlinable public var trafficClass: UInt8 { UInt8(truncatingIfNeeded: bytes.bigEndianUInt16(at: 0) >> 4) }
    @inlinable public var flowLabel: UInt32 { bytes.bigEndianUInt32(at: 0) & 0xF_FFFF }
    /// The length after the fixed header: extension headers and the upper layer.
    @inlinable public var payloadLength: Int { bytes.count - Self.headerLength }
    /// The Next Header field of the fixed header (the first extension header's type, or the upper layer's).
    @inlinable public var nextHeader: IPProtocol { IPProtocol(rawValue: bytes[6]) }
    @inlinable public var hopLimit: UInt8 { bytes[7] }
    @inlinable public var source: IPv6Address { IPv6Address.load(from: bytes, at: 8) }
    @inlinable public var destination: IPv6Address { IPv6Address.load(from: bytes, at: 24) }
    @inlinable public var hasExtensionHeaders: Bool { upperLayerOffset != Self.headerLength }
    /// The upper layer's bytes: what its checksum's pseudo-header counts as the upper-layer length.
    @inlinable public var upperLayer: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[upperLayerOffset...]) }
}

/// The fixed IPv6 header's fields that the stack reads and writes. Emitted headers carry no extension headers.
public struct IPv6Repr: Hashable, Sendable {
    public var source: IPv6Address
    public var destination: IPv6Address
    public var nextHeader: IPProtocol
    /// The bytes after the fixed header.
    public var payloadLength: Int
    public var hopLimit: UInt8
    public var trafficClass: UInt8
    /// The low 20 bits are used.
    public var flowLabel: UInt32

    @inlinable
    public init(
        source: IPv6Address, destination: IPv6Address, nextHeader: IPProtocol, payloadLength: Int,
        hopLimit: UInt8 = 64, trafficClass: UInt8 = 0, flowLabel: UInt32 = 0
    ) {
        self.source = source
        self.destination = destination
        self.nextHeader = nextHeader
        self.payloadLength = payloadLength
        self.hopLimit = hopLimit
        self.trafficClass = trafficClass
        self.flowLabel = flowLabel & 0xF_FFFF
    }

    @inlinable
    public init(_ packet: IPv6PacketView) {
        self.init(
            source: packet.source, destination: packet.destination, nextHeader: packet.nextHeader,
            payloadLength: packet.payloadLength, hopLimit: packet.hopLimit, trafficClass: packet.trafficClass,
            flowLabel: packet.flowLabel)
    }

    public static let headerLength = IPv6PacketView.headerLength

    /// Writes the 40-byte header at the start of `buffer`.
    @inlinable
    public func emit(into buffer: UnsafeMutableRawBufferPointer) throws(WireError) {
        guard buffer.count >= Self.headerLength else {
            throw .bufferTooSmall(needed: Self.headerLength, available: buffer.count)
        }
        guard payloadLength <= Int(UInt16.max) else {
            throw .bufferTooSmall(needed: Self.headerLength + payloadLength, available: Self.headerLength + Int(UInt16.max))
        }
        buffer.storeBigEndian(6 << 28 | UInt32(trafficClass) << 20 | flowLabel & 0xF_FFFF, at: 0)
        buffer.storeBigEndian(UInt16(payloadLength), at: 4)
        buffer[6] = nextHeader.rawValue
        buffer[7] = hopLimit
        source.store(to: buffer, at: 8)
        destination.store(to: buffer, at: 24)
    }
}
