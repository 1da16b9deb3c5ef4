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
@Suite("A real Linux TCP peer through a TAP", .serialized)
struct LinuxPeerTests {
    @Test("Linux pings the NIC and downloads an offloaded file byte-exact")
    func linuxDownloadsOffloadedFile() throws {
        guard getuid() == 0 else {
            Issue.record("needs root to create a TAP and a network namespace (scripts/test.sh runs as root)")
            return
        }
        let root = try ExportRoot()
        let namespace = "iotcp-t\(getpid() % 100_000)"
        let tapName = "iot\(getpid() % 100_000)"
        let tap = try TapDevice(name: tapName)
        defer { shell("ip netns del \(namespace) 2>/dev/null") }
        for step in ["ip netns add \(namespace)", "ip link set \(tap.name) netns \(namespace)",
                     "ip -n \(namespace) addr add 10.79.0.1/24 dev \(tap.name)", "ip -n \(namespace) link set \(tap.name) up",
                     "ip -n \(namespace) link set lo up"] {
            let result = shell(step)
            try #require(result.status == 0, "\(step): \(result.output)")
        }
        let nic = try EmbeddedNIC(tap: tap, address: IPv4Address(10, 79, 0, 2), files: try FileTable(root: root.path))
        nic.start()
        let stack = IOTCPStack(channel: nic.hostChannel, address: IPv4Address(10, 79, 0, 2))
        let listener = try stack.listen(port: 8080)
        try stack.register(listener, interests: .acceptable, token: 0)
        let request = try stack.offloadOpen("/sub/data.bin")
        let output = URL(fileURLWithPath: root.path).deletingLastPathComponent().appendingPathComponent("downloaded.bin").path

        let client = Process()
        client.executableURL = URL(fileURLWithPath: "/bin/bash")
        client.arguments = ["-c", "ip netns exec \(namespace) ping -c 1 -W 5 10.79.0.2 >/dev/null && " +
                            "ip netns exec \(namespace) timeout 20 bash -c 'exec 3<>/dev/tcp/10.79.0.2/8080; cat <&3 > \(output)'"]
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
        #expect(nic.runtime.link.arpRepliesSent >= 1, "the NIC answered ARP")
        #expect(nic.runtime.dataPlane.counters.errors == 0)
        #expect(stack.takeNICMessages().isEmpty)
        let downloaded = (try? Data(contentsOf: URL(fileURLWithPath: output))).map { [UInt8]($0) } ?? []
        let intact = downloaded == root.content
        #expect(downloaded.count == root.content.count && intact, "Linux received exactly the file's \(root.content.count) bytes (got \(downloaded.count))")
    }
}
