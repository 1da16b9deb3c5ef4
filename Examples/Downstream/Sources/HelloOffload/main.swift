// Serves the files under a folder to clients in a network namespace, one response per connection:
// `HelloOffload ROOT` (as root), then `ip netns exec hello curl http://10.66.0.2:8080/PATH` (or
// `http://[fd66::2]:8080/PATH`).
// The host side parses the request and decides what to send; the file's bytes never enter it: the NIC
// half reads them and puts them on the wire.
import Glibc
import IOTCPEmbedded
import IOTCPHost
import IOTCPNIC

nonisolated(unsafe) var stopRequested: sig_atomic_t = 0

/// The whole server: one thread, one stack, an epoll-style loop.
final class HelloServer {
    let stack: IOTCPStack
    let listener: Socket
    /// Request bytes so far, per connection still reading its request.
    var requests: [Socket: [UInt8]] = [:]
    /// Responses in progress: the file, and how much of it is queued.
    var responses: [Socket: (file: OffloadedFile, queued: UInt64)] = [:]
    var waitingForOpen: [UInt64: Socket] = [:]
    var nextToken: UInt64 = 1

    init(stack: IOTCPStack, port: UInt16) throws {
        self.stack = stack
        listener = try stack.listen(port: port)
        try stack.register(listener, interests: .acceptable)
    }

    func run() throws {
        var events: [StackEvent] = []
        while stopRequested == 0 {
            _ = try stack.wait(into: &events, timeoutNanoseconds: 100_000_000)
            for event in events {
                switch event {
                case .socket(let socket, _, _) where socket == listener:
                    while let connection = try stack.accept(listener) {
                        requests[connection] = []
                        try stack.register(connection, interests: [.readable, .writable])
                    }
                case .socket(let socket, let kinds, _):
                    if responses[socket] != nil {
                        if kinds.contains(.writable) { sendMore(socket) }
                    } else if requests[socket] != nil {
                        try readRequest(socket)
                    }
                case .offloadOpened(_, let result, let token):
                    guard let socket = waitingForOpen.removeValue(forKey: token) else { continue }
                    switch result {
                    case .success(let file):
                        _ = try? stack.write(socket, Array("HTTP/1.1 200 OK\r\nContent-Length: \(file.status.size)\r\nConnection: close\r\n\r\n".utf8))
                        responses[socket] = (file, 0)
                        sendMore(socket)
                    case .failure:
                        _ = try? stack.write(socket, Array("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".utf8))
                        finish(socket)
                    }
                }
            }
        }
    }

    /// Reads what arrived; once the head is whole ("GET /path HTTP/1.1" ... an empty line), asks the NIC
    /// to open the file. Its answer comes back as an `.offloadOpened` event.
    func readRequest(_ socket: Socket) throws {
        do {
            let bytes = try stack.read(socket, maximumCount: 4096)
            if bytes.isEmpty { return finish(socket) }  // the client went away
            requests[socket]! += bytes
        } catch .wouldBlock {
            return
        } catch {
            return finish(socket)
        }
        let head = requests[socket]!
        guard head.count <= 8192 else { return finish(socket) }
        guard let end = head.indices.first(where: { head[$0...].starts(with: Array("\r\n\r\n".utf8)) }) else { return }
        let line = head[..<end].split(separator: UInt8(ascii: " "))
        guard line.count >= 2, line[0].elementsEqual("GET".utf8) else { return finish(socket) }
        requests[socket] = nil
        waitingForOpen[nextToken] = socket
        _ = try stack.offloadOpen(String(decoding: line[1], as: UTF8.self), token: nextToken)
        nextToken += 1
    }

    /// Queues what the send queue takes of the file (sendfile: the host never reads it); a `.writable`
    /// event brings it back for the rest. Finishes once all of it is queued.
    func sendMore(_ socket: Socket) {
        guard var response = responses[socket] else { return }
        defer { responses[socket] = response }
        while response.queued < response.file.status.size {
            do {
                response.queued += UInt64(try stack.offloadWrite(socket, file: response.file.id, offset: response.queued,
                                                                 length: Int(response.file.status.size - response.queued)))
            } catch .wouldBlock {
                return
            } catch {
                break
            }
        }
        finish(socket)
    }

    func finish(_ socket: Socket) {
        if let response = responses.removeValue(forKey: socket) { try? stack.offloadClose(response.file.id) }
        requests[socket] = nil
        try? stack.close(socket)  // FIN once everything queued has gone
    }
}

signal(SIGINT) { _ in stopRequested = 1 }
signal(SIGTERM) { _ in stopRequested = 1 }
let root = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : "/srv/www"
// Both families: the namespace side gets 10.66.0.1 and fd66::1, the stack 10.66.0.2 and fd66::2.
let namespace = try NetworkNamespace(name: "hello", address: "10.66.0.2/24,fd66::2/64")
let tap = try TapDevice(name: "hello0")
try namespace.create(with: tap)
defer { namespace.remove() }
let nic = try EmbeddedNIC(
    tap: tap, address: namespace.stackAddress,
    ipv6: namespace.ipv6.map { IPv6Settings(address: $0.stackAddress, prefixLength: $0.prefixLength) },
    files: try FileTable(root: root))
nic.start()
defer { nic.stop() }
// One listener serves clients of either family.
let stack = IOTCPStack(channel: nic.hostChannel, address: namespace.stackAddress, ipv6Address: namespace.ipv6?.stackAddress)
let server = try HelloServer(stack: stack, port: 8080)
print("serving \(root) at http://\(namespace.stackAddress):8080/ and http://[\(namespace.ipv6!.stackAddress)]:8080/ "
    + "in network namespace \(namespace.name)")
fflush(nil)  // standard output may be a file or a pipe: scripts wait for this line
try server.run()
