import IOTCPCommon

/// A connection's timers as one set of deadlines: retransmission, delayed ACK, persist (zero-window
/// probes), keepalive and TIME-WAIT. Each is kept as nanoseconds with `UInt64.max` for none, because an
/// `Instant?` takes 16 bytes and every byte here is paid once per connection (40 bytes for all five).
struct ConnectionTimers {
    enum Timer: CaseIterable {
        case retransmit, delayedAck, persist, keepalive, timeWait
    }

    private var retransmitAt = UInt64.max
    private var delayedAckAt = UInt64.max
    private var persistAt = UInt64.max
    private var keepaliveAt = UInt64.max
    private var timeWaitAt = UInt64.max

    /// When `timer` is due, or nil when it is not armed. Setting nil cancels it.
    subscript(timer: Timer) -> Instant? {
        get {
            let nanoseconds: UInt64
            switch timer {
            case .retransmit: nanoseconds = retransmitAt
            case .delayedAck: nanoseconds = delayedAckAt
            case .persist: nanoseconds = persistAt
            case .keepalive: nanoseconds = keepaliveAt
            case .timeWait: nanoseconds = timeWaitAt
            }
            return nanoseconds == .max ? nil : Instant(nanoseconds: nanoseconds)
        }
        set {
            let nanoseconds = newValue?.nanoseconds ?? .max
            switch timer {
            case .retransmit: retransmitAt = nanoseconds
            case .delayedAck: delayedAckAt = nanoseconds
            case .persist: persistAt = nanoseconds
            case .keepalive: keepaliveAt = nanoseconds
            case .timeWait: timeWaitAt = nanoseconds
            }
        }
    }

    /// Whether `timer` is armed and due at `now`.
    func isDue(_ timer: Timer, at now: Instant) -> Bool {
        guard let deadline = self[timer] else { return false }
        return deadline <= now
    }

    /// The first deadline of all, or nil when none is armed.
    var earliest: Instant? {
        let first = min(retransmitAt, delayedAckAt, persistAt, keepaliveAt, timeWaitAt)
        return first == .max ? nil : Instant(nanoseconds: first)
    }

    /// Cancels every timer but TIME-WAIT's (entering TIME-WAIT: only that one matters from then on).
    mutating func cancelAllButTimeWait() {
        retransmitAt = .max
        delayedAckAt = .max
        persistAt = .max
        keepaliveAt = .max
    }
}
