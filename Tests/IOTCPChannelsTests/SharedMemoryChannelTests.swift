import Foundation
import IOTCPChannels
import IOTCPCommon
import Testing

/// The demo executable, built beside the tests: it plays the other process.
func demoExecutable() throws -> URL {
    if let path = ProcessInfo.processInfo.environment["IOTCP_CHANNEL_DEMO"] { return URL(fileURLWithPath: path) }
    let beside = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("iotcp-channel-demo")
    guard FileManager.default.isExecutableFile(atPath: beside.path) else {
        throw ChannelError.setup("\(beside.path) is missing: build it first (`swift build`), or set IOTCP_CHANNEL_DEMO")
    }
    return beside
}

func temporarySocketPath(_ name: String) -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("iotcp-test-\(getpid())-\(name).sock").path
}

func startDemo(_ arguments: [String]) throws -> (Process, Pipe) {
    let process = Process()
    process.executableURL = try demoExecutable()
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try process.run()
    return (process, output)
}

@Suite("Shared-memory channel between two processes", .serialized)
struct SharedMemoryChannelTests {
    /// The demo's `run` starts a NIC process and exchanges commands with it; both check every field.
    @Test("two processes exchange 1,000,000 commands each way, every field checked")
    func millionCommands() throws {
        let (process, output) = try startDemo(["run", "--count", "1000000", "--slot-bytes", "16384"])
        process.waitUntilExit()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0, "\(text)")
        #expect(text.contains("received and checked 1000000 ECHO commands"), "\(text)")
        #expect(text.contains("nic: verified 1000000 SEND commands"), "\(text)")
    }

    /// This process is the host; the NIC is another process, killed without warning mid-exchange.
    @Test("a NIC process that is killed is reported as vanished, not waited on")
    func peerVanishes() throws {
        let path = temporarySocketPath("vanish")
        let (nic, _) = try startDemo(["serve", "--path", path])
        defer { if nic.isRunning { nic.terminate() } }
        let channel = try SharedMemoryChannel.connect(path: path)
        // One SEND the NIC checks and answers, so the channel is known to work before the kill.
        guard var writer = try channel.reserveMessage() else {
            Issue.record("a new channel has room")
            return
        }
        let (flow, range) = (FlowID(1), SendRange(
            sequence: SequenceNumber(0), length: 1, file: OffloadedFileID(slot: 0, generation: 0), offset: 0,
            template: SegmentTemplate(acknowledgmentNumber: SequenceNumber(UInt32.max), window: 0, lastSegmentFlags: .psh,
                                      maximumSegmentSize: 1448, timestamps: TCPTimestamps(value: 0, echoReply: 0))))
        writer.append(.send(flow, range))
        channel.commit(writer)
        #expect(try channel.waitForIncoming(timeoutNanoseconds: 10_000_000_000))
        var echoed = false
        _ = try channel.receive(limit: 1) { message in
            var reader = try? CommandReader(message: message)
            if case .echo(FlowID(1), let end, 0)? = try? reader?.next() { echoed = end == SequenceNumber(1) }
        }
        #expect(echoed)

        kill(nic.processIdentifier, SIGKILL)
        nic.waitUntilExit()
        let start = DispatchTime.now().uptimeNanoseconds
        #expect(throws: ChannelError.peerVanished) { try channel.waitForIncoming(timeoutNanoseconds: 5_000_000_000) }
        #expect(DispatchTime.now().uptimeNanoseconds - start < 1_000_000_000, "noticed at once, not at the timeout")
        #expect(throws: ChannelError.peerVanished) { try channel.receive(limit: 1) { _ in } }
        #expect(throws: ChannelError.peerVanished) { try canReserve(channel) }
    }

    /// This process is the NIC; the host process is killed: the NIC must notice even with a full ring.
    @Test("a host process that is killed is reported to the NIC side")
    func hostVanishes() throws {
        let path = temporarySocketPath("host")
        let listener = try SharedMemoryChannel.listen(path: path, configuration: .init(slotCount: 2, slotBytes: 4096))
        // The host sends and never reads: with nobody answering, it blocks waiting for an ECHO.
        let (host, _) = try startDemo(["exchange", "--path", path, "--count", "100000"])
        defer { if host.isRunning { host.terminate() } }
        let channel = try listener.accept(timeoutNanoseconds: 10_000_000_000)
        #expect(try channel.waitForIncoming(timeoutNanoseconds: 10_000_000_000))
        kill(host.processIdentifier, SIGKILL)
        host.waitUntilExit()
        // Messages the host sent before it died are still delivered, then the loss is reported.
        var delivered = 0
        let outcome: ChannelError? = {
            do {
                while true {
                    delivered += try channel.receive(limit: 64) { _ in }
                    _ = try channel.waitForIncoming(timeoutNanoseconds: 5_000_000_000)
                }
            } catch let error as ChannelError { return error } catch { return nil }
        }()
        #expect(outcome == .peerVanished)
        #expect(delivered >= 1)
    }

    @Test("connecting where no NIC listens fails with a clear error after the timeout")
    func nobodyListening() {
        let path = temporarySocketPath("nobody")
        #expect(throws: ChannelError.timedOut("no NIC stack is listening at \(path)")) {
            try SharedMemoryChannel.connect(path: path, timeoutNanoseconds: 50_000_000)
        }
    }

    @Test("a path too long for a Unix socket is refused with the reason")
    func pathTooLong() {
        let path = "/tmp/" + String(repeating: "x", count: 200)
        #expect(throws: ChannelError.system(operation: "listening on \(path)", errno: ENAMETOOLONG, message: "File name too long")) {
            try SharedMemoryChannel.listen(path: path)
        }
    }
}
