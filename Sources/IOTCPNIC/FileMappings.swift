import Glibc

/// Read-only mappings of served files, kept for a while after the last descriptor of a file closes.
///
/// A content server opens the same hot files over and over, once a request. Mapping a file anew for each
/// open costs an `mmap`, a page fault per run of pages when the wire first reads them, and an `munmap` with
/// its TLB flush: measured on the NIC at 4 KiB files, about a fifth of the server core. Kept mappings make a
/// second request for a file cost none of that; the page tables stay filled.
///
/// A mapping is found by the file's identity (device and inode), not by path, so a file renamed over is a
/// new file, and the mapping always shows the page cache's bytes as they are now (it is `MAP_SHARED`). One
/// whose file changed length is not reused. Idle mappings (no open file uses them) are bounded in number and
/// bytes, dropped oldest first, and dropped after `idleLifetime` at the next open or close, so a deleted
/// file's space is not held for long by a busy server. Only the kernel reads these mappings (the wire's
/// gathered write), so a file truncated under one makes that write fail, never this process fault.
struct FileMappings: ~Copyable {
    struct Identity: Hashable {
        let device: UInt64
        let inode: UInt64
    }

    /// Idle mappings kept, at most, and their total length.
    let maximumIdle: Int
    let maximumIdleBytes: Int
    /// How long an idle mapping is kept, in nanoseconds.
    let idleLifetime: UInt64

    /// `mmap` calls made, mappings reused instead, and `mmap` calls the kernel refused.
    private(set) var mapped = 0
    private(set) var reused = 0
    private(set) var failures = 0
    private(set) var idleCount = 0
    private(set) var idleBytes = 0

    private struct Entry {
        var identity: Identity
        var address: UnsafeMutableRawPointer?
        var length: Int
        var users: Int
        /// When it last became idle, and its neighbours in the idle list (oldest first), as entry indices.
        var idleSince: UInt64
        var older: Int
        var newer: Int
        /// When the whole file was last checked for residency, and whether every page was cached then.
        var residencyCheckedAt: UInt64
        var allResident: Bool
    }

    private var entries: [Entry] = []
    private var freeEntries: [Int] = []
    private var index: [Identity: Int] = [:]
    private var oldestIdle = -1
    private var newestIdle = -1

    init(maximumIdle: Int = 1024, maximumIdleBytes: Int = 64 << 20, idleLifetime: UInt64 = 10_000_000_000) {
        self.maximumIdle = maximumIdle
        self.maximumIdleBytes = maximumIdleBytes
        self.idleLifetime = idleLifetime
    }

    deinit {
        for entry in entries { if let address = entry.address { munmap(address, entry.length) } }
    }

    /// A mapping of `length` bytes of the file open as `descriptor` (its entry: see `mapping`), shared with
    /// earlier opens of the same file when they mapped the same length; nil when the kernel refuses. Give it
    /// back with `release`.
    mutating func acquire(_ identity: Identity, length: Int, descriptor: Int32, now: UInt64) -> Int? {
        expire(now: now)
        if let found = index[identity] {
            if entries[found].length == length, entries[found].address != nil {
                if entries[found].users == 0 { unlinkIdle(found) }
                entries[found].users += 1
                reused += 1
                return found
            }
            // The file changed length: later opens get a new mapping; this one goes when its users do.
            index[identity] = nil
            if entries[found].users == 0 { unlinkIdle(found); discard(found) }
        }
        guard length > 0 else { return nil }
        let address = mmap(nil, length, PROT_READ, MAP_SHARED, descriptor, 0)
        guard let address, address != MAP_FAILED else {
            failures += 1
            return nil
        }
        mapped += 1
        let entry = Entry(identity: identity, address: address, length: length, users: 1, idleSince: 0, older: -1, newer: -1,
                          residencyCheckedAt: 0, allResident: false)
        let slot: Int
        if let free = freeEntries.popLast() {
            slot = free
            entries[slot] = entry
        } else {
            slot = entries.count
            entries.append(entry)
        }
        index[identity] = slot
        return slot
    }

    /// One user of the mapping is done; an unused mapping is kept idle (or dropped when it is stale or over
    /// the bounds).
    mutating func release(_ entry: Int, now: UInt64) {
        guard entry >= 0, entry < entries.count, entries[entry].users > 0 else { return }
        entries[entry].users -= 1
        guard entries[entry].users == 0 else { return }
        let indexed = index[entries[entry].identity] == entry
        guard indexed, maximumIdle > 0, entries[entry].length <= maximumIdleBytes else {
            if indexed { index[entries[entry].identity] = nil }
            discard(entry)
            return
        }
        entries[entry].idleSince = now
        linkIdle(entry)
        while idleCount > maximumIdle || idleBytes > maximumIdleBytes { dropOldestIdle() }
        expire(now: now)
    }

    /// The mapping an entry holds (while it has users).
    func mapping(_ entry: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: entries[entry].address, count: entries[entry].length)
    }

    /// Whether the whole file was found cached within `window` nanoseconds (true), found partly uncached
    /// then (false), or not checked since (nil).
    func recentResidency(_ entry: Int, now: UInt64, window: UInt64) -> Bool? {
        guard entry >= 0, entry < entries.count, entries[entry].residencyCheckedAt != 0,
              now &- entries[entry].residencyCheckedAt < window else { return nil }
        return entries[entry].allResident
    }

    mutating func noteResidency(_ entry: Int, allResident: Bool, now: UInt64) {
        guard entry >= 0, entry < entries.count else { return }
        entries[entry].residencyCheckedAt = max(now, 1)
        entries[entry].allResident = allResident
    }

    /// Drops idle mappings older than `idleLifetime`.
    mutating func expire(now: UInt64) {
        while oldestIdle >= 0, now &- entries[oldestIdle].idleSince >= idleLifetime { dropOldestIdle() }
    }

    /// Drops every idle mapping (mappings in use stay).
    mutating func dropIdle() {
        while oldestIdle >= 0 { dropOldestIdle() }
    }

    private mutating func dropOldestIdle() {
        let oldest = oldestIdle
        unlinkIdle(oldest)
        index[entries[oldest].identity] = nil
        discard(oldest)
    }

    private mutating func discard(_ entry: Int) {
        if let address = entries[entry].address { munmap(address, entries[entry].length) }
        entries[entry].address = nil
        freeEntries.append(entry)
    }

    private mutating func linkIdle(_ entry: Int) {
        entries[entry].older = newestIdle
        entries[entry].newer = -1
        if newestIdle >= 0 { entries[newestIdle].newer = entry } else { oldestIdle = entry }
        newestIdle = entry
        idleCount += 1
        idleBytes += entries[entry].length
    }

    private mutating func unlinkIdle(_ entry: Int) {
        let older = entries[entry].older, newer = entries[entry].newer
        if older >= 0 { entries[older].newer = newer } else { oldestIdle = newer }
        if newer >= 0 { entries[newer].older = older } else { newestIdle = older }
        entries[entry].older = -1
        entries[entry].newer = -1
        idleCount -= 1
        idleBytes -= entries[entry].length
    }
}
