/// An address family's pseudo-header (RFC 9293 §3.1 for IPv4, RFC 8200 §8.1 for IPv6), so checksums over
/// transport segments are written once for both.
public protocol PseudoHeaderAddress {
    static func addPseudoHeader(to sum: inout InternetChecksum, source: Self, destination: Self, protocol: IPProtocol, length: Int)
}

extension IPv4Address: PseudoHeaderAddress {
    @inlinable
    public static func addPseudoHeader(
        to sum: inout InternetChecksum, source: IPv4Address, destination: IPv4Address, protocol: IPProtocol, length: Int
    ) {
        sum.addPseudoHeader(source: source, destination: destination, protocol: `protocol`, length: length)
    }
}

extension IPv6Address: PseudoHeaderAddress {
    @inlinable
    public static func addPseudoHeader(
        to sum: inout InternetChecksum, source: IPv6Address, destination: IPv6Address, protocol: IPProtocol, length: Int
    ) {
        sum.addPseudoHeader(source: source, destination: destination, nextHeader: `protocol`, length: length)
    }
}

/// The Internet checksum (RFC 1071): the 16-bit one's-complement of the one's-complement sum.
///
/// The sum is byte-order independent (RFC 1071 §2(B)), so bytes are summed as native little-endian
/// 32-bit words into a 64-bit accumulator, which cannot overflow for any packet, and the result is
/// byte-swapped once at the end. That keeps the inner loop free of carries and shuffles and lets LLVM
/// vectorise it.
///
/// Values going in and out (`add(_:)`, `checksum`) are host integers holding a big-endian field: store
/// them with `storeBigEndian`.
public struct InternetChecksum: Sendable {
    /// Running sum in the little-endian domain, not yet folded.
    @usableFromInline var sum: UInt64 = 0
    /// Whether an odd number of bytes has been added: the next byte then belongs in the high half of a word.
    @usableFromInline var odd = false

    @inlinable public init() {}

    /// Adds bytes as if they followed those added before.
    @inlinable
    public mutating func add(bytes: UnsafeRawBufferPointer) {
        var chunk = UInt64(Self.fold(Self.littleEndianSum(bytes)))
        if odd { chunk = UInt64(UInt16(truncatingIfNeeded: chunk).byteSwapped) }
        sum &+= chunk
        if bytes.count & 1 == 1 { odd.toggle() }
    }

    /// Adds a 16-bit big-endian field given as a host integer. Only valid at an even byte position.
    @inlinable
    public mutating func add(_ value: UInt16) {
        sum &+= UInt64(value.byteSwapped)
    }

    /// Adds a 32-bit big-endian field given as a host integer. Only valid at an even byte position.
    @inlinable
    public mutating func add(_ value: UInt32) {
        add(UInt16(truncatingIfNeeded: value >> 16))
        add(UInt16(truncatingIfNeeded: value))
    }

    /// Adds a 64-bit big-endian field given as a host integer. Only valid at an even byte position.
    @inlinable
    public mutating func add(_ value: UInt64) {
        add(UInt32(truncatingIfNeeded: value >> 32))
        add(UInt32(truncatingIfNeeded: value))
    }

    /// Adds the TCP/UDP pseudo-header of RFC 9293 §3.1: addresses, protocol and upper-layer length.
    @inlinable
    public mutating func addPseudoHeader(
        source: IPv4Address, destination: IPv4Address, protocol: IPProtocol, length: Int
    ) {
        add(source.rawValue)
        add(destination.rawValue)
        add(UInt16(`protocol`.rawValue))
        add(UInt16(truncatingIfNeeded: length))
    }

    /// Adds the IPv6 pseudo-header of RFC 8200 §8.1: addresses, the upper-layer length as 32 bits, and the
    /// upper layer's Next Header value.
    @inlinable
    public mutating func addPseudoHeader(
        source: IPv6Address, destination: IPv6Address, nextHeader: IPProtocol, length: Int
    ) {
        add(source.high)
        add(source.low)
        add(destination.high)
        add(destination.low)
        add(UInt32(truncatingIfNeeded: length))
        add(UInt16(nextHeader.rawValue))
    }

    /// The checksum field's value: the complement of the folded sum, as a big-endian field in a host integer.
    @inlinable
    public var checksum: UInt16 {
        ~Self.fold(sum).byteSwapped
    }

    /// The folded sum without the final complement: what a checksum-offloading device expects to find
    /// in the field (the pseudo-header sum) before it adds the rest.
    @inlinable
    public var foldedSum: UInt16 {
        Self.fold(sum).byteSwapped
    }

    /// Whether data that includes its own checksum field verifies (sums to 0xFFFF).
    @inlinable
    public var verifies: Bool { Self.fold(sum) == 0xFFFF }

    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        var accumulator = InternetChecksum()
        accumulator.add(bytes: bytes)
        return accumulator.checksum
    }

    /// RFC 1624 eqn. 3: the new checksum after a 16-bit field changed from `old` to `new`, without
    /// summing the data again.
    @inlinable
    public static func update(checksum: UInt16, old: UInt16, new: UInt16) -> UInt16 {
        var sum = UInt32(~checksum) &+ UInt32(~old) &+ UInt32(new)
        sum = (sum & 0xFFFF) &+ (sum >> 16)
        sum = (sum & 0xFFFF) &+ (sum >> 16)
        return ~UInt16(truncatingIfNeeded: sum)
    }

    /// RFC 1624 for a 32-bit field (a sequence number or an address).
    @inlinable
    public static func update(checksum: UInt16, old: UInt32, new: UInt32) -> UInt16 {
        let high = update(checksum: checksum, old: UInt16(truncatingIfNeeded: old >> 16), new: UInt16(truncatingIfNeeded: new >> 16))
        return update(checksum: high, old: UInt16(truncatingIfNeeded: old), new: UInt16(truncatingIfNeeded: new))
    }

    @inlinable @inline(__always)
    static func fold(_ value: UInt64) -> UInt16 {
        var folded = (value & 0xFFFF_FFFF) &+ (value >> 32)
        folded = (folded & 0xFFFF) &+ (folded >> 16)
        folded = (folded & 0xFFFF) &+ (folded >> 16)
        folded = (folded & 0xFFFF) &+ (folded >> 16)
        return UInt16(truncatingIfNeeded: folded)
    }

    /// Sum of the bytes as little-endian 32-bit words (the tail as a 16-bit word and a low byte).
    @inlinable
    static func littleEndianSum(_ bytes: UnsafeRawBufferPointer) -> UInt64 {
        guard let base = bytes.baseAddress else { return 0 }
        let count = bytes.count
        var a: UInt64 = 0, b: UInt64 = 0, c: UInt64 = 0, d: UInt64 = 0
        var offset = 0
        // Four independent accumulators keep the adds out of each other's way; each adds 32-bit values
        // to a 64-bit sum, so no carry is ever lost for buffers below 16 GiB.
        while offset + 16 <= count {
            a &+= UInt64(base.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
            b &+= UInt64(base.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self))
            c &+= UInt64(base.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self))
            d &+= UInt64(base.loadUnaligned(fromByteOffset: offset + 12, as: UInt32.self))
            offset += 16
        }
        while offset + 4 <= count {
            a &+= UInt64(base.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
            offset += 4
        }
        if offset + 2 <= count {
            b &+= UInt64(base.loadUnaligned(fromByteOffset: offset, as: UInt16.self))
            offset += 2
        }
        if offset < count {
            c &+= UInt64(base.load(fromByteOffset: offset, as: UInt8.self))
        }
        return a &+ b &+ c &+ d
    }
}
