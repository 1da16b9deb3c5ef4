import IOTCPCommon
import Testing
@testable import IOTCPHost

/// The open-file cache's bookkeeping: which open a request reuses, and which file the application must close
/// when, so that a file is never closed while a response uses it and never left open once nothing can.
@Suite("Offloaded file cache (OffloadedFileCache)")
struct OffloadedFileCacheTests {
    static func file(_ id: UInt64, _ path: String = "/a.bin") -> OffloadedFile {
        OffloadedFile(id: OffloadedFileID(rawValue: id), path: path,
                      status: OffloadedFileStatus(size: 64, modificationSeconds: 0, modificationNanoseconds: 0, mode: 0o100644, inode: id, device: 1))
    }
    let start = Instant(nanoseconds: 10 * Nanoseconds.second)

    /// Inserts `file`, returning what the cache said to close.
    static func insert(_ file: OffloadedFile, into cache: inout OffloadedFileCache, now: Instant) -> [UInt64] {
        var closed: [UInt64] = []
        cache.insert(file, now: now) { closed.append($0.rawValue) }
        return closed
    }

    @Test("a second request within the validity reuses the open; the file stays open between responses and closes once stale and unused")
    func reuse() {
        var cache = OffloadedFileCache(validity: Nanoseconds.second)
        #expect(cache.lookUp("/a.bin", now: start) == nil && cache.statistics.misses == 1)
        #expect(Self.insert(Self.file(1), into: &cache, now: start).isEmpty)
        #expect(cache.lookUp("/a.bin", now: start + 500 * Nanoseconds.millisecond)?.id == OffloadedFileID(rawValue: 1))
        #expect(cache.lookUp("/b.bin", now: start) == nil, "another path")
        #expect(cache.release(OffloadedFileID(rawValue: 1)) == nil && cache.release(OffloadedFileID(rawValue: 1)) == nil,
                "both uses over: still cached, nothing to close")
        var closed: [UInt64] = []
        cache.expire(now: start + 999 * Nanoseconds.millisecond) { closed.append($0.rawValue) }
        #expect(closed.isEmpty && cache.count == 1)
        #expect(cache.lookUp("/a.bin", now: start + Nanoseconds.second) == nil, "stale at its validity: the application opens again")
        cache.expire(now: start + Nanoseconds.second) { closed.append($0.rawValue) }
        #expect(closed == [1] && cache.count == 0)
        #expect(cache.statistics.hits == 1 && cache.statistics.misses == 3)
    }

    @Test("a file in use when it goes stale is closed at its last use's end, not before; a newer open takes its path")
    func staleWhileInUse() {
        var cache = OffloadedFileCache(validity: Nanoseconds.second)
        _ = Self.insert(Self.file(1), into: &cache, now: start)
        var closed: [UInt64] = []
        cache.expire(now: start + 2 * Nanoseconds.second) { closed.append($0.rawValue) }
        #expect(closed.isEmpty, "the first response still sends from it")
        #expect(cache.lookUp("/a.bin", now: start + 2 * Nanoseconds.second) == nil)
        #expect(Self.insert(Self.file(2), into: &cache, now: start + 2 * Nanoseconds.second).isEmpty)
        #expect(cache.release(OffloadedFileID(rawValue: 1)) == OffloadedFileID(rawValue: 1), "its last use: close it now")
        #expect(cache.lookUp("/a.bin", now: start + 2 * Nanoseconds.second)?.id == OffloadedFileID(rawValue: 2))
        #expect(cache.count == 1)
    }

    @Test("a newer open of a cached path replaces the older one, which is closed at once when unused")
    func replaced() {
        var cache = OffloadedFileCache(validity: Nanoseconds.second)
        _ = Self.insert(Self.file(1), into: &cache, now: start)
        #expect(cache.release(OffloadedFileID(rawValue: 1)) == nil)
        #expect(cache.release(OffloadedFileID(rawValue: 1)) == nil, "a release past its uses changes nothing")
        // The application opened the path again anyway: the newer open wins.
        #expect(Self.insert(Self.file(2), into: &cache, now: start + 10) == [1])
        #expect(cache.lookUp("/a.bin", now: start + 20)?.id == OffloadedFileID(rawValue: 2) && cache.count == 1)
    }

    @Test("at capacity a new open takes the place of the oldest unused one; with all in use it is shared, then closed; validity 0 caches nothing")
    func capacity() {
        var cache = OffloadedFileCache(validity: Nanoseconds.second, capacity: 2)
        _ = Self.insert(Self.file(1, "/a.bin"), into: &cache, now: start)
        _ = Self.insert(Self.file(2, "/b.bin"), into: &cache, now: start + 1)
        #expect(cache.release(OffloadedFileID(rawValue: 1)) == nil && cache.release(OffloadedFileID(rawValue: 2)) == nil)
        #expect(Self.insert(Self.file(3, "/c.bin"), into: &cache, now: start + 2) == [1], "the oldest unused goes")
        #expect(cache.statistics.evictions == 1 && cache.cachedCount == 2 && cache.lookUp("/a.bin", now: start + 3) == nil)
        // Both cached files in use now (3 from its insert, 2 from a lookUp): a fourth is not cached...
        #expect(cache.lookUp("/b.bin", now: start + 3) != nil)
        #expect(Self.insert(Self.file(4, "/d.bin"), into: &cache, now: start + 4).isEmpty && cache.statistics.overflows == 1)
        #expect(cache.lookUp("/d.bin", now: start + 5) == nil)
        // ... but requests that waited for its open share it, and it closes at the last release.
        let hits = cache.statistics.hits
        #expect(cache.use(OffloadedFileID(rawValue: 4))?.path == "/d.bin" && cache.statistics.hits == hits + 1)
        #expect(cache.release(OffloadedFileID(rawValue: 4)) == nil)
        #expect(cache.release(OffloadedFileID(rawValue: 4)) == OffloadedFileID(rawValue: 4))
        #expect(cache.use(OffloadedFileID(rawValue: 4)) == nil, "gone: a waiter now opens its own")
        var off = OffloadedFileCache(validity: 0)
        #expect(Self.insert(Self.file(5), into: &off, now: start).isEmpty && off.count == 0)
        #expect(off.lookUp("/a.bin", now: start) == nil && off.use(OffloadedFileID(rawValue: 5)) == nil)
        #expect(off.release(OffloadedFileID(rawValue: 5)) == OffloadedFileID(rawValue: 5))
    }

    @Test("removeAll closes what nothing uses and the rest at their release")
    func removeAll() {
        var cache = OffloadedFileCache()
        _ = Self.insert(Self.file(1, "/a.bin"), into: &cache, now: start)
        _ = Self.insert(Self.file(2, "/b.bin"), into: &cache, now: start)
        #expect(cache.release(OffloadedFileID(rawValue: 1)) == nil)
        var closed: [UInt64] = []
        cache.removeAll { closed.append($0.rawValue) }
        #expect(closed == [1] && cache.lookUp("/b.bin", now: start) == nil)
        #expect(cache.release(OffloadedFileID(rawValue: 2)) == OffloadedFileID(rawValue: 2) && cache.count == 0)
    }
}
