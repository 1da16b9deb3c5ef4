import Glibc
import IOTCPSystem
import IOTCPCommon

/// A network namespace for clients, with a TAP device moved into it: the kernel's TCP on one side, the
/// NIC stack on the other. Created with iproute2 (`ip`), removed by `remove()` (call it on every exit
/// path once `create` succeeded). The TAP's descriptor stays with this process.
///
/// A namespace of the same name that is still in use (an interface besides loopback, or a process, in it:
/// another server) is never taken over unless asked (`replacing: true`, `--replace-netns`); one left
/// empty by a server that died is replaced.
public struct NetworkNamespace: Sendable {
    public let name: String
    /// The NIC stack's IPv4 address (the one clients connect to) and the namespace side's address; both
    /// 0.0.0.0 (the unspecified address, which nothing is sent to) when the list has IPv6 only.
    public let stackAddress: IPv4Address
    public let clientAddress: IPv4Address
    public let prefixLength: Int
    /// The IPv6 side, when the address list has one.
    public let ipv6: IPv6Addressing?

    /// Whether the list has an IPv4 address.
    public var hasIPv4: Bool { stackAddress.rawValue != 0 }

    /// The address clients are told first: IPv4's when there is one.
    public var primaryAddress: IPAddress { hasIPv4 || ipv6 == nil ? IPAddress(stackAddress) : IPAddress(ipv6!.stackAddress) }

