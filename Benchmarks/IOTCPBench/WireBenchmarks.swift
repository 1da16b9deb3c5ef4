import Foundation
import Glibc
import IOTCPCommon
import IOTCPEmbedded
import IOTCPNIC

/// The NIC stack's CPU per GB sent, beside a bare loop doing the same wire I/O the simple way: pread the
/// file into a buffer, copy each segment's bytes into a frame, write it to the same TAP. The NIC stack runs as it does in the file server (its own
/// thread, commands from a host over an in-process channel); this thread plays the host, sending 64 KiB
/// SENDs and freeing them with ACKD as their ECHOs come back. The TAP sits in a namespace of its own and
/// the frames are addressed to a hardware address that is not its, so the kernel drops them on arrival:
/// both loops pay the same small cost there, and the figures are the NIC side's own. Needs root.
struct WireBenchmark {
    let seconds: Double
    let fileBytes = 64 << 20
    let sendBytes = 64 << 10

    static let nicAddress = IPv4Address(10, 96, 0, 2)
    static let peerAddress = IPv4Address(10, 96, 0, 1)
    /// Not the TAP's own address: what the kernel receives is for "another host" and dropped at once.
    static let peerHardware = MACAddress(0x02, 0, 0, 0, 0, 0x99)

    func figures() throws -> [Figure] {
        guard getuid() == 0 else {
            print("iotcp-bench: wire figures need root (a TAP in a network namespace); skipped")
            return []
        }
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("iotcp-bench-\(getpid())").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        var random = SystemRandomNumberGenerator()
        try Data((0..<fileBytes).map { _ in UInt8.random(in: 0...255, using: &random) }).write(to: URL(fileURLWithPath: folder + "/data.bin"))

        var result: [Figure] = []
        for superSegments in [true, false] {
            let label = superSegments ? "GSO super-segments" : "one frame per segment"
            let nic = try measureNICStack(folder: folder, superSegments: superSegments)
            let bare = try measureBareLoop(folder: folder, superSegments: superSegments)
            result.append(Figure(name: "NIC stack: CPU per GB sent (\(label))", value: nic, unit: "s/GB", target: nil))
            result.append(Figure(name: "bare loop, same wire I/O: CPU per GB (\(label))", value: bare, unit: "s/GB", target: nil))
            var ratio = Figure(name: "NIC stack over bare loop (\(label))", value: nic / bare, unit: "x", target: nil)
            ratio.ceiling = 1.5
            result.append(ratio)
        }
        return result
    }

    /// A TAP (vnet header) in a fresh namespace, up; removed with the namespace by `done`.
    private func makeWire() throws -> (TapDevice, done: () -> Void) {
        let namespace = try NetworkNamespace(name: "iotcp-bench-\(getpid())", address: "10.96.0.2/24")
        let tap = try TapDevice(name: "iotb\(getpid() % 100_000)", vnetHeader: true)
        try namespace.create(with: tap)
        return (tap, { namespace.remove() })
    }

    private var endpoints: FlowEndpoints {
        FlowEndpoints(localAddress: Self.nicAddress, remoteAddress: Self.peerAddress, localPort: 80, remotePort: 40000,
                      remoteHardwareAddress: Self.peerHardware, maximumSegmentSize: 1448)
    }

    private var template: SegmentTemplate {
        SegmentTemplate(acknowledgmentNumber: SequenceNumber(1), window: 65535, maximumSegmentSize: 1448,
                        timestamps: TCPTimestamps(value: 1, echoReply: 1))
    }

