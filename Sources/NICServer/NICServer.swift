import ArgumentParser
import Glibc
import IOTCPCommandLine
import IOTCPEmbedded
import IOTCPMetrics
import IOTCPRDMA
import Logging

/// The NIC half of iotcp as a process of its own: it owns the wire (a TAP in a client namespace) and the
/// export root's files, and serves one host at a time over a shared-memory or RDMA channel. When the host
/// goes away, everything it held is released and the next host may attach; while one is attached, others
/// are turned away with a reason.
@main
struct NICServer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iotcp-nic",
        abstract: "Run iotcp's NIC stack: the wire, the offloaded files, segment building and retransmission.",
        discussion: "Send SIGUSR1 for the counters and a listing of the flows. Stops on SIGINT or SIGTERM, removing the namespace it created.")

    @Option(help: "Only files beneath this directory may be opened by the host.")
    var exportRoot: String

    @Option(help: "The channel to serve the host on: shm:PATH (a Unix socket path) or rdma://IP:PORT (an address of an RDMA device; IPv6 as rdma://[ADDRESS]:PORT).")
    var channel: String

    @Option(help: "The network namespace to create for clients (removed on exit).")
    var netns = "iotcp"

    @Option(help: "The stack's address and prefix; the namespace side takes the first other host address (both families: 10.77.0.2/24,fd77::2/64).")
    var address = "10.77.0.2/24"

    @Option(help: "Log the counters every this many seconds (0: only on SIGUSR1 and at exit).")
    var statsInterval = 0.0

    @Flag(help: "Exit when the first host leaves instead of waiting for another.")
    var once = false

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    @Option(help: "Serve Prometheus metrics (iotcp_nic_*) at http://ADDRESS:PORT/metrics on this machine's own network.")
    var metrics: String?

    @OptionGroup(title: "Wire options")
    var wire: WireOptions

    func run() throws {
        NICRuntime.keepFreedMemoryForReuse()
        var logger = Logger(label: "iotcp-nic")
        logger.logLevel = logLevel
        let listener: HostListener
        do { listener = try HostListener(channel) } catch { throw RuntimeFailure("--channel \(channel): \(error)") }
        let namespace: NetworkNamespace
        do { namespace = try NetworkNamespace(name: netns, address: address) } catch { throw ValidationError("\(error)") }
        installProcessSignals()

        let endpoint = try metrics.map { text throws(RuntimeFailure) in try MetricsEndpoint(listeningOn: text) }
        defer { endpoint?.close() }
        let runtime = try wire.makeRuntime(root: exportRoot, namespace: namespace)
        runtime.logger = logger
        defer { namespace.remove() }
        let nicMetrics = endpoint.map { _ in NICMetrics() }
        logger.notice("ready", metadata: [
            "channel": "\(channel)", "namespace": "\(netns)", "address": "\(namespace.primaryAddress)",
            "ipv6": "\(namespace.ipv6.map { "\($0.stackAddress)" } ?? "none")",
            "export-root": "\(exportRoot)", "retransmit": "\(wire.retransmit.rawValue)",
        ])
        // One line on standard output for scripts that wait for it.
        let line = "iotcp-nic: serving \(channel) for \(namespace.primaryAddress) in network namespace \(netns)\n"
        _ = line.withCString { write(1, $0, strlen($0)) }
        if let endpoint { logger.notice("metrics at http://\(endpoint.address)/metrics") }

        var lastStats = IOTCPStack.monotonicNow()
        var lastRecord = lastStats
        var hosts = 0
        while stopRequested == 0 {
            let now = IOTCPStack.monotonicNow()
            if runtime.channel == nil {
                // No host: serve the wire (ARP, ping) and look for one.
                _ = runtime.runOnce(now: now)
                do {
                    let host = try listener.accept(timeoutNanoseconds: 10_000_000)
                    runtime.attach(host)
                    hosts += 1
                    logger.notice("host attached", metadata: ["hosts": "\(hosts)"])
                } catch .timedOut {
                } catch {
                    logger.error("accepting a host failed: \(error)")
                }
                continue
            }
            listener.turnAwayOthers()
            switch runtime.runOnce(now: now) {
            case .worked: break
            case .idle: runtime.sleep(timeoutNanoseconds: 10_000_000)
            case .hostGone(let error):
                logger.notice("host left; its flows, files and stored bytes are released", metadata: ["reason": "\(error)"])
                if once { stopRequested = 1 }
            }
            if let nicMetrics, now - lastRecord >= Nanoseconds.second {
                lastRecord = now
                nicMetrics.record(runtime)
            }
            if describeRequested != 0 {
                // The flows, as `ss` lists connections (stderr: the listing is for a person, not the log).
                let listing = runtime.dataPlane.flowListing + "\n"
                _ = listing.withCString { write(2, $0, strlen($0)) }
            }
            if describeRequested != 0 || (statsInterval > 0 && now - lastStats >= UInt64(statsInterval * 1e9)) {
                describeRequested = 0
                lastStats = now
                report(runtime, logger: logger)
            }
        }
        report(runtime, logger: logger)
        runtime.detach()
    }

    func report(_ runtime: NICRuntime, logger: Logger) {
        var metadata: Logger.Metadata = [:]
        for (name, value) in NICReport.fields(runtime) { metadata[name] = "\(value)" }
        if let queuePair = runtime.channel as? RDMAChannelEnd {
            let figures = queuePair.statistics
            metadata["rdma-sends"] = "\(figures.messagesSent)"
            metadata["rdma-inline-sends"] = "\(figures.inlineSends)"
            metadata["rdma-credit-reports"] = "\(figures.creditReports)"
            metadata["rdma-credit-stalls"] = "\(figures.creditStalls)"
        }
        logger.notice("counters", metadata: metadata)
        logger.notice("queues: \(runtime.dataPlane.queueSummary)")
    }
}


/// Where hosts attach: a Unix socket path for shared memory, or an rdma_cm address.
enum HostListener {
    case sharedMemory(SharedMemoryListener)
    case rdma(RDMAListener)

    init(_ text: String) throws {
        switch try ChannelAddress(parsing: text) {
        case .rdma(let endpoint): self = .rdma(try RDMAChannel.listen(on: endpoint))
        case .sharedMemory(let path): self = .sharedMemory(try SharedMemoryChannel.listen(path: path))
        }
    }

    func accept(timeoutNanoseconds: Int64) throws(ChannelError) -> any CommandChannel {
        switch self {
        case .sharedMemory(let listener): try listener.accept(timeoutNanoseconds: timeoutNanoseconds)
        case .rdma(let listener): try listener.accept(timeoutNanoseconds: timeoutNanoseconds)
        }
    }

    /// While a host is attached, others are told so at once rather than left waiting.
    func turnAwayOthers() {
        if case .rdma(let listener) = self { listener.rejectWaiting() }
    }
}
