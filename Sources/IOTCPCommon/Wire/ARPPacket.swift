/// An ARP packet for IPv4 over Ethernet (RFC 826), the only kind the stack answers.
public struct ARPRepr: Hashable, Sendable {
    public static let length = 28

    public struct Operation: RawRepresentable, Hashable, Sendable {
        public var rawValue: UInt16
        public init(rawValue: UInt16) { self.rawValue = rawValue }
        public static let request = Operation(rawValue: 1)
        public static let reply = Operation(rawValue: 2)
    }

    public var operation: Operation
    public var senderHardwareAddress: MACAddress
    public var senderProtocolAddress: IPv4Address
    public var targetHardwareAddress: MACAddress
    public var targetProtocolAddress: IPv4Address

    public init(
        operation: Operation, senderHardwareAddress: MACAddress, senderProtocolAddress: IPv4Address,
        targetHardwareAddress: MACAddress, targetProtocolAddress: IPv4Address
    ) {
        self.operation = operation
        self.senderHardwareAddress = senderHardwareAddress
        self.senderProtocolAddress = senderProtocolAddress
        self.targetHardwareAddress = targetHardwareAddress
        self.targetProtocolAddress = targetProtocolAddress
    }

    /// Parses the ARP payload of an Ethernet frame; trailing padding is ignored.
    public init(parsing bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.length else {
            throw .truncated(layer: .arp, needed: Self.length, available: bytes.count)
        }
        // Hardware type Ethernet (1), protocol IPv4, address lengths 6 and 4.
        guard bytes.bigEndianUInt16(at: 0) == 1, bytes.bigEndianUInt16(at: 2) == EtherType.ipv4.rawValue,
              bytes[4] == 6, bytes[5] == 4
        else { throw .unsupportedAddressFamily }
        operation = Operation(rawValue: bytes.bigEndianUInt16(at: 6))
        senderHardwareAddress = .load(from: bytes, at: 8)
        senderProtocolAddress = IPv4Address(rawValue: bytes.bigEndianUInt32(at: 14))
        targetHardwareAddress = .load(from: bytes, at: 18)
        targetProtocolAddress = IPv4Address(rawValue: bytes.bigEndianUInt32(at: 24))
    }

    public func emit(into buffer: UnsafeMutableRawBufferPointer) throws(WireError) {
        guard buffer.count >= Self.length else { throw .bufferTooSmall(needed: Self.length, available: buffer.count) }
        buffer.storeBigEndian(UInt16(1), at: 0)
        buffer.storeBigEndian(EtherType.ipv4.rawValue, at: 2)
        buffer[4] = 6
        buffer[5] = 4
        buffer.storeBigEndian(operation.rawValue, at: 6)
        senderHardwareAddress.store(to: buffer, at: 8)
        buffer.storeBigEndian(senderProtocolAddress.rawValue, at: 14)
        targetHardwareAddress.store(to: buffer, at: 18)
        buffer.storeBigEndian(targetProtocolAddress.rawValue, at: 24)
    }
}
