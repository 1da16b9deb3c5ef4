import ArgumentParser
import IOTCPCommandLine
import IOTCPEmbedded

/// The proxy's event loop: one session per client connection, from its request head to the splice (or,
/// where the NIC cannot splice, to the end of a copy between the two connections on the host).
///
/// A spliced client stays with its backend for the rest of its connection (later requests on it go to the
/// same backend, as a TCP splice must): routing is per connection, by its first request.
final class ProxyServer {
    struct Backend: CustomStringConvertible {
        var address: IPAddress
        var port: UInt16
        /// Made once: a request's log line and errors name it, and it never changes.
        let description: String

        /// `IPV4:PORT` or `[IPV6]:PORT`.
        init(parsing text: String, option: String) throws(ValidationError) {
            guard let colon = text.lastIndex(of: ":") else { throw ValidationError("\(option) \(text): expected IP:PORT or [IPV6]:PORT") }
            var host = text[..<colon]
            let bracketed = host.hasPrefix("[") && host.hasSuffix("]")
            if bracketed { host = host.dropFirst().dropLast() }
            guard let address = IPAddress(host), address.isIPv4 != bracketed, let port = UInt16(text[text.index(after: colon)...]), port != 0
            else {
                throw ValidationError("\(option) \(text): expected IPV4:PORT or [IPV6]:PORT")
            }
            self.address = address
            self.port = port
            description = "\(address.urlHost):\(port)"
        }
    }

    struct Route {
        var prefix: [UInt8]
        var backend: Backend
    }

    struct Limits {
        var headerTimeout: Double
        var connectTimeout: Double
        var idleTimeout: Double
    }

    struct Counters {
        var requests = 0
        var spliced = 0
        var copied = 0
        var badRequests = 0
        var backendFailures = 0
        var headerTimeouts = 0
        var connectTimeouts = 0
        var idleTimeouts = 0
        var copiedBytes = 0
    }

    enum Phase {
        case readingHead
        case connecting
        case copying
    }

    final class Session {
        let client: Socket
        var backend: Socket?
        var phase = Phase.readingHead
        /// The request head so far (and whatever followed it in the same reads).
        var input: [UInt8] = []
        /// What goes to the backend first: the head as forwarded (it starts with the request line).
        var head: [UInt8] = []
        /// How long the request line is, at the start of `head` (it is made into text only to be logged).
        var requestLineLength = 0
        var requestLine: String { String(decoding: head.prefix(requestLineLength), as: UTF8.self) }
        var backendName = ""
        var started: UInt64
        var lastActivity: UInt64
        /// Copying: bytes read from one side not yet taken by the other, and which sides have ended.
        var toBackend: [UInt8] = []
        var toClient: [UInt8] = []
        var clientEnded = false
        var backendEnded = false
        var clientShut = false
        var backendShut = false

        init(client: Socket, now: UInt64) {
            self.client = client
            started = now
            lastActivity = now
        }
    }

    /// The longest request head taken (a longer one is answered 431).
    static let maximumHead = 8192
    static let listenerToken: UInt64 = 0

    let stack: IOTCPStack
    let listener: Socket
    let backends: [Backend]
    let routes: [Route]
    let splicing: Bool
    let limits: Limits
    var accessLog = true
    private(set) var counters = Counters()
    private var sessions: [UInt64: Session] = [:]
    private var nextSession: UInt64 = 1
    private var nextBackend = 0
    private var events: [StackEvent] = []
    private var scratch = [UInt8](repeating: 0, count: 64 * 1024)
    private var lastSweep: UInt64 = 0

    init(
        stack: IOTCPStack, port: UInt16, backends: [Backend], routes: [Route], splicing: Bool, limits: Limits, deferAccept: Bool = true
    ) throws(IOTCPError) {
        self.stack = stack
        self.backends = backends
        self.routes = routes.sorted { $0.prefix.count > $1.prefix.count }
        self.splicing = splicing
        self.limits = limits
        // A client is handed over with its request (or its FIN): one command and one wake-up fewer a
        // connection, and a client that connects and says nothing costs the host nothing (where the NIC
        // answers handshakes; elsewhere a plain listen).
        listener = try stack.listen(port: port, backlog: 4096, deferAccept: deferAccept)
        try stack.register(listener, interests: .acceptable, token: Self.listenerToken)
    }

