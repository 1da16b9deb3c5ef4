/// An IPv6 address (RFC 4291) as two host-order 64-bit halves, so it is cheap to copy, hash and compare:
/// `high` holds the first eight bytes on the wire, `low` the last eight.
public struct IPv6Address: Hashable, Sendable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64

    @inlinable public init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    /// The eight 16-bit groups as written in text, first to last.
    public init(groups: [UInt16]) {
        precondition(groups.count == 8, "an IPv6 address has eight groups")
        var high: UInt64 = 0, low: UInt64 = 0
        for group in groups[0..<4] { high = high << 16 | UInt64(group) }
        for group in groups[4..<8] { low = low << 16 | UInt64(group) }
        self.init(high: high, low: low)
    }

    public static let unspecified = IPv6Address(high: 0, low: 0)
    public static let loopback = IPv6Address(high: 0, low: 1)
    /// ff02::1, every node on the link.
    public static let allNodes = IPv6Address(high: 0xFF02 << 48, low: 1)
    /// ff02::2, every router on the link.
    public static let allRouters = IPv6Address(high: 0xFF02 << 48, low: 2)

    /// The 16-bit group at `index` (0 is the first written).
    @inlinable public func group(_ index: Int) -> UInt16 {
        let half = index < 4 ? high : low
        return UInt16(truncatingIfNeeded: half >> (UInt64(3 - index % 4) * 16))
    }

    @inlinable public var isUnspecified: Bool { high == 0 && low == 0 }
    @inlinable public var isLoopback: Bool { high == 0 && low == 1 }
    /// ff00::/8.
    @inlinable public var isMulticast: Bool { high >> 56 == 0xFF }
    /// fe80::/10.
    @inlinable public var isLinkLocal: Bool { high >> 54 == 0xFE80 >> 6 }
    /// ::ffff:0:0/96, an IPv4 address as a dual-stack socket shows it.
    @inlinable public var isIPv4Mapped: Bool { high == 0 && low >> 32 == 0xFFFF }

    /// The IPv4 address inside an IPv4-mapped address.
    public var ipv4Mapped: IPv4Address? {
        isIPv4Mapped ? IPv4Address(rawValue: UInt32(truncatingIfNeeded: low)) : nil
    }

    public init(ipv4Mapped address: IPv4Address) {
        self.init(high: 0, low: 0xFFFF << 32 | UInt64(address.rawValue))
    }

    /// ff02::1:ffXX:XXXX, where neighbour solicitations for this address are sent (RFC 4291 §2.7.1): the
    /// low 24 bits of the address after a fixed prefix.
    public var solicitedNodeMulticast: IPv6Address {
        IPv6Address(high: 0xFF02 << 48, low: 0x1_FF00_0000 | low & 0xFF_FFFF)
    }

    /// The Ethernet group address a multicast IPv6 address maps to (RFC 2464 §7): 33:33 and its last four bytes.
    public var multicastMAC: MACAddress {
        MACAddress(rawValue: 0x3333 << 32 | low & 0xFFFF_FFFF)
    }

    /// The link-local address formed from an Ethernet address by modified EUI-64 (RFC 4291 appendix A,
    /// RFC 2464 §4-5): ff:fe in the middle, the universal/local bit flipped.
    public init(linkLocalFor mac: MACAddress) {
        let identifier = (mac.rawValue >> 24) << 40 | 0xFF_FE00_0000 | mac.rawValue & 0xFF_FFFF
        self.init(high: 0xFE80 << 48, low: identifier ^ (1 << 57))
    }

    /// The address with all but its first `prefixLength` bits cleared.
    public func masked(prefixLength: Int) -> IPv6Address {
        let length = max(0, min(128, prefixLength))
        func mask(_ bits: Int) -> UInt64 { bits <= 0 ? 0 : bits >= 64 ? .max : ~(UInt64.max >> UInt64(bits)) }
        return IPv6Address(high: high & mask(length), low: low & mask(length - 64))
    }

    /// Whether both addresses share their first `prefixLength` bits.
    public func sharesPrefix(with other: IPv6Address, length: Int) -> Bool {
        masked(prefixLength: length) == other.masked(prefixLength: length)
    }

    @inlinable
    public static func load(from bytes: UnsafeRawBufferPointer, at offset: Int) -> IPv6Address {
        IPv6Address(high: UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self)),
                    low: UInt64(bigEndian: bytes.loadUnaligned(fromByteOffset: offset + 8, as: UInt64.self)))
    }

    @inlinable
    public func store(to bytes: UnsafeMutableRawBufferPointer, at offset: Int) {
        bytes.storeBytes(of: high.bigEndian, toByteOffset: offset, as: UInt64.self)
        bytes.storeBytes(of: low.bigEndian, toByteOffset: offset + 8, as: UInt64.self)
    }

    /// Parses the text forms of RFC 4291 §2.2: eight hexadecimal groups, `::` for one run of zero groups,
    /// and a dotted IPv4 address as the last 32 bits. Zone indices (`%eth0`) and brackets are not accepted.
    public init?(_ text: some StringProtocol) {
        let utf8 = Array(text.utf8)
        guard utf8.count >= 2, utf8.count <= 45 else { return nil }
        var groups: [UInt16] = []
        var gap: Int?  // where `::` stood, as a count of groups before it
        var index = 0
        if utf8.starts(with: [0x3A, 0x3A]) {
            gap = 0
            index = 2
            if index == utf8.count { self.init(high: 0, low: 0); return }
        } else if utf8[0] == 0x3A {
            return nil  // a single leading colon
        }
        while index < utf8.count {
            // One group, or a dotted IPv4 address that ends the text.
            var end = index
            while end < utf8.count, utf8[end] != 0x3A { end += 1 }
            let field = utf8[index..<end]
            if end == utf8.count, field.contains(0x2E) {
                guard let v4 = IPv4Address(String(decoding: field, as: UTF8.self)), groups.count <= 6 else { return nil }
                groups.append(UInt16(truncatingIfNeeded: v4.rawValue >> 16))
                groups.append(UInt16(truncatingIfNeeded: v4.rawValue))
                index = end
                break
            }
            guard !field.isEmpty, field.count <= 4 else { return nil }
            var value: UInt16 = 0
            for byte in field {
                guard let digit = Self.hexValue(byte) else { return nil }
                value = value << 4 | UInt16(digit)
            }
            groups.append(value)
            guard groups.count <= 8 else { return nil }
            index = end
            if index == utf8.count { break }
            index += 1  // the colon
            if index < utf8.count, utf8[index] == 0x3A {
                guard gap == nil else { return nil }  // `::` twice
                gap = groups.count
                index += 1
            } else if index == utf8.count {
                return nil  // a trailing single colon
            }
        }
        if let gap {
            guard groups.count <= 7 else { return nil }  // `::` stands for at least one group
            groups.insert(contentsOf: repeatElement(0, count: 8 - groups.count), at: gap)
        }
        guard groups.count == 8 else { return nil }
        self.init(groups: groups)
    }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 0x30...0x39: byte - 0x30
        case 0x61...0x66: byte - 0x61 + 10
        case 0x41...0x46: byte - 0x41 + 10
        default: nil
        }
    }

    /// The canonical text of RFC 5952: lowercase, no leading zeros, the longest run of two or more zero
    /// groups (the first of equals) as `::`, and IPv4-mapped addresses with their IPv4 part dotted.
    public var description: String {
        if let v4 = ipv4Mapped { return "::ffff:\(v4)" }
        let groups = (0..<8).map { group($0) }
        var bestStart = -1, bestLength = 0, runStart = -1
        for index in 0...8 {
            if index < 8, groups[index] == 0 {
                if runStart < 0 { runStart = index }
            } else if runStart >= 0 {
                if index - runStart > bestLength { bestStart = runStart; bestLength = index - runStart }
                runStart = -1
            }
        }
        func hex(_ range: Range<Int>) -> String { groups[range].map { String($0, radix: 16) }.joined(separator: ":") }
        guard bestLength >= 2 else { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLength)..<8)
    }
}
