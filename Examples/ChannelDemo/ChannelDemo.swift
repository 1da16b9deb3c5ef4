import ArgumentParser
import Foundation
import IOTCPChannels
import IOTCPCommon
import IOTCPRDMA

/// Two processes, host and NIC, exchanging commands over the shared-memory channel (or, with `serve
/// --rdma` and `exchange --rdma`, over RDMA verbs): the host sends SEND commands, the NIC checks each
/// one field by field and answers with an ECHO, which the host checks.
@main
struct ChannelDemo: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iotcp-channel-demo",
        abstract: "Exchange checked commands between a host and a NIC process over shared memory.",
        subcommands: [Run.self, Serve.self, Exchange.self],
        defaultSubcommand: Run.self)
}

struct ChannelOptions: ParsableArguments {
    @Flag(help: "Spin instead of sleeping on an eventfd when idle.")
    var busyPoll = false

    @Option(help: "Bytes per message slot (a multiple of 64).")
    var slotBytes = 64 * 1024

    @Option(help: "Message slots per direction (a power of two).")
    var slots = 64

    var configuration: ChannelConfiguration {
        ChannelConfiguration(slotCount: slots, slotBytes: slotBytes, waiting: busyPoll ? .busyPoll : .doorbell)
    }
}

/// Writes a line to standard error (Swift 6 does not allow the C `stderr` global).
func printError(_ text: String) {
    var line = text + "\n"
    line.withUTF8 { bytes in _ = write(2, bytes.baseAddress, bytes.count) }
}

extension ChannelDemo {
    /// Starts the NIC side as a second process and runs the host side against it.
    struct Run: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Start a NIC process and exchange commands with it (the default).")

        @Option(help: "Commands to send (each is answered).")
        var count = 1_000_000

        @OptionGroup var options: ChannelOptions

