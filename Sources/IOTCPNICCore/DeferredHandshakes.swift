import IOTCPCommon

/// Handshakes on a port that defers accepts whose bare ACK came (its cookie good) but whose first data has
/// not: the client's ISN and the round trip the ACK measured.
///
/// The cookie alone covers the usual case: the first data segment has the bare ACK's sequence number, so it
/// brings the same cookie back and verifies on its own. It cannot cover that segment being lost or overtaken:
/// a later one starts past ISN+1, and the cookie's hash is over the ISN. Remembering the ISN lets such a
/// segment be recognised, so the client is accepted (and sends the missing bytes again) instead of reset.
///
/// Bounded: when full, a new handshake is not deferred but handed over at its bare ACK, as on a port that
/// does not defer, so the table can neither grow nor cost a client its connection. Entries go with the
/// first data, or when their cookie could no longer verify (two cookie periods).
struct DeferredHandshakes {
    struct Key: Hashable {
        var remote: IPAddress
        var remotePort: UInt16
        var localPort: UInt16
    }

    struct Entry: Equatable {
        var key: Key
        var peerInitialSequence: SequenceNumber
        /// The handshake's round trip as the bare ACK measured it (nil when the cookie could not tell).
        var roundTrip: UInt64?
        var expires: Instant
    }

    /// Two cookie periods: a cookie verifies in its own 64-second period and the next.
    static let lifetime = 128 * Nanoseconds.second

    let capacity: Int
    /// Kept by endpoints as the NIC's other tables are (one-word keys for IPv4).
    private var entries = EndpointIndex<Entry>()
    /// Insertion order with each insertion's expiry; a key forgotten or renewed since leaves a stale item,
    /// told apart by its expiry. Rebuilt from the live entries when it reaches twice the capacity, so it
    /// stays bounded however fast handshakes come and go (most leave with their data, long before expiry).
    private var order = FIFO<(key: Key, expires: Instant)>()

    init(capacity: Int) {
        self.capacity = capacity
    }

    var count: Int { entries.count }

    /// Remembers a deferred handshake; false when the table is full (the caller hands it over instead).
    mutating func remember(_ key: Key, peerInitialSequence: SequenceNumber, roundTrip: UInt64?, now: Instant) -> Bool {
        expire(now: now)
        guard self[key] != nil || entries.count < capacity else { return false }
        let expires = now + Self.lifetime
        self[key] = Entry(key: key, peerInitialSequence: peerInitialSequence, roundTrip: roundTrip, expires: expires)
        if order.count >= 2 * max(capacity, 1) { compact() }
        order.append((key, expires))
        return true
    }

    /// Items in the order queue, stale ones included (at most twice the capacity, plus one).
    var queuedCount: Int { order.count }

    private mutating func compact() {
        let live = (Array(entries.ipv4.values) + Array(entries.ipv6.values)).map { (key: $0.key, expires: $0.expires) }
            .sorted { $0.expires < $1.expires }
        order.removeAll(keepingCapacity: true)
        order.append(contentsOf: live)
    }

    /// The entry for `key`; nil when there is none (or it expired).
    mutating func entry(for key: Key, now: Instant) -> Entry? {
        guard !entries.isEmpty else { return nil }
        expire(now: now)
        return self[key]
    }

    mutating func forget(_ key: Key) {
        if !entries.isEmpty { self[key] = nil }
    }

    mutating func removeAll() {
        entries = EndpointIndex()
        order.removeAll()
    }

    private subscript(key: Key) -> Entry? {
        get { entries[key.remote, key.remotePort, key.localPort] }
        set { entries[key.remote, key.remotePort, key.localPort] = newValue }
    }

    private mutating func expire(now: Instant) {
        while let first = order.first, first.expires <= now {
            _ = order.popFirst()
            if self[first.key]?.expires == first.expires { self[first.key] = nil }
        }
    }
}
