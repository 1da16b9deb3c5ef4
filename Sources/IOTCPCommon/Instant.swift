/// A point in time in nanoseconds, on whatever monotonic clock the caller drives the engine with: a
/// virtual clock in simulations, `CLOCK_MONOTONIC` in production. The engine never reads a clock.
public struct Instant: Hashable, Comparable, Sendable, CustomStringConvertible {
    public var nanoseconds: UInt64

    @inlinable public init(nanoseconds: UInt64) { self.nanoseconds = nanoseconds }
    public static let zero = Instant(nanoseconds: 0)

    @inlinable public static func milliseconds(_ value: UInt64) -> Instant { Instant(nanoseconds: value * 1_000_000) }

    @inlinable public static func + (lhs: Instant, rhs: UInt64) -> Instant { Instant(nanoseconds: lhs.nanoseconds &+ rhs) }
    @inlinable public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }
    @inlinable public static func <= (lhs: Instant, rhs: Instant) -> Bool { lhs.nanoseconds <= rhs.nanoseconds }
    /// Nanoseconds from `rhs` to `lhs`, zero if `lhs` is earlier.
    @inlinable public static func - (lhs: Instant, rhs: Instant) -> UInt64 {
        lhs.nanoseconds >= rhs.nanoseconds ? lhs.nanoseconds - rhs.nanoseconds : 0
    }

    public var description: String { "\(Double(nanoseconds) / 1e6) ms" }
}

/// Durations in nanoseconds, spelt out where configured.
public enum Nanoseconds {
    public static let millisecond: UInt64 = 1_000_000
    public static let second: UInt64 = 1_000_000_000
}
