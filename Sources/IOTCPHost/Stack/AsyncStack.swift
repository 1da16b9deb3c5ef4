internal import CIOTCPSystem
import Dispatch
import Glibc
import IOTCPCommon

/// Swift concurrency over an `IOTCPStack`: `accept`, `read`, `write`, `offloadOpen` and `offloadWrite` that
/// suspend instead of answering would-block, for servers written as a task per connection.
///
/// The actor owns the stack; one task must call `run()`, which pumps the stack's event queue and resumes
/// the suspended calls whose sockets became ready. Sockets are registered edge-triggered: a call that
/// would block waits for the next edge on its socket and then simply tries again, so a missed condition
/// is impossible (every attempt runs on the actor after every event before it has been handled).
///
/// When idle, `run()` suspends (it does not block the actor) while a helper thread sleeps on the stack's
/// `pollDescriptor` until the NIC sends, a TCP timer is due, or a call on the actor gives the stack work;
/// over a busy-polled channel it naps instead. Every call throws `IOTCPError`: `.cancelled` when its task
/// is cancelled while suspended.
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
    /// A `run()` ran and returned: calls that would wait fail at once instead of waiting for a pump that
    /// is gone. (Before the first `run()` they wait: the pump's task may simply not have started yet.)
    private var pumpEnded = false
    /// Rung (an eventfd) to end the pump's sleep early: a call gave the stack work, `stop()`, cancellation.
    private nonisolated let doorbell: Int32
    /// Whether the pump sleeps now, so calls ring the doorbell only then (one write, not one per call).
    private var asleep = false
    /// Where the pump's sleeps block: a thread of this stack's own (a queue shared by several stacks would
    /// hold one's sleep behind another's), never the actor's executor.
    private nonisolated let sleeper = DispatchQueue(label: "iotcp.async-stack.sleep")

    /// The longest the pump sleeps without looking when nothing is due (a channel's peer vanishing is
    /// noticed by then).
    public let longestSleep: Int64
    /// Turns of the pump, and the turns that ended in a sleep: an idle stack shows few of either.
    public private(set) var pumpTurns = 0
    public private(set) var pumpSleeps = 0

    public init(stack: sending IOTCPStack, longestSleepNanoseconds: Int64 = 100 * Int64(Nanoseconds.millisecond)) {
        self.stack = stack
        longestSleep = max(longestSleepNanoseconds, 1)
        doorbell = iotcp_eventfd()
    }

    deinit {
        if doorbell >= 0 { Glibc.close(doorbell) }
    }

    // MARK: - The pump

    /// Pumps the stack until `stop()`, the cancellation of its task (both return normally), or a channel
    /// failure (which it throws); calls still suspended then fail. Call it once, from its own task.
    public func run() async throws(IOTCPError) {
        guard !running else { throw .tcp(.invalidArgument("AsyncIOTCPStack.run() is already running")) }
        running = true
        pumpEnded = false
        defer {
            running = false
            pumpEnded = true
        }
        var nap: UInt64 = 0
        while !stopping && !Task.isCancelled {
            pumpTurns += 1
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
                continue
            }
            // Let the tasks just resumed run (and queue their commands) before deciding to sleep.
            await Task.yield()
            if stopping || Task.isCancelled { break }
            guard let timeout = stack.prepareToPoll(upTo: longestSleep) else { continue }
            pumpSleeps += 1
            if stack.pollDescriptor < 0 || doorbell < 0 {
                stack.finishPolling()
                // A busy-polled channel: back off up to a millisecond rather than spin a core.
                nap = min(max(nap * 2, 20_000), UInt64(Nanoseconds.millisecond))
                try? await Task.sleep(nanoseconds: min(nap, UInt64(timeout)))
                continue
            }
            await sleep(on: stack.pollDescriptor, nanoseconds: timeout)
            stack.finishPolling()
        }
        stopping = false
        resumeEveryone()
    }

    /// Suspends until `descriptor` or the doorbell turns readable, `nanoseconds` pass, or the task is
    /// cancelled; the blocking poll runs on `sleeper`.
    private func sleep(on descriptor: Int32, nanoseconds: Int64) async {
        asleep = true
        defer { asleep = false }
        let doorbell = self.doorbell, sleeper = self.sleeper
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                sleeper.async {
                    var descriptors = [pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0),
                                       pollfd(fd: doorbell, events: Int16(POLLIN), revents: 0)]
                    _ = iotcp_poll_nanoseconds(&descriptors, 2, nanoseconds)
                    var value: UInt64 = 0
                    if descriptors[1].revents != 0 { _ = Glibc.read(doorbell, &value, 8) }
                    continuation.resume()
                }
            }
        } onCancel: {
            ring(doorbell)
        }
    }

    /// Ends the pump's sleep, if it sleeps: a call just gave the stack something to send or a timer to run.
    private func wakePump() {
        if asleep { ring(doorbell) }
    }

    /// Runs `body` on the actor with the stack itself: statistics, `info(of:)`, anything not wrapped here.
    public func withStack<T: Sendable>(_ body: (IOTCPStack) throws -> T) rethrows -> T { try body(stack) }

    /// Makes `run()` return after its current turn; calls still suspended are resumed and fail or retry.
    public func stop() {
        stopping = true
        wakePump()
    }

    // MARK: - Sockets

    public func listen(port: UInt16, backlog: Int = 1024, deferAccept: Bool = false) throws(IOTCPError) -> Socket {
        let listener = try stack.listen(port: port, backlog: backlog, deferAccept: deferAccept)
        try stack.register(listener, interests: .acceptable, mode: .edge)
        return listener
    }

    /// The next connection on `listener`, waiting for one.
    public func accept(_ listener: Socket) async throws(IOTCPError) -> Socket {
        while true {
            if let socket = try stack.accept(listener) {
                try stack.register(socket, interests: [.readable, .writable, .readClosed], mode: .edge)
                wakePump()  // accepting may open the receive window
                return socket
            }
            try await readiness(of: listener)
        }
    }

    /// Opens a connection and waits until it is established (or fails).
    public func connect(to address: IPv4Address, port: UInt16) async throws(IOTCPError) -> Socket {
        try await connect(to: IPAddress(address), port: port)
    }

    /// The same to an address of either family.
    public func connect(to address: IPAddress, port: UInt16) async throws(IOTCPError) -> Socket {
        let socket = try stack.connect(to: address, port: port)
        try stack.register(socket, interests: [.readable, .writable, .readClosed], mode: .edge)
        wakePump()
        while true {
            if let error = stack.error(of: socket) { throw error }
            if stack.readiness(of: socket).contains(.writable) { return socket }
            if stack.readiness(of: socket).contains(.hangUp) { throw .badSocket("\(socket) closed while connecting") }
            try await readiness(of: socket)
        }
    }

    /// Up to `maxBytes` bytes, waiting for at least one; empty once the peer has closed its side.
    public func read(_ socket: Socket, maxBytes: Int = 65536) async throws(IOTCPError) -> [UInt8] {
        guard maxBytes > 0 else { throw .tcp(.invalidArgument("read needs room for at least one byte")) }
        while true {
            do throws(IOTCPError) {
                let bytes = try stack.read(socket, maximumCount: maxBytes)
                wakePump()  // reading may open the receive window
                return bytes
            } catch {
                guard error == .wouldBlock else { throw error }
                try await readiness(of: socket)
            }
        }
    }

    /// Queues all of `bytes`, waiting for room as often as needed.
    public func write(_ socket: Socket, _ bytes: some Collection<UInt8> & Sendable) async throws(IOTCPError) {
        var rest = bytes[...]
        while !rest.isEmpty {
            do throws(IOTCPError) {
                let taken = try stack.write(socket, rest)
                rest = rest.dropFirst(taken)
                wakePump()
            } catch {
                guard error == .wouldBlock else { throw error }
                try await readiness(of: socket)
            }
        }
    }

    public func shutdown(_ socket: Socket) throws(IOTCPError) {
        try stack.shutdown(socket)
        wakePump()
    }

    /// Closes `socket` gracefully: what was queued is still delivered.
    public func close(_ socket: Socket) throws(IOTCPError) {
        stack.deregister(socket)
        try stack.close(socket)
        resumeWaiters(of: socket)
        wakePump()
    }

    public func abort(_ socket: Socket) throws(IOTCPError) {
        stack.deregister(socket)
        try stack.abort(socket)
        resumeWaiters(of: socket)
        wakePump()
    }

    // MARK: - Offload

    /// Opens `path` on the NIC, under its export root.
    public func offloadOpen(_ path: String) async throws(IOTCPError) -> OffloadedFile {
        if Task.isCancelled { throw .cancelled }
        if pumpEnded && !running { throw .badSocket("offloadOpen(\(path)): the stack's run() has returned") }
        let request = try stack.offloadOpen(path)
        wakePump()
        let result = await withTaskCancellationHandler {
            await withCheckedContinuation { opens[request] = $0 }
        } onCancel: {
            Task { await self.abandonOpen(request) }
        }
        guard let result else { throw .cancelled }
        return try result.get()
    }

    public func offloadFstat(_ file: OffloadedFileID) throws(IOTCPError) -> OffloadedFileStatus { try stack.offloadFstat(file) }

    /// sendfile to completion: queues `length` bytes of `file` from `offset` (clamped to the file's end),
    /// waiting for room as often as needed, in stream order with the socket's other writes. Returns the
    /// number of bytes queued.
    @discardableResult
    public func offloadWrite(_ socket: Socket, file: OffloadedFileID, offset: UInt64 = 0, length: Int) async throws(IOTCPError) -> Int {
        var queued = 0
        while queued < length {
            do throws(IOTCPError) {
                let taken = try stack.offloadWrite(socket, file: file, offset: offset + UInt64(queued), length: length - queued)
                if taken == 0 { break }  // the end of the file
                queued += taken
                wakePump()
            } catch {
                guard error == .wouldBlock else { throw error }
                try await readiness(of: socket)
            }
        }
        return queued
    }

    public func offloadClose(_ file: OffloadedFileID) throws(IOTCPError) {
        try stack.offloadClose(file)
        wakePump()
    }

    // MARK: - Waiting

    /// Suspends until the next event on `socket` (or cancellation, or the pump stopping).
    private func readiness(of socket: Socket) async throws(IOTCPError) {
        if Task.isCancelled { throw .cancelled }
        if pumpEnded && !running { throw .badSocket("\(socket): the stack's run() has returned") }
        let id = nextWaiter
        nextWaiter += 1
        // The pump may sleep with this call's commands unsent: it must look again before the wait.
        wakePump()
        await withTaskCancellationHandler {
            await withCheckedContinuation { waiters[socket, default: [:]][id] = $0 }
        } onCancel: {
            Task { await self.cancelWaiter(id, of: socket) }
        }
        if Task.isCancelled { throw .cancelled }
        if let failure = stack.channelFailure { throw .channel(failure) }
        if !running && !stopping { throw .badSocket("\(socket): the stack's run() is not running") }
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

/// Adds one to an eventfd, from any thread.
private func ring(_ eventDescriptor: Int32) {
    var one: UInt64 = 1
    _ = Glibc.write(eventDescriptor, &one, 8)
}
