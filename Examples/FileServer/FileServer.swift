import ArgumentParser
import Foundation
import IOTCPEmbedded

nonisolated(unsafe) var stopRequested: sig_atomic_t = 0

/// Writes a line to standard output at once (Swift 6 forbids the C `stdout` global; pipes buffer `print`).
func say(_ text: String, to descriptor: Int32 = 1) {
    var line = text + "\n"
    line.withUTF8 { bytes in _ = write(descriptor, bytes.baseAddress, bytes.count) }
}

@discardableResult
func runTool(_ arguments: [String]) -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    process.standardOutput = FileHandle.nullDevice
    process.standardError = FileHandle.nullDevice
    do { try process.run() } catch { return -1 }
    process.waitUntilExit()
    return process.terminationStatus
}

/// A static file server on iotcp: the host engine and the NIC data plane in this process (embedded), a
/// TAP device in a network namespace as the wire. Response heads go out with `write`, file bodies with
/// `writeFile`: the host never touches a byte of them.
@main
struct FileServer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iotcp-fileserver", abstract: "Serve files over iotcp to clients in a network namespace.")

    @Option(help: "The directory to serve.")
    var root: String

    @Option(help: "The TCP port to listen on.")
    var port: UInt16 = 8080

    @Option(help: "The network namespace to create for clients (removed on exit).")
    var netns = "iotcp"

    @Option(help: "This server's address and prefix; the namespace side takes the first other host address.")
    var address = "10.77.0.2/24"

    @Option(help: "Stop after this many seconds (default: run until SIGINT or SIGTERM).")
    var duration: Double?

    @Option(help: "Write every frame on the wire to this pcap file (opens in tshark).")
    var pcap: String?

    @Option(help: "Fault injection, both directions: probability a frame is lost.")
    var loss = 0.0

    @Option(help: "Fault injection: probability a frame is duplicated.")
    var duplicate = 0.0

    @Option(help: "Fault injection: probability a frame is held back 0.1 to 2 ms (reordering).")
    var reorder = 0.0

    @Option(help: "Fault injection: probability one byte of a frame is flipped.")
    var corrupt = 0.0

    @Option(help: "Fault injection: extra one-way delay in milliseconds.")
    var delayMs = 0.0

    @Option(help: "Seed of the fault injection, so a run can be replayed.")
    var seed: UInt64 = 1

    func run() throws {
        let parts = address.split(separator: "/")
        guard parts.count == 2, let ours = IPv4Address(parts[0]), let prefix = Int(parts[1]), (8...30).contains(prefix) else {
            throw ValidationError("--address must look like 10.77.0.2/24")
        }
        let mask: UInt32 = prefix == 0 ? 0 : ~UInt32(0) << UInt32(32 - prefix)
        let network = ours.rawValue & mask
        let peer = IPv4Address(rawValue: network | (ours.rawValue & ~mask == 1 ? 2 : 1))
        let files: FileTable
        do { files = try FileTable(root: root) } catch { throw ValidationError("--root: \(error)") }

        let tap: TapDevice
        do { tap = try TapDevice(name: "iotcp\(getpid() % 10_000)") } catch { throw ValidationError("\(error)") }
        runTool(["ip", "netns", "del", netns])
        defer { runTool(["ip", "netns", "del", netns]) }
        for step in [["ip", "netns", "add", netns], ["ip", "link", "set", tap.name, "netns", netns],
                     ["ip", "-n", netns, "addr", "add", "\(peer)/\(prefix)", "dev", tap.name],
                     ["ip", "-n", netns, "link", "set", tap.name, "up"], ["ip", "-n", netns, "link", "set", "lo", "up"]] {
            guard runTool(step) == 0 else { throw ValidationError("setting up the namespace failed at: \(step.joined(separator: " "))") }
        }
        signal(SIGINT) { _ in stopRequested = 1 }
        signal(SIGTERM) { _ in stopRequested = 1 }

        let start = DispatchTime.now().uptimeNanoseconds
        func clock() -> Instant { Instant(nanoseconds: Nanoseconds.second + DispatchTime.now().uptimeNanoseconds - start) }
        let stack = EmbeddedStack(tap: tap, address: ours, files: files,
                                  secret: (UInt64.random(in: 0...UInt64.max), UInt64.random(in: 0...UInt64.max)), now: clock())
        let faults = FaultSettings(loss: loss, duplication: duplicate, reordering: reorder, corruption: corrupt,
                                   delayNanoseconds: UInt64(max(delayMs, 0) * 1e6))
        if let failure = faults.validationFailure { throw ValidationError(failure) }
        stack.inbound = FaultyWire(settings: faults, seed: seed)
        stack.outbound = FaultyWire(settings: faults, seed: seed &+ 1)
        if let pcap {
            do { stack.capture = try PcapWriter(path: pcap) } catch { throw ValidationError("--pcap \(pcap): \(error)") }
        }
        if !faults.isNone { say("iotcp-fileserver: injecting faults: \(faults), seed \(seed)", to: 2) }
        let listener = try stack.engine.listen(port: port, backlog: 1024)
        say("serving http://\(ours):\(port)/ in network namespace \(netns)")
        var server = Server(stack: stack)
        let deadline = duration.map { start + UInt64($0 * 1e9) }
        while stopRequested == 0 {
            if let deadline, DispatchTime.now().uptimeNanoseconds >= deadline { break }
            tap.waitReadable(milliseconds: 1)
            let now = clock()
            stack.poll(now: now)
            server.serve(listener: listener, now: now)
            for error in stack.takeErrors() { say("iotcp-fileserver: NIC error: \(error)", to: 2) }
        }
        say("iotcp-fileserver: stopping; \(server.requests) requests served", to: 2)
    }
}

