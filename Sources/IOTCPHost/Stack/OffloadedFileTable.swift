import IOTCPCommon

/// The offloaded files as the host sees them: opens waiting for the NIC's answer (OPENED, DEVICE, STAT),
/// open files with the connections that queued ranges of them, and files the application closed that must
/// stay open on the NIC until those connections have had everything acknowledged. It decides when a CLOSE
/// may go; the stack sends it.
struct OffloadedFileTable {
    struct PendingOpen {
        var path: String
        var token: UInt64
        var file: OffloadedFileID?
        var device: StorageDevice?
    }

    struct FileRecord {
        var file: OffloadedFile
        /// Connections that queued ranges of this file; the NIC must keep it open until they are acknowledged.
        var users = FileUsers()
        /// The set's size when closed connections were last dropped from it.
        var usersAfterPrune = 0
        var closeRequested = false
    }

    private var nextRequest: UInt32 = 1
    private var pendingOpens: [UInt32: PendingOpen] = [:]
    private var files: [OffloadedFileID: FileRecord] = [:]
    /// Connections that hold up the close of offloaded files, with those files: looked at only when the
    /// engine says such a connection had everything acknowledged or closed, so a server with thousands of
    /// responses in flight pays nothing per turn for them.
    private var closingUsers: [TCPHandle: HeldFiles] = [:]

    /// Offloaded files open on the NIC (closing ones included).
    var openCount: Int { files.count }

    // MARK: - Opening

    /// A new request id for an open of `path`, remembered until the NIC answers.
    mutating func beginOpen(path: String, token: UInt64) -> UInt32 {
        let request = nextRequest
        nextRequest = nextRequest == UInt32.max ? 1 : nextRequest + 1
        pendingOpens[request] = PendingOpen(path: path, token: token)
        return request
    }

    /// OPENED: the NIC's file id for the request (STAT follows).
    mutating func opened(request: UInt32, file: OffloadedFileID) {
        pendingOpens[request]?.file = file
    }

    /// DEVICE: the storage under the file, between OPENED and STAT.
    mutating func device(request: UInt32, file: OffloadedFileID, _ device: StorageDevice) {
        guard pendingOpens[request]?.file == file else { return }
        pendingOpens[request]?.device = device
    }

    /// STAT completes the open: the event for the application, or nil when it answers no open of ours.
    mutating func completeOpen(request: UInt32, file: OffloadedFileID, status: OffloadedFileStatus) -> StackEvent? {
        guard let pending = pendingOpens[request], pending.file == file else { return nil }
        pendingOpens[request] = nil
        let opened = OffloadedFile(id: file, path: pending.path, status: status, device: pending.device)
        files[file] = FileRecord(file: opened)
        return .offloadOpened(OffloadRequest(rawValue: request), .success(opened), token: pending.token)
    }

    /// An ERROR about an open: the failure event, or nil when no such open waits.
    mutating func failOpen(request: UInt32, _ error: IOTCPError) -> StackEvent? {
        guard let pending = pendingOpens.removeValue(forKey: request) else { return nil }
        return .offloadOpened(OffloadRequest(rawValue: request), .failure(error), token: pending.token)
    }

    // MARK: - Open files

    /// The file, unless unknown or already given to close.
    func file(_ id: OffloadedFileID) -> OffloadedFile? {
        guard let record = files[id], !record.closeRequested else { return nil }
        return record.file
    }

    /// `user` queued a range of `id`: the NIC must keep the file open for it. `isLive` prunes, now and then,
    /// the connections that have gone, so a long-lived file's set stays the size of the live ones.
    mutating func noteUser(_ user: TCPHandle, of id: OffloadedFileID, isLive: (TCPHandle) -> Bool) {
        guard let index = files.index(forKey: id), files.values[index].users.insert(user) else { return }
        if files.values[index].users.count >= 2 * files.values[index].usersAfterPrune + 64 {
            files.values[index].users.removeAll { !isLive($0) }
            files.values[index].usersAfterPrune = files.values[index].users.count
        }
    }

    /// The application gives up `id`: true when the NIC may close it now; otherwise it waits for the users
    /// `stillSending` names. Throws nothing: the caller checked `file(_:)`.
    mutating func close(_ id: OffloadedFileID, stillSending: (TCPHandle) -> Bool) -> Bool {
        guard let index = files.index(forKey: id) else { return false }
        files.values[index].users.removeAll { !stillSending($0) }
        guard !files.values[index].users.isEmpty else {
            files.remove(at: index)
            return true
        }
        files.values[index].closeRequested = true
        files.values[index].users.forEach { user in closingUsers[user, default: HeldFiles()].append(id) }
        return false
    }

    /// Closing files that `user` holds up on the NIC.
    func heldCount(of user: TCPHandle) -> Int { closingUsers.isEmpty ? 0 : closingUsers[user]?.count ?? 0 }

    /// `user` had everything acknowledged, or closed: `closable` is called with each file it alone held up,
    /// which may now close.
    mutating func release(user: TCPHandle, _ closable: (OffloadedFileID) -> Void) {
        guard !closingUsers.isEmpty, let held = closingUsers.removeValue(forKey: user) else { return }
        held.forEach { id in
            guard let index = files.index(forKey: id) else { return }
            files.values[index].users.remove(user)
            if files.values[index].users.isEmpty {
                files.remove(at: index)
                closable(id)
            }
        }
    }

    /// The channel failed: every open that waits fails with `error` (the events returned), and every file is
    /// forgotten (the NIC is gone with them).
    mutating func failAll(_ error: IOTCPError) -> [StackEvent] {
        let failures = pendingOpens.map { request, pending in
            StackEvent.offloadOpened(OffloadRequest(rawValue: request), .failure(error), token: pending.token)
        }
        pendingOpens.removeAll()
        files.removeAll()
        closingUsers.removeAll()
        return failures
    }
}

/// The connections using one offloaded file. Most files have exactly one (a response opens its own), so
/// that one is kept inline and a set is made only for a second: a short request then allocates nothing
/// here.
struct FileUsers {
    private var first: TCPHandle?
    private var others: Set<TCPHandle> = []

    var isEmpty: Bool { first == nil }
    var count: Int { first == nil ? 0 : 1 + others.count }

    func contains(_ user: TCPHandle) -> Bool { first == user || (!others.isEmpty && others.contains(user)) }

    /// Adds `user`; false when it was there already.
    @discardableResult
    mutating func insert(_ user: TCPHandle) -> Bool {
        guard !contains(user) else { return false }
        if first == nil { first = user } else { others.insert(user) }
        return true
    }

    mutating func remove(_ user: TCPHandle) {
        if first == user {
            first = others.popFirst()
        } else if !others.isEmpty {
            others.remove(user)
        }
    }

    mutating func removeAll(where shouldRemove: (TCPHandle) -> Bool) {
        if !others.isEmpty { others = others.filter { !shouldRemove($0) } }
        if let user = first, shouldRemove(user) { first = others.popFirst() }
    }

    func forEach(_ body: (TCPHandle) -> Void) {
        if let first { body(first) }
        others.forEach(body)
    }
}

/// The closing files one connection holds up: usually one (its last response's), kept inline.
struct HeldFiles {
    private var first: OffloadedFileID?
    private var others: [OffloadedFileID] = []

    var count: Int { first == nil ? 0 : 1 + others.count }

    mutating func append(_ id: OffloadedFileID) {
        if first == nil { first = id } else { others.append(id) }
    }

    func forEach(_ body: (OffloadedFileID) -> Void) {
        if let first { body(first) }
        others.forEach(body)
    }
}
