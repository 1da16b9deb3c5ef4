internal import CIOTCPSystem
import Glibc
import IOTCPCommon
import Logging

extension ChannelSender: CommandOutput {
    public func emit(_ command: Command) { append(command) }
    public func emitPacket(flow: FlowID, length: Int, _ build: (UnsafeMutableRawBufferPointer) -> Void) {
        appendPacket(.packetOut, flow: flow, length: length, build)
    }
}

/// The host half of iotcp as an application uses it: sockets, the offload calls, and an epoll-style
/// event queue, over a command channel to the NIC half (in-process, shared memory, or RDMA).
///
/// It is single-threaded, like an event loop: every call and `wait` on the thread that owns it. Commands
/// the calls produce are batched and reach the NIC at the next `wait` (or `flush`). `wait` is where the
/// stack does its work: it takes the NIC's messages (received packets, ECHOs, open completions, errors),
/// runs the TCP timers, and returns what became ready.
///
/// ```swift
/// let listener = try stack.listen(port: 8080)
/// try stack.register(listener, interests: .acceptable, token: 0)
/// var events: [StackEvent] = []
/// while true {
///     try stack.wait(into: &events, timeoutNanoseconds: 10_000_000)
///     for event in events { ... accept, read, write, offloadWrite ... }
/// }
/// ```
public final class IOTCPStack {
    public let engine: TCPEngine
    public let channel: any CommandChannel
    private let sender: ChannelSender
    // Unchecked for the engine's reason (`TCPEngine`): a stack is driven by one thread, and its methods do not
    // hold an access to one of these across a call that takes another. The runtime's checks on them were
    // about a fifth of the host thread's exclusivity bookkeeping under short connections.
    /// Connections with bytes written with `more` and not yet flushed.
    @exclusivity(unchecked) private var corked: [TCPHandle] = []
    /// Connections with TCP_CORK on (`setCork`). A set: a server may leave every connection corked.
    @exclusivity(unchecked) private var corkedConnections: Set<TCPHandle> = []
    private let clock: () -> Instant

    /// Registrations and the sockets that may be ready (the epoll half).
    @exclusivity(unchecked) private var interest = EventRegistrations()
    /// Offloaded files: opens in flight, open files and who holds them up.
    @exclusivity(unchecked) private var files = OffloadedFileTable()
    /// Finished opens not yet returned by `wait`.
    @exclusivity(unchecked) private var completions: [StackEvent] = []
    /// The NIC's explanation for connections it failed.
    @exclusivity(unchecked) private var nicFailures: [TCPHandle: IOTCPError] = [:]
    /// Where the stack says what went wrong beyond one call's error: the NIC's explanations for the
    /// connections it failed and malformed commands from the NIC (warning), the channel's
    /// failure (error). Nothing is logged per packet.
    public var logger: Logger

    /// The NIC's HELLO, once it came.
    @exclusivity(unchecked) public private(set) var nic: Hello?
    /// Set when the channel to the NIC failed; every later call reports it.
    @exclusivity(unchecked) public private(set) var channelFailure: ChannelError?
    /// The events of the failure were returned by a `wait`; later waits throw.
    @exclusivity(unchecked) private var channelFailureReported = false
    @exclusivity(unchecked) public private(set) var statistics = Statistics()
    /// Messages and commands sent to the NIC, and the messages that waited because the channel was full.
    public var channelStatistics: ChannelSender.Statistics { sender.statistics }

    public struct Statistics: Hashable, Sendable {
        public var messagesIn = 0
        public var commandsIn = 0
        public var malformedCommands = 0
        public var nicErrors = 0
        /// NIC errors about a connection that had already left its slot (its id's generation is past): not
        /// taken for the slot's next connection.
        public var staleNICErrors = 0
    }

