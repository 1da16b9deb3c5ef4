import Glibc
import IOTCPCommon

/// A network namespace for clients, with a TAP device moved into it: the kernel's TCP on one side, the
/// NIC stack on the other. Created with iproute2 (`ip`), removed by `remove()` (call it on every exit
/// path). The TAP's descriptor stays with this process.
public struct NetworkNamespace: Sendable {
    public let name: String
    /// The NIC stack's address (the one clients connect to) and the namespace side's address.
    public let stackAddress: IPv4Address
    public let clientAddress: IPv4Address
    public let prefixLength: Int

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Parses "10.77.0.2/24": the stack takes that address, the namespace side the first other host
    /// address of the subnet.
    public init(name: String, address: String) throws(NetworkNamespace.Failure) {
        let parts = address.split(separator: "/")
        guard parts.count == 2, let ours = IPv4Address(parts[0]), let prefix = Int(parts[1]), (8...30).contains(prefix) else {
            throw Failure(description: "an address must look like 10.77.0.2/24 (prefix 8 to 30), not \(address)")
        }
        guard !name.isEmpty, name.count <= 64, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw Failure(description: "a namespace name must be 1 to 64 letters, digits, '-' or '_', not \(name)")
        }
        let mask: UInt32 = ~UInt32(0) << UInt32(32 - prefix)
        let network = ours.rawValue & mask
        self.name = name
        stackAddress = ours
        clientAddress = IPv4Address(rawValue: network | (ours.rawValue & ~mask == 1 ? 2 : 1))
        prefixLength = prefix
    }

    /// Frames the kernel may queue for the NIC stack to read. The default (1,000) overflowed when 1,600
    /// clients connected at once while the NIC shared a core with the host: 9% of the clients' frames were
    /// dropped, SYNs and requests among them, and each drop cost the client a retransmission timeout.
    public static let transmitQueueLength = 10_000

    /// Creates the namespace (replacing a stale one of the same name) and moves `tap` into it, addressed
    /// and up.
    public func create(with tap: TapDevice) throws(NetworkNamespace.Failure) {
        _ = Self.run(["ip", "netns", "del", name])
        for step in [["ip", "netns", "add", name], ["ip", "link", "set", tap.name, "netns", name],
                     ["ip", "-n", name, "link", "set", tap.name, "txqueuelen", "\(Self.transmitQueueLength)"],
                     ["ip", "-n", name, "addr", "add", "\(clientAddress)/\(prefixLength)", "dev", tap.name],
                     ["ip", "-n", name, "link", "set", tap.name, "up"], ["ip", "-n", name, "link", "set", "lo", "up"]] {
            guard Self.run(step) == 0 else {
                remove()
                throw Failure(description: "setting up network namespace \(name) failed at: \(step.joined(separator: " ")) (needs root and iproute2)")
            }
        }
    }

    public func remove() { _ = Self.run(["ip", "netns", "del", name]) }

    /// Runs a tool from PATH with its output discarded; its exit status, or -1 if it could not start.
    public static func run(_ arguments: [String]) -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        guard posix_spawnp(&pid, arguments[0], &actions, nil, &argv, environ) == 0 else { return -1 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : -1
    }
}
