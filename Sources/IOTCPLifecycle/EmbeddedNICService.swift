import IOTCPEmbedded
import ServiceLifecycle

/// The embedded NIC stack's thread as a swift-service-lifecycle `Service`: `run()` starts the thread and
/// stops it (joining it) when the service group shuts down gracefully or cancels it. Put it before the
/// services that use its `hostChannel`: a group shuts its services down in reverse order, so the NIC stops
/// after the stack and the server.
public struct EmbeddedNICService: Service {
    public let nic: EmbeddedNIC

    public init(_ nic: EmbeddedNIC) {
        self.nic = nic
    }

    public func run() async throws {
        nic.start()
        defer { nic.stop() }
        // Returns on graceful shutdown, throws on cancellation: either way the thread stops.
        try? await gracefulShutdown()
    }
}
