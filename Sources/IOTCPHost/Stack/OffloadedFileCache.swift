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
/// cache.insert(file, now: now).map { try? stack.offloadClose($0) }      // then respond(with: file)
/// ...
/// cache.release(file.id).map { try? stack.offloadClose($0) }            // each response's end
/// cache.expire(now: now) { try? stack.offloadClose($0) }                // now and then
/// ```
///
/// A file stays open on the NIC while any response uses it, and after its `validity` until the last one
/// ends; at most `capacity` files are cached (past that, opens are used once and closed, as without a
/// cache). A `validity` of 0 caches nothing.
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

    private var records: [OffloadedFileID: Record] = [:]
    private var byPath: [String: OffloadedFileID] = [:]
    public private(set) var statistics = Statistics()

    public struct Statistics: Hashable, Sendable {
        /// Requests answered from the cache, and opens the application made because nothing valid was there.
        public var hits = 0
        public var misses = 0
        /// Opens not cached because `capacity` files were.
        public var overflows = 0
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

    /// The open of `path` if one younger than `validity` is cached, counted as a use (give it back with
    /// `release`); nil when the application must open the file itself.
    public mutating func lookUp(_ path: String, now: Instant) -> OffloadedFile? {
        guard validity > 0, let id = byPath[path], var record = records[id], now.nanoseconds &- record.openedAt.nanoseconds < validity else {
            statistics.misses += 1
            return nil
        }
        record.uses += 1
        records[id] = record
        statistics.hits += 1
        return record.file
    }

    /// A file the application has just opened, counted as one use. It is cached for its path (replacing an
    /// older open of the same path, which the return value names when nothing uses it any more: close it),
    /// unless `capacity` files are (then `release` will name it for closing once its use ends).
    public mutating func insert(_ file: OffloadedFile, now: Instant) -> OffloadedFileID? {
        guard validity > 0, records[file.id] == nil else { return nil }
        var toClose: OffloadedFileID?
        if let older = byPath[file.path] {
            byPath[file.path] = nil
            toClose = retire(older)
        }
        guard records.count < capacity else {
            statistics.overflows += 1
            return toClose
        }
        records[file.id] = Record(file: file, openedAt: now, uses: 1, current: true)
        byPath[file.path] = file.id
        return toClose
    }

    /// One use of `file` is over. Returns the file when it is to be closed now: it was never cached, or it
    /// is no longer current and this was its last use.
    public mutating func release(_ file: OffloadedFileID) -> OffloadedFileID? {
        guard var record = records[file] else { return file }
        record.uses -= 1
        if record.uses <= 0 && !record.current {
            records[file] = nil
            return file
        }
        records[file] = record
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

    /// Retires every cached open (the server is stopping): those nothing uses are handed to `close`.
    public mutating func removeAll(close: (OffloadedFileID) -> Void) {
        byPath.removeAll()
        for id in Array(records.keys) {
            if let closed = retire(id) { close(closed) }
        }
    }

    /// No longer handed out; closed at once (returned) if nothing uses it.
    private mutating func retire(_ id: OffloadedFileID) -> OffloadedFileID? {
        guard var record = records[id] else { return nil }
        if record.uses <= 0 {
            records[id] = nil
            return id
        }
        record.current = false
        records[id] = record
        return nil
    }
}
