import Foundation
import IOTCPChannels
import IOTCPCommon
import IOTCPHost
import IOTCPNIC
import Testing

@Suite("IOTCPStack: sockets, offload calls and the event queue over a channel")
struct StackTests {
    /// Accepts the client's connection through the event queue (acceptable event, then accept).
    func acceptThroughEvents(_ harness: StackHarness, listener: Socket) throws -> Socket {
        var accepted: Socket?
        try harness.run {
            for case .socket(let socket, let kinds, 7) in harness.events where socket == listener && kinds.contains(.acceptable) {
                accepted = try? harness.stack.accept(listener)
            }
            return accepted != nil
        }
        return try #require(accepted)
    }

    /// A listener on port 80 registered for accepts (token 7), and `count` client connections accepted.
    func acceptedConnections(_ harness: StackHarness, count: Int) throws -> [(client: TCPHandle, socket: Socket)] {
        let listener = try harness.stack.listen(port: 80)
        try harness.stack.register(listener, interests: .acceptable, token: 7)
        let clients = try (0..<count).map { _ in try harness.connectClient(port: 80) }
        return try clients.map { ($0, try acceptThroughEvents(harness, listener: listener)) }
    }

    func openFile(_ harness: StackHarness, _ path: String, token: UInt64 = 99) throws -> Result<OffloadedFile, IOTCPError> {
        let request = try harness.stack.offloadOpen(path, token: token)
        var result: Result<OffloadedFile, IOTCPError>?
        try harness.run {
            for case .offloadOpened(let done, let outcome, let got) in harness.events where done == request {
                #expect(got == token)
                result = outcome
            }
            return result != nil
        }
        return try #require(result)
    }

    @Test("a head by write and a file by offloadWrite arrive byte-exact, in order; the file closes once acknowledged")
    func offloadedDownload() throws {
        let root = try ExportRoot()
        let harness = try StackHarness(root: root.path)
        let (client, socket) = try acceptedConnections(harness, count: 1)[0]

        let file = try openFile(harness, "/sub/data.bin").get()
        #expect(file.size == UInt64(root.content.count))
        #expect(try harness.stack.offloadFstat(file.id).size == UInt64(root.content.count))
        #expect(harness.nic.files.openCount == 1)

        let head = Array("HEAD\r\n".utf8)
        #expect(try head.withUnsafeBytes { try harness.stack.write(socket, $0) } == head.count)
        var offset: UInt64 = 0
        var received: [UInt8] = []
        try harness.stack.register(socket, interests: .writable, token: 8)
        // sendfile semantics: partial progress, would-block when full, resumed on writable.
        try harness.run {
            if offset < file.size {
                do throws(IOTCPError) {
                    offset += UInt64(try harness.stack.offloadWrite(socket, file: file.id, offset: offset, length: Int(file.size - offset)))
                } catch {
                    if error != .wouldBlock { Issue.record("offloadWrite: \(error)") }
                }
            }
            received += harness.clientRead(client)
            return received.count == head.count + root.content.count
        }
        #expect(received == head + root.content)
        // Past the end, sendfile gives 0.
        #expect(try harness.stack.offloadWrite(socket, file: file.id, offset: file.size, length: 10) == 0)

        try harness.stack.offloadClose(file.id)
        #expect(throws: IOTCPError.badFile(file.id)) { try harness.stack.offloadFstat(file.id) }
        try harness.run { harness.nic.files.openCount == 0 }
        #expect(harness.nic.files.openCount == 0, "CLOSE_FILE reached the NIC once everything was acknowledged")
        #expect(harness.nic.store.heldBytes == 0, "ACKD freed the store")
        #expect(harness.nicErrors.isEmpty, "\(harness.nicErrors)")
    }

