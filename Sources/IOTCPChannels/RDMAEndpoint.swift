import Glibc
import IOTCPCommon

/// Where an RDMA channel's NIC side listens: `rdma://IPv4:PORT` or `rdma://[IPv6]:PORT`, an address of an
/// RDMA-capable interface (RoCE: an IP address of the Ethernet device under it) and an rdma_cm port.
public struct RDMAEndpoint: Hashable, Sendable, CustomStringConvertible {
    /// The address, of either family (an RDMA device's: RoCE carries both).
    public let address: IPAddress
    public let port: UInt16

    public init(address: IPAddress, port: UInt16) {
        self.address = address
        self.port = port
    }

    /// An IPv4 endpoint, most significant byte first.
    public init(addressBits: UInt32, port: UInt16) {
        self.init(address: IPAddress(IPv4Address(rawValue: addressBits)), port: port)
    }

    /// The IPv4 address, most significant byte first; 0 for an IPv6 endpoint.
    public var addressBits: UInt32 { address.ipv4?.rawValue ?? 0 }

    public static let scheme = "rdma://"

    /// Parses `rdma://A.B.C.D:PORT` or `rdma://[IPv6]:PORT`; the error says what is wrong with the text.
    public init(parsing text: String) throws(RDMAEndpointError) {
        guard text.hasPrefix(Self.scheme) else { throw .init("\(text) does not start with \(Self.scheme)") }
        let rest = text.dropFirst(Self.scheme.count)
        guard let colon = rest.lastIndex(of: ":") else { throw .init("\(text) has no :PORT") }
        let host = rest[..<colon], portText = rest[rest.index(after: colon)...]
        guard let port = UInt16(portText), port > 0 else { throw .init("\(text): port \(portText) is not 1 to 65535") }
        if host.hasPrefix("[") {
            // RFC 3986 §3.2.2: an IPv6 literal in brackets (no zone: RoCE addresses are routable ones).
            guard host.hasSuffix("]"), host.count > 2, let v6 = IPv6Address(host.dropFirst().dropLast()), !v6.isIPv4Mapped else {
                throw .init("\(text): \(host) is not an IPv6 address in brackets ([fd00::1])")
            }
            self.init(address: IPAddress(v6), port: port)
            return
        }
        guard let bits = Self.parseIPv4(host) else {
            throw .init("\(text): \(host) is not an IPv4 address (A.B.C.D) nor an IPv6 one in brackets ([fd00::1])")
        }
        self.init(addressBits: bits, port: port)
    }

    /// Parses a dotted IPv4 address: four decimal numbers of 0 to 255, no leading zeros beyond "0".
    public static func parseIPv4(_ text: Substring) -> UInt32? {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var bits: UInt32 = 0
        for part in parts {
            guard !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                  part.count == 1 || part.first != "0", let value = UInt8(part)
            else { return nil }
            bits = bits << 8 | UInt32(value)
        }
        return bits
    }

    /// The address as a URL writes it: IPv6 in brackets.
    public var addressText: String { address.urlHost }

    public var description: String { "\(Self.scheme)\(addressText):\(port)" }
}

public struct RDMAEndpointError: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}

/// An endpoint as the connection manager takes it: a `sockaddr_in` or a `sockaddr_in6`, in storage big
/// enough for either.
public struct RDMASocketAddress {
    private var storage = sockaddr_storage()
    public let length: socklen_t

    public init(_ endpoint: RDMAEndpoint) {
        if let v4 = endpoint.address.ipv4 {
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = endpoint.port.bigEndian
            address.sin_addr.s_addr = v4.rawValue.bigEndian
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
            withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: address, as: sockaddr_in.self) }
        } else {
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = endpoint.port.bigEndian
            withUnsafeMutableBytes(of: &address.sin6_addr) { endpoint.address.bits.store(to: $0, at: 0) }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
            withUnsafeMutableBytes(of: &storage) { $0.storeBytes(of: address, as: sockaddr_in6.self) }
        }
    }

    /// The address for a call that reads it.
    public func withSocketAddress<Result>(_ body: (UnsafePointer<sockaddr>, socklen_t) throws -> Result) rethrows -> Result {
        var copy = storage
        return try withUnsafePointer(to: &copy) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0, length) }
        }
    }

    /// The address for a C call that takes a mutable pointer (rdma_cm's).
    public mutating func withMutableSocketAddress<Result>(_ body: (UnsafeMutablePointer<sockaddr>) throws -> Result) rethrows -> Result {
        try withUnsafeMutablePointer(to: &storage) { pointer in
            try pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { try body($0) }
        }
    }
}