/// The HTTP side: one session per connection, requests answered in order (pipelining included).
struct Server {
    let stack: EmbeddedStack
    var sessions: [TCPHandle: Session] = [:]
    var requests = 0
    private var buffer = [UInt8](repeating: 0, count: 65536)
    private static let dateFormatter: DateFormatter = {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        return formatter
    }()

    init(stack: EmbeddedStack) { self.stack = stack }

    struct Session {
        var input: [UInt8] = []
        var head: [UInt8] = []
        var body: (file: OffloadedFileID, offset: UInt64, remaining: Int)?
        /// Files whose ranges are queued: the NIC needs them open until everything queued is acknowledged.
        var filesInFlight: [OffloadedFileID] = []
        var closeAfterResponse = false
        var closed = false
    }

    mutating func serve(listener: TCPListenerID, now: Instant) {
        let engine = stack.engine
        var output = stack.hostOutput(now: now)
        while let handle = engine.accept(listener) { sessions[handle] = Session() }
        for handle in Array(sessions.keys) {
            guard var session = sessions[handle] else { continue }
            if engine.state(of: handle) == nil || engine.state(of: handle) == .closed {
                for file in session.filesInFlight { try? stack.nic.files.close(file) }
                if let body = session.body { try? stack.nic.files.close(body.file) }
                try? engine.abort(handle, output: &output)
                sessions[handle] = nil
                continue
            }
            // Read what arrived.
            while let count = try? buffer.withUnsafeMutableBytes({ try engine.read(handle, into: $0, now: now, output: &output) }), count > 0 {
                session.input += buffer[0..<count]
            }
            let peerClosed = engine.state(of: handle) == .closeWait
            // Answer requests while the previous response is fully queued.
            while session.head.isEmpty && session.body == nil && !session.closed {
                switch HTTPRequest.parse(session.input[...]) {
                case .incomplete:
                    if peerClosed { session.closeAfterResponse = true; session.closed = true; try? engine.close(handle, now: now, output: &output) }
                case .failure(let status):
                    respond(status: status, session: &session, handle: handle, keepAlive: false)
                    session.input.removeAll()
                case .request(let request, let consumed):
                    session.input.removeFirst(consumed)
                    answer(request, session: &session, handle: handle)
                    continue
                }
                break
            }
            // Push the head, then the body, as far as the send queue takes them.
            if !session.head.isEmpty {
                let taken = (try? session.head.withUnsafeBytes { try engine.write(handle, $0, now: now, output: &output) }) ?? 0
                session.head.removeFirst(taken)
            }
            if session.head.isEmpty, let body = session.body {
                let taken = (try? engine.writeFile(handle, file: body.file, offset: body.offset, length: body.remaining, now: now, output: &output)) ?? 0
                if taken == body.remaining {
                    session.filesInFlight.append(body.file)
                    session.body = nil
                } else {
                    session.body = (body.file, body.offset + UInt64(taken), body.remaining - taken)
                }
            }
            if !session.filesInFlight.isEmpty, engine.info(of: handle)?.queuedBytes == 0 {
                for file in session.filesInFlight { try? stack.nic.files.close(file) }
                session.filesInFlight.removeAll()
            }
            if session.head.isEmpty && session.body == nil && session.closeAfterResponse && !session.closed {
                session.closed = true
                try? engine.close(handle, now: now, output: &output)
            }
            sessions[handle] = session
        }
    }

