import Foundation
import IOTCPCommon
@testable import IOTCPHost
import IOTCPNIC
import Testing

/// Encodes every command into a real message, so the host ↔ NIC path exercises the codec both ways.
struct MessageOutput: CommandOutput, NICOutput {
    var messages: [[UInt8]] = []
    var wire: [[UInt8]] = []

    private mutating func encode(_ size: Int, _ body: (inout CommandWriter) -> Bool) {
        var message = [UInt8](repeating: 0, count: CommandProtocol.messageHeaderLength + size)
        let length = message.withUnsafeMutableBytes { raw -> Int in
            var writer = CommandWriter(buffer: raw)
            precondition(body(&writer), "a command must fit its own message")
            return writer.finish(sequence: 0).count
        }
        messages.append(Array(message[0..<length]))
    }

    mutating func emit(_ command: Command) { encode(command.encodedLength) { $0.append(command) } }
    mutating func reply(_ command: Command) { emit(command) }

    mutating func emitPacket(flow: FlowID, length: Int, _ build: (UnsafeMutableRawBufferPointer) -> Void) {
        encode(CommandProtocol.commandHeaderLength + length) { writer in
            guard let space = writer.appendPacket(.packetOut, flow: flow, packetLength: length) else { return false }
            build(space)
            return true
        }
    }

    mutating func transmit(headers: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, offload: PacketOffload?) -> TransmitResult {
        #expect(offload == nil, "offloads are off unless a wire asks for them")
        wire.append(Array(headers) + Array(payload))
        return .sent
    }
}

/// Decodes each message and calls `body` with every command (all must decode).
func forEachCommand(in messages: [[UInt8]], _ body: (Command) -> Void) {
    for message in messages {
        message.withUnsafeBytes { raw in
            guard var reader = try? CommandReader(message: raw) else {
                Issue.record("a message did not decode")
                return
            }
            while true {
                do {
                    guard let command = try reader.next() else { break }
                    body(command)
                } catch {
                    Issue.record("a command did not decode: \(error)")
                    break
                }
            }
        }
    }
}

@Suite("End to end: host engine, command codec, NIC data plane, client")
struct EndToEndTests {
    @Test("a file offloaded by the host reaches a client byte-exact through encoded commands", arguments: RetransmitStore.Mode.allCases)
    func offloadedTransfer(mode: RetransmitStore.Mode) throws {
        let root = try ExportRoot()
        // The disk takes 2 ms a read, as a loaded one might: the transfer must not mistake it for the network.
        let nic = NICDataPlane(files: try FileTable(root: root.path), disk: DelayedDisk(base: PreadDisk(), delayNanoseconds: 2_000_000),
                               retransmitMode: mode)
        var now = Instant.milliseconds(5000)
        let serverAddress = flowEndpoints.localAddress.ipv4!, clientAddress = flowEndpoints.remoteAddress.ipv4!
        let server = TCPEngine(localAddress: serverAddress, secret: (1, 2), now: now)
        let client = TCPEngine(localAddress: clientAddress, secret: (3, 4), now: now)
        let listener = try server.listen(port: 80)
        var hostToNIC = MessageOutput(), nicToHost = MessageOutput(), clientOut = MessageOutput()

        // OPEN through the codec.
        Array("/sub/data.bin".utf8).withUnsafeBytes { hostToNIC.emit(.open(requestID: 42, flags: 0, path: $0)) }
        var file: OffloadedFileID?
        var size: UInt64 = 0
        let handle = try client.connect(to: serverAddress, port: 80, localPort: 40000, now: now, output: &clientOut)
        var serverHandle: TCPHandle?
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        var errors: [String] = []
        var queued = 0
        var clientClosed = false
        for _ in 0..<100_000 {
            now = now + 100_000
            // Host → NIC.
            let toNIC = hostToNIC.messages
            hostToNIC.messages.removeAll()
            forEachCommand(in: toNIC) { nic.handle($0, received: now, now: now, output: &nicToHost) }
            nic.poll(now: now, output: &nicToHost)
            // NIC → wire → client.
            for packet in nicToHost.wire { packet.withUnsafeBytes { client.handlePacket($0, now: now, output: &clientOut) } }
            nicToHost.wire.removeAll()
            // Client → wire → NIC → PACKET_IN.
            for case let packet in clientOut.messages.flatMap({ message -> [[UInt8]] in
                var packets: [[UInt8]] = []
                forEachCommand(in: [message]) { if case .packetOut(_, let bytes) = $0 { packets.append(Array(bytes)) } }
                return packets
            }) {
                packet.withUnsafeBytes { nic.receive(packet: $0, output: &nicToHost) }
            }
            clientOut.messages.removeAll()
            // NIC → host.
            let toHost = nicToHost.messages
            nicToHost.messages.removeAll()
            forEachCommand(in: toHost) { command in
                switch command {
                case .opened(42, let id, let bytes): file = id; size = bytes
                case .echo(let flow, let end, let delay): server.handleEcho(flow: flow, sequenceEnd: end, nicDelayNanoseconds: delay, now: now, output: &hostToNIC)
                case .packetIn(let flow, let packet): server.handlePacket(packet, flow: flow, now: now, output: &hostToNIC)
                case .error(_, let report): errors.append(report.textString)
                default: break
                }
            }
            // The applications.
            if serverHandle == nil { serverHandle = server.accept(listener) }
            if let serverHandle, let file, queued < Int(size) {
                queued += try server.writeFile(serverHandle, file: file, offset: UInt64(queued), length: Int(size) - queued, now: now, output: &hostToNIC)
                if queued == Int(size) { try server.close(serverHandle, now: now, output: &hostToNIC) }
            }
            while !clientClosed {
                let count = try buffer.withUnsafeMutableBytes { try client.read(handle, into: $0, now: now, output: &clientOut) }
                if count == 0 { break }
                received += buffer[0..<count]
            }
            if !clientClosed && client.state(of: handle) == .closeWait {
                try client.close(handle, now: now, output: &clientOut)
                clientClosed = true
            }
            server.sendOwedAcknowledgments(now: now, output: &hostToNIC)
            client.sendOwedAcknowledgments(now: now, output: &clientOut)
            server.handleTimers(now: now, output: &hostToNIC)
            client.handleTimers(now: now, output: &clientOut)
            // Done when the client's side is gone and the server's waits in TIME-WAIT (the NIC forgot the flow).
            if clientClosed, client.state(of: handle) == nil, let serverHandle, server.state(of: serverHandle) == .timeWait { break }
        }
        #expect(errors.isEmpty, "\(errors)")
        #expect(size == 100_000)
        let intact = received == root.content
        #expect(received.count == root.content.count && intact, "the client holds exactly the file's bytes")
        #expect(nic.store.heldBytes == 0 && nic.pool.inUse == 0, "ACKD and FLOW_CLOSE left nothing in the store")
        #expect(nic.counters.malformedIn == 0)
        let info = try #require(serverHandle.flatMap { server.info(of: $0) })
        #expect(info.timeouts == 0 && info.fastRecoveries == 0, "a slow disk is no reason to retransmit")
    }
}
