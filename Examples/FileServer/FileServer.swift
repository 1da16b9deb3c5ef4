import ArgumentParser
import Foundation
import IOTCPCommandLine
import IOTCPEmbedded
import IOTCPMetrics
import IOTCPRDMA
import IOTCPTLS
import Logging

/// A static file server on iotcp. Embedded (the default): the NIC stack runs on a thread of this process
/// with a TAP device in a network namespace as its wire. Split (`--nic shm:PATH` or `--nic rdma://IP:PORT`):
/// an `iotcp-nic` process, on this machine or across RDMA, owns the wire and the files, and this process
/// is the host half only.
@main
struct FileServer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iotcp-fileserver", abstract: "Serve files over iotcp to clients in a network namespace.")

    @Option(help: "The directory to serve (embedded mode; in split mode iotcp-nic's --export-root).")
    var root: String?

    @OptionGroup(title: "Server")
    var options: ServerOptions

    @Flag(help: "Do not log each request.")
    var quiet = false

    @Option(help: "Seconds a request head may take to arrive whole (slowloris defence).")
    var headerTimeout = 20.0

    @Option(help: "Seconds an idle keep-alive connection is kept.")
    var idleTimeout = 60.0

    @Option(help: "Seconds a response may go without the client acknowledging anything before it is abandoned.")
    var sendTimeout = 60.0

    @Option(help: "Bytes of unparsed input (pipelined requests) kept per connection; past it, reading waits.")
    var maxPendingInput = 65536

    @Option(help: "Offloaded files a connection may hold on the NIC (responses not yet acknowledged) before its next request waits.")
    var maxHeldFiles = 8

    @Option(help: "Seconds an offloaded file's open is reused for later requests of its path (0: open and close the file for every request).")
    var openFileCache: Double = 1

    @Option(help: "Serve Prometheus metrics (iotcp_host_*, and iotcp_nic_* when embedded) at http://ADDRESS:PORT/metrics on this machine's own network.")
    var metrics: String?

    @Flag(help: "Answer SYNs on the host instead of with SYN cookies on the NIC (TCPConfiguration.handshakesOnNIC off).")
    var hostHandshakes = false
    @Flag(inversion: .prefixedNo,
          help: "Take a client's connection only with its first bytes (Linux's TCP_DEFER_ACCEPT, kept by the NIC): off by default, as it measured no cheaper here.")
    var deferAccept = false
    @Flag(help: "End closed connections on the host instead of handing them to the NIC (TCPConfiguration.teardownOnNIC off).")
    var hostEndings = false
    @Flag(help: "Hand a closed connection's ending to the NIC only once its response is acknowledged, not with the response (TCPConfiguration.endingsWithDataOnNIC off).")
    var endingsAfterAcknowledgment = false
    @Flag(help: "Repair a lost tail by the retransmission timeout alone, without tail loss probes (TCPConfiguration.tailLossProbes off).")
    var noTailLossProbes = false
    @Flag(help: "Leave a lost retransmission in SACK recovery to the retransmission timeout (TCPConfiguration.lostRetransmissionDetection off).")
    var noLostRetransmissionDetection = false
    @Flag(help: "Call a hole lost only by RFC 6675's IsLost, without the reordering window (TCPConfiguration.reorderingWindow off).")
    var noReorderingWindow = false

    @Option(help: "Serve HTTPS with this PEM certificate chain (with --tls-key): the handshake on the host, file records sealed on the NIC.")
    var tlsCert: String?

    @Option(help: "The PEM private key of --tls-cert.")
    var tlsKey: String?

    @Option(help: "With --tls-cert: also serve plain HTTP on this port.")
    var httpPort: UInt16?

    @Option(help: "TLS 1.3: send a KeyUpdate after this many records under one key (between responses).")
    var tlsKeyUpdateRecords: UInt64 = 1 << 23

    @OptionGroup(title: "Embedded NIC options")
    var wire: WireOptions

    func run() throws {
        for (name, value) in [("--header-timeout", headerTimeout), ("--idle-timeout", idleTimeout), ("--send-timeout", sendTimeout)] {
            try ServerOptions.checkSeconds(value, option: name)
        }
        guard openFileCache >= 0, openFileCache <= 3600 else { throw ValidationError("--open-file-cache is 0 to 3600 seconds") }
        guard maxPendingInput >= HTTPRequest.maximumHead + 4, maxHeldFiles > 0 else {
            throw ValidationError("--max-pending-input at least \(HTTPRequest.maximumHead + 4), --max-held-files at least 1")
        }
        let limits = HTTPServer.Limits(headerTimeout: headerTimeout, idleTimeout: idleTimeout, sendTimeout: sendTimeout,
                                       maximumPendingInput: maxPendingInput, maximumHeldFiles: maxHeldFiles)
        guard (tlsCert == nil) == (tlsKey == nil) else { throw ValidationError("--tls-cert and --tls-key go together") }
        guard httpPort == nil || (tlsCert != nil && httpPort != options.port) else {
            throw ValidationError("--http-port is a second, plain port beside --tls-cert's HTTPS one (and not --port)")
        }
        // Loaded before anything is set up, so a bad certificate or key is reported at once and leaves nothing behind.
        let tls: TLSServerContext?
        if let tlsCert, let tlsKey {
            do { tls = try TLSServerContext(certificatePath: tlsCert, keyPath: tlsKey) } catch { throw RuntimeFailure("TLS: \(error)") }
        } else {
            tls = nil
        }
        NICRuntime.keepFreedMemoryForReuse()
        let namespace = try options.namespace()
        installProcessSignals()

        var logger = Logger(label: "iotcp-fileserver")
        logger.logLevel = options.logLevel
        let endpoint = try metrics.map { text throws(RuntimeFailure) in try MetricsEndpoint(listeningOn: text) }
        defer { endpoint?.close() }

        let attachment = try NICAttachment.open(nic: options.nic, rdmaSource: options.rdmaSource, root: root, namespace: namespace, wire: wire, logger: logger)
        let embedded = attachment.embedded
        let channel = attachment.channel
        if let nic = embedded {
            if endpoint != nil {
                // Recorded on the NIC's own thread: the runtime is not to be read from this one while it runs.
                let nicMetrics = NICMetrics()
                nic.periodically(everyNanoseconds: Nanoseconds.second) { nicMetrics.record($0) }
            }
            nic.start()
        }
        defer {
            embedded?.stop()
            if embedded != nil { namespace.remove() }
        }

        var tcpConfiguration = TCPConfiguration()
        tcpConfiguration.handshakesOnNIC = !hostHandshakes
        tcpConfiguration.teardownOnNIC = !hostEndings
        tcpConfiguration.endingsWithDataOnNIC = !endingsAfterAcknowledgment
        tcpConfiguration.tailLossProbes = !noTailLossProbes
        tcpConfiguration.lostRetransmissionDetection = !noLostRetransmissionDetection
        tcpConfiguration.reorderingWindow = !noReorderingWindow
        let stack = IOTCPStack(channel: channel, address: namespace.stackAddress, ipv6Address: namespace.ipv6?.stackAddress,
                               configuration: tcpConfiguration, logger: logger)
        let hostMetrics = endpoint.map { _ in HostMetrics() }
        let server: HTTPServer
        let fileCache = OffloadedFileCache(validity: UInt64(openFileCache * 1e9))
        do {
            server = try HTTPServer(stack: stack, port: options.port, limits: limits, tls: tls, plainPort: httpPort, fileCache: fileCache,
                                    deferAccept: deferAccept)
        } catch {
            throw RuntimeFailure("listening on port \(options.port)\(httpPort.map { " and \($0)" } ?? ""): \(error)")
        }
        server.accessLog = !quiet
        server.keyUpdateRecords = max(tlsKeyUpdateRecords, 1)
        // The first line names the IPv4 address when there is one (scripts wait for it), then IPv6's.
        let scheme = tls == nil ? "http" : "https"
        say("serving \(scheme)://\(namespace.primaryAddress.urlHost):\(options.port)/ in network namespace \(options.netns)")
        if let httpPort { say("serving http://\(namespace.primaryAddress.urlHost):\(httpPort)/ too") }
        if let ipv6 = namespace.ipv6, namespace.hasIPv4 {
            say("serving \(scheme)://\(IPAddress(ipv6.stackAddress).urlHost):\(options.port)/ too (IPv6)")
        }
        if let endpoint { say("metrics at http://\(endpoint.address)/metrics") }
        var lastRecord = IOTCPStack.monotonicNow().nanoseconds
        let deadline = options.deadline
        while stopRequested == 0 {
            if let deadline, IOTCPStack.monotonicNow().nanoseconds >= deadline { break }
            if let hostMetrics, IOTCPStack.monotonicNow().nanoseconds - lastRecord >= 1_000_000_000 {
                lastRecord = IOTCPStack.monotonicNow().nanoseconds
                hostMetrics.record(stack)
            }
            if describeRequested != 0 {
                describeRequested = 0
                say("iotcp-fileserver: \(server.describe())", to: 2)
                say(stack.engine.connectionListing, to: 2)
                if let embedded { say("iotcp-fileserver: NIC counters (racy while running): \(NICReport.line(embedded.runtime))", to: 2) }
            }
            do { try server.turn(timeoutNanoseconds: 20_000_000) } catch {
                say("iotcp-fileserver: \(error)", to: 2)
                throw ExitCode(1)
            }
        }
        let recovery = stack.engine.lossRecovery
        let http = server.counters
        let tcp = stack.engine.statistics
        say("iotcp-fileserver: stopping; \(server.requests) requests served; host: retransmission-timeouts=\(recovery.timeouts) "
            + "fast-recoveries=\(recovery.fastRecoveries) loss-probes=\(recovery.lossProbes) lost-retransmissions=\(recovery.lostRetransmissions) reordering-window-losses=\(recovery.reorderingWindowLosses) sack-renegings=\(recovery.sackRenegings) segments-in=\(tcp.segmentsReceived) nic-handshakes=\(tcp.handshakesFromNIC) "
            + "host-syn-cookies=\(tcp.synCookiesSent) connections-opened=\(tcp.connectionsOpened) endings-on-nic=\(tcp.endingsHandedOver) endings-with-data=\(tcp.endingsHandedOverWithData) flows-released=\(tcp.flowsReleased); http: header-timeouts=\(http.headerTimeouts) idle-timeouts=\(http.idleTimeouts) "
            + "send-timeouts=\(http.sendTimeouts) refused=\(http.refused) read-pauses=\(http.readPauses) "
            + "open-file-cache-hits=\(server.fileCache.statistics.hits) open-file-cache-misses=\(server.fileCache.statistics.misses)"
            + (server.tls != nil ? " tls-failures=\(http.tlsFailures) key-updates=\(http.keyUpdates)" : ""), to: 2)
        // The cached files nothing uses are closed before the NIC goes (it takes what was sent before `stop`);
        // the NIC closes the others when its host goes.
        server.closeCachedFiles()
        stack.flush()
        if let embedded {
            embedded.stop()
            say("iotcp-fileserver: NIC counters: \(NICReport.line(embedded.runtime))", to: 2)
        }
    }
}
