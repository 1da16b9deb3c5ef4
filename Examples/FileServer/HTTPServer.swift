import Foundation
import IOTCPCommandLine
import IOTCPHost
import IOTCPHostTLS
import IOTCPTLS

/// A static file server written against the IOTCPHost API, the way a lighttpd-style event loop is:
/// one `wait` per turn, sessions found by their registration token, response heads sent with `write`
/// and bodies with `offloadWrite` (the host never touches a byte of them).
final class HTTPServer {
    let stack: IOTCPStack
    let listener: Socket
    let limits: Limits
    private(set) var requests = 0
    private(set) var counters = Counters()

    /// What one client may make this server hold, and for how long. Each is a defence against a client
    /// that is slow, idle or hostile on purpose; `Docs/limits.md` lists them with what a client sees.
    struct Limits {
        /// A request head must arrive whole within this many seconds of its first byte (slowloris).
        var headerTimeout: Double = 20
        /// A connection with no request under way is closed after this many idle seconds.
        var idleTimeout: Double = 60
        /// A response whose bytes the client stops acknowledging (a zero window, a vanished client) is
        /// abandoned after this many seconds without progress.
        var sendTimeout: Double = 60
        /// Received bytes kept unparsed per connection (pipelined requests): past it, reading stops and TCP's
        /// window tells the client to wait.
        var maximumPendingInput = 65536
        /// Offloaded files a connection may hold open on the NIC (responses sent, not yet acknowledged)
        /// before its next request waits.
        var maximumHeldFiles = 8
    }

    struct Counters {
        var headerTimeouts = 0
        var idleTimeouts = 0
        var sendTimeouts = 0
        var refused = 0
        var readPauses = 0
        /// TLS handshakes that failed and records that did not open (the connection was closed).
        var tlsFailures = 0
        /// TLS 1.3 KeyUpdates sent.
        var keyUpdates = 0
    }
    private var sessions: [UInt64: Session] = [:]
    /// Opens of files reused by path for a second (`--open-file-cache`): a popular file costs no OPEN, STAT
    /// and CLOSE_FILE per request, and its response goes out in the turn its request came.
    private(set) var fileCache: OffloadedFileCache
    /// Paths being opened on the NIC for one session, with the sessions that asked for them meanwhile
    /// (they take the open from the cache when it comes: a burst of requests for a new file opens it once);
    /// and the path of each open on its way, by the session that asked.
    private var pathsOpening: [String: [UInt64]] = [:]
    private var openerPaths: [UInt64: String] = [:]
    private var nextToken: UInt64 = 1
    private var events: [StackEvent] = []
    private var buffer = [UInt8](repeating: 0, count: 65536)
    private static let listenerToken: UInt64 = 0

    final class Session {
        let socket: Socket
        let token: UInt64
        var input: [UInt8] = []
        /// Body bytes of the current request still to throw away before the next head.
        var discard = 0
        /// When something last happened: a request, a response's progress.
        var lastActivity: UInt64
        /// When the first byte of the request head now arriving came (0: none arriving).
        var headStarted: UInt64 = 0
        /// The last acknowledged sequence number seen while responding, to tell progress from a stall.
        var acknowledgedMark: UInt32 = 0
        /// Reading stopped: too much input waits, or the next request waits for held files.
        var readPaused = false
        var waitsForFiles = false
        /// The request whose file is being opened on the NIC.
        var opening: HTTPRequest?
        var head: [UInt8] = []
        var headSent = 0
        var body: (file: OffloadedFileID, offset: UInt64, remaining: UInt64)?
        var closeAfterResponse = false
        var closing = false
        var wantsWritable = false
        /// HTTPS: the connection's TLS (reads, heads and bodies go through it).
        var tls: TLSConnection?

        init(socket: Socket, token: UInt64, now: UInt64) {
            self.socket = socket
            self.token = token
            lastActivity = now
        }
        /// A response is under way: its file opening, its head or body not all queued, or TLS records sealed
        /// and waiting for room (closing now would lose them).
        var responding: Bool { opening != nil || headSent < head.count || body != nil || tls?.hasPendingOutput == true }
    }

    /// HTTPS: every connection's TLS, its handshake on the host and its file records sealed on the NIC.
    let tls: TLSServerContext?
    /// TLS 1.3: a KeyUpdate once a connection has sent this many records under one key (between responses).
    /// RFC 8446 §5.5 puts AES-GCM's limit near 2^24.5 records a key; the default stays well inside it.
    var keyUpdateRecords: UInt64 = 1 << 23

