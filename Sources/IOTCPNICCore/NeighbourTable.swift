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

    init(maximum: Int, lifetime: UInt64) {
        self.maximum = max(maximum, 1)
        self.lifetime = lifetime
    }

    var count: Int { entries.count }

    func contains(_ address: Address) -> Bool { entries[address] != nil }

    /// Records that `address` is at `hardware`, refreshing it if known; a new address only if `isOnLink`
    /// says so. False when it was not learned.
    @discardableResult
    mutating func heard(_ address: Address, at hardware: MACAddress, now: Instant, isOnLink: (Address) -> Bool) -> Bool {
        // One hash lookup for the common case (a known neighbour, every packet it sends): refreshed in place.
        if let known = entries.index(forKey: address) {
            if !entries.values[known].isStatic {
                entries.values[known].hardwareAddress = hardware
                entries.values[known].lastSeen = now
            }
            return true
        }
        guard isOnLink(address) else { return false }
        if entries.count >= maximum { makeRoom(now: now) }
        entries[address] = Neighbour(hardwareAddress: hardware, lastSeen: now, isStatic: false)
        return true
    }

    /// Forgets what aged out; if too little did, the eighth of the table silent longest. Making room a batch
    /// at a time keeps a flood of new sources from costing a pass over the whole table each.
    private mutating func makeRoom(now: Instant) {
        let before = entries.count
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
        guard let neighbour = entries[address] else { return nil }
        if !neighbour.isStatic && now - neighbour.lastSeen >= lifetime {
            entries[address] = nil
            return nil
        }
        return neighbour.hardwareAddress
    }

    mutating func learnStatic(_ address: Address, at hardware: MACAddress, now: Instant) {
        entries[address] = Neighbour(hardwareAddress: hardware, lastSeen: now, isStatic: true)
    }
}
