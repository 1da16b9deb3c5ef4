/// Why bytes could not be read as a packet of some layer, or a packet could not be written.
///
/// Parsers return these instead of trapping, whatever the input; a received frame that fails is
/// dropped and counted by the caller.
public enum WireError: Error, Equatable, Hashable, Sendable, CustomStringConvertible {
    /// Fewer bytes than the fixed part of the header, or than a length field promises.
    case truncated(layer: Layer, needed: Int, available: Int)
    /// The IP version nibble is not the one the parser reads (4 for IPv4, 6 for IPv6).
    case unsupportedVersion(UInt8)
    /// A header-length field smaller than the minimum header or larger than the packet.
    case badHeaderLength(layer: Layer, value: Int)
    /// An IPv4 total length smaller than its header.
    case badTotalLength(Int)
    /// An IPv4 fragment or a non-atomic IPv6 one: the stack does not reassemble, and a peer doing path MTU
    /// discovery never sends one.
    case fragmented
    /// The Internet checksum does not verify.
    case badChecksum(layer: Layer)
    /// An ARP packet for a hardware or protocol address other than Ethernet and IPv4.
    case unsupportedAddressFamily
    /// A TCP option whose length byte is impossible for its kind or runs past the header.
    case malformedOption(kind: UInt8)
    /// More options than fit in the 40 bytes a TCP header allows.
    case optionsTooLong(Int)
    /// The output buffer cannot hold what was asked to be written.
    case bufferTooSmall(needed: Int, available: Int)
    /// An IPv6 option of a type the stack does not know whose type bits (RFC 8200 §4.2) say to discard the
    /// packet. `pointer` is the option's offset from the start of the IPv6 header, for a Parameter Problem.
    case unrecognizedIPv6Option(type: UInt8, pointer: Int)
    /// An IPv6 Next Header value that cannot stand where it does (a Hop-by-Hop Options header after the
    /// first). `pointer` is the offset of the Next Header field that names it.
    case unrecognizedNextHeader(UInt8, pointer: Int)
    /// An IPv6 Routing header with segments left, of a type the stack does not route (it routes none).
    case unsupportedRoutingHeader(type: UInt8, pointer: Int)
    /// An IPv6 extension header whose options run past its end.
    case badExtensionHeader(pointer: Int)
    /// A Neighbor Discovery option of length zero (RFC 4861 §4.6): the message is discarded.
    case badNeighborDiscoveryOption(type: UInt8)

    public enum Layer: String, Sendable {
        case ethernet, arp, ipv4, icmp, tcp, ipv6, icmpv6
    }

    /// The ICMPv6 Parameter Problem (RFC 4443 §3.4) that reports this error to the packet's sender, if RFC
    /// 8200 asks for one: its code and pointer, and whether it goes out even when the packet was sent to a
    /// multicast address (only for options whose type says so).
    public var ipv6ParameterProblem: (code: UInt8, pointer: Int, evenToMulticast: Bool)? {
        switch self {
        case .unsupportedRoutingHeader(_, let pointer), .badExtensionHeader(let pointer): (0, pointer, false)
        case .unrecognizedNextHeader(_, let pointer): (1, pointer, false)
        case .unrecognizedIPv6Option(let type, let pointer):
            switch type >> 6 {
            case 2: (2, pointer, true)
            case 3: (2, pointer, false)
            default: nil  // 01: discarded silently (00 never throws: the option is skipped)
            }
        default: nil
        }
    }

    public var description: String {
        switch self {
        case .truncated(let layer, let needed, let available):
            return "\(layer.rawValue): truncated: needs \(needed) bytes, has \(available)"
        case .unsupportedVersion(let version):
            return "ip: version \(version) is not the one expected here"
        case .badHeaderLength(let layer, let value):
            return "\(layer.rawValue): impossible header length \(value)"
        case .badTotalLength(let value):
            return "ipv4: total length \(value) is shorter than the header"
        case .fragmented:
            return "ip: fragments are not reassembled"
        case .badChecksum(let layer):
            return "\(layer.rawValue): checksum does not verify"
        case .unsupportedAddressFamily:
            return "arp: only Ethernet/IPv4 ARP is supported"
        case .malformedOption(let kind):
            return "tcp: option \(kind) has an impossible length"
        case .optionsTooLong(let length):
            return "tcp: \(length) bytes of options exceed the 40 a header can carry"
        case .bufferTooSmall(let needed, let available):
            return "output buffer too small: needs \(needed) bytes, has \(available)"
        case .unrecognizedIPv6Option(let type, let pointer):
            return "ipv6: option type \(type) at byte \(pointer) is not known and asks for the packet to be discarded"
        case .unrecognizedNextHeader(let value, let pointer):
            return "ipv6: next header \(value) (named at byte \(pointer)) cannot stand there"
        case .unsupportedRoutingHeader(let type, let pointer):
            return "ipv6: routing header type \(type) at byte \(pointer) has segments left and is not routed"
        case .badExtensionHeader(let pointer):
            return "ipv6: the extension header's options overrun it at byte \(pointer)"
        case .badNeighborDiscoveryOption(let type):
            return "icmpv6: neighbor discovery option \(type) has length zero"
        }
    }
}
