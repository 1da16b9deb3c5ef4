internal import CIOTCPSystem
import Dispatch
import Glibc
import IOTCPSystem
import Metrics
import Prometheus

/// `--metrics ADDRESS:PORT`: a Prometheus scrape endpoint on the machine's own (kernel) network, serving the
/// process's swift-metrics in the text exposition format at `GET /metrics`. It bootstraps swift-metrics with
/// a Prometheus registry, so `HostMetrics` and `NICMetrics` (and anything else using swift-metrics in the
/// process) appear there.
///
/// Deliberately small: one connection at a time on a thread of its own, a request head of at most 8 KiB
/// read within two seconds, the connection closed after each answer. A scraper needs nothing more, and
/// nothing a client sends can hold it for longer than the timeout.
public final class MetricsEndpoint: Sendable {
    public let registry: PrometheusCollectorRegistry
    /// Where it listens (the port filled in when 0 was asked for).
    public let address: String
    private let listener: Int32

    /// Listens on `text` (`IPv4:PORT`) and starts answering. Call once per process: it bootstraps swift-metrics.
    public init(listeningOn text: String) throws(RuntimeFailure) {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else {
            throw RuntimeFailure("--metrics \(text): expected ADDRESS:PORT, such as 127.0.0.1:9464")
        }
        var socketAddress = sockaddr_in()
        socketAddress.sin_family = sa_family_t(AF_INET)
        socketAddress.sin_port = port.bigEndian
        guard inet_pton(AF_INET, String(text[..<colon]), &socketAddress.sin_addr) == 1 else {
            throw RuntimeFailure("--metrics \(text): \(text[..<colon]) is not an IPv4 address")
        }
        let descriptor: Int32
        do throws(SystemCallError) {
            descriptor = try systemCall("socket") { socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        } catch {
            throw RuntimeFailure("--metrics \(text): \(error)")
        }
        var one: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, Glibc.listen(descriptor, 16) == 0 else {
            let failure = SystemCallError(bound == 0 ? "listen" : "bind")
            Glibc.close(descriptor)
            throw RuntimeFailure("--metrics \(text): cannot listen there: \(failure)")
        }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &socketAddress) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
        }
        listener = descriptor
        address = "\(text[..<colon]):\(UInt16(bigEndian: socketAddress.sin_port))"
        registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let endpoint = self
        DispatchQueue(label: "iotcp.metrics-endpoint").async { endpoint.serve() }
    }

    /// Stops answering (the thread ends at its next accept).
    public func close() {
        Glibc.shutdown(listener, Int32(SHUT_RDWR))
    }

    private func serve() {
        while true {
            let connection = retryingOnInterrupt { iotcp_accept_cloexec(listener) }
            if connection < 0 {
                if errno == ECONNABORTED || errno == EMFILE || errno == ENFILE { continue }
                return
            }
            answer(connection)
            Glibc.close(connection)
        }
    }

    private func answer(_ connection: Int32) {
        var timeout = timeval(tv_sec: 2, tv_usec: 0)
        setsockopt(connection, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(connection, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var head = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 2048)
        while head.count < 8192 {
            let count = chunk.withUnsafeMutableBytes { bytes in retryingOnInterrupt { Glibc.read(connection, bytes.baseAddress, bytes.count) } }
            guard count > 0 else { return }
            head += chunk[0..<count]
            if head.firstRange(of: [13, 10, 13, 10]) != nil { break }
        }
        let requestLine = String(decoding: head.prefix { $0 != 13 && $0 != 10 }, as: UTF8.self)
        let parts = requestLine.split(separator: " ")
        let response: String
        if parts.count >= 2, parts[0] == "GET" || parts[0] == "HEAD", parts[1] == "/metrics" || parts[1].hasPrefix("/metrics?") {
            let body = registry.emitToString()
            response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\n"
                + "Connection: close\r\n\r\n" + (parts[0] == "GET" ? body : "")
        } else {
            let body = "iotcp serves its metrics at /metrics\n"
            response = "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body
        }
        var bytes = Array(response.utf8)[...]
        while !bytes.isEmpty {
            let sent = bytes.withUnsafeBytes { raw in retryingOnInterrupt { send(connection, raw.baseAddress, raw.count, Int32(MSG_NOSIGNAL)) } }
            guard sent > 0 else { return }
            bytes = bytes.dropFirst(sent)
        }
    }
}
