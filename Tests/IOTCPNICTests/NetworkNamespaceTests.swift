import Foundation
import Glibc
import IOTCPCommon
import IOTCPEmbedded
import IOTCPNIC
import IOTCPNICCore
import Testing

/// Needs root (CI runs as root), as the servers do; the namespace is this test's own and removed after.
@Suite("Client network namespaces", .serialized)
struct NetworkNamespaceTests {
    @Test("a namespace another server uses is refused and left alone; an empty one is replaced; replacing takes it when asked")
    func refusesANamespaceInUse() throws {
        let name = "iotcp-ns\(getpid() % 100_000)"
        shell("ip netns del \(name) 2>/dev/null")
        defer { shell("ip netns del \(name) 2>/dev/null") }
        let namespace = try NetworkNamespace(name: name, address: "10.81.0.2/24")
        #expect(!namespace.exists)
        // Another server's namespace: interfaces of its own inside (a veth pair: not every kernel has dummy).
        #expect(shell("ip netns add \(name) && ip -n \(name) link add busy0 type veth peer name busy1").status == 0)
        #expect(namespace.exists && Set(namespace.occupants() ?? []) == ["interface busy0", "interface busy1"])
        let tap = try TapDevice(name: "iotns\(getpid() % 10_000)")
        do {
            try namespace.create(with: tap)
            Issue.record("a namespace in use was taken over")
        } catch {
            #expect(error.description.contains("\(name) is in use (interface busy"), "\(error)")
        }
        #expect(shell("ip -n \(name) link show busy0").status == 0, "the other server's interface is still there")

        // Its server gone (the interface with it): the empty namespace is stale and replaced without asking.
        #expect(shell("ip -n \(name) link del busy0").status == 0)
        #expect(namespace.occupants() == [])
        try namespace.create(with: tap)
        #expect(shell("ip -n \(name) link show \(tap.name)").status == 0)

        // Ours now, with our TAP in it: another create is refused unless it asks to replace.
        let second = try TapDevice(name: "iotnt\(getpid() % 10_000)")
        #expect(throws: NetworkNamespace.Failure.self) { try namespace.create(with: second) }
        try namespace.create(with: second, replacing: true)
        #expect(shell("ip -n \(name) link show \(second.name)").status == 0)
        #expect(namespace.occupants() == ["interface \(second.name)"])
    }

    @Test("--address takes IPv4 alone or both families; the namespace side gets the first other host address of each")
    func parsesBothFamilies() throws {
        let single = try NetworkNamespace(name: "a", address: "10.81.0.2/24")
        #expect(single.stackAddress == IPv4Address(10, 81, 0, 2) && single.clientAddress == IPv4Address(10, 81, 0, 1))
        #expect(single.ipv6 == nil)
        let both = try NetworkNamespace(name: "a", address: "10.81.0.2/24,fd81::2/64")
        #expect(both.stackAddress == IPv4Address(10, 81, 0, 2) && both.prefixLength == 24)
        #expect(both.ipv6?.stackAddress == IPv6Address("fd81::2") && both.ipv6?.clientAddress == IPv6Address("fd81::1"))
        #expect(both.ipv6?.prefixLength == 64)
        let first = try NetworkNamespace(name: "a", address: "fd81:0:0:7::1/64,10.81.0.1/16")
        #expect(first.ipv6?.clientAddress == IPv6Address("fd81:0:0:7::2") && first.clientAddress == IPv4Address(10, 81, 0, 2))
        #expect(both.hasIPv4 && both.primaryAddress == IPAddress(IPv4Address(10, 81, 0, 2)))
        let only6 = try NetworkNamespace(name: "a", address: "fd81::2/64")
        #expect(!only6.hasIPv4 && only6.stackAddress == IPv4Address(rawValue: 0) && only6.primaryAddress == IPAddress("fd81::2"))
        #expect(only6.ipv6?.clientAddress == IPv6Address("fd81::1"))
        let refused: [(String, String)] = [
            ("0.0.0.0/24", "must look like"), ("10.81.0.2/24,10.82.0.2/24", "one IPv4 address at most"),
            ("10.81.0.2/24,fd81::2/64,fd82::2/64", "one IPv6 address at most"), ("10.81.0.2/24,fd81::2/127", "prefix 8 to 126"),
            ("10.81.0.2/24,fe80::2/64", "not a unicast global"), ("10.81.0.2/24,ff02::2/64", "not a unicast global"),
            ("10.81.0.2/24,", "must look like"), ("10.81.0.2", "must look like"), ("fd81::zz/64", "must look like"),
        ]
        for (text, reason) in refused {
            #expect(throws: NetworkNamespace.Failure.self, "\(text)") { try NetworkNamespace(name: "a", address: text) }
            do { _ = try NetworkNamespace(name: "a", address: text) } catch {
                #expect(error.description.contains(reason), "\(text): \(error)")
            }
        }
    }

    @Test("a namespace made with both families reaches the NIC over IPv6 at once (no tentative address): ping -6")
    func namespaceWithIPv6() throws {
        let name = "iotcp-n6\(getpid() % 100_000)"
        shell("ip netns del \(name) 2>/dev/null")
        defer { shell("ip netns del \(name) 2>/dev/null") }
        let namespace = try NetworkNamespace(name: name, address: "10.83.0.2/24,fd83::2/64")
        let tap = try TapDevice(name: "iot6n\(getpid() % 10_000)")
        try namespace.create(with: tap)
        let ipv6 = try #require(namespace.ipv6)
        let shown = shell("ip -n \(name) -6 addr show dev \(tap.name)")
        let line = shown.output.split(separator: "\n").first { $0.contains("fd83::1/64") }
        #expect(line != nil && line?.contains("tentative") == false, "\(shown.output)")
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("iotcp-n6-\(getpid())").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        let nic = try EmbeddedNIC(tap: tap, address: namespace.stackAddress,
                                  ipv6: IPv6Settings(address: ipv6.stackAddress, prefixLength: ipv6.prefixLength),
                                  files: try FileTable(root: root))
        nic.start()
        let ping = shell("ip netns exec \(name) ping -6 -c 2 -i 0.2 -W 5 \(ipv6.stackAddress)")
        nic.stop()
        #expect(ping.status == 0 && ping.output.contains("2 received"), "\(ping.output)")
    }
}
