/// A TCP sequence number: 32-bit arithmetic modulo 2^32 (RFC 9293 §3.4).
///
/// Comparisons are by signed distance, so they stay right across wrap-around for any two numbers less
/// than 2^31 apart, which the window rules guarantee. That order is not transitive over the whole
/// circle, so the type deliberately does not conform to `Comparable` (a sort over it would be wrong).
public struct SequenceNumber: Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32

    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    @inlinable public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    /// Signed distance from `other` to `self`: positive when `self` is after `other`.
    @inlinable
    public func distance(from other: SequenceNumber) -> Int32 {
        Int32(bitPattern: rawValue &- other.rawValue)
    }

    @inlinable
    public static func + (lhs: SequenceNumber, rhs: UInt32) -> SequenceNumber {
        SequenceNumber(rawValue: lhs.rawValue &+ rhs)
    }

    @inlinable
    public static func + (lhs: SequenceNumber, rhs: Int) -> SequenceNumber {
        SequenceNumber(rawValue: lhs.rawValue &+ UInt32(truncatingIfNeeded: rhs))
    }

    @inlinable
    public static func += (lhs: inout SequenceNumber, rhs: Int) { lhs = lhs + rhs }

    @inlinable
    public static func - (lhs: SequenceNumber, rhs: Int) -> SequenceNumber {
        SequenceNumber(rawValue: lhs.rawValue &- UInt32(truncatingIfNeeded: rhs))
    }

    /// The number of sequence numbers from `rhs` up to `lhs`; negative if `lhs` is before `rhs`.
    @inlinable
    public static func - (lhs: SequenceNumber, rhs: SequenceNumber) -> Int {
        Int(lhs.distance(from: rhs))
    }

    @inlinable public static func < (lhs: SequenceNumber, rhs: SequenceNumber) -> Bool { lhs.distance(from: rhs) < 0 }
    @inlinable public static func <= (lhs: SequenceNumber, rhs: SequenceNumber) -> Bool { lhs.distance(from: rhs) <= 0 }
    @inlinable public static func > (lhs: SequenceNumber, rhs: SequenceNumber) -> Bool { lhs.distance(from: rhs) > 0 }
    @inlinable public static func >= (lhs: SequenceNumber, rhs: SequenceNumber) -> Bool { lhs.distance(from: rhs) >= 0 }

    /// The later of two sequence numbers.
    @inlinable
    public static func max(_ a: SequenceNumber, _ b: SequenceNumber) -> SequenceNumber { a > b ? a : b }

    /// The earlier of two sequence numbers.
    @inlinable
    public static func min(_ a: SequenceNumber, _ b: SequenceNumber) -> SequenceNumber { a < b ? a : b }

    /// Whether `self` lies in `[start, end)`, measured around the circle from `start`.
    @inlinable
    public func isIn(_ start: SequenceNumber, upTo end: SequenceNumber) -> Bool {
        rawValue &- start.rawValue < end.rawValue &- start.rawValue
    }

    public var description: String { String(rawValue) }
}