    /// The stack's IPv6 address and the namespace side's, on one prefix.
    public struct IPv6Addressing: Sendable, Equatable {
        public let stackAddress: IPv6Address
        public let clientAddress: IPv6Address
        public let prefixLength: Int
    }

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Parses "10.77.0.2/24", "fd77::2/64", or both families as "10.77.0.2/24,fd77::2/64": the stack takes each
    /// address, the namespace side the first other host address of each subnet (10.77.0.1, fd77::1).
    public init(name: String, address: String) throws(NetworkNamespace.Failure) {
        var ipv4: (address: IPv4Address, prefix: Int)?
        var ipv6: (address: IPv6Address, prefix: Int)?
        for item in address.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = item.split(separator: "/", omittingEmptySubsequences: false)
            if parts.count == 2, let ours = IPv4Address(parts[0]) {
                guard ipv4 == nil else { throw Failure(description: "one IPv4 address at most, not \(address)") }
                guard let prefix = Int(parts[1]), (8...30).contains(prefix), ours.rawValue != 0 else {
                    throw Failure(description: "an IPv4 address must look like 10.77.0.2/24 (prefix 8 to 30), not \(item)")
                }
                ipv4 = (ours, prefix)
            } else if parts.count == 2, let ours = IPv6Address(parts[0]) {
                guard ipv6 == nil else { throw Failure(description: "one IPv6 address at most, not \(address)") }
                guard let prefix = Int(parts[1]), (8...126).contains(prefix) else {
                    throw Failure(description: "an IPv6 address must look like fd77::2/64 (prefix 8 to 126), not \(item)")
                }
                guard !ours.isMulticast && !ours.isUnspecified && !ours.isLoopback && !ours.isLinkLocal && !ours.isIPv4Mapped else {
                    throw Failure(description: "\(item) is not a unicast global or unique-local IPv6 address")
                }
                ipv6 = (ours, prefix)
            } else {
                throw Failure(description: "an address must look like 10.77.0.2/24, fd77::2/64, or 10.77.0.2/24,fd77::2/64 for both "
                    + "families, not \(address)")
            }
        }
        self.ipv6 = ipv6.map { ours, prefix in
            let network = ours.masked(prefixLength: prefix)
            let host = IPv6Address(high: ours.high ^ network.high, low: ours.low ^ network.low)
            let client = IPv6Address(high: network.high, low: network.low | (host == IPv6Address(high: 0, low: 1) ? 2 : 1))
            return IPv6Addressing(stackAddress: ours, clientAddress: client, prefixLength: prefix)
        }
        guard !name.isEmpty, name.count <= 64, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" }) else {
            throw Failure(description: "a namespace name must be 1 to 64 letters, digits, '-' or '_', not \(name)")
        }
        self.name = name
        if let (ours, prefix) = ipv4 {
            let mask: UInt32 = ~UInt32(0) << UInt32(32 - prefix)
            let network = ours.rawValue & mask
            stackAddress = ours
            clientAddress = IPv4Address(rawValue: network | (ours.rawValue & ~mask == 1 ? 2 : 1))
            prefixLength = prefix
        } else {
            stackAddress = IPv4Address(rawValue: 0)
            clientAddress = IPv4Address(rawValue: 0)
            prefixLength = 0
        }
    }

    /// Frames the kernel may queue for the NIC stack to read. The default (1,000) overflowed when 1,600
    /// clients connected at once while the NIC shared a core with the host: 9% of the clients' frames were
    /// dropped, SYNs and requests among them, and each drop cost the client a retransmission timeout.
    public static let transmitQueueLength = 10_000

    /// Creates the namespace and moves `tap` into it, addressed and up. A namespace of that name left empty
    /// (only loopback, no process) is replaced; one in use is replaced only when `replacing`, and
    /// otherwise refused with what is in it.
    public func create(with tap: TapDevice, replacing: Bool = false) throws(NetworkNamespace.Failure) {
        if exists {
            if !replacing, let occupants = occupants(), !occupants.isEmpty {
                throw Failure(description: "network namespace \(name) is in use (\(occupants.joined(separator: ", "))): another server "
                    + "may be serving there; choose another name, or replace it (--replace-netns)")
            }
            _ = Self.run(["ip", "netns", "del", name])
        }
        var steps = [["ip", "netns", "add", name], ["ip", "link", "set", tap.name, "netns", name],
                     ["ip", "-n", name, "link", "set", tap.name, "txqueuelen", "\(Self.transmitQueueLength)"]]
        if hasIPv4 { steps.append(["ip", "-n", name, "addr", "add", "\(clientAddress)/\(prefixLength)", "dev", tap.name]) }
        if let ipv6 {
            // No duplicate address detection: the address would stay tentative (unusable) for a second.
            steps.append(["ip", "-n", name, "-6", "addr", "add", "\(ipv6.clientAddress)/\(ipv6.prefixLength)", "dev", tap.name, "nodad"])
        }
        steps += [["ip", "-n", name, "link", "set", tap.name, "up"], ["ip", "-n", name, "link", "set", "lo", "up"]]
        for step in steps {
            guard Self.run(step) == 0 else {
                remove()
                throw Failure(description: "setting up network namespace \(name) failed at: \(step.joined(separator: " ")) (needs root and iproute2)")
            }
        }
    }

    public func remove() { _ = Self.run(["ip", "netns", "del", name]) }

    /// Whether a namespace of this name exists (iproute2 keeps them under /run/netns).
    public var exists: Bool { access("/run/netns/\(name)", F_OK) == 0 }

    /// What keeps an existing namespace in use: its interfaces besides loopback and its processes, as
    /// "interface tap0" and "3 processes"; empty when it is stale, nil when `ip` cannot tell.
    public func occupants() -> [String]? {
        guard let links = Self.capture(["ip", "-n", name, "-o", "link", "show"]),
              let pids = Self.capture(["ip", "netns", "pids", name]) else { return nil }
        var found: [String] = []
        for line in links.split(separator: "\n") {
            // "2: tap0@if5: <BROADCAST,...> ..."
            let fields = line.split(separator: ":", maxSplits: 2)
            guard fields.count >= 2 else { continue }
            let interface = fields[1].drop(while: { $0 == " " }).split(separator: "@").first.map(String.init) ?? ""
            if !interface.isEmpty && interface != "lo" { found.append("interface \(interface)") }
        }
        let processes = pids.split(separator: "\n").filter { !$0.isEmpty }.count
        if processes > 0 { found.append(processes == 1 ? "1 process" : "\(processes) processes") }
        return found
    }

    /// Runs a tool from PATH and returns what it wrote to standard output, or nil when it failed.
    static func capture(_ arguments: [String]) -> String? {
        var pipe: [Int32] = [0, 0]
        guard Glibc.pipe(&pipe) == 0 else { return nil }
        let pid = start(arguments, output: pipe[1], closing: pipe[0])
        Glibc.close(pipe[1])
        defer { Glibc.close(pipe[0]) }
        guard let pid else { return nil }
        var output: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let count = chunk.withUnsafeMutableBytes { bytes in retryingOnInterrupt { Glibc.read(pipe[0], bytes.baseAddress, bytes.count) } }
            guard count > 0 else { break }
            output += chunk[0..<count]
        }
        guard exitStatus(of: pid) == 0 else { return nil }
        return String(decoding: output, as: UTF8.self)
    }

    /// Runs a tool from PATH with its output discarded; its exit status, or -1 if it could not start.
    public static func run(_ arguments: [String]) -> Int32 {
        guard let pid = start(arguments, output: nil, closing: nil) else { return -1 }
        return exitStatus(of: pid)
    }

    /// Starts a tool from PATH with standard error discarded and standard output to `output` (or
    /// discarded), `closing` closed in the child; its process id, or nil if it could not start.
    private static func start(_ arguments: [String], output: Int32?, closing: Int32?) -> pid_t? {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        if let output { posix_spawn_file_actions_adddup2(&actions, output, 1) } else { posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0) }
        if let closing { posix_spawn_file_actions_addclose(&actions, closing) }
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        var argv: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) } + [nil]
        defer { for pointer in argv { free(pointer) } }
        var pid: pid_t = 0
        guard posix_spawnp(&pid, arguments[0], &actions, nil, &argv, environ) == 0 else { return nil }
        return pid
    }

    /// Waits for a child; its exit status, or -1 if a signal ended it.
    private static func exitStatus(of pid: pid_t) -> Int32 {
        var status: Int32 = 0
        _ = retryingOnInterrupt { waitpid(pid, &status, 0) }
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : -1
    }
}
