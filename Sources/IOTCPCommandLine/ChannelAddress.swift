import ArgumentParser
import IOTCPEmbedded
import IOTCPRDMA

/// Where the host and NIC halves meet, as `iotcp-nic --channel` and `iotcp-fileserver --nic` take it:
/// `shm:PATH` (a Unix socket path, shared memory on one machine) or `rdma://IP:PORT` (RDMA verbs).
public enum ChannelAddress: Hashable, Sendable {
    case sharedMemory(path: String)
    case rdma(RDMAEndpoint)

    public init(parsing text: String) throws(ValidationError) {
        if text.hasPrefix(RDMAEndpoint.scheme) {
            do { self = .rdma(try RDMAEndpoint(parsing: text)) } catch { throw ValidationError("\(error)") }
        } else if text.hasPrefix("shm:"), text.count > 4 {
            self = .sharedMemory(path: String(text.dropFirst(4)))
        } else {
            throw ValidationError("must be shm:PATH or rdma://IP:PORT, not \(text)")
        }
    }
}
