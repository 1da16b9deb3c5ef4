import IOTCPCommon

/// Connections handed to the NIC (for their ending, or spliced) in the last `grace`, by endpoints: segments
/// still in flight for them from the NIC go back to it instead of being answered here.
///
/// A short-connection server hands over one connection per request, so at tens of thousands a second this
/// holds tens of thousands of entries and is looked at for every new connection. A dictionary with a FIFO
/// of expiries touched five or six cold cache lines a connection (its bitmap, keys and values, once to
/// expire the oldest entry and again to insert); here an entry is one 24-byte slot of an open-addressed
/// table, found with one probe sequence, and expired entries are simply reused: nothing walks the table
/// to expire anything. It is rebuilt at the size its live entries need when used slots reach half of it, or
/// after as many inserts as it has slots (a few copies per insert, amortized).
///
/// IPv4 endpoints are keyed by one word (`UInt64`); IPv6 ones, which do not fit, by their whole key in a
/// table of their own, so the IPv4 slots stay 24 bytes.
struct RecentHandOvers<Key: Hashable> {
    struct Entry {
        var key: Key
        var at: Instant
        var peerInitialSequence: SequenceNumber
        var used: Bool
    }

    let grace: UInt64
    /// The key of slots never used (any value: `used` tells them apart).
    private let emptyKey: Key
    private var slots: [Entry]
    /// Slots ever filled since the table was last built (live and expired): probes stop only at unused ones.
    private var used = 0
    /// Inserts since the table was last built: after as many as it has slots it is rebuilt anyway, so it
    /// comes back down when the rate does.
    private var insertsSinceRebuild = 0
    static var minimumCapacity: Int { 64 }

    init(grace: UInt64, emptyKey: Key) {
        self.grace = grace
        self.emptyKey = emptyKey
        slots = Self.emptySlots(Self.minimumCapacity, emptyKey: emptyKey)
    }

    private static func emptySlots(_ count: Int, emptyKey: Key) -> [Entry] {
        Array(repeating: Entry(key: emptyKey, at: .zero, peerInitialSequence: SequenceNumber(0), used: false), count: count)
    }

    /// Slots in the table (for tests: it grows with live entries, and shrinks back when they expire).
    var capacity: Int { slots.count }

    /// The hand-over of `key` if it was less than `grace` before `now`.
    func lookUp(_ key: Key, now: Instant) -> (at: Instant, peerInitialSequence: SequenceNumber)? {
        let mask = slots.count - 1
        var index = Self.hash(key) & mask
        while slots[index].used {
            if slots[index].key == key {
                let entry = slots[index]
                return now - entry.at < grace ? (entry.at, entry.peerInitialSequence) : nil
            }
            index = (index + 1) & mask
        }
        return nil
    }

    /// Remembers that `key` was handed over at `now` (replacing an earlier hand-over of the same endpoints).
    ///
    /// The entry goes into the first expired slot of its probe sequence, or the first unused one, without
    /// walking the rest of the sequence: an earlier entry of the same key found first is replaced, and one
    /// further on stays behind the new one, which `lookUp` meets first, until it expires too.
    mutating func insert(_ key: Key, peerInitialSequence: SequenceNumber, now: Instant) {
        insertsSinceRebuild += 1
        if (used + 1) * 2 > slots.count || insertsSinceRebuild > slots.count { rebuild(now: now) }
        let entry = Entry(key: key, at: now, peerInitialSequence: peerInitialSequence, used: true)
        let mask = slots.count - 1
        var index = Self.hash(key) & mask
        while slots[index].used {
            if slots[index].key == key || now - slots[index].at >= grace {
                slots[index] = entry
                return
            }
            index = (index + 1) & mask
        }
        slots[index] = entry
        used += 1
    }

    /// Rebuilds the table with only its live entries, at four times their number (at least the minimum).
    private mutating func rebuild(now: Instant) {
        let live = slots.filter { $0.used && now - $0.at < grace }
        var capacity = Self.minimumCapacity
        while capacity < live.count * 4 { capacity *= 2 }
        slots = Self.emptySlots(capacity, emptyKey: emptyKey)
        used = 0
        insertsSinceRebuild = 0
        for entry in live {
            var index = Self.hash(entry.key) & (capacity - 1)
            while slots[index].used { index = (index + 1) & (capacity - 1) }
            slots[index] = entry
            used += 1
        }
    }

    /// The process's seeded hash (endpoints are the peer's to choose: an unkeyed hash could be flooded).
    private static func hash(_ key: Key) -> Int {
        var hasher = Hasher()
        hasher.combine(key)
        return hasher.finalize()
    }
}

extension RecentHandOvers where Key == UInt64 {
    init(grace: UInt64) { self.init(grace: grace, emptyKey: 0) }
}
