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

    @Test("a second request within the validity reuses the open; the file stays open between responses and closes once stale and unused")
    func reuse() {
        var cache = OffloadedFileCache(validity: Nanoseconds.second)
        #expect(cache.lookUp("/a.bin", now: start) == nil && cache.statistics.misses == 1)
        #expect(cache.insert(Self.file(1), now: start) == nil)
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
        _ = cache.insert(Self.file(1), now: start)
        var closed: [UInt64] = []
        cache.expire(now: start + 2 * Nanoseconds.second) { closed.append($0.rawValue) }
        #expect(closed.isEmpty, "the first response still sends from it")
        #expect(cache.lookUp("/a.bin", now: start + 2 * Nanoseconds.second) == nil)
        #expect(cache.insert(Self.file(2), now: start + 2 * Nanoseconds.second) == nil)
        #expect(cache.release(OffloadedFileID(rawValue: 1)) == OffloadedFileID(rawValue: 1), "its last use: close it now")
        #expect(cache.lookUp("/a.bin", now: start + 2 * Nanoseconds.second)?.id == OffloadedFileID(rawValue: 2))
        #expect(cache.count == 1)
    }

    @Test("a newer open of a cached path replaces the older one, which is closed at once when unused")
    func replaced() {
        var cache = OffloadedFileCache(validity: Nanoseconds.second)
        _ = cache.insert(Self.file(1), now: start)
        #expect(cache.release(OffloadedFileID(rawValue: 1)) == nil)
        // Two requests raced past a stale entry... or the application opened again anyway: the newer wins.
        #expect(cache.insert(Self.file(2), now: start + 10) == OffloadedFileID(rawValue: 1))
        #expect(cache.lookUp("/a.bin", now: start + 20)?.id == OffloadedFileID(rawValue: 2) && cache.count == 1)
    }

    @Test("past capacity, or with a validity of 0, an open is used once and closed at its release")
    func uncached() {
        var full = OffloadedFileCache(validity: Nanoseconds.second, capacity: 1)
        _ = full.insert(Self.file(1, "/a.bin"), now: start)
        #expect(full.insert(Self.file(2, "/b.bin"), now: start) == nil && full.statistics.overflows == 1)
        #expect(full.lookUp("/b.bin", now: start) == nil)
        #expect(full.release(OffloadedFileID(rawValue: 2)) == OffloadedFileID(rawValue: 2))
        var off = OffloadedFileCache(validity: 0)
        #expect(off.insert(Self.file(3), now: start) == nil && off.count == 0)
        #expect(off.lookUp("/a.bin", now: start) == nil)
        #expect(off.release(OffloadedFileID(rawValue: 3)) == OffloadedFileID(rawValue: 3))
    }

    @Test("removeAll closes what nothing uses and the rest at their release")
    func removeAll() {
        var cache = OffloadedFileCache()
        _ = cache.insert(Self.file(1, "/a.bin"), now: start)
        _ = cache.insert(Self.file(2, "/b.bin"), now: start)
        #expect(cache.release(OffloadedFileID(rawValue: 1)) == nil)
        var closed: [UInt64] = []
        cache.removeAll { closed.append($0.rawValue) }
        #expect(closed == [1] && cache.lookUp("/b.bin", now: start) == nil)
        #expect(cache.release(OffloadedFileID(rawValue: 2)) == OffloadedFileID(rawValue: 2) && cache.count == 0)
    }
}
