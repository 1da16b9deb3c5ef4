import IOTCPCommon

/// Swift concurrency over an `IOTCPStack`: `accept`, `read`, `write`, `offloadOpen` and `offloadWrite` that
/// suspend instead of answering would-block, for servers written as a task per connection.
///
/// The actor owns the stack; one task must call `run()`, which pumps the stack's event queue and resumes
/// the suspended calls whose sockets became ready. Sockets are registered edge-triggered: a call that
/// would block waits for the next edge on its socket and then simply tries again, so a missed condition
/// is impossible (every attempt runs on the actor after every event before it has been handled).
///
/// When idle, `run()` checks the stack with a back-off up to a millisecond rather than blocking in the
/// channel, so calls from other tasks never queue behind a sleeping `wait`. Servers that want the last
/// microsecond use `IOTCPStack.wait` directly. Calls throw `IOTCPError`, or `CancellationError` when
/// their task is cancelled while suspended.
public actor AsyncIOTCPStack {
    private let stack: IOTCPStack
    private var events: [StackEvent] = []
    private var waiters: [Socket: [UInt64: CheckedContinuation<Void, Never>]] = [:]
    /// Suspended `offloadOpen` calls; resumed with nil when their task is cancelled.
    private var opens: [OffloadRequest: CheckedContinuation<Result<OffloadedFile, IOTCPError>?, Never>] = [:]
    /// Opens whose caller was cancelled: the file is closed when the NIC's answer comes.
    private var abandonedOpens: Set<OffloadRequest> = []
    private var nextWaiter: UInt64 = 1
    private var stopping = false
    private var running = false

    /// The longest `run()` naps between looks at an idle stack.
    public static let longestIdleNap: UInt64 = Nanoseconds.millisecond

    public init(stack: sending IOTCPStack) {
        self.stack = stack
    }

    // MARK: - The pump

    /// Pumps the stack until `stop()`, the cancellation of its task (both return normally), or a channel
    /// failure (which it throws); calls still suspended then fail. Call it once, from its own task.
    public func run() async throws(IOTCPError) {
        guard !running else { throw .tcp(.invalidArgument("AsyncIOTCPStack.run() is already running")) }
        running = true
        defer { running = false }
        var nap: UInt64 = 0
        // A cancelled task's naps return at once: without the check, a cancelled pump would spin a core.
        while !stopping && !Task.isCancelled {
            let count: Int
            do throws(IOTCPError) {
                count = try stack.wait(into: &events, timeoutNanoseconds: 0)
            } catch {
                resumeEveryone()
                throw error
            }
            for event in events {
                switch event {
                case .socket(let socket, _, _):
                    resumeWaiters(of: socket)
                case .offloadOpened(let request, let result, _):
                    if let continuation = opens.removeValue(forKey: request) {
                        continuation.resume(returning: result)
                    } else if abandonedOpens.remove(request) != nil, case .success(let file) = result {
                        try? stack.offloadClose(file.id)
                    }
                }
            }
            if count > 0 {
                nap = 0
                await Task.yield()
            } else {
                nap = min(max(nap * 2, 20_000), Self.longestIdleNap)
                try? await Task.sleep(nanoseconds: nap)
            }
        }
        stopping = false
        resumeEveryone()
    }

    /// Runs `body` on the actor with the stack itself: statistics, `info(of:)`, anything not wrapped here.
    public func withStack<T: Sendable>(_ body: (IOTCPStack) throws -> T) rethrows -> T { try body(stack) }

    /// Makes `run()` return after its current turn; calls still suspended are resumed and fail or retry.
    public func stop() { stopping = true }

    // MARK: - Sockets

    public func listen(port: UInt16, backlog: Int = 1024) throws(IOTCPError) -> Socket {
        let listener = try stack.listen(port: port, backlog: backlog)
        try stack.register(listener, interests: .acceptable, mode: .edge)
        return listener
    }

    /// The next connection on `listener`, waiting for one.
    public func accept(_ listener: Socket) async throws -> Socket {
        while true {
            if let socket = try stack.accept(listener) {
                try stack.register(socket, interests: [.readable, .writable, .readClosed], mode: .edge)
                return socket
            }
            try await readiness(of: listener)
        }
    }

    /// Opens a connection and waits until it is established (or fails).
    public func connect(to address: IPv4Address, port: UInt16) async throws -> Socket {
        let socket = try stack.connect(to: address, port: port)
        try stack.register(socket, interests: [.readable, .writable, .readClosed], mode: .edge)
        while true {
            if let error = stack.error(of: socket) { throw error }
            if stack.readiness(of: socket).contains(.writable) { return socket }
            if stack.readiness(of: socket).contains(.hangUp) { throw IOTCPError.badSocket("\(socket) closed while connecting") }
            try await readiness(of: socket)
        }
    }

    /// Up to `maxBytes` bytes, waiting for at least one; empty once the peer has closed its side.
    public func read(_ socket: Socket, maxBytes: Int = 65536) async throws -> [UInt8] {
        guard maxBytes > 0 else { throw IOTCPError.tcp(.invalidArgument("read needs room for at least one byte")) }
        var bytes = [UInt8](repeating: 0, count: maxBytes)
        while true {
            do throws(IOTCPError) {
                let count = try bytes.withUnsafeMutableBytes { raw in
                    Result { () throws(IOTCPError) in try stack.read(socket, into: raw) }
                }.get()
                bytes.removeLast(maxBytes - count)
                return bytes
            } catch {
                // (`catch .wouldBlock` with the rest rethrown untyped crashes the 6.3 compiler.)
                guard error == .wouldBlock else { throw error }
                try await readiness(of: socket)
            }
        }
    }

    /// Queues all of `bytes`, waiting for room as often as needed.
    public func write(_ socket: Socket, _ bytes: [UInt8]) async throws {
        var written = 0
        while written < bytes.count {
            do throws(IOTCPError) {
                written += try bytes.withUnsafeBytes { raw in
                    Result { () throws(IOTCPError) in try stack.write(socket, UnsafeRawBufferPointer(rebasing: raw[written...])) }
                }.get()
            } catch {
                // (`catch .wouldBlock` with the rest rethrown untyped crashes the 6.3 compiler.)
                guard error == .wouldBlock else { throw error }
                try await readiness(of: socket)
            }
        }
    }

    public func shutdown(_ socket: Socket) throws(IOTCPError) { try stack.shutdown(socket) }

    /// Closes `socket` gracefully: what was queued is still delivered.
    public func close(_ socket: Socket) throws(IOTCPError) {
        stack.deregister(socket)
        try stack.close(socket)
        resumeWaiters(of: socket)
    }

    public func abort(_ socket: Socket) throws(IOTCPError) {
        stack.deregister(socket)
        try stack.abort(socket)
        resumeWaiters(of: socket)
    }

    // MARK: - Offload

    /// Opens `path` on the NIC, under its export root.
    public func offloadOpen(_ path: String) async throws -> OffloadedFile {
        let request = try stack.offloadOpen(path)
        try Task.checkCancellation()
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { opens[request] = $0 }
        } onCancel: {
            Task { await self.abandonOpen(request) }
        }
        guard let result else { throw CancellationError() }
        return try result.get()
    }

    public func offloadFstat(_ file: OffloadedFileID) throws(IOTCPError) -> OffloadedFileStatus { try stack.offloadFstat(file) }

    /// sendfile to completion: queues `length` bytes of `file` from `offset` (clamped to the file's end),
    /// waiting for room as often as needed, in stream order with the socket's other writes. Returns the
    /// number of bytes queued.
    @discardableResult
    public func offloadWrite(_ socket: Socket, file: OffloadedFileID, offset: UInt64 = 0, length: Int) async throws -> Int {
        var queued = 0
        while queued < length {
            do throws(IOTCPError) {
                let taken = try stack.offloadWrite(socket, file: file, offset: offset + UInt64(queued), length: length - queued)
                if taken == 0 { break }  // the end of the file
                queued += taken
            } catch {
                // (`catch .wouldBlock` with the rest rethrown untyped crashes the 6.3 compiler.)
                guard error == .wouldBlock else { throw error }
                try await readiness(of: socket)
            }
        }
        return queued
    }

    public func offloadClose(_ file: OffloadedFileID) throws(IOTCPError) { try stack.offloadClose(file) }

    // MARK: - Waiting

    /// Suspends until the next event on `socket` (or cancellation, or the pump stopping).
    private func readiness(of socket: Socket) async throws {
        try Task.checkCancellation()
        let id = nextWaiter
        nextWaiter += 1
        await withTaskCancellationHandler {
            await withCheckedContinuation { waiters[socket, default: [:]][id] = $0 }
        } onCancel: {
            Task { await self.cancelWaiter(id, of: socket) }
        }
        try Task.checkCancellation()
        if let failure = stack.channelFailure { throw IOTCPError.channel(failure) }
        if !running && !stopping { throw IOTCPError.badSocket("\(socket): the stack's run() is not running") }
    }

    private func resumeWaiters(of socket: Socket) {
        guard let ready = waiters.removeValue(forKey: socket) else { return }
        for continuation in ready.values { continuation.resume() }
    }

    private func cancelWaiter(_ id: UInt64, of socket: Socket) {
        waiters[socket]?.removeValue(forKey: id)?.resume()
    }

    private func abandonOpen(_ request: OffloadRequest) {
        guard let continuation = opens.removeValue(forKey: request) else { return }
        abandonedOpens.insert(request)
        continuation.resume(returning: nil)
    }

    private func resumeEveryone() {
        let sockets = Array(waiters.keys)
        for socket in sockets { resumeWaiters(of: socket) }
        let failure: IOTCPError = stack.channelFailure.map { .channel($0) } ?? .badSocket("the stack stopped")
        for (_, continuation) in opens { continuation.resume(returning: .failure(failure)) }
        opens.removeAll()
    }
}