    /// `secret` keys the ISN and SYN-cookie hashes (fresh random bits when nil); `clock` is monotonic
    /// time (tests pass a virtual one).
    public init(
        channel: any CommandChannel, address: IPv4Address, ipv6Address: IPv6Address? = nil, configuration: TCPConfiguration = TCPConfiguration(),
        secret: (UInt64, UInt64)? = nil, clock: @escaping () -> Instant = IOTCPStack.monotonicNow,
        logger: Logger = Logger(label: "iotcp.host")
    ) {
        var random = SystemRandomNumberGenerator()
        let keys = secret ?? (random.next(), random.next())
        self.channel = channel
        self.logger = logger
        self.clock = clock
        sender = ChannelSender(channel: channel)
        engine = TCPEngine(localAddress: address, ipv6Address: ipv6Address, configuration: configuration, secret: keys, now: clock())
        sender.append(.hello(Hello(role: .host, maxMessageBytes: UInt32(channel.maxMessageBytes),
                                   maxFlows: UInt32(engine.maximumConnections), maxOpenFiles: 1 << 16)))
        sender.flush()
    }

    /// iotcp's one monotonic clock (CLOCK_MONOTONIC, as the channels' deadlines), offset so it never reads zero.
    public static func monotonicNow() -> Instant {
        Instant(nanoseconds: UInt64(iotcp_monotonic_nanoseconds()) + Nanoseconds.second)
    }

    public var now: Instant { clock() }

    // MARK: - Sockets

    /// Listens on `port`. With `TCPConfiguration.handshakesOnNIC` (the default) the NIC answers the port's
    /// SYNs itself with SYN cookies and hands over completed handshakes only.
    ///
    /// `deferAccept` (Linux's TCP_DEFER_ACCEPT, nginx's `listen ... deferred`): a connection is handed over
    /// only with the client's first data (or FIN), so `accept` returns it with its request readable and the
    /// host never holds a client that connects and says nothing. For protocols whose clients speak first,
    /// such as HTTP; a client that waits for a greeting is never accepted. It takes effect where the NIC
    /// answers the handshakes (`handshakesOnNIC`).
    public func listen(port: UInt16, backlog: Int = 1024, deferAccept: Bool = false) throws(IOTCPError) -> Socket {
        try checkChannel()
        let listener: TCPListenerID
        do throws(TCPError) {
            listener = try engine.listen(port: port, backlog: backlog)
        } catch { throw .tcp(error) }
        if engine.configuration.handshakesOnNIC {
            sender.append(.listen(engine.configuration.listenerOptions(port: port, deferAccept: deferAccept)))
        }
        return Socket(listener: listener.port)
    }

    /// The next established connection, or nil when none is waiting.
    public func accept(_ listener: Socket) throws(IOTCPError) -> Socket? {
        guard case .listener(let port) = listener.kind else { throw .badSocket("\(listener) is not a listener") }
        return engine.accept(TCPListenerID(port: port)).map(Socket.init(connection:))
    }

    /// An active open; the socket turns writable once connected (or reports an error).
    public func connect(to address: IPv4Address, port: UInt16) throws(IOTCPError) -> Socket {
        try connect(to: IPAddress(address), port: port)
    }

    /// An active open to an address of either family (IPv6 needs the stack's `ipv6Address`).
    public func connect(to address: IPAddress, port: UInt16) throws(IOTCPError) -> Socket {
        try checkChannel()
        var output = sender
        do throws(TCPError) {
            return Socket(connection: try engine.connect(to: address, port: port, now: clock(), output: &output))
        } catch { throw .tcp(error) }
    }

    /// Copies received bytes into `buffer`: the count, 0 at end of stream; `.wouldBlock` when nothing is
    /// there yet.
    public func read(_ socket: Socket, into buffer: UnsafeMutableRawBufferPointer) throws(IOTCPError) -> Int {
        let handle = try connection(socket)
        var output = sender
        let count: Int
        do throws(TCPError) { count = try engine.read(handle, into: buffer, now: clock(), output: &output) } catch {
            throw .tcp(error)
        }
        if count == 0 && buffer.count > 0 && !engine.isReadClosed(handle) && engine.state(of: handle) != .closed {
            throw .wouldBlock
        }
        return count
    }