    func describe() -> String {
        let stats = stack.engine.statistics
        return "requests=\(counters.requests) spliced=\(counters.spliced) copied=\(counters.copied) bad-requests=\(counters.badRequests) "
            + "backend-failures=\(counters.backendFailures) header-timeouts=\(counters.headerTimeouts) connect-timeouts=\(counters.connectTimeouts) "
            + "idle-timeouts=\(counters.idleTimeouts) copied-bytes=\(counters.copiedBytes) sessions=\(sessions.count) "
            + "splices-handed-over=\(stats.splicesHandedOver) splices-ended=\(stats.splicesEnded) splices-active=\(stack.engine.activeSplices) "
            + "spliced-bytes=\(stats.splicedBytes) backend-time-waits=\(stats.backendTimeWaits) backends-held=\(stack.engine.backendsInTimeWait) "
            + "segments-in=\(stats.segmentsReceived)"
    }

    // MARK: - The loop

    func turn(timeoutNanoseconds: Int64) throws(IOTCPError) {
        try stack.wait(into: &events, timeoutNanoseconds: timeoutNanoseconds)
        for event in events {
            guard case .socket(_, let kinds, let token) = event else { continue }
            if token == Self.listenerToken {
                acceptAll()
                continue
            }
            guard let session = sessions[token >> 1] else { continue }
            progress(session, id: token >> 1, kinds: kinds, fromBackend: token & 1 == 1)
        }
        let now = stack.now.nanoseconds
        if now >= lastSweep + 250_000_000 {
            lastSweep = now
            sweepTimeouts(now: now)
        }
    }

    private func acceptAll() {
        while let client = try? stack.accept(listener) {
            let id = nextSession
            nextSession += 1
            let session = Session(client: client, now: stack.now.nanoseconds)
            sessions[id] = session
            do { try stack.register(client, interests: .readable, token: id << 1) } catch { end(session, id: id) }
        }
    }

    private func progress(_ session: Session, id: UInt64, kinds: EventKinds, fromBackend: Bool) {
        // Hang-ups and errors are reported whatever the interests and for as long as they last (level
        // triggered): they are not activity, and each must end the session or be silenced, or the loop spins.
        let trouble = !kinds.intersection(.always).isEmpty
        if !kinds.subtracting(.always).isEmpty { session.lastActivity = stack.now.nanoseconds }
        switch session.phase {
        case .readingHead:
            readHead(session, id: id)
        case .connecting:
            guard fromBackend else {
                if trouble { end(session, id: id, abort: true) }  // the client gave up while the backend was opening
                return
            }
            if kinds.contains(.error) || kinds.contains(.hangUp) || stack.error(of: session.backend!) != nil {
                counters.backendFailures += 1
                let why = stack.error(of: session.backend!).map { "\($0)" } ?? "connection failed"
                log("\(session.requestLine) -> \(session.backendName): \(why); 502")
                respond(session, id: id, status: "502 Bad Gateway")
                return
            }
            if kinds.contains(.writable) { connected(session, id: id) }
        case .copying:
            pump(session, id: id)
            // Still going with one side hung up: that side waits for the other (its bytes queued toward a
            // backend not yet taking them, say). Quiet it until the other side moves; pump registers it again.
            if trouble, sessions[id] != nil, let socket = fromBackend ? session.backend : session.client {
                stack.deregister(socket)
            }
        }
    }

    // MARK: - The request head

    private func readHead(_ session: Session, id: UInt64) {
        while session.input.count <= Self.maximumHead {
            let count: Int
            switch receive(session.client) {
            case .success(let read): count = read
            case .failure(.wouldBlock): return
            case .failure:
                end(session, id: id)
                return
            }
            if count == 0 {
                end(session, id: id)  // the client left before asking anything
                return
            }
            session.input += scratch[0..<count]
            if let end = Self.headEnd(session.input) {
                route(session, id: id, headLength: end)
                return
            }
        }
        counters.badRequests += 1
        respond(session, id: id, status: "431 Request Header Fields Too Large")
    }

    /// Where the head ends (just past its blank line), if it has.
    static func headEnd(_ bytes: [UInt8]) -> Int? {
        guard bytes.count >= 4 else { return nil }
        for index in 0...(bytes.count - 4)
        where bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 {
            return index + 4
        }
        return nil
    }

