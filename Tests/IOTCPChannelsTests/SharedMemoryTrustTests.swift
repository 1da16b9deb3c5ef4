import CIOTCPSystem
import Foundation
@testable import IOTCPChannels
import IOTCPCommon
import Testing

/// What a host accepts from whoever listens at its `shm:` path: the region must be sealed against
/// resizing (a peer shrinking it would kill the host with SIGBUS), and the listener must run as this
/// user or root.
@Suite("Shared-memory channel: what a host trusts")
struct SharedMemoryTrustTests {
    /// A listener that hands over a region the way the NIC does, sealed or not, on its own thread.
    func fakeNIC(path: String, seal: Bool) throws -> Thread {
        let listening = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        #expect(listening >= 0 && iotcp_unix_listen(listening, path, 1) == 0)
        let thread = Thread {
            let connection = iotcp_accept_cloexec(listening)
            let configuration = ChannelConfiguration()
            let regionBytes = SharedMemoryChannel.regionHeaderBytes + 2 * configuration.ringBytes
            let memory = iotcp_memfd_create("fake")
            _ = ftruncate(memory, off_t(regionBytes))
            if seal { _ = iotcp_seal_size(memory) }
            let doorbells = [iotcp_eventfd(), iotcp_eventfd()]
            let handshake = SharedMemoryChannel.handshake(configuration, regionBytes: regionBytes)
            let passed = [memory] + doorbells
            _ = handshake.withUnsafeBytes { iotcp_send_with_fds(connection, $0.baseAddress, $0.count, passed, 3) }
            // A squatter would now shrink the region under the host's mapping.
            if !seal { usleep(200_000) }
            for descriptor in passed + [connection, listening] { close(descriptor) }
        }
        thread.start()
        return thread
    }

    @Test("an unsealed region is refused with the reason; a sealed one cannot be shrunk by its sender")
    func sealedRegionsOnly() throws {
        let path = temporarySocketPath("unsealed")
        defer { unlink(path) }
        _ = try fakeNIC(path: path, seal: false)
        #expect(throws: ChannelError.self) { try SharedMemoryChannel.connect(path: path, timeoutNanoseconds: 5_000_000_000) }
        // The real NIC side seals: a shrink is refused by the kernel.
        let memory = iotcp_memfd_create("probe")
        defer { close(memory) }
        #expect(ftruncate(memory, 65536) == 0 && iotcp_seal_size(memory) == 0)
        #expect(ftruncate(memory, 4096) == -1 && errno == EPERM)
        #expect(iotcp_size_is_sealed(memory) == 1)
    }

    @Test("the refusal says why")
    func refusalNamesTheReason() throws {
        let path = temporarySocketPath("unsealed-reason")
        defer { unlink(path) }
        _ = try fakeNIC(path: path, seal: false)
        do {
            _ = try SharedMemoryChannel.connect(path: path, timeoutNanoseconds: 5_000_000_000)
            Issue.record("an unsealed region was accepted")
        } catch {
            #expect("\(error)".contains("not sealed"), "\(error)")
        }
    }
}