    private func measureNICStack(folder: String, superSegments: Bool) throws -> Double {
        let (tap, done) = try makeWire()
        defer { done() }
        var link = EthernetLink(hardwareAddress: MACAddress(0x02, 0, 0, 0x77, 0, 2), address: Self.nicAddress)
        link.learn(neighbour: Self.peerAddress, at: Self.peerHardware)
        let runtime = NICRuntime(wire: tap, link: link, dataPlane: .standard(files: try FileTable(root: folder)))
        runtime.segmentationOffload = superSegments
        let nic = try EmbeddedNIC(runtime: runtime)
        nic.start()
        defer { nic.stop() }
        let host = ChannelSender(channel: nic.hostChannel)

        // Open the file and the flow.
        var file: OffloadedFileID?
        "data.bin".withCString { name in
            host.append(.open(requestID: 1, flags: 0, path: UnsafeRawBufferPointer(start: name, count: strlen(name))))
        }
        host.append(.flowOpen(FlowID(1), endpoints))
        host.flush()
        var echoes = 0
        func drain() throws {
            _ = try nic.hostChannel.receive(limit: 64) { message in
                guard var reader = try? CommandReader(message: message) else { return }
                while let command = try? reader.next() {
                    switch command {
                    case .opened(_, let id, _): file = id
                    case .echo: echoes += 1
                    default: break
                    }
                }
            }
        }
        while file == nil { try drain() }

        // SENDs of 64 KiB, at most 16 outstanding, each freed by ACKD once its ECHO is back.
        var sequence = SequenceNumber(1000)
        var sent = 0, offset = 0
        let cpuBefore = threadCPUSeconds(named: "iotcp-nic")
        let start = now()
        while Double(now() - start) < seconds * 1e9 {
            while sent - echoes < 16 {
                host.append(.send(FlowID(1), SendRange(sequence: sequence, length: UInt32(sendBytes), file: file!,
                                                       offset: UInt64(offset), template: template)))
                sequence = sequence + sendBytes
                host.append(.acknowledged(FlowID(1), through: sequence - 16 * sendBytes))
                sent += 1
                offset = (offset + sendBytes) % fileBytes
            }
            host.flush()
            try drain()
        }
        while echoes < sent { try drain() }
        let cpu = threadCPUSeconds(named: "iotcp-nic") - cpuBefore
        nic.stop()  // the runtime is the NIC thread's until then
        // Every byte echoed must have gone to the wire, in super-segments exactly when asked for.
        guard runtime.counters.bytesOut >= echoes * sendBytes,
              (runtime.counters.superSegmentsOut > 0) == superSegments else {
            throw CocoaError(.featureUnsupported, userInfo: [NSLocalizedDescriptionKey:
                "the NIC stack sent \(runtime.counters.bytesOut) bytes (\(runtime.counters.superSegmentsOut) super-segments) for \(echoes) SENDs"])
        }
        return cpu / (Double(echoes * sendBytes) / 1e9)
    }

    private func measureBareLoop(folder: String, superSegments: Bool) throws -> Double {
        let (tap, done) = try makeWire()
        defer { done() }
        let descriptor = open(folder + "/data.bin", O_RDONLY)
        guard descriptor >= 0 else { throw CocoaError(.fileReadNoSuchFile) }
        defer { close(descriptor) }
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: sendBytes, alignment: 64)
        let frame = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536 + 64, alignment: 64)
        defer { chunk.deallocate(); frame.deallocate() }
        let ethernet = EthernetRepr(destination: Self.peerHardware, source: MACAddress(0x02, 0, 0, 0x77, 0, 2), etherType: .ipv4)
        let headers = SegmentBuilder.packetLength(payloadLength: 0, template: template)
        let piece = superSegments ? SegmentBuilder.superSegmentPayload(packetLimit: 65535, template: template) : 1448
        var sequence = SequenceNumber(1000)
        var offset = 0, bytes = 0
        let cpuBefore = currentThreadCPUSeconds()
        let start = now()
        while Double(now() - start) < seconds * 1e9 {
            _ = pread(descriptor, chunk.baseAddress, sendBytes, off_t(offset))
            offset = (offset + sendBytes) % fileBytes
            var done = 0
            while done < sendBytes {
                let length = min(piece, sendBytes - done)
                let packet = UnsafeMutableRawBufferPointer(rebasing: frame[14...])
                let offload = superSegments && length > 1448
                _ = try SegmentBuilder.build(into: packet, flow: endpoints, sequence: sequence + done, payloadLength: length,
                                             isLast: done + length == sendBytes, template: template, nicDelayMilliseconds: 0,
                                             checksumOffload: offload) { payload in
                    payload.copyMemory(from: UnsafeRawBufferPointer(rebasing: chunk[done..<(done + length)]))
                }
                try ethernet.emit(into: frame)
                let bytesOut = UnsafeRawBufferPointer(rebasing: frame[0..<(14 + headers + length)])
                _ = try tap.write(header: bytesOut, payload: UnsafeRawBufferPointer(start: nil, count: 0), offload: offload ? SegmentationOffload(
                    segmentSize: 1448, headerLength: UInt16(14 + headers), checksumStart: 34) : nil)
                done += length
            }
            sequence = sequence + sendBytes
            bytes += sendBytes
        }
        return (currentThreadCPUSeconds() - cpuBefore) / (Double(bytes) / 1e9)
    }
}

/// CPU seconds (user + system) of this process's threads called `name`.
func threadCPUSeconds(named name: String) -> Double {
    let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
    var total = 0.0
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    for task in tasks {
        guard let comm = try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8),
              comm.trimmingCharacters(in: .whitespacesAndNewlines) == name,
              let stat = try? String(contentsOfFile: "/proc/self/task/\(task)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { continue }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the name: state is field 3, utime 14 and stime 15 (1-based over the whole line).
        if fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) { total += (user + system) / ticks }
    }
    return total
}

func currentThreadCPUSeconds() -> Double {
    var time = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
    return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
}