    private func route(_ session: Session, id: UInt64, headLength: Int) {
        counters.requests += 1
        let input = session.input
        guard let lineEnd = input[0..<headLength].firstIndex(of: 13),
              let (pathStart, pathEnd) = Self.requestTarget(input[0..<lineEnd])
        else {
            return badRequest(session, id: id)
        }
        let path = input[pathStart..<pathEnd]
        // The head as the backend sees it: the client's, with who it came from, then whatever followed it.
        var forwarded: [UInt8] = []
        forwarded.reserveCapacity(input.count + 64)
        forwarded += input[0..<(headLength - 2)]
        forwarded += Self.forwardedForName
        if let endpoints = stack.endpoints(of: session.client) {
            Self.appendAddress(endpoints.remoteAddress, to: &forwarded)
        } else {
            forwarded += "unknown".utf8
        }
        forwarded += [13, 10, 13, 10]
        forwarded += input[headLength...]
        session.head = forwarded
        session.requestLineLength = lineEnd
        session.input = []
        let chosen: Backend
        if let routed = routes.first(where: { path.starts(with: $0.prefix) }) {
            chosen = routed.backend
        } else if !backends.isEmpty {
            chosen = backends[nextBackend % backends.count]
            nextBackend += 1
        } else {
            counters.badRequests += 1
            log("\(session.requestLine): no route; 404")
            respond(session, id: id, status: "404 Not Found")
            return
        }
        session.backendName = chosen.description
        do {
            let backend = try stack.connect(to: chosen.address, port: chosen.port)
            session.backend = backend
            session.phase = .connecting
            // The client waits while the backend connection opens: what it sends meanwhile stays queued.
            try stack.register(session.client, interests: [], token: id << 1)
            try stack.register(backend, interests: .writable, token: id << 1 | 1)
        } catch {
            counters.backendFailures += 1
            log("\(session.requestLine) -> \(chosen): \(error); 502")
            respond(session, id: id, status: "502 Bad Gateway")
        }
    }

    static let forwardedForName = Array("X-Forwarded-For: ".utf8)

    /// Where the request target of a request line `METHOD SP TARGET SP HTTP/1.x` lies, if the line is one
    /// (the target an origin-form path).
    static func requestTarget(_ line: ArraySlice<UInt8>) -> (start: Int, end: Int)? {
        guard let firstSpace = line.firstIndex(of: 32), firstSpace > line.startIndex else { return nil }
        let targetStart = firstSpace + 1
        guard let secondSpace = line[targetStart...].firstIndex(of: 32), secondSpace > targetStart,
              line[targetStart] == UInt8(ascii: "/"), line[(secondSpace + 1)...].starts(with: httpOnePrefix),
              !line[(secondSpace + 1)...].contains(32)
        else { return nil }
        return (targetStart, secondSpace)
    }

    static let httpOnePrefix = Array("HTTP/1.".utf8)

    /// An address as X-Forwarded-For writes it: dotted decimal, or IPv6 text (rarer; made by the library).
    static func appendAddress(_ address: IPAddress, to bytes: inout [UInt8]) {
        guard let ipv4 = address.ipv4 else {
            bytes += address.description.utf8
            return
        }
        for shift in stride(from: 24, through: 0, by: -8) {
            let octet = UInt8(truncatingIfNeeded: ipv4.rawValue >> UInt32(shift))
            if octet >= 100 { bytes.append(UInt8(ascii: "0") + octet / 100) }
            if octet >= 10 { bytes.append(UInt8(ascii: "0") + octet / 10 % 10) }
            bytes.append(UInt8(ascii: "0") + octet % 10)
            if shift > 0 { bytes.append(UInt8(ascii: ".")) }
        }
    }

    private func badRequest(_ session: Session, id: UInt64) {
        counters.badRequests += 1
        respond(session, id: id, status: "400 Bad Request")
    }

    // MARK: - Splice, or copy

    private func connected(_ session: Session, id: UInt64) {
        guard let backend = session.backend else { return }
        if splicing {
            do {
                try session.head.withUnsafeBytes { try stack.splice(session.client, to: backend, head: $0) }
                counters.spliced += 1
                log("\(session.requestLine) -> \(session.backendName) spliced")
                sessions[id] = nil
                return
            } catch {
                log("\(session.requestLine) -> \(session.backendName): \(error); copying instead")
            }
        }
        counters.copied += 1
        if !splicing { log("\(session.requestLine) -> \(session.backendName) copied") }
        session.phase = .copying
        session.toBackend = session.head
        session.head = []
        pump(session, id: id)
    }

