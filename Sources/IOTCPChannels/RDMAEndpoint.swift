/// Where an RDMA channel's NIC side listens: `rdma://IPv4:PORT`, an address of an RDMA-capable interface
/// (RoCE: an IP address of the Ethernet device under it) and an rdma_cm port.
public struct RDMAEndpoint: Hashable, Sendable, CustomStringConvertible {
    /// The IPv4 address, most significant byte first.
    public let addressBits: UInt32
    public let port: UInt16

    public init(addressBits: UInt32, port: UInt16) {
        self.addressBits = addressBits
        self.port = port
    }

    public static let scheme = "rdma://"

    /// Parses `rdma://A.B.C.D:PORT`; the error says what is wrong with the text.
    public init(parsing text: String) throws(RDMAEndpointError) {
        guard text.hasPrefix(Self.scheme) else { throw .init("\(text) does not start with \(Self.scheme)") }
        let rest = text.dropFirst(Self.scheme.count)
        guard let colon = rest.lastIndex(of: ":") else { throw .init("\(text) has no :PORT") }
        let host = rest[..<colon], portText = rest[rest.index(after: colon)...]
        guard let port = UInt16(portText), port > 0 else { throw .init("\(text): port \(portText) is not 1 to 65535") }
        guard let bits = Self.parseIPv4(host) else { throw .init("\(text): \(host) is not an IPv4 address (A.B.C.D)") }
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

    public var addressText: String {
        [24, 16, 8, 0].map { String(UInt8(truncatingIfNeeded: addressBits >> $0)) }.joined(separator: ".")
    }

    public var description: String { "\(Self.scheme)\(addressText):\(port)" }
}

public struct RDMAEndpointError: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
