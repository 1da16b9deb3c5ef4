/// SipHash-2-4 (Aumasson and Bernstein): a keyed hash that an attacker who does not know the key cannot
/// steer. Used for initial sequence numbers (RFC 6528) and SYN cookies (RFC 4987), where a predictable
/// function would let an off-path attacker guess sequence numbers or forge cookies. Both halves use it: the
/// host for its ISNs, either half for cookies (the NIC answers SYNs itself when the host asks it to).
public struct SipHasher24 {
    private var v0: UInt64, v1: UInt64, v2: UInt64, v3: UInt64
    private var tail: UInt64 = 0
    private var tailBytes = 0
    private var length = 0

    public init(key0: UInt64, key1: UInt64) {
        v0 = key0 ^ 0x736F_6D65_7073_6575
        v1 = key1 ^ 0x646F_7261_6E64_6F6D
        v2 = key0 ^ 0x6C79_6765_6E65_7261
        v3 = key1 ^ 0x7465_6462_7974_6573
    }

    private mutating func round() {
        v0 &+= v1; v1 = v1.rotatedLeft(13); v1 ^= v0; v0 = v0.rotatedLeft(32)
        v2 &+= v3; v3 = v3.rotatedLeft(16); v3 ^= v2
        v0 &+= v3; v3 = v3.rotatedLeft(21); v3 ^= v0
        v2 &+= v1; v1 = v1.rotatedLeft(17); v1 ^= v2; v2 = v2.rotatedLeft(32)
    }

    private mutating func compress(_ word: UInt64) {
        v3 ^= word
        round(); round()
        v0 ^= word
    }

    /// Adds the bytes of `value`, least significant first.
    /// An address as its family writes it: IPv4's four bytes, or IPv6's sixteen.
    public mutating func combine(_ address: IPAddress) {
        if let v4 = address.ipv4 {
            combine(v4.rawValue)
        } else {
            combine(address.bits.high)
            combine(address.bits.low)
        }
    }

    public mutating func combine<T: FixedWidthInteger>(_ value: T) {
        var remaining = UInt64(truncatingIfNeeded: value)
        for _ in 0..<(T.bitWidth / 8) {
            tail |= (remaining & 0xFF) << UInt64(8 * tailBytes)
            remaining >>= 8
            tailBytes += 1
            length += 1
            if tailBytes == 8 {
                compress(tail)
                tail = 0
                tailBytes = 0
            }
        }
    }

    public consuming func finalize() -> UInt64 {
        compress(tail | UInt64(truncatingIfNeeded: length) << 56)
        v2 ^= 0xFF
        round(); round(); round(); round()
        return v0 ^ v1 ^ v2 ^ v3
    }
}

extension UInt64 {
    @inline(__always) fileprivate func rotatedLeft(_ count: UInt64) -> UInt64 { (self << count) | (self >> (64 - count)) }
}