    /// With TLS: a second port serving plain HTTP, when asked for.
    let plainListener: Socket?
    private static let plainListenerToken = UInt64.max

    init(stack: IOTCPStack, port: UInt16, limits: Limits = Limits(), tls: TLSServerContext? = nil, plainPort: UInt16? = nil,
         fileCache: OffloadedFileCache = OffloadedFileCache(), deferAccept: Bool = false) throws(IOTCPError) {
        self.stack = stack
        self.limits = limits
        self.fileCache = fileCache
        self.tls = tls
        // With `deferAccept` (HTTP and TLS clients speak first) a connection comes with its request. Off by
        // default: for short connections it measured no cheaper on the host and slower on the NIC
        // (Docs/benchmarks.md), unlike the proxy's.
        listener = try stack.listen(port: port, backlog: 4096, deferAccept: deferAccept)
        try stack.register(listener, interests: .acceptable, token: Self.listenerToken)
        if let plainPort {
            let plain = try stack.listen(port: plainPort, backlog: 4096, deferAccept: deferAccept)
            try stack.register(plain, interests: .acceptable, token: Self.plainListenerToken)
            plainListener = plain
        } else {
            plainListener = nil
        }
    }

    /// Sessions by what they wait for, and the connections' TCP states and send queues: what an operator
    /// asks of a server that seems stuck (SIGUSR1).
    func describe() -> String {
        var waiting: [String: Int] = [:]
        for session in sessions.values {
            let what = session.opening != nil ? "opening" : session.headSent < session.head.count ? "head"
                : session.body != nil ? "body" : session.closing ? "closing" : "request"
            waiting[what, default: 0] += 1
        }
        var states: [String: Int] = [:]
        var queued = 0, unacknowledged = 0, blocked = 0
        for session in sessions.values {
            guard let info = stack.info(of: session.socket) else { continue }
            states["\(info.state)", default: 0] += 1
            queued += info.queuedBytes
            unacknowledged += info.sendMaximum - info.sendUnacknowledged
            if info.queuedBytes > 0 && info.sendNext == info.sendMaximum && info.sendMaximum == info.sendUnacknowledged { blocked += 1 }
        }
        return "sessions \(sessions.count) waiting for \(waiting.sorted { $0.key < $1.key }); TCP states \(states.sorted { $0.key < $1.key }); "
            + "queued \(queued) bytes, unacknowledged \(unacknowledged), idle with data queued \(blocked); "
            + "header-timeouts=\(counters.headerTimeouts) idle-timeouts=\(counters.idleTimeouts) send-timeouts=\(counters.sendTimeouts) "
            + "refused=\(counters.refused); open-file-cache: files=\(fileCache.count) hits=\(fileCache.statistics.hits) "
            + "misses=\(fileCache.statistics.misses) evictions=\(fileCache.statistics.evictions) overflows=\(fileCache.statistics.overflows)"
    }

    /// One turn of the loop.
    func turn(timeoutNanoseconds: Int64) throws(IOTCPError) {
        try stack.wait(into: &events, timeoutNanoseconds: timeoutNanoseconds)
        for event in events {
            switch event {
            case .socket(_, _, let token) where token == Self.listenerToken:
                acceptAll(from: listener, tls: tls)
            case .socket(_, _, let token) where token == Self.plainListenerToken:
                if let plainListener { acceptAll(from: plainListener, tls: nil) }
            case .socket(_, let kinds, let token):
                guard let session = sessions[token] else { continue }
                if kinds.contains(.error) || kinds.contains(.hangUp) { finish(session, token: token); continue }
                progress(session, token: token)
            case .offloadOpened(_, let result, let token):
                openCompleted(result, token: token)
            }
        }
        let now = stack.now.nanoseconds
        // Sessions whose next request waited for held files: see whether they may go on.
        for token in waitingForFiles {
            guard let session = sessions[token] else { waitingForFiles.remove(token); continue }
            if stack.heldFileCount(of: session.socket) < limits.maximumHeldFiles {
                waitingForFiles.remove(token)
                session.waitsForFiles = false
                progress(session, token: token)
            }
        }
        if now >= lastSweep + 250_000_000 {
            lastSweep = now
            sweepTimeouts(now: now)
            fileCache.expire(now: stack.now) { try? stack.offloadClose($0) }
        }
    }