    /// IO-TCP's point about the NIC's delay: a disk that takes 40 ms a read must not look like a 40 ms network.
    /// The wire here delivers within a step (1 ms); the host's smoothed RTT must stay near that, with no
    /// retransmission timeout or fast retransmit, while the NIC reports the 40 ms in every ECHO. (Ignore the
    /// ECHO's delay and the RTT estimate comes out at 40 ms and more.)
    @Test("a slow disk (40 ms a read) is not taken for a slow network: RTT stays the wire's, nothing is retransmitted")
    func slowDiskIsNotNetworkDelay() throws {
        let root = try ExportRoot()
        let harness = try StackHarness(root: root.path, disk: DelayedDisk(base: PreadDisk(), delayNanoseconds: 40_000_000))
        let (client, socket) = try acceptedConnections(harness, count: 1)[0]
        let file = try openFile(harness, "/sub/data.bin").get()
        var offset: UInt64 = 0
        var received: [UInt8] = []
        try harness.run {
            if offset < file.size {
                offset += UInt64((try? harness.stack.offloadWrite(socket, file: file.id, offset: offset, length: Int(file.size - offset))) ?? 0)
            }
            received += harness.clientRead(client)
            return received.count == root.content.count
        }
        #expect(received == root.content)
        let info = try #require(harness.stack.info(of: socket))
        #expect(info.timeouts == 0 && info.fastRecoveries == 0, "no retransmission for a slow disk")
        let smoothed = info.smoothedRTT
        #expect(smoothed < 5_000_000, "smoothed RTT \(Double(smoothed) / 1e6) ms: the wire's, not the disk's")
        let delays = harness.nic.counters
        #expect(delays.echoes >= 2 && delays.echoDelayTotal / UInt64(delays.echoes) >= 40_000_000,
                "the NIC reported its 40 ms in every ECHO (mean \(delays.echoDelayTotal / UInt64(max(delays.echoes, 1)) / 1_000_000) ms)")
    }

    @Test("offloadClose right after queuing: the NIC keeps the file until every connection that used it is acknowledged")
    func closeWhileInFlight() throws {
        let root = try ExportRoot()
        let harness = try StackHarness(root: root.path)
        let connections = try acceptedConnections(harness, count: 2)
        let clients = connections.map(\.client), sockets = connections.map(\.socket)
        let file = try openFile(harness, "/sub/data.bin").get()
        // Each connection queues 20,000 bytes from a different offset; the file is closed at once.
        for (index, socket) in sockets.enumerated() {
            #expect(try harness.stack.offloadWrite(socket, file: file.id, offset: UInt64(index * 50_000), length: 20_000) == 20_000)
        }
        try harness.stack.offloadClose(file.id)
        #expect(throws: IOTCPError.badFile(file.id)) { try harness.stack.offloadWrite(sockets[0], file: file.id, offset: 0, length: 1) }
        var received: [[UInt8]] = [[], []]
        try harness.run {
            #expect(harness.nic.files.openCount == (received.allSatisfy { $0.count == 20_000 } ? harness.nic.files.openCount : 1),
                    "open on the NIC while bytes are still in flight")
            for index in 0..<2 { received[index] += harness.clientRead(clients[index]) }
            return harness.nic.files.openCount == 0
        }
        #expect(harness.nic.files.openCount == 0 && harness.stack.openFileCount == 0, "closed once both were acknowledged")
        for index in 0..<2 {
            let expected = Array(root.content[(index * 50_000)..<(index * 50_000 + 20_000)])
            #expect(received[index] == expected, "connection \(index) got its range byte-exact")
        }
        #expect(harness.nic.store.heldBytes == 0 && harness.nicErrors.isEmpty)
    }

    @Test("a socket closed right after its offloaded write (Connection: close) still lets the file close once acknowledged")
    func socketClosedWhileInFlight() throws {
        let root = try ExportRoot()
        let harness = try StackHarness(root: root.path)
        let (client, socket) = try acceptedConnections(harness, count: 1)[0]
        let file = try openFile(harness, "/sub/data.bin").get()
        #expect(try harness.stack.offloadWrite(socket, file: file.id, offset: 0, length: 30_000) == 30_000)
        try harness.stack.offloadClose(file.id)
        // The application lets go of the socket before a single byte is acknowledged: the events that
        // say "all acknowledged" and "closed" now belong to nobody, yet the file must still be closed.
        try harness.stack.close(socket)
        var received: [UInt8] = []
        try harness.run {
            received += harness.clientRead(client)
            return harness.nic.files.openCount == 0 && harness.stack.openFileCount == 0
        }
        #expect(received == Array(root.content[0..<30_000]))
        #expect(harness.nic.files.openCount == 0 && harness.stack.openFileCount == 0)
        #expect(harness.nic.store.heldBytes == 0 && harness.nicErrors.isEmpty)
    }

    @Test("a file on a device the NIC can name comes back with it: DEVICE between OPENED and STAT")
    func openReportsDevice() throws {
        let root = try ExportRoot()
        let harness = try StackHarness(root: root.path)
        let disk = StorageDevice(model: "QEMU NVMe Ctrl", serial: "iotcp-0001", namespace: 1)
        var probed: [UInt64] = []
        (harness.nic.files as! FileTable).deviceProbe = { number in
            probed.append(number)
            return disk
        }
        let first = try openFile(harness, "/sub/data.bin").get()
        let second = try openFile(harness, "/inside").get()
        #expect(first.device == disk && second.device == disk)
        #expect(probed == [first.status.device], "asked once per device number")
        (harness.nic.files as! FileTable).deviceProbe = { _ in nil }
        let other = try StackHarness(root: root.path)
        (other.nic.files as! FileTable).deviceProbe = { _ in nil }
        #expect(try openFile(other, "/sub/data.bin").get().device == nil)
    }

    @Test("offloadOpen failures come back as events with the NIC's reason; bad paths are refused at once")
    func openFailures() throws {
        let root = try ExportRoot()
        let harness = try StackHarness(root: root.path)
        guard case .failure(.nic(let missing, _)) = try openFile(harness, "/no/such/file") else {
            Issue.record("a missing file opened")
            return
        }
        #expect(missing == .fileNotFound)
        guard case .failure(.nic(let escape, _)) = try openFile(harness, "/../secret.txt") else {
            Issue.record("a path above the root opened")
            return
        }
        #expect(escape == .pathOutsideRoot)
        guard case .failure(.nic(let symlink, _)) = try openFile(harness, "/escape") else {
            Issue.record("a symlink out of the root opened")
            return
        }
        #expect(symlink == .pathOutsideRoot)
        #expect(throws: IOTCPError.self) { try harness.stack.offloadOpen("") }
        #expect(throws: IOTCPError.self) { try harness.stack.offloadOpen("a\0b") }
        #expect(throws: IOTCPError.self) { try harness.stack.offloadOpen(String(repeating: "a", count: 5000)) }
        #expect(throws: IOTCPError.badFile(OffloadedFileID(slot: 3, generation: 9))) {
            try harness.stack.offloadClose(OffloadedFileID(slot: 3, generation: 9))
        }
    }

    @Test("level-triggered readiness repeats until drained; edge-triggered is reported once; read would-block")
    func triggerModes() throws {
        let root = try ExportRoot()
        let harness = try StackHarness(root: root.path)
        let (client, socket) = try acceptedConnections(harness, count: 1)[0]
        var buffer = [UInt8](repeating: 0, count: 64)
        #expect(throws: IOTCPError.wouldBlock) { try buffer.withUnsafeMutableBytes { try harness.stack.read(socket, into: $0) } }

        func readableReports(_ steps: Int) throws -> Int {
            var count = 0
            for _ in 0..<steps {
                try harness.step()
                count += harness.events.filter {
                    if case .socket(socket, let kinds, 1) = $0 { return kinds.contains(.readable) }
                    return false
                }.count
            }
            return count
        }
        try harness.stack.register(socket, interests: .readable, token: 1, mode: .level)
        try harness.clientWrite(client, "ping")
        #expect(try readableReports(10) >= 5, "level-triggered: every wait while unread")
        #expect(try buffer.withUnsafeMutableBytes { try harness.stack.read(socket, into: $0) } == 4)
        #expect(Array(buffer[0..<4]) == Array("ping".utf8))
        #expect(try readableReports(10) == 0, "drained: no longer readable")

        try harness.stack.register(socket, interests: .readable, token: 1, mode: .edge)
        try harness.clientWrite(client, "pong")
        // The read of "ping" left the client room for many segments, so no window update went at once:
        // the client's Nagle holds "pong" for our delayed ACK.
        let edgeCount = try readableReports(100)
        #expect(edgeCount == 1, "edge-triggered: once per arrival")
        try harness.clientWrite(client, "more")
        #expect(try readableReports(100) == 1, "and again for new data (Nagle holds it for our delayed ACK)")
    }

    @Test("a listener deferring accepts: an open but silent client is never handed over; one that speaks is, its request readable at once")
    func deferredAccept() throws {
        let root = try ExportRoot()
        let harness = try StackHarness(root: root.path)
        let listener = try harness.stack.listen(port: 80, deferAccept: true)
        try harness.stack.register(listener, interests: .acceptable, token: 7)
        // LISTEN reaches the NIC with the stack's first turn; a SYN before it would be the host's to answer.
        try harness.step()
        try harness.step()
        #expect(harness.nic.listenerCount == 1)
        let client = try harness.connectClient(port: 80)
        #expect(harness.client.state(of: client) == .established, "to the client the connection is open")
        var acceptable = false
        _ = try harness.run(limit: 200) {
            for case .socket(listener, let kinds, 7) in harness.events where kinds.contains(.acceptable) { acceptable = true }
            return acceptable
        }
        let early = try harness.stack.accept(listener)
        #expect(!acceptable && early == nil && harness.stack.engine.connectionCount == 0,
                "nothing on the host for a client that has said nothing")
        #expect(harness.nic.counters.synCookiesSent == 1 && harness.nic.counters.acceptsDeferred >= 1 && harness.nic.counters.handshakesCompleted == 0)
        try harness.clientWrite(client, "GET / HTTP/1.1\r\n\r\n")
        let socket = try acceptThroughEvents(harness, listener: listener)
        var buffer = [UInt8](repeating: 0, count: 64)
        let count = try buffer.withUnsafeMutableBytes { try harness.stack.read(socket, into: $0) }
        #expect(Array(buffer[0..<count]) == Array("GET / HTTP/1.1\r\n\r\n".utf8), "the request came with the accept")
        #expect(harness.nic.counters.handshakesCompleted == 1)
        _ = try harness.stack.write(socket, Array("HTTP/1.1 204 No Content\r\n\r\n".utf8))
        var answer: [UInt8] = []
        _ = try harness.run {
            answer += harness.clientRead(client)
            return answer.count >= 27
        }
        #expect(answer == Array("HTTP/1.1 204 No Content\r\n\r\n".utf8))

        // A request of several segments whose first is lost: the later ones bring the connection up (not a
        // reset), and the client's retransmission fills the hole.
        let second = try harness.connectClient(port: 80)
        let long = "GET /" + String(repeating: "a", count: 3000) + " HTTP/1.1\r\n\r\n"
        try harness.clientWrite(second, long)
        let firstData = try #require(harness.toNIC.firstIndex { parseSegment($0).map { !$0.1.isEmpty } ?? false })
        harness.toNIC.remove(at: firstData)
        let other = try acceptThroughEvents(harness, listener: listener)
        var received: [UInt8] = []
        _ = try harness.run(limit: 3000) {
            var chunk = [UInt8](repeating: 0, count: 4096)
            if let count = try? chunk.withUnsafeMutableBytes({ try harness.stack.read(other, into: $0) }), count > 0 { received += chunk[0..<count] }
            return received.count >= long.utf8.count
        }
        #expect(received == Array(long.utf8), "every byte, in order, after the retransmission")
        #expect(harness.nic.counters.deferredAcceptsOutOfOrder == 1 && harness.client.state(of: second) == .established)
    }

    @Test("the peer's FIN is readClosed then end of stream; its RST is an error and a hang-up")
    func closeAndReset() throws {
        let root = try ExportRoot()
        let harness = try StackHarness(root: root.path)
        let listener = try harness.stack.listen(port: 80)
        try harness.stack.register(listener, interests: .acceptable, token: 7)
        let first = try harness.connectClient(port: 80)
        let socket = try acceptThroughEvents(harness, listener: listener)
        try harness.stack.register(socket, interests: [.readable, .readClosed], token: 1)
        var output = harness.clientOutput
        try harness.client.shutdownWrite(first, now: harness.time, output: &output)
        var kinds: EventKinds = []
        try harness.run {
            for case .socket(socket, let got, 1) in harness.events { kinds = got }
            return kinds.contains(.readClosed)
        }
        #expect(kinds.contains(.readable))
        var buffer = [UInt8](repeating: 0, count: 16)
        #expect(try buffer.withUnsafeMutableBytes { try harness.stack.read(socket, into: $0) } == 0, "end of stream")
        try harness.stack.close(socket)

        let second = try harness.connectClient(port: 80)
        let other = try acceptThroughEvents(harness, listener: listener)
        try harness.stack.register(other, interests: [], token: 2)  // error and hang-up need no interest
        try harness.client.abort(second, output: &output)
        var got: EventKinds = []
        try harness.run {
            for case .socket(other, let kinds, 2) in harness.events { got = kinds }
            return !got.isEmpty
        }
        #expect(got.contains(.error) && got.contains(.hangUp))
        #expect(harness.stack.error(of: other) == .tcp(.connectionReset))
    }

    @Test("a file that shrinks under an offloaded write fails that connection with the NIC's reason, and only it")
    func nicFailureResetsTheConnection() throws {
        let root = try ExportRoot()
        let harness = try StackHarness(root: root.path)
        let (client, socket) = try acceptedConnections(harness, count: 1)[0]
        try harness.stack.register(socket, interests: [], token: 1)
        let file = try openFile(harness, "/sub/data.bin").get()
        truncate(root.path + "/sub/data.bin", 1000)
        _ = try harness.stack.offloadWrite(socket, file: file.id, offset: 0, length: Int(file.size))
        var got: EventKinds = []
        try harness.run {
            for case .socket(socket, let kinds, 1) in harness.events { got = kinds }
            return got.contains(.error)
        }
        guard case .nic(let code, let message)? = harness.stack.error(of: socket) else {
            Issue.record("no NIC error on the socket")
            return
        }
        #expect(code == .fileShrank)
        #expect(message.contains("shrank"))
        try harness.run { harness.client.state(of: client) == .closed }
        #expect(harness.client.error(of: client) == .connectionReset, "the client was told by a RST")
    }

    @Test("when the channel to the NIC fails, every connection and pending open fails and wait then throws")
    func channelFailure() throws {
        let root = try ExportRoot()
        let harness = try StackHarness(root: root.path)
        let socket = try acceptedConnections(harness, count: 1)[0].socket
        try harness.stack.register(socket, interests: .readable, token: 1)
        let request = try harness.stack.offloadOpen("/sub/data.bin", token: 5)
        harness.nicEnd.close()
        var sawSocket = false, sawOpen = false
        do {
            try harness.stack.wait(into: &harness.events, timeoutNanoseconds: 0)
            for event in harness.events {
                switch event {
                case .socket(socket, let kinds, 1): sawSocket = kinds.contains(.error)
                case .offloadOpened(request, .failure(.channel(.peerClosed)), 5): sawOpen = true
                default: break
                }
            }
        }
        #expect(sawSocket && sawOpen)
        #expect(throws: IOTCPError.channel(.peerClosed)) { try harness.stack.wait(into: &harness.events, timeoutNanoseconds: 0) }
        #expect(throws: IOTCPError.channel(.peerClosed)) { try harness.stack.offloadOpen("/x") }
    }
}