    /// Queues bytes from application memory; returns how many were taken (`.wouldBlock` when none).
    ///
    /// With `more` (MSG_MORE), more is about to follow: the bytes wait for it, at the latest until the next
    /// `wait`, `prepareToPoll` or `flush`. A response head written so and the file range queued after it
    /// with `offloadWrite` leave in the same segment (`TCPConfiguration.headsWithFiles`).
    public func write(_ socket: Socket, _ bytes: UnsafeRawBufferPointer, more: Bool = false) throws(IOTCPError) -> Int {
        let handle = try connection(socket)
        try checkChannel()
        var output = sender
        let count: Int
        let more = more || !corkedConnections.isEmpty && corkedConnections.contains(handle)
        do throws(TCPError) { count = try engine.write(handle, bytes, more: more, now: clock(), output: &output) } catch {
            throw .tcp(error)
        }
        if count == 0 && !bytes.isEmpty { throw .wouldBlock }
        if more && count > 0 && corked.last != handle { corked.append(handle) }
        return count
    }

    /// Sends what writes with `more` left waiting.
    private func flushCorked() {
        guard !corked.isEmpty else { return }
        var output = sender
        let now = clock()
        for handle in corked { engine.flush(handle, now: now, output: &output) }
        corked.removeAll(keepingCapacity: true)
    }

    /// Sends FIN once everything queued is sent; reading goes on.
    public func shutdown(_ socket: Socket) throws(IOTCPError) {
        let handle = try connection(socket)
        var output = sender
        do throws(TCPError) { try engine.shutdownWrite(handle, now: clock(), output: &output) } catch { throw .tcp(error) }
    }

    /// TCP_CORK: while on, every write to the connection is a write with `more` (its bytes wait for what
    /// follows, so a head and the file range queued after it share a segment); turning it off sends what
    /// waits. Unlike Linux's cork, which holds bytes up to 200 ms, waiting bytes also go at the next `wait`.
    public func setCork(_ socket: Socket, _ enabled: Bool) throws(IOTCPError) {
        let handle = try connection(socket)
        if enabled {
            corkedConnections.insert(handle)
        } else {
            corkedConnections.remove(handle)
            var output = sender
            engine.flush(handle, now: clock(), output: &output)
        }
    }

    /// TCP_NODELAY: `true` turns Nagle's algorithm off for this connection (short writes go at once).
    public func setNoDelay(_ socket: Socket, _ enabled: Bool) throws(IOTCPError) {
        let handle = try connection(socket)
        var output = sender
        do throws(TCPError) { try engine.setOptions(handle, noDelay: enabled, now: clock(), output: &output) } catch { throw .tcp(error) }
    }

    /// SO_KEEPALIVE: probes an idle connection and fails it with `.timedOut` when the peer is gone (the
    /// configuration's keepalive timing, or Linux's: 2 h idle, 75 s apart, 9 probes).
    public func setKeepalive(_ socket: Socket, _ enabled: Bool) throws(IOTCPError) {
        let handle = try connection(socket)
        var output = sender
        do throws(TCPError) { try engine.setOptions(handle, keepalive: enabled, now: clock(), output: &output) } catch { throw .tcp(error) }
    }

    /// Closes a socket: a listener stops listening; a connection sends FIN after its queued data (the
    /// stack finishes the close by itself). The socket is deregistered and must not be used again.
    public func close(_ socket: Socket) throws(IOTCPError) {
        var output = sender
        interest.deregister(socket)
        switch socket.kind {
        case .listener(let port):
            if engine.configuration.handshakesOnNIC && engine.isListening(TCPListenerID(port: port)) {
                output.emit(.listen(engine.configuration.listenerOptions(port: port, isListening: false)))
            }
            engine.stopListening(TCPListenerID(port: port), now: clock(), output: &output)
        case .connection(let handle):
            forgetFailure(of: handle)
            if !corkedConnections.isEmpty { corkedConnections.remove(handle) }
            do throws(TCPError) { try engine.close(handle, now: clock(), output: &output) } catch { throw .tcp(error) }
        }
    }

    /// Joins two connections on the NIC for a proxy (`TCPEngine.splice`): `head`, then whatever of the
    /// client's request is not yet read, goes to the backend, and from then the NIC relays between the two
    /// peers; both sockets are released (deregistered, as by `close`). Throws `.tcp(.cannotSplice)`,
    /// changing nothing, when they cannot be spliced now: copy between them instead.
    public func splice(_ client: Socket, to backend: Socket, head: UnsafeRawBufferPointer) throws(IOTCPError) {
        try checkChannel()
        let clientHandle = try connection(client), backendHandle = try connection(backend)
        var output = sender
        do throws(TCPError) {
            // The command carries the head, so the head must fit one channel message.
            let room = sender.maxCommandBytes - CommandProtocol.commandHeaderLength - CommandKind.splice.fixedBodyLength
            try engine.splice(clientHandle, to: backendHandle, head: head, now: clock(), output: &output, maximumHeadLength: room)
        } catch { throw .tcp(error) }
        for (socket, handle) in [(client, clientHandle), (backend, backendHandle)] {
            interest.deregister(socket)
            forgetFailure(of: handle)
        }
    }

