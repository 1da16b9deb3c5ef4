/// The protocol field of an IPv4 header.
public struct IPProtocol: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let icmp = IPProtocol(rawValue: 1)
    public static let tcp = IPProtocol(rawValue: 6)
    public static let udp = IPProtocol(rawValue: 17)
}

/// A checked view of an IPv4 packet (RFC 791).
///
/// Construction verifies everything a reader relies on: version 4, a header length within the packet, a
/// total length within the buffer, no fragment, and (unless asked not to) the header checksum. Options
/// are skipped, not interpreted. Bytes past the total length (Ethernet padding) are not part of `payload`.
public struct IPv4PacketView {
    public static let minimumHeaderLength = 20

    /// The packet, cut to its total length.
    public let bytes: UnsafeRawBufferPointer

    @inlinable
    public init(_ bytes: UnsafeRawBufferPointer, verifyChecksum: Bool = true) throws(WireError) {
        guard bytes.count >= Self.minimumHeaderLength else {
            throw .truncated(layer: .ipv4, needed: Self.minimumHeaderLength, available: bytes.count)
        }
        let versionAndLength = bytes[0]
        guard versionAndLength >> 4 == 4 else { throw .unsupportedVersion(versionAndLength >> 4) }
        let headerLength = Int(versionAndLength & 0x0F) * 4
        guard headerLength >= Self.minimumHeaderLength else { throw .badHeaderLength(layer: .ipv4, value: headerLength) }
        guard headerLength <= bytes.count else {
            throw .truncated(layer: .ipv4, needed: headerLength, available: bytes.count)
        }
        let totalLength = Int(bytes.bigEndianUInt16(at: 2))
        guard totalLength >= headerLength else { throw .badTotalLength(totalLength) }
        guard totalLength <= bytes.count else {
            throw .truncated(layer: .ipv4, needed: totalLength, available: bytes.count)
        }
        // More-fragments set or a non-zero offset: a fragment.
        guard bytes.bigEndianUInt16(at: 6) & 0x3FFF == 0 else { throw .fragmented }
        let packet = UnsafeRawBufferPointer(rebasing: bytes[0..<totalLength])
        if verifyChecksum {
            var sum = InternetChecksum()
            sum.add(bytes: UnsafeRawBufferPointer(rebasing: packet[0..<headerLength]))
            guard sum.verifies else { throw .badChecksum(layer: .ipv4) }
        }
        self.bytes = packet
    }

    @inlinable public var headerLength: Int { Int(bytes[0] & 0x0F) * 4 }
    @inlinable public var typeOfService: UInt8 { bytes[1] }
    @inlinable public var totalLength: Int { bytes.count }
    @inlinable public var identification: UInt16 { bytes.bigEndianUInt16(at: 4) }
    @inlinable public var dontFragment: Bool { bytes[6] & 0x40 != 0 }
    @inlinable public var timeToLive: UInt8 { bytes[8] }
    @inlinable public var `protocol`: IPProtocol { IPProtocol(rawValue: bytes[9]) }
    @inlinable public var headerChecksum: UInt16 { bytes.bigEndianUInt16(at: 10) }
    @inlinable public var source: IPv4Address { IPv4Address(rawValue: bytes.bigEndianUInt32(at: 12)) }
    @inlinable public var destination: IPv4Address { IPv4Address(rawValue: bytes.bigEndianUInt32(at: 16)) }
    @inlinable public var payload: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[headerLength...]) }
}

/// The fields of an IPv4 header that the stack reads and writes. Emitted headers carry no options.
public struct IPv4Repr: Hashable, Sendable {
    public var source: IPv4Address
    public var destination: IPv4Address
    public var `protocol`: IPProtocol
    public var payloadLength: Int
    public var timeToLive: UInt8
    public var typeOfService: UInt8
    public var identification: UInt16
    public var dontFragment: Bool

    @inlinable
    public init(
        source: IPv4Address, destination: IPv4Address, protocol: IPProtocol, payloadLength: Int,
        timeToLive: UInt8 = 64, typeOfService: UInt8 = 0, identification: UInt16 = 0, dontFragment: Bool = true
    ) {
        self.source = source
        self.destination = destination
        self.protocol = `protocol`
        self.payloadLength = payloadLength
        self.timeToLive = timeToLive
        self.typeOfService = typeOfService
        self.identification = identification
        self.dontFragment = dontFragment
    }

    @inlinable
    public init(_ packet: IPv4PacketView) {
        self.init(
            source: packet.source, destination: packet.destination, protocol: packet.protocol,
            payloadLength: packet.totalLength - packet.headerLength, timeToLive: packet.timeToLive,
            typeOfService: packet.typeOfService, identification: packet.identification,
            dontFragment: packet.dontFragment)
    }

    public static let headerLength = 20

    /// Writes the 20-byte header, checksum included, at the start of `buffer`.
    @inlinable
    public func emit(into buffer: UnsafeMutableRawBufferPointer) throws(WireError) {
        guard buffer.count >= Self.headerLength else {
            throw .bufferTooSmall(needed: Self.headerLength, available: buffer.count)
        }
        let totalLength = Self.headerLength + payloadLength
        guard totalLength <= Int(UInt16.max) else {
            throw .bufferTooSmall(needed: totalLength, available: Int(UInt16.max))
        }
        buffer[0] = 0x45
        buffer[1] = typeOfService
        buffer.storeBigEndian(UInt16(totalLength), at: 2)
        buffer.storeBigEndian(identification, at: 4)
        buffer.storeBigEndian(dontFragment ? UInt16(0x4000) : 0, at: 6)
        buffer[8] = timeToLive
        buffer[9] = `protocol`.rawValue
        buffer.storeBigEndian(UInt16(0), at: 10)
        buffer.storeBigEndian(source.rawValue, at: 12)
        buffer.storeBigEndian(destination.rawValue, at: 16)
        let checksum = InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: buffer[0..<Self.headerLength]))
        buffer.storeBigEndian(checksum, at: 10)
    }

    /// Sums an IPv4 header again after its fields changed in place: `header` is the whole header, options
    /// included (its length from the IHL).
    @inlinable
    public static func fillChecksum(header: UnsafeMutableRawBufferPointer) {
        header.storeBigEndian(UInt16(0), at: 10)
        header.storeBigEndian(InternetChecksum.checksum(UnsafeRawBufferPointer(header)), at: 10)
    }
}