@Suite("ChannelSender")
struct ChannelSenderTests {
    @Test("commands never fit in free slots are held, then delivered in order, none lost")
    func holdsUnderBackPressure() throws {
        let (host, nic) = try InProcessChannel.makePair(configuration: ChannelConfiguration(slotCount: 2, slotBytes: 256))
        let sender = ChannelSender(channel: host)
        for n in 0..<500 { sender.append(.acknowledged(FlowID(UInt32(n + 1)), through: SequenceNumber(UInt32(n + 1) &* 7))) }
        sender.flush()
        #expect(sender.heldCount > 0, "two 256-byte slots cannot take 500 commands")
        var received: [UInt32] = []
        while received.count < 500 {
            let count = try nic.receive(limit: 8) { message in
                guard var reader = try? CommandReader(message: message) else { return }
                while let command = try? reader.next() {
                    if case .acknowledged(let flow, let through) = command {
                        #expect(through == SequenceNumber(flow.rawValue &* 7))
                        received.append(flow.rawValue - 1)
                    }
                }
            }
            sender.flush()
            if count == 0 && sender.heldCount == 0 && received.count < 500 { break }
        }
        #expect(received == Array(0..<500))
        #expect(sender.heldCount == 0)
        #expect(sender.statistics.heldMessages > 0)
    }