    /// Resets a connection (RST) and releases the socket.
    public func abort(_ socket: Socket) throws(IOTCPError) {
        let handle = try connection(socket)
        var output = sender
        interest.deregister(socket)
        forgetFailure(of: handle)
        do throws(TCPError) { try engine.abort(handle, output: &output) } catch { throw .tcp(error) }
    }

    /// The NIC's failures are rare: looking the handle up in an empty table would still hash it, on every
    /// close and every readiness check.
    private func forgetFailure(of handle: TCPHandle) {
        if !nicFailures.isEmpty { nicFailures[handle] = nil }
    }

    private func failedOnNIC(_ handle: TCPHandle) -> Bool { !nicFailures.isEmpty && nicFailures[handle] != nil }

    /// Why a connection failed, with the NIC's explanation when it was the NIC's doing; nil if it has not.
    public func error(of socket: Socket) -> IOTCPError? {
        guard let handle = socket.connection else { return nil }
        if !nicFailures.isEmpty, let failure = nicFailures[handle] { return failure }
        return engine.error(of: handle).map(IOTCPError.tcp)
    }

    public func endpoints(of socket: Socket) -> FlowEndpoints? { socket.connection.flatMap(engine.endpoints(of:)) }
    public func info(of socket: Socket) -> TCPConnectionInfo? { socket.connection.flatMap(engine.info(of:)) }

    private func connection(_ socket: Socket) throws(IOTCPError) -> TCPHandle {
        guard case .connection(let handle) = socket.kind else { throw .badSocket("\(socket) is a listener") }
        guard engine.state(of: handle) != nil else { throw .badSocket("\(socket) is closed or stale") }
        return handle
    }

    private func checkChannel() throws(IOTCPError) {
        if let channelFailure { throw .channel(channelFailure) }
    }

    // MARK: - Offload

    /// Asks the NIC to open `path` under its export root. Completes with an `.offloadOpened` event
    /// carrying `token`: the file (and its status), or why not.
    public func offloadOpen(_ path: String, token: UInt64 = 0) throws(IOTCPError) -> OffloadRequest {
        try checkChannel()
        let length = path.utf8.count
        guard length > 0, length <= CommandProtocol.maxPathLength else {
            throw .invalidPath("a path must have 1 to \(CommandProtocol.maxPathLength) bytes, this has \(length)")
        }
        guard !path.utf8.contains(0) else { throw .invalidPath("a path must not contain a NUL byte") }
        let request = files.beginOpen(path: path, token: token)
        var path = path
        path.withUTF8 { bytes in sender.append(.open(requestID: request, flags: 0, path: UnsafeRawBufferPointer(bytes))) }
        return OffloadRequest(rawValue: request)
    }

    /// The status of an offloaded file, as the NIC reported it at open.
    public func offloadFstat(_ file: OffloadedFileID) throws(IOTCPError) -> OffloadedFileStatus {
        guard let opened = files.file(file) else { throw .badFile(file) }
        return opened.status
    }

