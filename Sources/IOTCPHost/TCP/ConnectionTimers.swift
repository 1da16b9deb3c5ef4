import IOTCPCommon

/// A connection's timers as one set of deadlines: retransmission, delayed ACK, persist (zero-window
/// probes), keepalive and TIME-WAIT. Each is kept as nanoseconds with `UInt64.max` for none, because an
/// `Instant?` takes 16 bytes and every byte here is paid once per connection (40 bytes for all five).
struct ConnectionTimers {
    enum Timer: Int, CaseIterable {
        case retransmit, delayedAck, persist, keepalive, timeWait
    }

    private static let none = UInt64.max
    /// In `Timer` order; a tuple, so the five live inline in the control block with no array behind them.
    private var deadlines: (UInt64, UInt64, UInt64, UInt64, UInt64) = (none, none, none, none, none)

    /// When `timer` is due, or nil when it is not armed. Setting nil cancels it.
    subscript(timer: Timer) -> Instant? {
        get {
            let nanoseconds = withUnsafeBytes(of: deadlines) { $0.load(fromByteOffset: timer.rawValue * 8, as: UInt64.self) }
            return nanoseconds == Self.none ? nil : Instant(nanoseconds: nanoseconds)
        }
        set {
            let nanoseconds = newValue?.nanoseconds ?? Self.none
            withUnsafeMutableBytes(of: &deadlines) { $0.storeBytes(of: nanoseconds, toByteOffset: timer.rawValue * 8, as: UInt64.self) }
        }
    }

    /// Whether `timer` is armed and due at `now`.
    func isDue(_ timer: Timer, at now: Instant) -> Bool {
        guard let deadline = self[timer] else { return false }
        return deadline <= now
    }

    /// The first deadline of all, or nil when none is armed.
    var earliest: Instant? {
        let first = min(deadlines.0, deadlines.1, deadlines.2, deadlines.3, deadlines.4)
        return first == Self.none ? nil : Instant(nanoseconds: first)
    }

    /// Cancels every timer but TIME-WAIT's (entering TIME-WAIT: only that one matters from then on).
    mutating func cancelAllButTimeWait() {
        deadlines = (Self.none, Self.none, Self.none, Self.none, deadlines.4)
    }
}
