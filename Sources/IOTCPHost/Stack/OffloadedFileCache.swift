import IOTCPCommon

/// Offloaded files kept open for reuse by path, for a server that sends the same files over and over: a
/// request for a file opened less than `validity` ago is answered with that open, so it costs no OPEN,
/// OPENED, STAT and CLOSE_FILE on the channel, no open/fstat/close on the NIC, and no turn of waiting for
/// the answer. nginx's `open_file_cache` and lighttpd's stat cache make the same trade: a file changed on
/// the NIC's disk is seen at most `validity` late (size and modification time included).
///
/// It does no I/O: the application opens and closes the files (`IOTCPStack.offloadOpen`, `offloadClose`),
/// and the cache says which open to reuse and which files to close. Every file the application uses goes
/// through it the same way, cached or not:
///
/// ```swift
/// if let file = cache.lookUp(path, now: now) { respond(with: file) }  // a use of a cached open
/// else { try stack.offloadOpen(path, token: token) }                     // and on .offloadOpened:
/// cache.insert(file, now: now) { try? stack.offloadClose($0) }          // then respond(with: file)
/// ...
/// cache.release(file.id).map { try? stack.offloadClose($0) }            // each response's end
/// cache.expire(now: now) { try? stack.offloadClose($0) }                // now and then
/// ```
///
/// A file stays open on the NIC while any response uses it, and after its `validity` until the last one
/// ends. At most `capacity` files are cached: a new one takes the place of the oldest that nothing uses,
/// and when every cached file is in use it is used (by its request, and by others through `use`) and
/// closed after, as without a cache. A `validity` of 0 caches nothing.
public struct OffloadedFileCache {
    public let validity: UInt64
    public let capacity: Int

    private struct Record {
        var file: OffloadedFile
        var openedAt: Instant
        var uses: Int
        /// Still the open handed out for its path (not replaced, not expired).
        var current: Bool
    }

    /// Every open the cache knows: the cached ones (`current`) and those still in use after they stopped
    /// being handed out (stale, replaced, or never cached for lack of room).
    private var records: [OffloadedFileID: Record] = [:]
    private var byPath: [String: OffloadedFileID] = [:]
    public private(set) var statistics = Statistics()

    public struct Statistics: Hashable, Sendable {
        /// Requests answered from the cache, and opens the application made because nothing valid was there.
        /// (A request given a waited-for open through `use` counts as a hit.)
        public var hits = 0
        public var misses = 0
        /// Opens not cached because `capacity` files were, all in use; and cached files closed unused to make
        /// room for newer ones.
        public var overflows = 0
        public var evictions = 0
        public init() {}
    }

    /// `validity` in nanoseconds (1 s by default, as nginx's `open_file_cache_valid` is commonly set);
    /// `capacity` files at most (each is a descriptor on the NIC).
    public init(validity: UInt64 = Nanoseconds.second, capacity: Int = 1024) {
        self.validity = validity
        self.capacity = max(capacity, 0)
    }

    /// Files open for the cache now (in use or waiting to be reused).
    public var count: Int { records.count }
    /// Files handed out for their paths now.
    public var cachedCount: Int { byPath.count }

    /// The open of `path` if one younger than `validity` is cached, counted as a use (give it back with
    /// `release`); nil when the application must open the file itself.
    public mutating func lookUp(_ path: String, now: Instant) -> OffloadedFile? {
        // One hash of the path and one of the id: the record is changed where it lies (this runs per request).
        guard validity > 0, let id = byPath[path], let index = records.index(forKey: id),
              now.nanoseconds &- records.values[index].openedAt.nanoseconds < validity
        else {
            statistics.misses += 1
            return nil
        }
        records.values[index].uses += 1
        statistics.hits += 1
        return records.values[index].file
    }

    /// A file the application has just opened, counted as one use. It is cached for its path, replacing an
    /// older open of the same path, or the oldest cached file nothing uses when `capacity` are cached; `close`
    /// is given what must be closed now. When every cached file is in use, the new one is not cached but
    /// still known: `use` shares it, and `release` names it for closing at its last use.
    public mutating func insert(_ file: OffloadedFile, now: Instant, close: (OffloadedFileID) -> Void) {
        guard validity > 0, records[file.id] == nil else { return }
        if let older = byPath[file.path] {
            byPath[file.path] = nil
            if let closed = retire(older) { close(closed) }
        }
        if byPath.count >= capacity {
            var oldest: (id: OffloadedFileID, at: Instant)?
            for (id, record) in records where record.current && record.uses <= 0 {
                if oldest == nil || record.openedAt < oldest!.at { oldest = (id, record.openedAt) }
            }
            if let oldest {
                byPath[records[oldest.id]!.file.path] = nil
                if let closed = retire(oldest.id) { close(closed) }
                statistics.evictions += 1
            }
        }
        guard byPath.count < capacity else {
            statistics.overflows += 1
            records[file.id] = Record(file: file, openedAt: now, uses: 1, current: false)
            return
        }
        records[file.id] = Record(file: file, openedAt: now, uses: 1, current: true)
        byPath[file.path] = file.id
    }

    /// One more use of a file the cache knows (cached or not), for a request that waited for its open;
    /// nil when the cache does not know it (give that request an open of its own).
    public mutating func use(_ file: OffloadedFileID) -> OffloadedFile? {
        guard let index = records.index(forKey: file) else { return nil }
        records.values[index].uses += 1
        statistics.hits += 1
        return records.values[index].file
    }

    /// One use of `file` is over. Returns the file when it is to be closed now: the cache never knew it, or
    /// it is no longer cached and this was its last use. A release past the uses counted changes nothing.
    public mutating func release(_ file: OffloadedFileID) -> OffloadedFileID? {
        guard let index = records.index(forKey: file) else { return file }
        guard records.values[index].uses > 0 else { return nil }
        records.values[index].uses -= 1
        if records.values[index].uses == 0 && !records.values[index].current {
            records.remove(at: index)
            return file
        }
        return nil
    }

    /// Retires opens older than `validity`: those nothing uses are handed to `close` now, the others when
    /// their last use is released.
    public mutating func expire(now: Instant, close: (OffloadedFileID) -> Void) {
        guard !byPath.isEmpty else { return }
        var stale: [OffloadedFileID] = []
        for (id, record) in records where record.current && now.nanoseconds &- record.openedAt.nanoseconds >= validity {
            stale.append(id)
        }
        for id in stale {
            if let path = records[id]?.file.path, byPath[path] == id { byPath[path] = nil }
            if let closed = retire(id) { close(closed) }
        }
    }

    /// Retires every cached open (the server is stopping, or the NIC is out of descriptors): those nothing
    /// uses are handed to `close`, the others are closed at their last release.
    public mutating func removeAll(close: (OffloadedFileID) -> Void) {
        byPath.removeAll()
        for id in Array(records.keys) {
            if let closed = retire(id) { close(closed) }
        }
    }

    /// No longer handed out; closed at once (returned) if nothing uses it.
    private mutating func retire(_ id: OffloadedFileID) -> OffloadedFileID? {
        guard let index = records.index(forKey: id) else { return nil }
        if records.values[index].uses <= 0 {
            records.remove(at: index)
            return id
        }
        records.values[index].current = false
        return nil
    }
}
