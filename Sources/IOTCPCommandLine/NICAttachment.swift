import ArgumentParser
import Glibc
import IOTCPEmbedded
import IOTCPRDMA
import Logging

/// How an example server's host half reaches its NIC stack, as its command line says: an `iotcp-nic`
/// process over shared memory or RDMA (`--nic shm:PATH`, `--nic rdma://IP:PORT`), or, without `--nic`, a
/// NIC stack embedded on a thread of this process with a TAP in the network namespace as its wire. The
/// embedded one is returned stopped: the caller hooks what it wants onto it, then starts it.
public struct NICAttachment {
    public let channel: any CommandChannel
    public let embedded: EmbeddedNIC?

    public static func open(
        nic: String?, rdmaSource: String?, root: String?, namespace: NetworkNamespace, wire: WireOptions, logger: Logger
    ) throws -> NICAttachment {
        if let nic {
            let address: ChannelAddress
            do { address = try ChannelAddress(parsing: nic) } catch { throw ValidationError("--nic \(error)") }
            // Said at once: waiting out the connect timeout for a socket that is not there helps nobody.
            if case .sharedMemory(let path) = address, access(path, F_OK) != 0 {
                throw RuntimeFailure("--nic \(nic): no NIC stack is listening there (\(path) does not exist); start iotcp-nic --channel \(nic) first")
            }
            do {
                switch address {
                case .rdma(let endpoint): return NICAttachment(channel: try RDMAChannel.connect(to: endpoint, from: rdmaSource), embedded: nil)
                case .sharedMemory(let path): return NICAttachment(channel: try SharedMemoryChannel.connect(path: path), embedded: nil)
                }
            } catch {
                throw RuntimeFailure("--nic \(nic): \(error) (is iotcp-nic running with --channel \(nic)?)")
            }
        }
        guard let root else { throw ValidationError("--root is required unless --nic names an iotcp-nic process") }
        let runtime = try wire.makeRuntime(root: root, namespace: namespace)
        runtime.logger = logger
        do {
            let embedded = try EmbeddedNIC(runtime: runtime)
            return NICAttachment(channel: embedded.hostChannel, embedded: embedded)
        } catch {
            namespace.remove()
            throw RuntimeFailure("\(error)")
        }
    }
}
