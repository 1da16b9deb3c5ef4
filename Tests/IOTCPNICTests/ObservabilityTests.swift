import Foundation
import IOTCPEmbedded
import IOTCPLifecycle
import IOTCPMetrics
import IOTCPNICCore
import Logging
import ServiceLifecycle
import Testing

@Suite("Service lifecycle, listings and metrics")
struct ObservabilityTests {
    /// An embedded NIC over a wire in memory, serving one file from memory.
    func makeNIC(file bytes: [UInt8]) throws -> EmbeddedNIC {
        let files = MemoryFiles()
        files.add("/hello.txt", bytes)
        let runtime = NICRuntime(
            wire: MemoryWire(), link: EthernetLink(hardwareAddress: MACAddress(2, 0, 0, 0, 0, 2), address: IPv4Address(10, 0, 0, 2)),
            dataPlane: NICDataPlane(files: files, disk: MemoryDisk(files: files)))
        return try EmbeddedNIC(runtime: runtime)
    }

    @Test("a ServiceGroup runs the embedded NIC and the async stack; a graceful shutdown stops both and fails waiting calls")
    func servicesShutDownGracefully() async throws {
        let nic = try makeNIC(file: Array("hello, lifecycle\n".utf8))
        let stack = AsyncIOTCPStack(stack: IOTCPStack(channel: nic.hostChannel, address: IPv4Address(10, 0, 0, 2)))
        let group = ServiceGroup(services: [EmbeddedNICService(nic), StackService(stack)], logger: Logger(label: "test"))
        let running = Task { try await group.run() }

        // Through the NIC thread the service started: an offloaded open completes with the file's status.
        let file = try await stack.offloadOpen("/hello.txt")
        #expect(file.status.size == 17)
        let listener = try await stack.listen(port: 80)
        let waiting = Task { try await stack.accept(listener) }

        await group.triggerGracefulShutdown()
        try await running.value
        // The pump stopped: the accept that waited fails rather than hanging, and so does a new one.
        await #expect(throws: IOTCPError.self) { try await waiting.value }
        await #expect(throws: IOTCPError.self) { try await stack.accept(listener) }
    }

    @Test("periodic work runs on the NIC thread while it runs, and NICMetrics records from it without a race")
    func periodicWorkOnTheNICThread() async throws {
        let nic = try makeNIC(file: [1, 2, 3])
        let seen = LockedCount()
        let metrics = NICMetrics()
        nic.periodically(everyNanoseconds: 10_000_000) { runtime in
            metrics.record(runtime)
            seen.add(runtime.dataPlane.flowCount >= 0 ? 1 : 0)
        }
        nic.start()
        try await Task.sleep(nanoseconds: 200_000_000)
        nic.stop()
        // About twenty turns of 10 ms in 200 ms, and one more as the thread stops.
        #expect(seen.value >= 5, "periodic work ran \(seen.value) times")
    }

    @Test("the engine lists its connections ss-style, by state")
    func connectionListing() throws {
        let harness = try StackHarness(root: NSTemporaryDirectory())
        let listener = try harness.stack.listen(port: 80)
        _ = try harness.connectClient(port: 80)
        // The client is established once the SYN-ACK arrives; the stack once the client's ACK does.
        #expect(try harness.run { harness.stack.engine.connectionsByState[.established] == 1 })
        #expect(try harness.stack.accept(listener) != nil)
        let entries = harness.stack.engine.connections
        #expect(entries.count == 1)
        #expect(entries.first?.info.state == .established)
        #expect(entries.first?.endpoints.remoteAddress.ipv4 == StackHarness.clientAddress)
        #expect(harness.stack.engine.connectionsByState == [.established: 1])
        let lines = harness.stack.engine.connectionListing.split(separator: "\n")
        #expect(lines.count == 2 && lines[0].hasPrefix("State") && lines[1].hasPrefix("established"))
        #expect(lines[1].contains("10.0.0.2:80") && lines[1].contains("10.0.0.1:"))
    }
}

/// A count written by one thread and read by another.
final class LockedCount: @unchecked Sendable {
    private let lock = NSLock()
    private var count = 0
    func add(_ amount: Int) { lock.withLock { count += amount } }
    var value: Int { lock.withLock { count } }
}