    /// sendfile for offloaded files: queues `length` bytes of `file` from `offset` on the connection, in
    /// stream order with its ordinary writes. Returns how many bytes were taken (fewer when the queue is
    /// nearly full, 0 at or past the end of the file); `.wouldBlock` when none could be.
    ///
    /// `shutdownAfter`: the response ends the connection's sending side (`Connection: close`). When every
    /// byte asked for (up to the end of the file) was taken, the sending side is shut down after them, as by
    /// `shutdownWrite`, before anything is sent, so the FIN rides on the last data segment instead of a
    /// packet of its own; when not all was taken nothing is shut down (write the rest, then shut down or
    /// close as usual).
    public func offloadWrite(
        _ socket: Socket, file: OffloadedFileID, offset: UInt64, length: Int, shutdownAfter: Bool = false
    ) throws(IOTCPError) -> Int {
        let handle = try connection(socket)
        try checkChannel()
        guard let opened = files.file(file) else { throw .badFile(file) }
        guard length >= 0 else { throw .tcp(.invalidArgument("negative length")) }
        guard offset < opened.size else { return 0 }
        let wanted = Int(min(UInt64(length), opened.size - offset))
        var output = sender
        let taken: Int
        do throws(TCPError) {
            taken = try engine.writeFile(handle, file: file, offset: offset, length: wanted, shutdownAfter: shutdownAfter,
                                         now: clock(), output: &output)
        } catch { throw .tcp(error) }
        if taken == 0 && wanted > 0 { throw .wouldBlock }
        if taken > 0 { files.noteUser(handle, of: file, isLive: usesFiles) }
        return taken
    }

    /// TLS on the NIC: hands the NIC the connection's record keys (after the handshake, which the caller ran
    /// over ordinary reads and writes). From then on the caller seals its own records and may queue file
    /// ranges as records the NIC seals with `offloadWriteRecords`. `IOTCPHostTLS.TLSConnection` does all this.
    public func startRecordOffload(_ socket: Socket, keys: TLSKeys) throws(IOTCPError) {
        let handle = try connection(socket)
        try checkChannel()
        var output = sender
        do throws(TCPError) { try engine.setRecordKeys(handle, keys, output: &output) } catch { throw .tcp(error) }
    }

    /// `offloadWrite` as TLS records: `length` bytes of `file` from `offset`, cut into records of
    /// `recordPlaintext` bytes numbered from `firstRecord`, which the NIC reads, seals and sends. Takes whole
    /// records only (the last may be short); returns the plaintext bytes taken, `.wouldBlock` when none.
    public func offloadWriteRecords(
        _ socket: Socket, file: OffloadedFileID, offset: UInt64, length: Int, recordPlaintext: Int, firstRecord: UInt64
    ) throws(IOTCPError) -> Int {
        let handle = try connection(socket)
        try checkChannel()
        guard let opened = files.file(file) else { throw .badFile(file) }
        guard length >= 0 else { throw .tcp(.invalidArgument("negative length")) }
        guard offset < opened.size else { return 0 }
        let wanted = Int(min(UInt64(length), opened.size - offset, UInt64(UInt32.max)))
        var output = sender
        let taken: Int
        do throws(TCPError) {
            taken = try engine.writeRecords(handle, file: file, offset: offset, length: wanted, recordPlaintext: recordPlaintext,
                                            firstRecord: firstRecord, now: clock(), output: &output)
        } catch { throw .tcp(error) }
        if taken == 0 && wanted > 0 { throw .wouldBlock }
        if taken > 0 { files.noteUser(handle, of: file, isLive: usesFiles) }
        return taken
    }

    /// Gives up an offloaded file. Ranges already queued from it are still sent: the NIC closes it once
    /// the connections that queued them have had everything acknowledged (or are gone).
    public func offloadClose(_ file: OffloadedFileID) throws(IOTCPError) {
        guard files.file(file) != nil else { throw .badFile(file) }
        let closeNow = files.close(file) { user in engine.hasQueuedData(user) }
        if closeNow { sender.append(.closeFile(file)) }
    }

    /// Offloaded files open on the NIC (closing ones included).
    public var openFileCount: Int { files.openCount }

    /// Offloaded files the application closed that stay open on the NIC for `socket` until its queued data
    /// is acknowledged. A server answering pipelined requests can bound it per connection (each is a
    /// descriptor on the NIC).
    public func heldFileCount(of socket: Socket) -> Int {
        guard case .connection(let handle) = socket.kind else { return 0 }
        return files.heldCount(of: handle)
    }

    /// `user` had everything acknowledged, or closed: the closing files it held up may go.
    private func release(user: TCPHandle) {
        files.release(user: user) { file in sender.append(.closeFile(file)) }
    }

    // MARK: - The event queue