        func run() throws {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("iotcp-demo-\(getpid()).sock").path
            let nic = Process()
            nic.executableURL = URL(fileURLWithPath: "/proc/self/exe")
            nic.arguments = ["serve", "--path", path, "--slot-bytes", String(options.slotBytes), "--slots", String(options.slots)]
                + (options.busyPoll ? ["--busy-poll"] : [])
            try nic.run()
            defer { if nic.isRunning { nic.terminate() } }
            print("iotcp-channel-demo: NIC process \(nic.processIdentifier) serving at \(path)")
            try Exchange.exchange(path: path, count: count)
            nic.waitUntilExit()
            guard nic.terminationStatus == 0 else {
                throw ValidationError("the NIC process failed (exit status \(nic.terminationStatus))")
            }
            print("iotcp-channel-demo: OK")
        }
    }

    /// The NIC side: checks every SEND and answers each with an ECHO until the host closes.
    struct Serve: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Be the NIC side: listen at a path and answer a host.")

        @Option(help: "Unix socket path to listen at (shared memory).")
        var path: String?

        @Option(help: "Listen for the host over RDMA at rdma://IP:PORT instead.")
        var rdma: String?

        @OptionGroup var options: ChannelOptions

        @Option(help: "Seconds to wait for the host to connect.")
        var acceptTimeout = 30.0

        func run() throws {
            let channel: any CommandChannel
            if let rdma {
                let listener = try RDMAChannel.listen(on: try RDMAEndpoint(parsing: rdma))
                channel = try listener.accept(timeoutNanoseconds: Int64(acceptTimeout * 1e9))
            } else if let path {
                let listener = try SharedMemoryChannel.listen(path: path, configuration: options.configuration)
                channel = try listener.accept(timeoutNanoseconds: Int64(acceptTimeout * 1e9))
            } else {
                throw ValidationError("give --path or --rdma")
            }
            var expected = 0
            var failure: String?
            var pendingEchoes: [Int] = []
            pendingEchoes.reserveCapacity(1 << 16)
            var messages = 0
            serving: while failure == nil {
                let received: Int
                do {
                    received = try channel.receive(limit: 8) { message in
                        do {
                            var reader = try CommandReader(message: message, maxMessageBytes: channel.maxMessageBytes)
                            while let command = try reader.next() {
                                if let problem = DemoPattern.checkSend(command, index: expected) {
                                    failure = problem
                                    return
                                }
                                pendingEchoes.append(expected)
                                expected += 1
                            }
                        } catch {
                            failure = "undecodable message: \(error)"
                        }
                    }
                } catch ChannelError.peerClosed {
                    break serving
                }
                messages += received
                try sendEchoes(&pendingEchoes, on: channel)
                if received == 0 { _ = try? channel.waitForIncoming(timeoutNanoseconds: 100_000_000) }
            }
            if let failure {
                printError("nic: FAILED: \(failure)")
                throw ExitCode.failure
            }
            print("nic: verified \(expected) SEND commands in \(messages) messages, answered each with an ECHO")
        }

        /// Encodes the ECHOs owed, as many per message as fit, waiting for the host to free slots.
        func sendEchoes(_ pending: inout [Int], on channel: any CommandChannel) throws {
            var next = 0
            while next < pending.count {
                guard var writer = try channel.reserveMessage() else {
                    // Receiving is what frees room (and, over RDMA, brings the host's credit report).
                    _ = try channel.receive(limit: 0) { _ in }
                    sched_yield()
                    continue
                }
                while next < pending.count, writer.append(DemoPattern.echo(pending[next])) { next += 1 }
                channel.commit(writer)
            }
            pending.removeAll(keepingCapacity: true)
        }
    }

    /// The host side against a NIC already listening.
    struct Exchange: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Be the host side: connect to a NIC at a path.")

        @Option(help: "Unix socket path the NIC listens at (shared memory).")
        var path: String?

        @Option(help: "Reach the NIC over RDMA at rdma://IP:PORT instead.")
        var rdma: String?

        @Option(help: "With --rdma: the local address to connect from.")
        var source: String?

        @Option(help: "Commands to send (each is answered).")
        var count = 1_000_000

        @OptionGroup var options: ChannelOptions

        func run() throws {
            if let rdma {
                let channel = try RDMAChannel.connect(
                    to: try RDMAEndpoint(parsing: rdma), from: source, configuration: options.configuration)
                try Self.exchange(channel: channel, count: count)
                let figures = channel.statistics
                print("host: RDMA: \(figures.messagesSent) SENDs of commands (\(figures.inlineSends) inline, up to \(channel.transport.inlineLimit) bytes), \(figures.creditReports) credit reports, \(figures.creditStalls) credit stalls, \(figures.messagesReceived) messages received")
            } else if let path {
                try Self.exchange(channel: try SharedMemoryChannel.connect(path: path), count: count)
            } else {
                throw ValidationError("give --path or --rdma")
            }
        }

        static func exchange(path: String, count: Int) throws {
            try exchange(channel: try SharedMemoryChannel.connect(path: path), count: count)
        }

        static func exchange(channel: any CommandChannel, count: Int) throws {
            var sent = 0, answered = 0, messages = 0
            var failure: String?
            let start = DispatchTime.now().uptimeNanoseconds
            while answered < count, failure == nil {
                var progressed = false
                if sent < count, var writer = try channel.reserveMessage() {
                    while sent < count, writer.append(DemoPattern.send(sent)) { sent += 1 }
                    channel.commit(writer)
                    messages += 1
                    progressed = true
                }
                let received = try channel.receive(limit: 8) { message in
                    do {
                        var reader = try CommandReader(message: message, maxMessageBytes: channel.maxMessageBytes)
                        while let command = try reader.next() {
                            if let problem = DemoPattern.checkEcho(command, index: answered) {
                                failure = problem
                                return
                            }
                            answered += 1
                        }
                    } catch {
                        failure = "undecodable message: \(error)"
                    }
                }
                if received > 0 { progressed = true }
                if !progressed, try !channel.waitForIncoming(timeoutNanoseconds: 10_000_000_000) {
                    failure = "no answer from the NIC for 10 s"
                }
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            channel.close()
            if let failure {
                printError("host: FAILED: \(failure)")
                throw ExitCode.failure
            }
            let perMessage = messages > 0 ? sent / messages : 0
            print("host: sent \(sent) SEND commands in \(messages) messages (\(perMessage) per message), received and checked \(answered) ECHO commands")
            print(String(format: "host: %.3f s, %.2f M commands/s each way, %.2f M commands/s in all, %.0f messages/s sent", seconds,
                         Double(count) / seconds / 1e6, 2 * Double(count) / seconds / 1e6, Double(messages) / seconds))
        }
    }
}
