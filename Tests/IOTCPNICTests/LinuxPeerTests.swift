import Foundation
import IOTCPCommon
import IOTCPHost
import IOTCPChannels
import IOTCPEmbedded
import IOTCPNIC
import Testing

@discardableResult
func shell(_ command: String) -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/bin/bash")
    process.arguments = ["-c", command]
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try? process.run()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self))
}

/// The Linux kernel in a network namespace this test creates is the peer: it pings the stack and downloads
/// an offloaded file over real TCP. Needs root (CI runs as root); the namespace is removed at the end.
/// A TAP moved into a new namespace where Linux is 10.79.0.1; the caller deletes the namespace.
func makePeerNamespace(vnetHeader: Bool = false) throws -> (TapDevice, String) {
    let namespace = "iotcp-t\(getpid() % 100_000)"
    let tap = try TapDevice(name: "iot\(getpid() % 100_000)", vnetHeader: vnetHeader)
    for step in ["ip netns add \(namespace)", "ip link set \(tap.name) netns \(namespace)",
                 "ip -n \(namespace) addr add 10.79.0.1/24 dev \(tap.name)", "ip -n \(namespace) link set \(tap.name) up",
                 "ip -n \(namespace) link set lo up"] {
        let result = shell(step)
        if result.status != 0 {
            shell("ip netns del \(namespace) 2>/dev/null")
            throw TestFailure("\(step): \(result.output)")
        }
    }
    return (tap, namespace)
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

@Suite("A real Linux TCP peer through a TAP", .serialized)
struct LinuxPeerTests {
    struct WireCase: Sendable, CustomStringConvertible {
        var faults = FaultSettings()
        var vnetHeader = false
        var ipv6 = false
        var description: String { "\(ipv6 ? "IPv6" : "IPv4"), \(vnetHeader ? "vnet header" : "plain TAP"), \(faults)" }
    }

    /// A plain TAP; a TAP with a vnet header, where SENDs leave as super-segments the kernel takes whole;
    /// and the fault-injecting wire in both directions (vnet header, real segments): frames held back for
    /// reordering are released by the runtime's own turn, a path the clean runs never take. Over IPv6 too:
    /// Linux finds the NIC by Neighbor Discovery, and super-segments leave as TCPv6 GSO frames.
    @Test("Linux pings the NIC and downloads an offloaded file byte-exact", arguments: [
        WireCase(),
        WireCase(vnetHeader: true),
        WireCase(faults: FaultSettings(loss: 0.03, duplication: 0.03, reordering: 0.1), vnetHeader: true),
        WireCase(ipv6: true),
        WireCase(vnetHeader: true, ipv6: true),
        WireCase(faults: FaultSettings(loss: 0.03, duplication: 0.03, reordering: 0.1), vnetHeader: true, ipv6: true),
    ])
    func linuxDownloadsOffloadedFile(wire: WireCase) throws {
        let faults = wire.faults
        guard getuid() == 0 else {
            Issue.record("needs root to create a TAP and a network namespace (scripts/test.sh runs as root)")
            return
        }
        let root = try ExportRoot()
        let (tap, namespace) = try makePeerNamespace(vnetHeader: wire.vnetHeader)
        defer { shell("ip netns del \(namespace) 2>/dev/null") }
        let ipv6 = wire.ipv6 ? IPv6Address("fd79::2")! : nil
        if wire.ipv6 { #expect(shell("ip -n \(namespace) addr add fd79::1/64 dev \(tap.name) nodad").status == 0) }
        let nic = try EmbeddedNIC(tap: tap, address: IPv4Address(10, 79, 0, 2), ipv6: ipv6.map { IPv6Settings(address: $0) },
                                  files: try FileTable(root: root.path))
        nic.runtime.inbound = FaultyWire(settings: faults, seed: 11)
        nic.runtime.outbound = FaultyWire(settings: faults, seed: 12)
        nic.start()
        let stack = IOTCPStack(channel: nic.hostChannel, address: IPv4Address(10, 79, 0, 2), ipv6Address: ipv6)
        let listener = try stack.listen(port: 8080)
        try stack.register(listener, interests: .acceptable, token: 0)
        let request = try stack.offloadOpen("/sub/data.bin")
        let output = URL(fileURLWithPath: root.path).deletingLastPathComponent().appendingPathComponent("downloaded.bin").path

        let client = Process()
        client.executableURL = URL(fileURLWithPath: "/bin/bash")
        let server = wire.ipv6 ? "fd79::2" : "10.79.0.2"
        client.arguments = ["-c", "ip netns exec \(namespace) ping -c 1 -W 5 \(server) >/dev/null && " +
                            "ip netns exec \(namespace) timeout -s KILL 20 bash -c 'exec 3<>/dev/tcp/\(server)/8080; cat <&3 > \(output)'"]
        try client.run()
        var file: OffloadedFile?
        var served: [Socket: UInt64] = [:]
        var events: [StackEvent] = []
        let start = DispatchTime.now().uptimeNanoseconds
        while client.isRunning && DispatchTime.now().uptimeNanoseconds - start < 30_000_000_000 {
            try stack.wait(into: &events, timeoutNanoseconds: 2_000_000)
            for event in events {
                switch event {
                case .offloadOpened(request, let result, _): file = try result.get()
                case .socket(listener, _, _): while let socket = try stack.accept(listener) { served[socket] = 0 }
                default: break
                }
            }
            guard let file else { continue }
            for (socket, queued) in served where queued < file.size {
                let taken = (try? stack.offloadWrite(socket, file: file.id, offset: queued, length: Int(file.size - queued))) ?? 0
                served[socket] = queued + UInt64(taken)
                if queued + UInt64(taken) == file.size { try stack.close(socket) }
            }
        }
        // Let the closing handshake finish.
        for _ in 0..<50 { try stack.wait(into: &events, timeoutNanoseconds: 2_000_000) }
        nic.stop()
        client.waitUntilExit()
        #expect(client.terminationStatus == 0, "ping and download in the namespace")
        #expect(nic.runtime.link.echoRepliesSent >= 1, "the NIC answered the ping")
        if wire.ipv6 {
            #expect(nic.runtime.link.neighborAdvertisementsSent >= 1, "the NIC answered Neighbor Discovery")
            #expect(stack.engine.statistics.malformedPackets == 0 && stack.engine.statistics.badChecksums == 0)
        } else {
            #expect(nic.runtime.link.arpRepliesSent >= 1, "the NIC answered ARP")
        }
        #expect(nic.runtime.dataPlane.counters.errors == 0)
        let superSegments = nic.runtime.counters.superSegmentsOut
        #expect(wire.vnetHeader && faults.isNone ? superSegments > 0 : superSegments == 0,
                "super-segments exactly when the wire takes them and nothing needs real segments (\(superSegments))")
        if faults.reordering > 0 {
            #expect(nic.runtime.outbound.reordered > 0 && nic.runtime.inbound.reordered > 0, "frames were held back both ways")
        }
        #expect(stack.statistics.nicErrors == 0 && stack.statistics.malformedCommands == 0, "the NIC failed nothing and sent nothing malformed")
        let downloaded = (try? Data(contentsOf: URL(fileURLWithPath: output))).map { [UInt8]($0) } ?? []
        let intact = downloaded == root.content
        #expect(downloaded.count == root.content.count && intact, "Linux received exactly the file's \(root.content.count) bytes (got \(downloaded.count))")
    }

    /// Linux resolves the NIC's IPv6 address by Neighbor Discovery and pings it; the NIC resolves Linux's in
    /// turn for the replies. (TCP over IPv6 is the download test's.)
    @Test("Linux pings the NIC over IPv6, each side finding the other by Neighbor Discovery")
    func linuxPingsOverIPv6() throws {
        guard getuid() == 0 else {
            Issue.record("needs root to create a TAP and a network namespace (scripts/test.sh runs as root)")
            return
        }
        let root = try ExportRoot()
        let (tap, namespace) = try makePeerNamespace()
        defer { shell("ip netns del \(namespace) 2>/dev/null") }
        let added = shell("ip -n \(namespace) addr add fd79::1/64 dev \(tap.name) nodad")
        #expect(added.status == 0, "\(added.output)")
        let nic = try EmbeddedNIC(tap: tap, address: IPv4Address(10, 79, 0, 2), ipv6: IPv6Settings(address: IPv6Address("fd79::2")!),
                                  files: try FileTable(root: root.path))
        nic.start()
        let ping = shell("ip netns exec \(namespace) ping -6 -c 3 -i 0.2 -W 5 fd79::2")
        let neighbour = shell("ip -n \(namespace) -6 neigh show fd79::2")
        nic.stop()
        #expect(ping.status == 0, "ping -6: \(ping.output)")
        #expect(ping.output.contains("3 received"), "\(ping.output)")
        #expect(neighbour.output.contains("02:00:00:77:00:02"), "Linux learned the NIC's address by Neighbor Discovery: \(neighbour.output)")
        let link = nic.runtime.link
        #expect(link.echoRepliesSent == 3 && link.neighborAdvertisementsSent >= 1)
        #expect(link.neighborSolicitationsSent >= 1 || link.neighbourCount >= 1, "the NIC knew where to send its replies")
    }

    /// The async/await layer: a task per connection, each reading a request line and answering with a
    /// written head and the offloaded file; Linux makes three connections at once.
    @Test("An async server with a task per connection serves Linux clients byte-exact")
    func asyncServerServesLinux() async throws {
        guard getuid() == 0 else {
            Issue.record("needs root to create a TAP and a network namespace (scripts/test.sh runs as root)")
            return
        }
        let root = try ExportRoot()
        let (tap, namespace) = try makePeerNamespace()
        defer { shell("ip netns del \(namespace) 2>/dev/null") }
        let nic = try EmbeddedNIC(tap: tap, address: IPv4Address(10, 79, 0, 2), files: try FileTable(root: root.path))
        nic.start()
        defer { nic.stop() }
        let stack = AsyncIOTCPStack(stack: IOTCPStack(channel: nic.hostChannel, address: IPv4Address(10, 79, 0, 2)))
        let pump = Task { try await stack.run() }
        let listener = try await stack.listen(port: 8081)
        let file = try await stack.offloadOpen("/sub/data.bin")
        #expect(file.size == UInt64(root.content.count))
        await #expect(throws: IOTCPError.self) { try await stack.offloadOpen("/sub/missing.bin") }

        let folder = URL(fileURLWithPath: root.path).deletingLastPathComponent().path
        let client = Process()
        client.executableURL = URL(fileURLWithPath: "/bin/bash")
        client.arguments = ["-c", "for i in 1 2 3; do ip netns exec \(namespace) timeout -s KILL 20 bash -c " +
                            "\"exec 3<>/dev/tcp/10.79.0.2/8081; echo 'GET $i' >&3; cat <&3 > \(folder)/async-$i.bin\" & done; wait"]
        try client.run()
        let server = Task {
            try await withThrowingTaskGroup(of: String.self) { group in
                for _ in 0..<3 {
                    let socket = try await stack.accept(listener)
                    group.addTask {
                        var request: [UInt8] = []
                        while !request.contains(UInt8(ascii: "\n")) {
                            let bytes = try await stack.read(socket)
                            if bytes.isEmpty { break }
                            request += bytes
                        }
                        try await stack.write(socket, Array("OK\n".utf8))
                        let queued = try await stack.offloadWrite(socket, file: file.id, length: Int(file.size) + 100)
                        #expect(queued == Int(file.size), "offloadWrite clamps to the end of the file")
                        try await stack.close(socket)
                        return String(decoding: request, as: UTF8.self)
                    }
                }
                var requests: [String] = []
                for try await request in group { requests.append(request) }
                return requests.sorted()
            }
        }
        let requests = try await server.value
        #expect(requests == ["GET 1\n", "GET 2\n", "GET 3\n"])
        try await stack.offloadClose(file.id)
        for _ in 0..<2_000 where client.isRunning { try await Task.sleep(nanoseconds: 10_000_000) }
        #expect(client.terminationStatus == 0)
        await stack.stop()
        try await pump.value
        for index in 1...3 {
            let downloaded = (try? Data(contentsOf: URL(fileURLWithPath: "\(folder)/async-\(index).bin"))).map { [UInt8]($0) } ?? []
            let intact = downloaded == Array("OK\n".utf8) + root.content
            #expect(intact, "client \(index) got the head and the file's \(root.content.count) bytes (got \(downloaded.count))")
        }
    }
}