    @Test("a peer that stops reading: packets past maximumHeldBytes are dropped and counted, other commands kept in order")
    func heldPacketsAreBounded() throws {
        let (nic, host) = try InProcessChannel.makePair(configuration: ChannelConfiguration(slotCount: 2, slotBytes: 4096))
        let sender = ChannelSender(channel: nic)
        sender.maximumHeldBytes = 32 * 1024
        let packet = [UInt8](repeating: 0x45, count: 1000)
        // The host is stalled: nothing is read while 2,000 PACKET_INs (2 MB) and ECHOs pile up.
        for index in 0..<2000 {
            packet.withUnsafeBytes { sender.append(.packetIn(FlowID(1), packet: $0)) }
            if index % 100 == 0 { sender.append(.echo(FlowID(1), sequenceEnd: SequenceNumber(UInt32(index)), nicDelayNanoseconds: 0)) }
            sender.flush()
        }
        #expect(sender.statistics.droppedPackets > 1900, "\(sender.statistics.droppedPackets) dropped")
        var echoes: [UInt32] = [], packets = 0
        while true {
            let count = try host.receive(limit: 8) { message in
                guard var reader = try? CommandReader(message: message) else { return }
                while let command = try? reader.next() {
                    if case .echo(_, let end, _) = command { echoes.append(end.rawValue) }
                    if case .packetIn = command { packets += 1 }
                }
            }
            sender.flush()
            if count == 0 && sender.heldCount == 0 { break }
        }
        #expect(echoes == Array(stride(from: 0, to: 2000, by: 100)), "every ECHO kept, in order")
        #expect(packets + sender.statistics.droppedPackets == 2000 && packets < 100)
    }

