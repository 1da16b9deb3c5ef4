/// The EtherType field of an Ethernet II frame.
public struct EtherType: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt16
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }
    public static let ipv4 = EtherType(rawValue: 0x0800)
    public static let arp = EtherType(rawValue: 0x0806)
    public static let ipv6 = EtherType(rawValue: 0x86DD)
}

/// A checked view of an Ethernet II frame (no preamble, no frame check sequence).
public struct EthernetFrameView {
    public static let headerLength = 14

    public let bytes: UnsafeRawBufferPointer

    /// Checks that `bytes` can hold an Ethernet header; reads nothing else.
    @inlinable
    public init(_ bytes: UnsafeRawBufferPointer) throws(WireError) {
        guard bytes.count >= Self.headerLength else {
            throw .truncated(layer: .ethernet, needed: Self.headerLength, available: bytes.count)
        }
        self.bytes = bytes
    }

    @inlinable public var destination: MACAddress { .load(from: bytes, at: 0) }
    @inlinable public var source: MACAddress { .load(from: bytes, at: 6) }
    @inlinable public var etherType: EtherType { EtherType(rawValue: bytes.bigEndianUInt16(at: 12)) }
    @inlinable public var payload: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: bytes[Self.headerLength...]) }
}

/// The fields of an Ethernet II header, to parse into and emit from.
public struct EthernetRepr: Hashable, Sendable {
    public var destination: MACAddress
    public var source: MACAddress
    public var etherType: EtherType

    @inlinable
    public init(destination: MACAddress, source: MACAddress, etherType: EtherType) {
        self.destination = destination
        self.source = source
        self.etherType = etherType
    }

    @inlinable
    public init(_ frame: EthernetFrameView) {
        self.init(destination: frame.destination, source: frame.source, etherType: frame.etherType)
    }

    /// Writes the 14-byte header at the start of `buffer`.
    @inlinable
    public func emit(into buffer: UnsafeMutableRawBufferPointer) throws(WireError) {
        guard buffer.count >= EthernetFrameView.headerLength else {
            throw .bufferTooSmall(needed: EthernetFrameView.headerLength, available: buffer.count)
        }
        destination.store(to: buffer, at: 0)
        source.store(to: buffer, at: 6)
        buffer.storeBigEndian(etherType.rawValue, at: 12)
    }
}