    private var waitingForFiles: Set<UInt64> = []
    /// Almost no session waits for files: removing from an empty set would still hash, on every close.
    private func forgetWaiting(_ token: UInt64) {
        if !waitingForFiles.isEmpty { waitingForFiles.remove(token) }
    }
    private var lastSweep: UInt64 = 0

    /// Closes what has waited too long: a request head that never completes, an idle keep-alive
    /// connection, a response the client stopped taking. Four times a second over every session: a few
    /// microseconds per thousand connections.
    private func sweepTimeouts(now: UInt64) {
        for (token, session) in sessions where !session.closing {
            // A body is queued whole (a range, not bytes), so a response may still be in TCP's queue after the
            // session has handed it all over: until the client has taken it, that is sending, not idle. (Timed
            // out as idle, it would be closed gracefully, its FIN behind megabytes a stalled client never
            // takes, and linger as an orphan for the retransmission limit instead of being aborted.)
            let info = session.responding || session.headStarted == 0 ? stack.info(of: session.socket) : nil
            if session.responding || (info?.queuedBytes ?? 0) > 0 {
                let acknowledged = info?.sendUnacknowledged.rawValue ?? 0
                if acknowledged != session.acknowledgedMark {
                    session.acknowledgedMark = acknowledged
                    session.lastActivity = now
                } else if Double(now - session.lastActivity) / 1e9 > limits.sendTimeout {
                    counters.sendTimeouts += 1
                    log("- \"-\" send timeout: no progress for \(limits.sendTimeout) s; connection aborted")
                    finish(session, token: token)
                }
            } else if session.headStarted > 0 {
                if Double(now - session.headStarted) / 1e9 > limits.headerTimeout {
                    counters.headerTimeouts += 1
                    closeQuietly(session, token: token)
                }
            } else if !session.waitsForFiles, Double(now - session.lastActivity) / 1e9 > limits.idleTimeout {
                counters.idleTimeouts += 1
                closeQuietly(session, token: token)
            }
        }
    }

    /// Closes a connection without a response (its timer ran out): a FIN, and TCP's own closing handshake.
    private func closeQuietly(_ session: Session, token: UInt64) {
        session.closing = true
        try? stack.close(session.socket)
        sessions[token] = nil
        forgetWaiting(token)
    }

    private func acceptAll(from listener: Socket, tls: TLSServerContext?) {
        while let socket = try? stack.accept(listener) {
            let token = nextToken
            nextToken += 1
            let session = Session(socket: socket, token: token, now: stack.now.nanoseconds)
            if let tls {
                guard let connection = TLSConnection(socket: socket, context: tls) else {
                    try? stack.abort(socket)
                    continue
                }
                session.tls = connection
                // The handshake counts against the header timeout, as the head that follows it does.
                session.headStarted = session.lastActivity
            }
            sessions[token] = session
            // As nginx and lighttpd do: a response head is a short write, and Nagle would hold the next
            // response's head until the client acknowledged the last one's.
            try? stack.setNoDelay(socket, true)
            try? stack.register(socket, interests: [.readable, .readClosed], token: token)
        }
    }