    /// Registers (or changes) a socket's interests; `token` comes back with its events. `.hangUp` and
    /// `.error` are always reported. A socket already ready is reported by the next `wait`.
    public func register(_ socket: Socket, interests: EventKinds, token: UInt64 = 0, mode: TriggerMode = .level) throws(IOTCPError) {
        switch socket.kind {
        case .listener(let port):
            guard engine.isListening(TCPListenerID(port: port)) else { throw .badSocket("\(socket) is not listening") }
        case .connection(let handle):
            guard engine.state(of: handle) != nil else { throw .badSocket("\(socket) is closed or stale") }
        }
        interest.register(socket, .init(interests: interests, token: token, mode: mode), readyNow: readiness(of: socket))
    }

    public func deregister(_ socket: Socket) {
        interest.deregister(socket)
    }

    /// What `socket` is ready for now.
    public func readiness(of socket: Socket) -> EventKinds {
        switch socket.kind {
        case .listener(let port):
            return engine.hasPendingConnections(TCPListenerID(port: port)) ? .acceptable : []
        case .connection(let handle):
            guard let state = engine.state(of: handle) else { return [.hangUp, .error] }
            var ready: EventKinds = []
            let failed = engine.error(of: handle) != nil || failedOnNIC(handle)
            if engine.readableBytes(handle) > 0 || engine.isReadClosed(handle) || failed { ready.insert(.readable) }
            if engine.isReadClosed(handle) { ready.insert(.readClosed) }
            if engine.isWritable(handle) { ready.insert(.writable) }
            if state == .closed { ready.insert(.hangUp) }
            if failed { ready.insert(.error) }
            return ready
        }
    }

    /// The event loop's one blocking call: takes what the NIC sent, runs timers, and fills `events` (it is
    /// emptied first) with up to `maxEvents` ready registrations and finished opens. Waits up to
    /// `timeoutNanoseconds` (nil: until something happens; 0: never) when nothing is ready. Returns the
    /// number of events. Throws once the channel to the NIC has failed and its last events were returned.
    @discardableResult
    public func wait(into events: inout [StackEvent], maxEvents: Int = 1024, timeoutNanoseconds: Int64? = nil) throws(IOTCPError) -> Int {
        events.removeAll(keepingCapacity: true)
        if let channelFailure, channelFailureReported { throw .channel(channelFailure) }
        let start = clock()
        let deadline = timeoutNanoseconds.map { start + UInt64(max($0, 0)) }
        while true {
            let now = clock()
            pump(now: now)
            collect(into: &events, maxEvents: max(maxEvents, 1))
            if channelFailure != nil { channelFailureReported = true }
            if !events.isEmpty || channelFailure != nil { return events.count }
            if engine.owesAcknowledgments { continue }  // nobody is told of those connections: the ACKs go now
            let later = clock()
            var sleep = Int64(deadline.map { $0 - later } ?? Nanoseconds.second)
            if let due = engine.nextDeadline { sleep = min(sleep, Int64(due - later)) }
            if sleep <= 0 {
                if let deadline, deadline <= clock() { return 0 }
                continue
            }
            // Collecting can queue commands (an offloaded file's CLOSE once the connection holding it settled):
            // they go now, not when something next wakes this loop.
            sender.flush()
            if sender.heldCount > 0 { sleep = min(sleep, 50_000) }
            do throws(ChannelError) { _ = try channel.waitForIncoming(timeoutNanoseconds: sleep) } catch {
                failChannel(error)
            }
        }
    }

    /// Hands queued commands to the channel now (`wait` does it too).
    // MARK: - Waiting in another event loop

    /// For a loop that waits on iotcp and its own descriptors together (poll, epoll, an async runtime): a
    /// descriptor that turns readable when the NIC sends while `prepareToPoll` said the loop sleeps, or -1
    /// when the channel busy-polls (then `prepareToPoll` allows naps of 50 µs at most).
    public var pollDescriptor: Int32 { channel.wakeDescriptor }

