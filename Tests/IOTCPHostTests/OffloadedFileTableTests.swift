import IOTCPCommon
import Testing
@testable import IOTCPHost

/// The host's record of offloaded files: which connections hold each one open on the NIC, and when its
/// CLOSE may go.
@Suite("Offloaded file table")
struct OffloadedFileTableTests {
    let a = TCPHandle(slot: 1, generation: 1), b = TCPHandle(slot: 2, generation: 1), c = TCPHandle(slot: 3, generation: 7)

    func opened(_ table: inout OffloadedFileTable, slot: UInt32) -> OffloadedFileID {
        let id = OffloadedFileID(slot: slot, generation: 1)
        let request = table.beginOpen(path: "/f\(slot)", token: UInt64(slot))
        table.opened(request: request, file: id)
        let status = OffloadedFileStatus(size: 10, modificationSeconds: 0, modificationNanoseconds: 0, mode: 0o100644, inode: 1, device: 1)
        guard case .offloadOpened(_, .success(let file), let token)? = table.completeOpen(request: request, file: id, status: status) else {
            Issue.record("the open did not complete")
            return id
        }
        #expect(file.id == id && file.path == "/f\(slot)" && token == UInt64(slot))
        return id
    }

    @Test("users: the first inline, more in a set; insert, remove and filtering keep every one exactly once")
    func users() {
        var users = FileUsers()
        #expect(users.isEmpty && users.count == 0 && !users.contains(a))
        #expect(users.insert(a) && !users.insert(a))
        #expect(users.count == 1 && users.contains(a) && !users.contains(b))
        #expect(users.insert(b) && users.insert(c) && !users.insert(b))
        #expect(users.count == 3)
        users.remove(a)  // the inline one goes: one of the others takes its place
        #expect(users.count == 2 && !users.contains(a) && users.contains(b) && users.contains(c))
        users.removeAll { $0 == c }
        #expect(users.count == 1 && users.contains(b))
        users.insert(a)
        users.removeAll { $0 == b }
        #expect(users.count == 1 && users.contains(a))
        var seen: [TCPHandle] = []
        users.forEach { seen.append($0) }
        #expect(seen == [a])
        users.remove(a)
        #expect(users.isEmpty && users.count == 0)
    }

    @Test("a file closed while no user sends closes now; one still sending holds it until released")
    func closeAndRelease() {
        var table = OffloadedFileTable()
        let idle = opened(&table, slot: 1), busy = opened(&table, slot: 2)
        table.noteUser(a, of: idle) { _ in true }
        #expect(table.close(idle) { _ in false }, "nobody sends from it any more: CLOSE now")
        #expect(table.file(idle) == nil && table.openCount == 1)

        table.noteUser(a, of: busy) { _ in true }
        table.noteUser(b, of: busy) { _ in true }
        #expect(!table.close(busy) { $0 == a || $0 == b })
        #expect(table.file(busy) == nil, "given to close: the application may not use it again")
        #expect(table.openCount == 1 && table.heldCount(of: a) == 1 && table.heldCount(of: b) == 1 && table.heldCount(of: c) == 0)
        var closable: [OffloadedFileID] = []
        table.release(user: a) { closable.append($0) }
        #expect(closable.isEmpty && table.heldCount(of: a) == 0, "b still holds it")
        table.release(user: b) { closable.append($0) }
        #expect(closable == [busy] && table.openCount == 0)
        table.release(user: b) { closable.append($0) }
        #expect(closable == [busy], "a second release finds nothing")
    }

    @Test("one connection holding several closing files releases them all at once")
    func severalHeld() {
        var table = OffloadedFileTable()
        let files = (1...3).map { opened(&table, slot: UInt32($0)) }
        for file in files {
            table.noteUser(c, of: file) { _ in true }
            #expect(!table.close(file) { _ in true })
        }
        #expect(table.heldCount(of: c) == 3)
        var closable: [OffloadedFileID] = []
        table.release(user: c) { closable.append($0) }
        #expect(closable == files && table.openCount == 0)
    }

    @Test("a popular file's users are pruned of connections that have gone")
    func pruning() {
        var table = OffloadedFileTable()
        let file = opened(&table, slot: 9)
        for slot in 0..<200 { table.noteUser(TCPHandle(slot: Int32(slot), generation: 1), of: file) { $0.slot >= 150 } }
        // Pruned whenever the set doubles past 64: what is left is the live ones and those added since.
        var waiting = 0
        #expect(!table.close(file) { _ in waiting += 1; return true })
        #expect(waiting < 200 && waiting >= 50)
    }
}