    @Test("a packet is built in place and arrives intact; a closed peer stops the sender with its reason")
    func packetsAndFailure() throws {
        let (host, nic) = try InProcessChannel.makePair()
        let sender = ChannelSender(channel: host)
        sender.appendPacket(.packetOut, flow: FlowID(3), length: 100) { space in
            for index in space.indices { space[index] = UInt8(index) }
        }
        sender.flush()
        var packet: [UInt8] = []
        _ = try nic.receive(limit: 1) { message in
            var reader = try! CommandReader(message: message)
            if case .packetOut(FlowID(3), let bytes)? = try? reader.next() { packet = Array(bytes) }
        }
        #expect(packet == (0..<100).map(UInt8.init))
        nic.close()
        sender.append(.keepalive(nonce: 1))
        sender.flush()
        #expect(sender.failure == .peerClosed)
    }

    @Test("async calls: a cancelled accept or open throws IOTCPError.cancelled; stop fails what still waits")
    func asyncCancellationAndStop() async throws {
        let (host, nic) = try InProcessChannel.makePair()
        _ = nic  // a NIC that never answers: opens stay pending, no connection ever arrives
        let stack = AsyncIOTCPStack(stack: IOTCPStack(channel: host, address: IPv4Address(10, 0, 0, 2)))
        let pump = Task { try await stack.run() }
        let listener = try await stack.listen(port: 80)

        let accepting = Task { try await stack.accept(listener) }
        let opening = Task { try await stack.offloadOpen("/never-answered") }
        try await Task.sleep(nanoseconds: 20_000_000)
        accepting.cancel()
        opening.cancel()
        await #expect(throws: IOTCPError.cancelled) { try await accepting.value }
        await #expect(throws: IOTCPError.cancelled) { try await opening.value }

        let stranded = Task { try await stack.accept(listener) }
        try await Task.sleep(nanoseconds: 20_000_000)
        await stack.stop()
        try await pump.value
        await #expect(throws: IOTCPError.self) { try await stranded.value }
        await #expect(throws: IOTCPError.self) { try await stack.read(listener) }
    }

