import ArgumentParser
import IOTCPEmbedded
import IOTCPHost
import Logging

/// The host half's command-line options shared by the example servers (`iotcp-fileserver`, `iotcp-proxy`):
/// the port, where the clients are, whether the NIC stack runs in this process or in an `iotcp-nic` one,
/// how long to run and how much to log.
public struct ServerOptions: ParsableArguments {
    @Option(help: "The TCP port to listen on.")
    public var port: UInt16 = 8080

    @Option(help: "The network namespace of the clients (created and removed in embedded mode).")
    public var netns = "iotcp"

    @Option(help: ArgumentHelp(
        "This server's address and prefix; the namespace side takes the first other host address.",
        discussion: "Both families as 10.77.0.2/24,fd77::2/64: the server is reached over IPv4 and IPv6 (http://[fd77::2]:8080/), "
            + "the namespace side taking fd77::1."))
    public var address = "10.77.0.2/24"

    @Option(help: "Split mode: reach an iotcp-nic process at shm:PATH or rdma://IP:PORT (IPv6: rdma://[ADDRESS]:PORT) instead of running the NIC stack here.")
    public var nic: String?

    @Option(help: "With --nic rdma://: the local address to connect from (default: the route's).")
    public var rdmaSource: String?

    @Option(help: "Stop after this many seconds (default: run until SIGINT or SIGTERM).")
    public var duration: Double?

    @Option(help: "Log level of the stack and the NIC: trace, debug, info, notice, warning, error, critical.")
    public var logLevel: Logger.Level = .notice

    public init() {}

    public func validate() throws {
        if let duration { try Self.checkSeconds(duration, option: "--duration") }
    }

    /// A number of seconds given on the command line, checked before it becomes nanoseconds in 64 bits:
    /// above zero and at most a year.
    public static func checkSeconds(_ value: Double, option: String) throws {
        guard value > 0 && value <= 365 * 86_400 else {
            throw ValidationError("\(option) \(value): expected seconds above 0 and at most a year")
        }
    }

    /// The clients' namespace, made (embedded) or found (split).
    public func namespace() throws -> NetworkNamespace {
        do { return try NetworkNamespace(name: netns, address: address) } catch { throw ValidationError("\(error)") }
    }

    /// When `--duration` runs out, on the monotonic clock; nil to run until stopped.
    public var deadline: UInt64? {
        duration.map { IOTCPStack.monotonicNow().nanoseconds + UInt64($0 * 1e9) }
    }
}
