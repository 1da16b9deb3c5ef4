/// Why bytes could not be read as a packet of some layer, or a packet could not be written.
///
/// Parsers return these instead of trapping, whatever the input; a received frame that fails is
/// dropped and counted by the caller.
public enum WireError: Error, Equatable, Hashable, Sendable, CustomStringConvertible {
    /// Fewer bytes than the fixed part of the header, or than a length field promises.
    case truncated(layer: Layer, needed: Int, available: Int)
    /// The IP version nibble is not 4.
    case unsupportedVersion(UInt8)
    /// A header-length field smaller than the minimum header or larger than the packet.
    case badHeaderLength(layer: Layer, value: Int)
    /// An IPv4 total length smaller than its header.
    case badTotalLength(Int)
    /// An IPv4 fragment: the stack does not reassemble, and a peer doing path MTU discovery never sends one.
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

    public enum Layer: String, Sendable {
        case ethernet, arp, ipv4, icmp, tcp
    }

    public var description: String {
        switch self {
        case .truncated(let layer, let needed, let available):
            return "\(layer.rawValue): truncated: needs \(needed) bytes, has \(available)"
        case .unsupportedVersion(let version):
            return "ipv4: IP version \(version) is not supported"
        case .badHeaderLength(let layer, let value):
            return "\(layer.rawValue): impossible header length \(value)"
        case .badTotalLength(let value):
            return "ipv4: total length \(value) is shorter than the header"
        case .fragmented:
            return "ipv4: fragments are not reassembled"
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
        }
    }
}