    /// Says the loop is about to sleep on `pollDescriptor` (and its own descriptors): returns how long it may
    /// sleep (at most `limit`, less when a TCP timer is due sooner), or nil when it must not sleep because
    /// work is already waiting; then call `wait(into:timeoutNanoseconds: 0)` again. Pair every non-nil
    /// answer with `finishPolling()` after the sleep, whatever woke it.
    ///
    /// ```swift
    /// while running {
    ///     try stack.wait(into: &events, timeoutNanoseconds: 0)
    ///     handle(events)
    ///     guard events.isEmpty, let timeout = stack.prepareToPoll(upTo: 1_000_000_000) else { continue }
    ///     poll([stack.pollDescriptor, myDescriptors...], timeout)
    ///     stack.finishPolling()
    /// }
    /// ```
    public func prepareToPoll(upTo limit: Int64) -> Int64? {
        guard channelFailure == nil, completions.isEmpty, interest.nothingPending, !engine.owesAcknowledgments else { return nil }
        flushCorked()
        sender.flush()
        var sleep = limit
        if let due = engine.nextDeadline { sleep = min(sleep, Int64(clamping: due.nanoseconds) - Int64(clamping: clock().nanoseconds)) }
        // Messages held for a full channel go out when the NIC makes room; looked at again soon.
        if sender.heldCount > 0 { sleep = min(sleep, 50_000) }
        guard sleep > 0 else { return nil }
        // A busy-polled channel rings no doorbell: the loop naps 50 µs and looks again.
        if channel.wakeDescriptor < 0 { return min(sleep, 50_000) }
        return channel.prepareToSleep() ? sleep : nil
    }

    /// Ends a sleep that `prepareToPoll` allowed.
    public func finishPolling() { channel.finishSleeping() }

    public func flush() {
        flushCorked()
        sender.flush()
    }

    /// One pass of the stack's work, without waiting.
    private func pump(now: Instant) {
        flushCorked()
        var output = sender
        // The application's turn is over: handshake ACKs its writes did not carry go now.
        engine.sendOwedAcknowledgments(now: now, output: &output)
        if channelFailure == nil {
            do throws(ChannelError) {
                var more = true
                while more {
                    let count = try channel.receive(limit: 32) { message in handle(message: message, now: now) }
                    more = count == 32
                }
            } catch {
                failChannel(error)
            }
        }
        engine.handleTimers(now: now, output: &output)
        sender.flush()
        if channelFailure == nil, let failure = sender.failure { failChannel(failure) }
    }

    private func handle(message: UnsafeRawBufferPointer, now: Instant) {
        statistics.messagesIn += 1
        var output = sender
        var reader: CommandReader
        do throws(CommandDecodeError) {
            reader = try CommandReader(message: message, maxMessageBytes: channel.maxMessageBytes)
        } catch {
            statistics.malformedCommands += 1
            logger.warning("dropped a malformed message from the NIC: \(error)")
            return
        }
        while true {
            let command: Command
            do throws(CommandDecodeError) {
                guard let next = try reader.next() else { return }
                command = next
            } catch {
                statistics.malformedCommands += 1
                logger.warning("dropped a malformed command from the NIC: \(error)")
                if error.isRecoverable { continue }
                return
            }
            statistics.commandsIn += 1
            switch command {
            case .packetIn(let flow, let packet):
                engine.handlePacket(packet, flow: flow, now: now, output: &output)
            case .established(let parameters, let packet):
                engine.handleEstablished(parameters, packet: packet, now: now, output: &output)
            case .echo(let flow, let end, let delay):
                engine.handleEcho(flow: flow, sequenceEnd: end, nicDelayNanoseconds: delay, now: now, output: &output)
            case .opened(let request, let file, _):
                files.opened(request: request, file: file)
            case .device(let request, let file, let report):
                files.device(request: request, file: file,
                             StorageDevice(model: report.modelString, serial: report.serialString, namespace: report.namespace))
            case .stat(let request, let file, let status):
                if let event = files.completeOpen(request: request, file: file, status: status) { completions.append(event) }
            case .error(let flow, let report):
                handleError(flow: flow, report, output: &output)
            case .hello(let hello):
                nic = hello
                engine.endingsOnNIC = engine.configuration.teardownOnNIC && hello.features & NICFeatures.connectionTeardown != 0
                engine.endingsWithDataOnNIC = engine.endingsOnNIC && hello.features & NICFeatures.endingsWithData != 0
                engine.splicingOnNIC = hello.features & NICFeatures.connectionSplicing != 0
                engine.ipv6SplicingOnNIC = engine.splicingOnNIC && hello.features & NICFeatures.ipv6Splicing != 0
                engine.spliceAcknowledgmentOnNIC = engine.splicingOnNIC && hello.features & NICFeatures.spliceAcknowledgment != 0
                engine.nicOffersHeads(hello.features & NICFeatures.sendHeads != 0)
                engine.nicStarted()
            case .spliceEnded(_, let report):
                engine.spliceEnded(report, now: now)
            case .flowReleased(let flow, let reason):
                engine.flowReleased(flow, reason: reason)
            case .keepalive:
                break
            case .open, .fstat, .closeFile, .flowOpen, .flowClose, .send, .sendWithHead, .retransmit, .acknowledged, .packetOut, .tlsKeys, .sendRecords,
                 .listen, .teardown, .teardownWithData, .redeliver, .splice:
                statistics.malformedCommands += 1
                logger.warning("the NIC sent \(command.kind), a command only the host sends; ignored")
            }
        }
    }

