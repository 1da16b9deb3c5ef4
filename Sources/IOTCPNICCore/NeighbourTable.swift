import IOTCPCommon

/// Link-layer addresses of on-link neighbours, for one address family (ARP's IPv4, Neighbor Discovery's
/// IPv6): bounded and forgetting. An entry not heard from in `lifetime` is gone; at `maximum` entries, what
/// aged out goes, or else the one silent longest. Entries configured with `learnStatic` never age. A flood of
/// spoofed sources costs a fixed amount of memory, and nothing once it stops.
struct NeighbourTable<Address: Hashable> {
    struct Neighbour {
        var hardwareAddress: MACAddress
        var lastSeen: Instant
        /// Configured, not heard: never ages out.
        var isStatic: Bool
    }

    let maximum: Int
    let lifetime: UInt64
    private var entries: [Address: Neighbour] = [:]
    /// Entries forgotten to make room.
    private(set) var evicted = 0
    /// The entry heard or looked up last, as the table holds it. A link's traffic is mostly one peer (a
    /// router; the test namespace), and every frame heard and every frame sent asked the dictionary: under
    /// short connections hashing was a fifth of the NIC's own time, these lookups a seventh of that (`perf record`). Hearing it again writes
    /// the refresh to the table only once `refreshInterval` has passed, which ageing cannot tell apart.
    private var recent: (address: Address, neighbour: Neighbour)?
    /// An eighth of the lifetime, at most a second.
    let refreshInterval: UInt64

    init(maximum: Int, lifetime: UInt64) {
        self.maximum = max(maximum, 1)
        self.lifetime = lifetime
        refreshInterval = min(lifetime / 8, Nanoseconds.second)
    }

    var count: Int { entries.count }

    func contains(_ address: Address) -> Bool { entries[address] != nil }

    /// Records that `address` is at `hardware`, refreshing it if known; a new address only if `isOnLink`
    /// says so. False when it was not learned.
    @discardableResult
    mutating func heard(_ address: Address, at hardware: MACAddress, now: Instant, isOnLink: (Address) -> Bool) -> Bool {
        // No lookup for the common case: the last neighbour again, at the same address, recently refreshed.
        if let recent, recent.address == address,
           recent.neighbour.isStatic || (recent.neighbour.hardwareAddress == hardware && now - recent.neighbour.lastSeen < refreshInterval) {
            return true
        }
        // One hash lookup for a known neighbour: refreshed in place.
        if let known = entries.index(forKey: address) {
            if !entries.values[known].isStatic {
                entries.values[known].hardwareAddress = hardware
                entries.values[known].lastSeen = now
            }
            recent = (address, entries.values[known])
            return true
        }
        guard isOnLink(address) else { return false }
        if entries.count >= maximum { makeRoom(now: now) }
        let neighbour = Neighbour(hardwareAddress: hardware, lastSeen: now, isStatic: false)
        entries[address] = neighbour
        recent = (address, neighbour)
        return true
    }

    /// Forgets what aged out; if too little did, the eighth of the table silent longest. Making room a batch
    /// at a time keeps a flood of new sources from costing a pass over the whole table each.
    private mutating func makeRoom(now: Instant) {
        let before = entries.count
        recent = nil
        entries = entries.filter { $0.value.isStatic || now - $0.value.lastSeen < lifetime }
        let wanted = max(1, maximum / 8)
        if entries.count > maximum - wanted {
            let oldest = entries.filter { !$0.value.isStatic }.sorted { $0.value.lastSeen < $1.value.lastSeen }
                .prefix(entries.count - (maximum - wanted))
            for entry in oldest { entries[entry.key] = nil }
        }
        evicted += before - entries.count
    }

    /// The neighbour's hardware address, if known and not aged out.
    mutating func lookUp(_ address: Address, now: Instant) -> MACAddress? {
        // The recent entry's time is at most `refreshInterval` behind the table's: good enough to age by.
        if let recent, recent.address == address, recent.neighbour.isStatic || now - recent.neighbour.lastSeen < lifetime {
            return recent.neighbour.hardwareAddress
        }
        guard let neighbour = entries[address] else { return nil }
        if !neighbour.isStatic && now - neighbour.lastSeen >= lifetime {
            entries[address] = nil
            if recent?.address == address { recent = nil }
            return nil
        }
        recent = (address, neighbour)
        return neighbour.hardwareAddress
    }

    mutating func learnStatic(_ address: Address, at hardware: MACAddress, now: Instant) {
        entries[address] = Neighbour(hardwareAddress: hardware, lastSeen: now, isStatic: true)
        if recent?.address == address { recent = nil }
    }
}
