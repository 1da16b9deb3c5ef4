import IOTCPHost
import ServiceLifecycle

/// An `AsyncIOTCPStack`'s pump as a swift-service-lifecycle `Service`: `run()` pumps the stack until the
/// service group shuts down gracefully or cancels it, then returns (suspended calls fail); a failed channel
/// to the NIC ends it with that error, which the group treats as the service failing.
///
/// ```swift
/// let stack = AsyncIOTCPStack(stack: IOTCPStack(channel: nic.hostChannel, address: address))
/// let group = ServiceGroup(services: [EmbeddedNICService(nic), StackService(stack), myServer],
///                          gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
/// try await group.run()
/// ```
public struct StackService: Service {
    public let stack: AsyncIOTCPStack

    public init(_ stack: AsyncIOTCPStack) {
        self.stack = stack
    }

    public func run() async throws {
        let stack = self.stack
        try await withGracefulShutdownHandler {
            try await stack.run()
        } onGracefulShutdown: {
            Task { await stack.stop() }
        }
    }
}
