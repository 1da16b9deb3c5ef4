import ArgumentParser
import Foundation
import IOTCPChannels
import IOTCPCommon

/// Benchmarks of the foundation: checksums, the command codec, and the channels in-process and across
/// processes. Prints a table (and JSON with --json); never fails on a missed target, it reports it.
@main
struct IOTCPBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "iotcp-bench", abstract: "Measure checksum, command codec and channel throughput.")

    @Option(help: "Seconds per benchmark.")
    var seconds = 1.0

    @Option(help: "Also write the figures as JSON to this file.")
    var json: String?

    @Option(help: "Commands for the cross-process exchange.")
    var crossProcessCommands = 10_000_000

    @Option(help: "ACKs for the engine's per-ACK figure.")
    var acks = 2_000_000

    @Option(help: "Run only these groups (comma-separated): checksum, codec, channel, engine, segments, cross-process, wire.")
    var only: String?

    func selected(_ group: String) -> Bool {
        guard let only else { return true }
        return only.split(separator: ",").contains { $0 == group }
    }

    mutating func run() throws {
        var figures: [Figure] = []
        func report(_ figure: Figure) {
            print(figure.line)
            figures.append(figure)
        }
        print("iotcp-bench: \(ProcessInfo.processInfo.activeProcessorCount) cores, \(seconds) s per figure, best of 5 rounds")
        if selected("checksum") { for figure in checksumFigures() { report(figure) } }
        if selected("codec") { for figure in codecFigures() { report(figure) } }
        if selected("channel") { for figure in try channelFigures() { report(figure) } }
        if selected("engine") { for figure in engineFigures() { report(figure) } }
        if selected("segments") { for figure in segmentFigures() { report(figure) } }
        if selected("cross-process"), let figure = try crossProcessFigure() { report(figure) }
        if selected("wire") { for figure in try WireBenchmark(seconds: max(seconds * 3, 2)).figures() { report(figure) } }
        if let json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(figures).write(to: URL(fileURLWithPath: json))
        }
    }

    func checksumFigures() -> [Figure] {
        // 64 payloads of 1,500 bytes (96 KB, as a burst of segments would sit in cache).
        let payloadBytes = 1500, payloads = 64
        var random = SystemRandomNumberGenerator()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: payloadBytes * payloads, alignment: 64)
        defer { buffer.deallocate() }
        for index in 0..<buffer.count { buffer[index] = UInt8.random(in: 0...255, using: &random) }
        let source = IPv4Address(10, 77, 0, 2), destination = IPv4Address(10, 77, 0, 1)
        var sink: UInt16 = 0
        let plain = rate(seconds: seconds, unitsPerCall: Double(payloadBytes * payloads)) {
            let payloadsNow = opaque(buffer)
            for index in 0..<payloads {
                sink &+= InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: payloadsNow[(index * payloadBytes)..<((index + 1) * payloadBytes)]))
            }
            consume(sink)
        }
        // A whole TCP segment: pseudo-header, header and data, written into the checksum field.
        let segment = rate(seconds: seconds, unitsPerCall: Double(payloadBytes * payloads)) {
            let segmentsNow = opaque(buffer)
            for index in 0..<payloads {
                let bytes = UnsafeMutableRawBufferPointer(rebasing: segmentsNow[(index * payloadBytes)..<((index + 1) * payloadBytes)])
                TCPRepr.fillChecksum(segment: bytes, source: source, destination: destination)
            }
        }
        consume(sink)
        return [
            Figure(name: "checksum, 1,500-byte payloads", value: plain / 1e9, unit: "GB/s", target: 5),
            Figure(name: "TCP segment checksum with pseudo-header, 1,500 bytes", value: segment / 1e9, unit: "GB/s", target: nil),
        ]
    }

    func codecFigures() -> [Figure] {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 64)
        defer { buffer.deallocate() }
        let (flow, range) = (FlowID(7), SendRange(
            sequence: SequenceNumber(1), length: 65536, file: OffloadedFileID(slot: 1, generation: 1), offset: 0,
            template: SegmentTemplate(acknowledgmentNumber: SequenceNumber(2), window: 512, maximumSegmentSize: 1448,
                                      timestamps: TCPTimestamps(value: 3, echoReply: 4))))
        var perMessage = 0
        var sequence = SequenceNumber(0)
        let encode = rate(seconds: seconds, unitsPerCall: 1) {
            var writer = CommandWriter(buffer: opaque(buffer))
            var current = range
            while true {
                current.sequence = sequence
                guard writer.append(.send(flow, current)) else { break }
                sequence += 1448
            }
            perMessage = writer.commandCount
            consume(writer.finish(sequence: 0).count)
        } * Double(perMessage)
        var checksum: UInt32 = 0
        let message = UnsafeRawBufferPointer(rebasing: buffer[0..<Int(UnsafeRawBufferPointer(buffer).littleEndian(UInt32.self, at: 8))])
        let decode = rate(seconds: seconds, unitsPerCall: Double(perMessage)) {
            guard var reader = try? CommandReader(message: opaque(message)) else { return }
            while let command = try? reader.next() {
                if case .send(_, let range) = command { checksum &+= range.sequence.rawValue }
            }
            consume(checksum)
        }
        consume(checksum)
        return [
            Figure(name: "command encode (SEND, \(perMessage) per 64 KiB message)", value: encode / 1e6, unit: "M cmd/s", target: nil),
            Figure(name: "command decode (SEND, \(perMessage) per 64 KiB message)", value: decode / 1e6, unit: "M cmd/s", target: nil),
        ]
    }

    func channelFigures() throws -> [Figure] {
        // One thread, both halves polled in turn: the embedded stack's arrangement.
        let (host, nic) = try InProcessChannel.makePair(configuration: .init(slotCount: 64, slotBytes: 64 * 1024))
        var received: UInt64 = 0
        var perMessage = 0
        let oneThread = rate(seconds: seconds, unitsPerCall: 1) {
            guard var writer = try? host.reserveMessage() else { return }
            var index: UInt32 = 0
            while writer.append(.acknowledged(FlowID(1), through: SequenceNumber(index))) { index += 1 }
            perMessage = writer.commandCount
            host.commit(writer)
            _ = try? nic.receive(limit: 64) { message in
                guard var reader = try? CommandReader(message: message) else { return }
                while let command = try? reader.next() {
                    if case .acknowledged(_, let through) = command { received &+= UInt64(through.rawValue) }
                }
            }
        } * Double(perMessage)
        consume(received)
        _ = try nic.receive(limit: 64) { _ in }

        // Two threads, a producer and a consumer, as when the NIC half has a core of its own.
        let total = 20_000_000
        let (sender, receiver) = try InProcessChannel.makePair(configuration: .init(slotCount: 64, slotBytes: 64 * 1024, waiting: .busyPoll))
        let start = now()
        let producer = Thread {
            var sent = 0
            while sent < total {
                guard var writer = try? sender.reserveMessage() else { continue }
                while sent < total, writer.append(.acknowledged(FlowID(1), through: SequenceNumber(UInt32(truncatingIfNeeded: sent)))) { sent += 1 }
                sender.commit(writer)
            }
        }
        producer.start()
        var got = 0
        var inOrder = true
        while got < total {
            _ = try receiver.receive(limit: 64) { message in
                guard var reader = try? CommandReader(message: message) else { return }
                while let command = try? reader.next() {
                    if case .acknowledged(_, let through) = command, through.rawValue == UInt32(truncatingIfNeeded: got) { got += 1 }
                    else { inOrder = false; got += 1 }
                }
            }
        }
        let twoThreads = Double(total) / (Double(now() - start) / 1e9)
        guard inOrder else { throw ValidationError("the two-thread run received commands out of order") }
        return [
            Figure(name: "in-process channel, one thread (ACKD, \(perMessage)/message)", value: oneThread / 1e6, unit: "M cmd/s", target: 10),
            Figure(name: "in-process channel, two threads, encode+decode", value: twoThreads / 1e6, unit: "M cmd/s", target: 10),
        ]
    }

    func engineFigures() -> [Figure] {
        // Best of five rounds, like the other figures: the least disturbed by the rest of a shared machine.
        var perAck = Double.infinity, commands = 0.0
        for _ in 0..<5 {
            let round = acknowledgmentCost(acks: max(acks / 5, 65_536))
            if round.nanosecondsPerAck < perAck { (perAck, commands) = round }
        }
        let (perConnection, controlBlock) = memoryPerConnection(count: 10_000)
        return [
            Figure(name: "host engine: ACK processed, with the commands it emits", value: perAck, unit: "ns/ACK", target: nil,
                   ceiling: 250),
            Figure(name: "host engine: commands emitted per ACK", value: commands, unit: "cmd/ACK", target: nil),
            Figure(name: "host engine: memory per idle connection (10,000 open)", value: perConnection, unit: "bytes",
                   target: nil, ceiling: 1024),
            Figure(name: "host engine: control block size", value: Double(controlBlock), unit: "bytes", target: nil),
        ]
    }

    /// Runs the channel demo (two processes, every field of every command checked) and reads its rate.
    func crossProcessFigure() throws -> Figure? {
        let demo = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("iotcp-channel-demo")
        guard FileManager.default.isExecutableFile(atPath: demo.path) else {
            print("iotcp-bench: \(demo.path) not built; skipping the cross-process figure")
            return nil
        }
        let process = Process()
        process.executableURL = demo
        process.arguments = ["run", "--count", String(crossProcessCommands)]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0,
              let line = text.split(separator: "\n").first(where: { $0.contains("commands/s each way") }),
              let value = line.split(separator: " ").compactMap({ Double($0) }).dropFirst().first
        else { throw ValidationError("the cross-process exchange failed:\n\(text)") }
        return Figure(name: "shared-memory channel, two processes (SEND→ECHO, checked)", value: value, unit: "M cmd/s", target: 5)
    }
}
