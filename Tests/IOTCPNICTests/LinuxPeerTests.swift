import Foundation
import IOTCPCommon
import IOTCPHost
import IOTCPNIC
import Testing

/// Host engine, NIC data plane and link in one loop, over a TAP: the embedded arrangement, wired by hand.
final class EmbeddedStack {
    let tap: TapDevice
    var link: EthernetLink
    let nic: NICDataPlane
    let engine: TCPEngine
    var echoes: [(FlowID, SequenceNumber, UInt64)] = []
    var packetsIn: [(FlowID, [UInt8])] = []
    var errors: [String] = []

    init(tap: TapDevice, address: IPv4Address, files: FileTable, now: Instant) {
        self.tap = tap
        link = EthernetLink(hardwareAddress: MACAddress(0x02, 0, 0, 0x77, 0, 2), address: address)
        nic = NICDataPlane(files: files)
        engine = TCPEngine(localAddress: address, secret: (11, 13), now: now)
    }

    struct NICSide: NICOutput {
        unowned let stack: EmbeddedStack
        mutating func transmit(length: Int, _ build: (UnsafeMutableRawBufferPointer) -> Void) {
            var packet = [UInt8](repeating: 0, count: length)
            packet.withUnsafeMutableBytes { build($0) }
            let tap = stack.tap
            packet.withUnsafeBytes { bytes in stack.link.send(packet: bytes) { frame in try? tap.write(frame) } }
        }
        mutating func reply(_ command: Command) {
            switch command {
            case .echo(let flow, let end, let delay): stack.echoes.append((flow, end, delay))
            case .packetIn(let flow, let packet): stack.packetsIn.append((flow, Array(packet)))
            case .error(_, let report): stack.errors.append(report.textString)
            default: break
            }
        }
    }

    struct HostSide: CommandOutput {
        unowned let stack: EmbeddedStack
        var now: Instant
        mutating func emit(_ command: Command) {
            var side = NICSide(stack: stack)
            stack.nic.handle(command, received: now, now: now, output: &side)
        }
        mutating func emitPacket(flow: FlowID, length: Int, _ build: (UnsafeMutableRawBufferPointer) -> Void) {
            var packet = [UInt8](repeating: 0, count: length)
            packet.withUnsafeMutableBytes { build($0) }
            packet.withUnsafeBytes { emit(.packetOut(flow, packet: $0)) }
        }
    }

    /// One turn of the loop: frames in, PACKET_IN and ECHO to the engine, timers.
    func poll(now: Instant) {
        var host = HostSide(stack: self, now: now)
        var nicSide = NICSide(stack: self)
        var frame = [UInt8](repeating: 0, count: 2048)
        while let count = (try? frame.withUnsafeMutableBytes { try tap.read(into: $0) }) ?? nil {
            let tap = self.tap
            frame.withUnsafeBytes { raw in
                if let packet = link.receive(frame: UnsafeRawBufferPointer(rebasing: raw[0..<count]), transmit: { try? tap.write($0) }) {
                    nic.receive(packet: packet, output: &nicSide)
                }
            }
        }
        while !packetsIn.isEmpty || !echoes.isEmpty {
            let packets = packetsIn
            packetsIn.removeAll()
            for (flow, packet) in packets { packet.withUnsafeBytes { engine.handlePacket($0, flow: flow, now: now, output: &host) } }
            let done = echoes
            echoes.removeAll()
            for (flow, end, delay) in done { engine.handleEcho(flow: flow, sequenceEnd: end, nicDelayNanoseconds: delay, now: now) }
        }
        engine.handleTimers(now: now, output: &host)
    }
}

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
        let start = DispatchTime.now().uptimeNanoseconds
        func clock() -> Instant { Instant(nanoseconds: 1_000_000_000 + DispatchTime.now().uptimeNanoseconds - start) }
        let stack = EmbeddedStack(tap: tap, address: IPv4Address(10, 79, 0, 2), files: try FileTable(root: root.path), now: clock())
        let listener = try stack.engine.listen(port: 8080)
        var host = EmbeddedStack.HostSide(stack: stack, now: clock())
        let (file, status) = try stack.nic.files.open(path: "/sub/data.bin")
        let output = URL(fileURLWithPath: root.path).deletingLastPathComponent().appendingPathComponent("downloaded.bin").path

        let client = Process()
        client.executableURL = URL(fileURLWithPath: "/bin/bash")
        client.arguments = ["-c", "ip netns exec \(namespace) ping -c 1 -W 5 10.79.0.2 >/dev/null && " +
                            "ip netns exec \(namespace) timeout 20 bash -c 'exec 3<>/dev/tcp/10.79.0.2/8080; cat <&3 > \(output)'"]
        try client.run()
        var served: [TCPHandle: Int] = [:]
        while client.isRunning && DispatchTime.now().uptimeNanoseconds - start < 30_000_000_000 {
            tap.waitReadable(milliseconds: 2)
            let now = clock()
            host.now = now
            stack.poll(now: now)
            while let handle = stack.engine.accept(listener) { served[handle] = 0 }
            for (handle, queued) in served where queued < Int(status.size) {
                let taken = (try? stack.engine.writeFile(handle, file: file, offset: UInt64(queued), length: Int(status.size) - queued,
                                                         now: now, output: &host)) ?? 0
                served[handle] = queued + taken
                if queued + taken == Int(status.size) { try? stack.engine.close(handle, now: now, output: &host) }
            }
        }
        // Let the closing handshake finish.
        for _ in 0..<50 {
            tap.waitReadable(milliseconds: 2)
            stack.poll(now: clock())
        }
        client.waitUntilExit()
        #expect(client.terminationStatus == 0, "ping and download in the namespace")
        #expect(stack.link.echoRepliesSent >= 1, "the NIC answered the ping")
        #expect(stack.link.arpRepliesSent >= 1, "the NIC answered ARP")
        #expect(stack.errors.isEmpty, "\(stack.errors)")
        let downloaded = (try? Data(contentsOf: URL(fileURLWithPath: output))).map { [UInt8]($0) } ?? []
        let intact = downloaded == root.content
        #expect(downloaded.count == root.content.count && intact, "Linux received exactly the file's \(root.content.count) bytes (got \(downloaded.count))")
    }
}