    /// Reads what came, answers complete requests in order, pushes the response as far as it goes.
    private func progress(_ session: Session, token: UInt64) {
        var peerClosed = false
        let now = stack.now.nanoseconds
        // Read while there is room: what a client sends beyond it waits in TCP's window, not in memory.
        while session.input.count < limits.maximumPendingInput {
            do throws(IOTCPError) {
                let room = min(buffer.count, limits.maximumPendingInput - session.input.count)
                let count = try buffer.withUnsafeMutableBytes { raw in
                    Result { () throws(IOTCPError) in try read(session, into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<room])) }
                }.get()
                if count == 0 { peerClosed = true; break }
                session.input += buffer[0..<count]
                dropDiscarded(session)
                if session.headStarted == 0 && !session.input.isEmpty && !session.responding { session.headStarted = now }
            } catch .wouldBlock {
                break
            } catch {
                finish(session, token: token)
                return
            }
        }
        if let tls = session.tls, tls.isEstablished, !session.responding, tls.recordsUnderCurrentKeys >= keyUpdateRecords {
            // Between responses, once the last one is acknowledged: see TLSConnection.updateKeys.
            do {
                if try tls.updateKeys(on: stack) { counters.keyUpdates += 1 }
            } catch {
                finish(session, token: token)
                return
            }
        }
        parsing: while !session.closing {
            if !session.responding {
                dropDiscarded(session)
                if session.discard > 0 { break parsing }  // the rest of a body has not come yet
                if stack.heldFileCount(of: session.socket) >= limits.maximumHeldFiles && !session.input.isEmpty {
                    // Pipelined requests, each holding a file on the NIC until its response is acknowledged: the
                    // next one waits, so one client cannot take every descriptor.
                    session.waitsForFiles = true
                    waitingForFiles.insert(token)
                    break parsing
                }
                switch HTTPRequest.parse(session.input[...]) {
                case .incomplete:
                    if peerClosed { session.closeAfterResponse = true }
                    if session.input.isEmpty { session.headStarted = 0 }
                    break parsing  // the rest has not come yet: a head over several segments, a slow client
                case .failure(let status):
                    session.input.removeAll()
                    refuse(status: status, session: session, request: nil)
                case .request(let request, let consumed):
                    session.input.removeFirst(consumed)
                    session.headStarted = session.input.isEmpty ? 0 : now
                    session.lastActivity = now
                    switch request.bodyLength() {
                    case .failure(let refusal):
                        refuse(status: refusal.status, session: session, request: request)
                    case .success(let length):
                        session.discard = length
                        dropDiscarded(session)
                        if !request.hostIsValid {
                            refuse(status: 400, session: session, request: request)
                        } else {
                            start(request, session: session)
                        }
                    }
                }
            }
            guard push(session) else { break }  // the queue is full: wait for writable
            if session.responding || session.input.isEmpty || session.closeAfterResponse { break }
        }
        if !session.responding && session.closeAfterResponse && !session.closing {
            session.closing = true
            if let tls = session.tls { try? tls.close(stack) } else { try? stack.close(session.socket) }
            sessions[token] = nil
            forgetWaiting(token)
            return
        }
        if !session.responding { session.lastActivity = now }
        // Stop reading while the input is full or the next request waits for files (a level-triggered
        // readable event would otherwise come back at once, every turn).
        let pauseReading = session.input.count >= limits.maximumPendingInput || session.waitsForFiles
        if pauseReading && !session.readPaused { counters.readPauses += 1 }
        let wantsWritable = session.headSent < session.head.count || session.body != nil || session.tls?.hasPendingOutput == true
        if wantsWritable != session.wantsWritable || pauseReading != session.readPaused {
            session.wantsWritable = wantsWritable
            session.readPaused = pauseReading
            var interests: EventKinds = pauseReading ? [] : [.readable, .readClosed]
            if wantsWritable { interests.insert(.writable) }
            try? stack.register(session.socket, interests: interests, token: token)
        }
        // TLS: pipelined requests OpenSSL has already decrypted wait for no socket event (the socket may be
        // empty); with nothing being sent to bring a writable one, take them now.
        if let tls = session.tls, tls.mayHaveBufferedInput, !pauseReading, !session.responding, !session.closing,
           sessions[token] === session {
            progress(session, token: token)
        }
    }

    /// A read from the socket, or through its TLS (0 when the peer closed; `.wouldBlock` when nothing came,
    /// which during the handshake includes the flights it answered). A TLS failure (a bad handshake, a
    /// record that does not open, an alert) ends the connection.
    private func read(_ session: Session, into buffer: UnsafeMutableRawBufferPointer) throws(IOTCPError) -> Int {
        guard let tls = session.tls else { return try stack.read(session.socket, into: buffer) }
        let result: TLSConnection.ReadResult
        do { result = try tls.read(from: stack, into: buffer) } catch let error as IOTCPError { throw error } catch {
            counters.tlsFailures += 1
            log("tls: \(stack.endpoints(of: session.socket).map { "\($0.remoteAddress.urlHost):\($0.remotePort)" } ?? "-") \(error)")
            throw .tcp(.connectionReset)  // ends the session: it is aborted, no half-sent response stays
        }
        switch result {
        case .data(let count): return count
        case .wouldBlock: throw .wouldBlock
        case .closed: return 0
        }
    }

    /// Throws away the body bytes of the current request that have arrived.
    private func dropDiscarded(_ session: Session) {
        guard session.discard > 0, !session.input.isEmpty else { return }
        let count = min(session.discard, session.input.count)
        session.input.removeFirst(count)
        session.discard -= count
    }

    /// Refuses a request the server cannot frame or serve safely: the status, then the connection closes
    /// (after a framing error nobody can say where the next request would start).
    private func refuse(status: Int, session: Session, request: HTTPRequest?) {
        counters.refused += 1
        session.discard = 0
        session.input.removeAll()
        respond(status: status, session: session, keepAlive: false, request: request)
    }

    /// Sends the head, then the body, as far as the send queue takes them. False when it is full.
    private func push(_ session: Session) -> Bool {
        if let tls = session.tls {
            do { try tls.flush(to: stack) } catch { return false }
            if tls.hasPendingOutput { return false }
        }
        if session.headSent < session.head.count {
            do {
                session.headSent += try session.head.withUnsafeBytes { raw in
                    let rest = UnsafeRawBufferPointer(rebasing: raw[session.headSent...])
                    if let tls = session.tls { return try tls.write(to: stack, rest) }
                    // A body follows: the head waits for it, and both leave in one segment where they fit.
                    return try stack.write(session.socket, rest, more: session.body != nil)
                }
            } catch { return false }
            if session.headSent < session.head.count { return false }
        }
        guard let body = session.body else { return true }
        do {
            let length = Int(min(body.remaining, 1 << 30))
            let taken = try session.tls.map { try $0.offloadWrite(to: stack, file: body.file, offset: body.offset, length: length) }
                ?? stack.offloadWrite(session.socket, file: body.file, offset: body.offset, length: length,
                                      shutdownAfter: session.closeAfterResponse && UInt64(length) == body.remaining)
            session.body = (body.file, body.offset + UInt64(taken), body.remaining - UInt64(taken))
        } catch { return false }
        if session.body!.remaining == 0 {
            releaseFile(body.file)
            session.body = nil
            return true
        }
        return false
    }

    private func start(_ request: HTTPRequest, session: Session) {
        requests += 1
        session.closeAfterResponse = !request.keepAlive
        guard request.method == "GET" || request.method == "HEAD" else {
            respond(status: 405, session: session, keepAlive: request.keepAlive, request: request, extra: ("Allow", "GET, HEAD"))
            return
        }
        guard var path = HTTPRequest.decodedPath(request.target) else {
            respond(status: 400, session: session, keepAlive: request.keepAlive, request: request)
            return
        }
        if path.hasSuffix("/") { path += "index.html" }
        guard path.utf8.count <= 4096 else {
            respond(status: 414, session: session, keepAlive: request.keepAlive, request: request)
            return
        }
        open(path, for: request, session: session)
    }

    /// The file of `request`: a cached open, the open already on its way for another request, or a new one.
    private func open(_ path: String, for request: HTTPRequest, session: Session) {
        if !pathsOpening.isEmpty, pathsOpening[path]?.append(session.token) != nil {
            session.opening = request
            return
        }
        if let file = fileCache.lookUp(path, now: stack.now) {
            opened(.success(file), for: request, session: session)
            return
        }
        do throws(IOTCPError) {
            _ = try stack.offloadOpen(path, token: session.token)
            session.opening = request
            if fileCache.validity > 0 {
                pathsOpening[path] = []
                openerPaths[session.token] = path
            }
        } catch {
            respond(status: 400, session: session, keepAlive: request.keepAlive, request: request)
        }
    }

    /// The NIC answered an open: the session that asked gets the file (or the error), and so do those that
    /// asked for the same path meanwhile, through the cache. An open whose session has gone is given back.
    private func openCompleted(_ result: Result<OffloadedFile, IOTCPError>, token: UInt64) {
        let path = openerPaths.removeValue(forKey: token)
        let waiting = path.flatMap { pathsOpening.removeValue(forKey: $0) } ?? []
        if case .success(let file) = result { fileCache.insert(file, now: stack.now) { try? stack.offloadClose($0) } }
        if case .failure(.nic(.tooManyFiles, _)) = result {
            // The NIC is out of descriptors: the cached files nothing uses go, so the next opens find room.
            fileCache.removeAll { try? stack.offloadClose($0) }
        }
        // Every session the open answers takes its use of the file before any of their responses can end and
        // give one back (an uncached file closes at its last release). nil: the open is gone, open anew.
        var answered: [(token: UInt64, session: Session, request: HTTPRequest, outcome: Result<OffloadedFile, IOTCPError>?)] = []
        let opener = sessions[token].flatMap { $0.opening == nil ? nil : $0 }
        if let opener, let request = opener.opening { answered.append((token, opener, request, result)) }
        for waiter in waiting {
            guard let session = sessions[waiter], let request = session.opening else { continue }
            switch result {
            case .success(let file): answered.append((waiter, session, request, fileCache.use(file.id).map { .success($0) }))
            case .failure: answered.append((waiter, session, request, result))
            }
        }
        // The use the open counted for a session that has gone.
        if opener == nil, case .success(let file) = result { releaseFile(file.id) }
        for (token, session, request, outcome) in answered {
            guard sessions[token] === session else {
                if case .success(let file)? = outcome { releaseFile(file.id) }
                continue
            }
            session.opening = nil
            if let outcome {
                opened(outcome, for: request, session: session)
            } else if let path {
                open(path, for: request, session: session)
            }
            if sessions[token] === session && session.opening == nil { progress(session, token: token) }
        }
    }

    private func opened(_ result: Result<OffloadedFile, IOTCPError>, for request: HTTPRequest, session: Session) {
        let keepAlive = request.keepAlive
        let file: OffloadedFile
        switch result {
        case .success(let value): file = value
        case .failure(.nic(let code, _)):
            let status = code == .fileNotFound ? 404 : code == .permissionDenied || code == .pathOutsideRoot ? 403
                : code == .tooManyFiles ? 503 : 500
            respond(status: status, session: session, keepAlive: keepAlive, request: request)
            return
        case .failure:
            respond(status: 500, session: session, keepAlive: keepAlive, request: request)
            return
        }
        let size = file.size
        let modified = file.status.modificationSeconds
        func fields(_ head: inout ResponseHead) {
            fileFields(&head, file)
            head.field("Connection", keepAlive ? "keep-alive" : "close")
        }
        if let since = request.header("If-Modified-Since").flatMap(parseHTTPDate), modified <= since {
            releaseFile(file.id)
            var head = ResponseHead(status: 304)
            fields(&head)
            session.head = head.finished()
            session.headSent = 0
            log(request, status: 304, bytes: 0, session: session)
            return
        }
        var range: (first: UInt64, last: UInt64)?
        switch ByteRangeRequest(header: request.header("Range"), size: size) {
        case .whole: break
        case .partial(let from, let last): range = (from, last)
        case .unsatisfiable:
            releaseFile(file.id)
            respond(status: 416, session: session, keepAlive: keepAlive, request: request, extra: ("Content-Range", "bytes */\(size)"))
            return
        }
        let status = range == nil ? 200 : 206, first = range?.first ?? 0, length = range.map { $0.last - $0.first + 1 } ?? size
        if range == nil {
            // A whole file's head is the same for every request of its open but for Connection.
            var bytes = wholeFileHead(file)
            bytes.append(contentsOf: keepAlive ? Self.keepAliveEnding : Self.closeEnding)
            session.head = bytes
        } else {
            var head = ResponseHead(status: status)
            head.field("Content-Length", length)
            fields(&head)
            if let range { head.contentRange(first: range.first, last: range.last, size: size) }
            session.head = head.finished()
        }
        session.headSent = 0
        if request.method == "GET" && length > 0 {
            session.body = (file.id, first, length)
        } else {
            releaseFile(file.id)
        }
        log(request, status: status, bytes: Int(length), session: session, device: file.device)
    }

    /// The head of a whole file's 200 response up to its Connection field, by open: building it field by
    /// field from Strings (the type by extension, the date) was a tenth of the host thread serving 4 KiB
    /// with keep-alive. Forgotten wholesale past 4,096 (an open's id is never reused, so none goes stale).
    private var wholeFileHeads: [OffloadedFileID: [UInt8]] = [:]
    private static let keepAliveEnding = Array("Connection: keep-alive\r\n\r\n".utf8)
    private static let closeEnding = Array("Connection: close\r\n\r\n".utf8)

    private func wholeFileHead(_ file: OffloadedFile) -> [UInt8] {
        if let known = wholeFileHeads[file.id] { return known }
        var head = ResponseHead(status: 200)
        head.field("Content-Length", file.size)
        fileFields(&head, file)
        if wholeFileHeads.count >= 4096 { wholeFileHeads.removeAll(keepingCapacity: true) }
        wholeFileHeads[file.id] = head.bytes
        return head.bytes
    }

    /// The fields every response with `file` carries between its length and its Connection field.
    private func fileFields(_ head: inout ResponseHead, _ file: OffloadedFile) {
        head.field("Content-Type", contentType(for: file.path))
        head.field("Last-Modified", lastModified(file.status.modificationSeconds))
        head.field("Accept-Ranges", "bytes")
        head.field("Server", "iotcp")
    }

    /// HTTP dates of files' modification times, formatted once each (DateFormatter is slow, and a busy
    /// server sends the same few files' dates over and over).
    private var formattedDates: [Int64: String] = [:]
    /// The last date formatted: a server sending one popular file asks for it again and again.
    private var lastFormatted: (seconds: Int64, text: String)?
    private func lastModified(_ seconds: Int64) -> String {
        if let last = lastFormatted, last.seconds == seconds { return last.text }
        if let known = formattedDates[seconds] {
            lastFormatted = (seconds, known)
            return known
        }
        if formattedDates.count >= 4096 { formattedDates.removeAll(keepingCapacity: true) }
        let text = httpDate(seconds: seconds)
        formattedDates[seconds] = text
        lastFormatted = (seconds, text)
        return text
    }

    /// A response with a short text body saying the status (errors), `extra` a field to add.
    private func respond(status: Int, session: Session, keepAlive: Bool, request: HTTPRequest?, extra: (String, String)? = nil) {
        let body = "\(status) \(ResponseHead.reason(for: status))\n"
        var head = ResponseHead(status: status)
        head.field("Content-Length", body.utf8.count)
        head.field("Content-Type", "text/plain")
        if let (name, value) = extra { head.field(name, value) }
        head.field("Server", "iotcp")
        head.field("Connection", keepAlive ? "keep-alive" : "close")
        session.head = head.finished()
        if request?.method != "HEAD" { session.head += body.utf8 }
        session.headSent = 0
        session.closeAfterResponse = !keepAlive || session.closeAfterResponse
        if let request { log(request, status: status, bytes: body.utf8.count, session: session) } else { log("- \"-\" \(status) 0") }
    }

    /// A response is done with `file`: closed unless the cache keeps it for the next request.
    private func releaseFile(_ file: OffloadedFileID) {
        if let close = fileCache.release(file) { try? stack.offloadClose(close) }
    }

    /// Closes the files the cache keeps open that no response uses (the server is stopping; the NIC closes
    /// the rest when its host goes).
    func closeCachedFiles() {
        fileCache.removeAll { try? stack.offloadClose($0) }
    }

    private func finish(_ session: Session, token: UInt64) {
        if let body = session.body { releaseFile(body.file) }
        session.body = nil
        if !session.closing { try? stack.abort(session.socket) }
        session.closing = true
        sessions[token] = nil
        forgetWaiting(token)
    }

    /// One access-log line; for a file the NIC could place on a device, the device too (an NVMe namespace).
    private func log(_ request: HTTPRequest, status: Int, bytes: Int, session: Session, device: StorageDevice? = nil) {
        guard accessLog else { return }
        let peer = stack.endpoints(of: session.socket).map { "\($0.remoteAddress.urlHost):\($0.remotePort)" } ?? "-"
        let storage = device.map { " [\($0)]" } ?? ""
        log("\(peer) \"\(request.method) \(request.target) \(request.version)\" \(status) \(bytes)\(storage)")
    }

    var accessLog = true
    private func log(_ line: String) { if accessLog { say(line, to: 2) } }
}

private let httpDateFormatter: DateFormatter = {
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = TimeZone(identifier: "GMT")
    formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
    return formatter
}()

func httpDate(seconds: Int64) -> String { httpDateFormatter.string(from: Date(timeIntervalSince1970: TimeInterval(seconds))) }

/// Seconds since 1970 of an IMF-fixdate (the form HTTP/1.1 senders must use), nil if it is not one.
func parseHTTPDate(_ text: String) -> Int64? {
    httpDateFormatter.date(from: text.trimmingCharacters(in: .whitespaces)).map { Int64($0.timeIntervalSince1970) }
}