    /// Moves bytes both ways as far as the two connections take them, and closes the pair when both
    /// directions have ended.
    private func pump(_ session: Session, id: UInt64) {
        guard let backend = session.backend else { return }
        var failed = false
        func move(from source: Socket, to destination: Socket, pending: inout [UInt8], ended: inout Bool, shut: inout Bool) {
            while !failed {
                if !pending.isEmpty {
                    do {
                        let taken = try stack.write(destination, pending)
                        counters.copiedBytes += taken
                        pending.removeFirst(taken)
                        if !pending.isEmpty { return }
                    } catch .wouldBlock {
                        return
                    } catch {
                        failed = true
                        return
                    }
                }
                if ended {
                    if !shut {
                        shut = true
                        try? stack.shutdown(destination)
                    }
                    return
                }
                switch receive(source) {
                case .success(let count): if count == 0 { ended = true } else { pending += scratch[0..<count] }
                case .failure(.wouldBlock): return
                case .failure:
                    failed = true
                    return
                }
            }
        }
        move(from: session.client, to: backend, pending: &session.toBackend, ended: &session.clientEnded, shut: &session.backendShut)
        move(from: backend, to: session.client, pending: &session.toClient, ended: &session.backendEnded, shut: &session.clientShut)
        if failed || (session.backendShut && session.clientShut) {
            end(session, id: id, abort: failed)
            return
        }
        // Read a side only while what it sent before is taken; wait for room where bytes wait.
        var clientInterests = EventKinds(), backendInterests = EventKinds()
        if session.toBackend.isEmpty && !session.clientEnded { clientInterests.insert(.readable) }
        if !session.toClient.isEmpty { clientInterests.insert(.writable) }
        if session.toClient.isEmpty && !session.backendEnded { backendInterests.insert(.readable) }
        if !session.toBackend.isEmpty { backendInterests.insert(.writable) }
        do {
            try stack.register(session.client, interests: clientInterests, token: id << 1)
            try stack.register(backend, interests: backendInterests, token: id << 1 | 1)
        } catch {
            end(session, id: id, abort: true)
        }
    }

    // MARK: - Endings

    /// A short answer of the proxy's own, then the client's connection closes (and the backend's, if any).
    private func respond(_ session: Session, id: UInt64, status: String) {
        let body = "\(status)\n"
        let response = "HTTP/1.1 \(status)\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        _ = try? stack.write(session.client, Array(response.utf8))
        end(session, id: id)
    }

    private func end(_ session: Session, id: UInt64, abort: Bool = false) {
        sessions[id] = nil
        for socket in [session.client, session.backend].compactMap({ $0 }) {
            if abort { try? stack.abort(socket) } else { try? stack.close(socket) }
        }
    }

    private func sweepTimeouts(now: UInt64) {
        for (id, session) in sessions {
            let waited = Double(now - session.lastActivity) / 1e9
            switch session.phase {
            case .readingHead where Double(now - session.started) / 1e9 > limits.headerTimeout:
                counters.headerTimeouts += 1
                end(session, id: id)
            case .connecting where waited > limits.connectTimeout:
                counters.connectTimeouts += 1
                log("\(session.requestLine) -> \(session.backendName): no answer in \(limits.connectTimeout) s; 504")
                respond(session, id: id, status: "504 Gateway Timeout")
            case .copying where waited > limits.idleTimeout:
                counters.idleTimeouts += 1
                end(session, id: id, abort: true)
            default:
                break
            }
        }
    }

    /// One read into the scratch buffer.
    private func receive(_ socket: Socket) -> Result<Int, IOTCPError> {
        let stack = self.stack
        return scratch.withUnsafeMutableBytes { buffer in
            do throws(IOTCPError) { return .success(try stack.read(socket, into: buffer)) } catch { return .failure(error) }
        }
    }

    /// The line is made only when it is printed: with `--quiet`, a request costs no text at all.
    private func log(_ line: @autoclosure () -> String) {
        if accessLog { say(line()) }
    }
}
