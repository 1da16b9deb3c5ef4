/// A hashed timing wheel over slots (the host's connections, the NIC's closing connections): each slot has at most one deadline (the earliest of its
/// timers), and inserting, moving and cancelling it are O(1) with no allocation, through intrusive links
/// kept in arrays indexed by slot.
///
/// Buckets are `tick` nanoseconds wide; a deadline more than one revolution away sits in its bucket and is
/// skipped until its time comes round.
public struct TimerWheel {
    private let tick: UInt64
    private let bucketMask: Int
    private var buckets: [Int32]       // first slot in each bucket, -1 if none
    private var next: [Int32] = []     // per slot
    private var previous: [Int32] = [] // per slot; -1 when first in its bucket
    private var deadline: [UInt64] = [] // per slot; UInt64.max when not scheduled
    private var bucketOf: [Int32] = []  // per slot: the bucket it is linked into
    /// The wheel has been processed up to (not including) this tick.
    private var currentTick: UInt64
    public private(set) var scheduledCount = 0
    /// The earliest deadline while known (nil: look again). A new deadline can only lower it; removing
    /// the earliest one forgets it.
    private var knownEarliest: UInt64?

    public init(tick: UInt64 = Nanoseconds.millisecond, bucketCount: Int = 4096, start: Instant) {
        precondition(bucketCount > 0 && bucketCount & (bucketCount - 1) == 0)
        self.tick = tick
        self.bucketMask = bucketCount - 1
        buckets = Array(repeating: -1, count: bucketCount)
        currentTick = start.nanoseconds / tick
    }

    public mutating func ensureCapacity(slots: Int) {
        while next.count < slots {
            next.append(-1)
            previous.append(-1)
            deadline.append(.max)
            bucketOf.append(-1)
        }
    }

    public func deadline(of slot: Int) -> Instant? {
        slot < deadline.count && deadline[slot] != .max ? Instant(nanoseconds: deadline[slot]) : nil
    }

    /// Sets (or moves, or with nil cancels) the deadline of `slot`.
    public mutating func schedule(_ slot: Int, at time: Instant?) {
        ensureCapacity(slots: slot + 1)
        if deadline[slot] != .max {
            if let time, time.nanoseconds == deadline[slot] { return }
            unlink(slot)
        }
        guard let time else { return }
        deadline[slot] = time.nanoseconds
        if let known = knownEarliest, time.nanoseconds < known { knownEarliest = time.nanoseconds }
        // A deadline already past goes in the current bucket, so the next advance fires it.
        let bucket = Int(truncatingIfNeeded: max(time.nanoseconds / tick, currentTick)) & bucketMask
        bucketOf[slot] = Int32(bucket)
        next[slot] = buckets[bucket]
        previous[slot] = -1
        if buckets[bucket] >= 0 { previous[Int(buckets[bucket])] = Int32(slot) }
        buckets[bucket] = Int32(slot)
        scheduledCount += 1
    }

    private mutating func unlink(_ slot: Int) {
        if deadline[slot] == knownEarliest { knownEarliest = nil }
        if previous[slot] >= 0 { next[Int(previous[slot])] = next[slot] }
        else { buckets[Int(bucketOf[slot])] = next[slot] }
        if next[slot] >= 0 { previous[Int(next[slot])] = previous[slot] }
        next[slot] = -1
        previous[slot] = -1
        deadline[slot] = .max
        scheduledCount -= 1
    }

    /// Appends to `due` every slot whose deadline is at or before `now`, unscheduling each. Visits each
    /// bucket between the last call and `now` once; `due` is the caller's, reused so nothing allocates.
    public mutating func popExpired(now: Instant, into due: inout [Int]) {
        let target = now.nanoseconds / tick
        guard scheduledCount > 0 else {
            currentTick = max(currentTick, target)
            return
        }
        let firstNew = due.count
        var tickIndex = currentTick
        // Over a revolution, every bucket has been looked at; no need to go round again.
        let last = min(target, currentTick + UInt64(bucketMask))
        while tickIndex <= last {
            var slot = buckets[Int(truncatingIfNeeded: tickIndex) & bucketMask]
            while slot >= 0 {
                if deadline[Int(slot)] <= now.nanoseconds { due.append(Int(slot)) }
                slot = next[Int(slot)]
            }
            tickIndex += 1
        }
        currentTick = target
        for index in firstNew..<due.count { unlink(due[index]) }
    }

    /// The earliest deadline scheduled. Buckets are looked at in time order from the current tick, and
    /// the first holding a deadline of its own tick (not of a later revolution) has the earliest: the
    /// search stops there instead of visiting every connection, which a wait for 1,600 connections did on
    /// every call. Only when nothing falls within a revolution are all deadlines compared.
    public mutating func earliestDeadline() -> Instant? {
        guard scheduledCount > 0 else { return nil }
        if let knownEarliest { return Instant(nanoseconds: knownEarliest) }
        var earliest = UInt64.max
        var tickIndex = currentTick
        while tickIndex <= currentTick + UInt64(bucketMask) {
            let end = (tickIndex + 1) * tick
            var slot = buckets[Int(truncatingIfNeeded: tickIndex) & bucketMask]
            while slot >= 0 {
                let time = deadline[Int(slot)]
                if time < end { earliest = min(earliest, time) }
                slot = next[Int(slot)]
            }
            if earliest != .max { break }
            tickIndex += 1
        }
        if earliest == .max {
            for bucket in buckets where bucket >= 0 {
                var slot = bucket
                while slot >= 0 {
                    earliest = min(earliest, deadline[Int(slot)])
                    slot = next[Int(slot)]
                }
            }
        }
        knownEarliest = earliest
        return Instant(nanoseconds: earliest)
    }
}
