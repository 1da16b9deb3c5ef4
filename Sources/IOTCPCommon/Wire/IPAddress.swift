/// An address of either family, as a dual-stack TCP's tables hold one: 128 bits, with an IPv4 address kept
/// IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2), so one key, one hash and one comparison serve both.
/// IPv4-mapped addresses never appear in real IPv6 headers (RFC 4291 §2.5.5.2, RFC 6890): a packet
/// carrying one is refused where packets are parsed, so the two families cannot alias.
public struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// The address as IPv6 text would write it; IPv4 as `::ffff:a.b.c.d`.
    public let bits: IPv6Address

    @inlinable public init(_ address: IPv4Address) { bits = IPv6Address(ipv4Mapped: address) }

    /// An IPv6 address (an IPv4-mapped one is the IPv4 address it maps).
    @inlinable public init(_ address: IPv6Address) { bits = address }

    /// Parses `10.77.0.2` or `fd77::2`.
    public init?(_ text: some StringProtocol) {
        if let v4 = IPv4Address(text) {
            self.init(v4)
        } else if let v6 = IPv6Address(text) {
            self.init(v6)
        } else {
            return nil
        }
    }

    @inlinable public var isIPv4: Bool { bits.isIPv4Mapped }

    /// The IPv4 address, or nil for IPv6.
    @inlinable public var ipv4: IPv4Address? { bits.ipv4Mapped }

    /// The IPv6 address, or nil for IPv4.
    @inlinable public var ipv6: IPv6Address? { bits.isIPv4Mapped ? nil : bits }

    /// Dotted quad for IPv4, RFC 5952 text for IPv6.
    public var description: String { ipv4.map { "\($0)" } ?? "\(bits)" }

    /// As the host part of a URL or an `address:port` pair: IPv6 in brackets (RFC 3986 §3.2.2).
    public var urlHost: String { isIPv4 ? description : "[\(description)]" }

    /// The bytes of the IP header around a TCP segment of this family (the ones TCP's MSS leaves out).
    @inlinable public var headerLength: Int { isIPv4 ? IPv4Repr.headerLength : IPv6Repr.headerLength }

    /// The MSS for a peer of this family on the link whose IPv4 MSS is `ipv4SegmentSize` (the MTU less 40
    /// bytes): over IPv6, whose header is 20 bytes longer, 20 less, so full segments still fit the MTU.
    @inlinable public func segmentSize(matchingIPv4 ipv4SegmentSize: UInt16) -> UInt16 {
        isIPv4 ? ipv4SegmentSize : ipv4SegmentSize - UInt16(IPv6Repr.headerLength - IPv4Repr.headerLength)
    }

    /// Writes the IPv4 or IPv6 header (no options or extension headers) for `payloadLength` bytes of
    /// `protocol` from `source` to `destination`, both of one family; returns its length.
    @inlinable
    public static func emitHeader(
        into buffer: UnsafeMutableRawBufferPointer, source: IPAddress, destination: IPAddress, protocol: IPProtocol, payloadLength: Int
    ) throws(WireError) -> Int {
        if let source4 = source.ipv4, let destination4 = destination.ipv4 {
            try IPv4Repr(source: source4, destination: destination4, protocol: `protocol`, payloadLength: payloadLength).emit(into: buffer)
            return IPv4Repr.headerLength
        }
        try IPv6Repr(source: source.bits, destination: destination.bits, nextHeader: `protocol`, payloadLength: payloadLength).emit(into: buffer)
        return IPv6Repr.headerLength
    }
}

extension IPAddress: PseudoHeaderAddress {
    /// The pseudo-header of the pair's family; both must be of one family (a connection's always are).
    @inlinable
    public static func addPseudoHeader(
        to sum: inout InternetChecksum, source: IPAddress, destination: IPAddress, protocol: IPProtocol, length: Int
    ) {
        if let source4 = source.ipv4, let destination4 = destination.ipv4 {
            sum.addPseudoHeader(source: source4, destination: destination4, protocol: `protocol`, length: length)
        } else {
            sum.addPseudoHeader(source: source.bits, destination: destination.bits, nextHeader: `protocol`, length: length)
        }
    }
}