    private mutating func answer(_ request: HTTPRequest, session: inout Session, handle: TCPHandle) {
        requests += 1
        let keepAlive = request.keepAlive
        guard request.method == "GET" || request.method == "HEAD" else {
            respond(status: 405, session: &session, handle: handle, keepAlive: keepAlive, extra: "Allow: GET, HEAD\r\n", request: request)
            return
        }
        guard var path = HTTPRequest.decodedPath(request.target) else {
            respond(status: 400, session: &session, handle: handle, keepAlive: keepAlive, request: request)
            return
        }
        if path.hasSuffix("/") { path += "index.html" }
        do {
            let (file, status) = try stack.nic.files.open(path: path)
            let modified = Date(timeIntervalSince1970: TimeInterval(status.modificationSeconds))
            session.head = Array(("HTTP/1.1 200 OK\r\nContent-Length: \(status.size)\r\nContent-Type: \(contentType(for: path))\r\n"
                + "Last-Modified: \(Self.dateFormatter.string(from: modified))\r\nServer: iotcp\r\n"
                + "Connection: \(keepAlive ? "keep-alive" : "close")\r\n\r\n").utf8)
            if request.method == "GET" && status.size > 0 {
                session.body = (file, 0, Int(status.size))
            } else {
                try? stack.nic.files.close(file)
            }
            session.closeAfterResponse = !keepAlive
            log(request, status: 200, bytes: Int(status.size), handle: handle)
        } catch {
            let status: Int
            switch error {
            case .notFound, .notARegularFile: status = 404
            case .outsideRoot, .permissionDenied: status = 403
            case .tooManyFiles: status = 503
            default: status = 400
            }
            respond(status: status, session: &session, handle: handle, keepAlive: keepAlive, request: request)
        }
    }

    private func respond(status: Int, session: inout Session, handle: TCPHandle, keepAlive: Bool, extra: String = "", request: HTTPRequest? = nil) {
        let reason = [400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed", 414: "URI Too Long",
                      431: "Request Header Fields Too Large", 503: "Service Unavailable"][status] ?? "Error"
        let body = "\(status) \(reason)\n"
        session.head = Array(("HTTP/1.1 \(status) \(reason)\r\nContent-Length: \(body.utf8.count)\r\nContent-Type: text/plain\r\n\(extra)"
            + "Connection: \(keepAlive ? "keep-alive" : "close")\r\n\r\n" + (request?.method == "HEAD" ? "" : body)).utf8)
        session.closeAfterResponse = !keepAlive
        if let request { log(request, status: status, bytes: body.utf8.count, handle: handle) }
        else { say("- \"-\" \(status) 0", to: 2) }
    }

    private func log(_ request: HTTPRequest, status: Int, bytes: Int, handle: TCPHandle) {
        let peer = stack.engine.endpoints(of: handle).map { "\($0.remoteAddress):\($0.remotePort)" } ?? "-"
        say("\(peer) \"\(request.method) \(request.target) \(request.version)\" \(status) \(bytes)", to: 2)
    }
}
