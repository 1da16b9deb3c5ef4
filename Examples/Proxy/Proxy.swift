import ArgumentParser
import Foundation
import IOTCPCommandLine
import IOTCPEmbedded
import Logging

/// An HTTP/1.1 reverse proxy on iotcp that splices: it reads a client's request head, picks a backend (by
/// path prefix, or round robin), opens a connection to it through iotcp, and hands both connections to the
/// NIC with SPLICE, the head first. From then the NIC relays the two; the host sees none of the response.
/// Where the NIC cannot splice (or with `--copy`), it copies between the two on the host instead.
@main
struct Proxy: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iotcp-proxy", abstract: "Proxy HTTP/1.1 from clients in a network namespace to backends there, splicing on the NIC.")

    @OptionGroup(title: "Server (the namespace holds the clients and the backends)")
    var options: ServerOptions

    @Option(help: "A backend, IP:PORT or [IPV6]:PORT on the namespace's side of the wire; several are taken in turn (round robin).")
    var backend: [String] = []

    @Option(help: "PREFIX=IP:PORT: requests whose path starts with PREFIX go to that backend (longest prefix first).")
    var route: [String] = []

    @Flag(help: "Copy between client and backend on the host instead of splicing (for comparison).")
    var copy = false

    @Flag(help: "Do not log each request.")
    var quiet = false

    @Flag(inversion: .prefixedNo,
          help: "Take a client's connection only with its first bytes (Linux's TCP_DEFER_ACCEPT, kept statelessly by the NIC): HTTP clients speak first.")
    var deferAccept = true

    @Option(help: "Seconds a request head may take to arrive whole.")
    var headerTimeout = 20.0

    @Option(help: "Seconds a backend may take to accept the connection.")
    var connectTimeout = 10.0

    @Option(help: "Seconds a copied (not spliced) pair may go without traffic before both are closed.")
    var idleTimeout = 300.0

    @Option(help: "Seconds a spliced pair may go without traffic before the NIC resets both (TCPConfiguration.spliceIdleTimeout).")
    var spliceIdleTimeout = 300.0

    @OptionGroup(title: "Embedded NIC options")
    var wire: WireOptions

    func run() throws {
        guard !backend.isEmpty || !route.isEmpty else { throw ValidationError("give at least one --backend IP:PORT (or --route PREFIX=IP:PORT)") }
        for (name, value) in [("--header-timeout", headerTimeout), ("--connect-timeout", connectTimeout), ("--idle-timeout", idleTimeout),
                              ("--splice-idle-timeout", spliceIdleTimeout)] {
            try ServerOptions.checkSeconds(value, option: name)
        }
        let backends: [ProxyServer.Backend]
        do { backends = try backend.map { text throws(ValidationError) in try ProxyServer.Backend(parsing: text, option: "--backend") } }
        let routes: [ProxyServer.Route]
        do {
            routes = try route.map { text throws(ValidationError) in
                guard let equals = text.firstIndex(of: "="), text.first == "/" else {
                    throw ValidationError("--route \(text): expected PREFIX=IP:PORT with a prefix starting with /")
                }
                return ProxyServer.Route(prefix: Array(text[..<equals].utf8),
                                         backend: try ProxyServer.Backend(parsing: String(text[text.index(after: equals)...]), option: "--route"))
            }
        }
        NICRuntime.keepFreedMemoryForReuse()
        let namespace = try options.namespace()
        installProcessSignals()
        var logger = Logger(label: "iotcp-proxy")
        logger.logLevel = options.logLevel

        // The proxy serves no files: the embedded NIC gets an empty export root.
        let emptyRoot = FileManager.default.temporaryDirectory.appendingPathComponent("iotcp-proxy-\(getpid())").path
        let nic = options.nic
        if nic == nil { try? FileManager.default.createDirectory(atPath: emptyRoot, withIntermediateDirectories: true) }
        defer { if nic == nil { try? FileManager.default.removeItem(atPath: emptyRoot) } }
        let attachment = try NICAttachment.open(nic: nic, rdmaSource: options.rdmaSource, root: emptyRoot, namespace: namespace, wire: wire, logger: logger)
        let embedded = attachment.embedded
        embedded?.start()
        defer {
            embedded?.stop()
            if embedded != nil { namespace.remove() }
        }
        var configuration = TCPConfiguration()
        configuration.spliceIdleTimeout = UInt64(spliceIdleTimeout * 1e9)
        // IPv6 clients are served too: spliced to IPv6 backends; to an IPv4 backend (a header cannot change
        // family on the NIC) their bytes are copied on the host.
        let stack = IOTCPStack(channel: attachment.channel, address: namespace.stackAddress, ipv6Address: namespace.ipv6?.stackAddress,
                               configuration: configuration, logger: logger)
        let limits = ProxyServer.Limits(headerTimeout: headerTimeout, connectTimeout: connectTimeout, idleTimeout: idleTimeout)
        let server: ProxyServer
        do {
            server = try ProxyServer(stack: stack, port: options.port, backends: backends, routes: routes, splicing: !copy, limits: limits,
                                     deferAccept: deferAccept)
        } catch {
            throw RuntimeFailure("listening on port \(options.port): \(error)")
        }
        server.accessLog = !quiet
        say("proxying http://\(namespace.primaryAddress.urlHost):\(options.port)/ in network namespace \(options.netns) to "
            + (routes.map { "\(String(decoding: $0.prefix, as: UTF8.self))=\($0.backend)" } + backends.map(\.description)).joined(separator: ", ")
            + (copy ? " (copying on the host)" : " (splicing on the NIC)"))
        let deadline = options.deadline
        while stopRequested == 0 {
            if let deadline, IOTCPStack.monotonicNow().nanoseconds >= deadline { break }
            if describeRequested != 0 {
                describeRequested = 0
                say("iotcp-proxy: \(server.describe())", to: 2)
                if let embedded { say("iotcp-proxy: NIC counters (racy while running): \(NICReport.line(embedded.runtime))", to: 2) }
            }
            do { try server.turn(timeoutNanoseconds: 20_000_000) } catch {
                say("iotcp-proxy: \(error)", to: 2)
                throw ExitCode(1)
            }
        }
        say("iotcp-proxy: stopping; \(server.describe())")
        if let embedded {
            embedded.stop()
            say("iotcp-proxy: NIC: \(NICReport.line(embedded.runtime))")
        }
    }
}