    @Test("cancelling the task of run() ends it at once, even in a long sleep, and calls still waiting fail")
    func asyncRunHonoursCancellation() async throws {
        let (host, nic) = try InProcessChannel.makePair()
        _ = nic
        // Sleeps of up to a minute: only the cancellation handler ringing the doorbell can end one in time.
        let stack = AsyncIOTCPStack(stack: IOTCPStack(channel: host, address: IPv4Address(10, 0, 0, 2)),
                                    longestSleepNanoseconds: 60_000_000_000)
        let pump = Task { try await stack.run() }
        let listener = try await stack.listen(port: 80)
        let stranded = Task { try await stack.accept(listener) }
        try await Task.sleep(nanoseconds: 20_000_000)
        pump.cancel()
        // run() must return well within a second; a pump that ignored cancellation would never return.
        let ended = await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                _ = try? await pump.value
                return true
            }
            group.addTask {
                try? await Task.sleep(nanoseconds: 2_000_000_000)
                return false
            }
            let first = await group.next() ?? false
            if !first { await stack.stop() }  // a pump that ignored cancellation must still end, or the group waits
            group.cancelAll()
            return first
        }
        #expect(ended, "run() returned after its task was cancelled")
        await #expect(throws: IOTCPError.self) { try await stranded.value }
    }

    @Test("an idle run() sleeps on the channel's doorbell: a handful of turns in half a second, woken at once by the NIC")
    func asyncRunSleepsOnTheDoorbell() async throws {
        let (host, nic) = try InProcessChannel.makePair()
        let stack = AsyncIOTCPStack(stack: IOTCPStack(channel: host, address: IPv4Address(10, 0, 0, 2)),
                                    longestSleepNanoseconds: 60_000_000_000)
        let pump = Task { try await stack.run() }
        // Other tests may hold the cooperative threads for a while: wait for the pump's first sleep, then count.
        for _ in 0..<500 where await stack.pumpSleeps == 0 { try await Task.sleep(nanoseconds: 10_000_000) }
        let before = await stack.pumpTurns
        try await Task.sleep(nanoseconds: 500_000_000)
        let idleTurns = await stack.pumpTurns - before
        // Napping (the old pump) took hundreds of turns here; sleeping on the doorbell takes none or a few.
        #expect(await stack.pumpSleeps >= 1 && idleTurns <= 5, "\(idleTurns) turns in half a second while idle")

        // A NIC that answers an open 200 ms after it arrives: the pump sleeps meanwhile (for up to a minute)
        // and must be woken by the answer itself.
        let nicEnd = nic
        let answered = LockedInstant()
        let answering = Thread {
            var request: UInt32?
            let giveUp = IOTCPStack.monotonicNow() + 5_000_000_000
            while request == nil && IOTCPStack.monotonicNow() < giveUp {
                _ = try? nicEnd.receive(limit: 8) { message in
                    guard var reader = try? CommandReader(message: message) else { return }
                    while let command = try? reader.next() {
                        if case .open(let id, _, _) = command { request = id }
                    }
                }
                usleep(1000)
            }
            guard let request else { return }
            usleep(200_000)
            let sender = ChannelSender(channel: nicEnd)
            let file = OffloadedFileID(rawValue: 7)
            sender.append(.opened(requestID: request, file: file, size: 5))
            sender.append(.stat(requestID: request, file: file, status: OffloadedFileStatus(
                size: 5, modificationSeconds: 0, modificationNanoseconds: 0, mode: 0o100644, inode: 1, device: 1)))
            answered.set(IOTCPStack.monotonicNow().nanoseconds)
            sender.flush()
        }
        answering.start()
        let file = try await stack.offloadOpen("/five-bytes")
        let returned = IOTCPStack.monotonicNow().nanoseconds
        let latency = returned - answered.get()
        #expect(file.status.size == 5)
        // Not woken, the pump would sleep on for up to a minute; woken, it takes microseconds (a second allows
        // for a loaded machine).
        #expect(latency < 1_000_000_000, "the open completed \(latency / 1000) µs after the NIC answered")
        pump.cancel()
        try await pump.value
    }
}

/// A time written by one thread and read by another.
final class LockedInstant: @unchecked Sendable {
    private let lock = NSLock()
    private var nanoseconds: UInt64 = 0
    func set(_ value: UInt64) { lock.withLock { nanoseconds = value } }
    func get() -> UInt64 { lock.withLock { nanoseconds } }
}