    /// Whether a connection may still need the files it queued ranges of: open, or handed over with its data
    /// (the NIC may read them again until it releases the flow).
    private func usesFiles(_ handle: TCPHandle) -> Bool {
        engine.state(of: handle) != nil || engine.hasQueuedData(handle)
    }

    private func handleError(flow: FlowID, _ report: ErrorReport, output: inout ChannelSender) {
        statistics.nicErrors += 1
        let text = report.textString
        let kind = CommandKind(rawValue: report.failedKind)
        switch kind {
        case .open?, .fstat?:
            let request = UInt32(truncatingIfNeeded: report.reference)
            if let event = files.failOpen(request: request, .nic(code: report.code, message: text)) {
                completions.append(event)
                return
            }
        case .listen?:
            // A NIC without stateless setup: SYNs keep coming as PACKET_IN and the host answers them.
            logger.notice("the NIC does not answer SYNs itself (\(report.code): \(text)); the host does")
            return
        case .send?, .retransmit?, .sendRecords?, .tlsKeys?:
            if let handle = engine.handle(for: flow) {
                nicFailures[handle] = .nic(code: report.code, message: text)
                engine.failOnNIC(handle, output: &output)
                interest.mark(Socket(connection: handle), [.error, .hangUp, .readable])
            } else {
                statistics.staleNICErrors += 1
            }
        default:
            break
        }
        logger.warning("the NIC failed \(kind.map { "\($0)" } ?? "a command") for \(flow): \(report.code): \(text)")
    }

    private func failChannel(_ error: ChannelError) {
        guard channelFailure == nil else { return }
        channelFailure = error
        logger.error("the channel to the NIC failed; every connection and open fails with it: \(error)")
        // Nothing more can reach the wire: every connection and every open fails, so no caller waits forever.
        var output = sender
        for handle in engine.handles {
            nicFailures[handle] = .channel(error)
            engine.failOnNIC(handle, output: &output)
            interest.mark(Socket(connection: handle), [.error, .hangUp, .readable])
        }
        completions += files.failAll(.channel(error))
    }

    /// What the engine's events newly make true.
    private static func edges(_ happened: TCPEvents) -> EventKinds {
        var edges: EventKinds = []
        if happened.contains(.readable) { edges.insert(.readable) }
        if happened.contains(.writable) || happened.contains(.connected) { edges.insert(.writable) }
        if happened.contains(.readClosed) { edges.formUnion([.readable, .readClosed]) }
        if happened.contains(.closed) { edges.formUnion([.readable, .hangUp, .error]) }
        return edges
    }

    private func collect(into events: inout [StackEvent], maxEvents: Int) {
        engine.drainEvents({ handle, happened in
            if !happened.isDisjoint(with: [.allAcknowledged, .closed]) { release(user: handle) }
            interest.mark(Socket(connection: handle), Self.edges(happened))
        }, listeners: { interest.mark(Socket(listener: $0.port), .acceptable) },
        settled: { release(user: $0) })
        if !completions.isEmpty {
            let taken = min(completions.count, maxEvents - events.count)
            events.append(contentsOf: completions.prefix(taken))
            completions.removeFirst(taken)
        }
        guard events.count < maxEvents else { return }
        interest.collect(into: &events, maxEvents: maxEvents, readiness: readiness(of:))
    }
}
