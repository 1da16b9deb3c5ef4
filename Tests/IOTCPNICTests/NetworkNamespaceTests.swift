import Glibc
import IOTCPNIC
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
}
