import Foundation
import IOTCPCommon
import IOTCPHost
import IOTCPNIC
import Testing

/// Collects what the data plane does, packets whole (headers and gathered payload put together).
struct CollectingNICOutput: NICOutput {
    var packets: [[UInt8]] = []
    var replies: [String] = []
    var echoes: [(FlowID, SequenceNumber, UInt64)] = []
    var errors: [(CommandErrorCode, UInt8, UInt64, String)] = []
    var opened: [(UInt32, OffloadedFileID, UInt64)] = []
    /// ESTABLISHED commands (parameters and the packet), and PACKET_IN ones (flow and packet).
    var established: [(HandshakeParameters, [UInt8])] = []
    var packetsIn: [(FlowID, [UInt8])] = []
    /// SPLICE_ENDED commands.
    var spliceEnds: [(FlowID, SpliceReport)] = []
    /// FLOW_RELEASED commands.
    var released: [(FlowID, FlowReleaseReason)] = []
    /// Per packet: the segment size the wire is to cut it at (0: an ordinary packet), and whether its
    /// checksum was left to the wire.
    var segmentSizes: [Int] = []
    var checksumOffloaded: [Bool] = []
    /// While set, every packet is refused as by a full wire.
    var refuse = false
    var refusals = 0

    mutating func transmit(headers: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, offload: PacketOffload?) -> TransmitResult {
        if refuse {
            refusals += 1
            return .refused
        }
        packets.append(Array(headers) + Array(payload))
        segmentSizes.append(Int(offload?.segmentSize ?? 0))
        checksumOffloaded.append(offload != nil)
        return .sent
    }

    mutating func reply(_ command: Command) {
        switch command {
        case .echo(let flow, let end, let delay): echoes.append((flow, end, delay))
        case .error(_, let report): errors.append((report.code, report.failedKind, report.reference, report.textString))
        case .opened(let request, let file, let size): opened.append((request, file, size))
        case .established(let parameters, let packet):
            established.append((parameters, Array(packet)))
            replies.append(String(describing: command.kind))
        case .packetIn(let flow, let packet):
            packetsIn.append((flow, Array(packet)))
            replies.append(String(describing: command.kind))
        case .spliceEnded(let flow, let report):
            spliceEnds.append((flow, report))
            replies.append(String(describing: command.kind))
        case .flowReleased(let flow, let reason):
            released.append((flow, reason))
            replies.append(String(describing: command.kind))
        default: replies.append(String(describing: command.kind))
        }
    }
}

/// The TCP segment in an IPv4 or IPv6 packet: the segment, its payload, and whether its checksum verifies.
func parseSegment(_ packet: [UInt8]) -> (TCPRepr, [UInt8], Bool)? {
    packet.withUnsafeBytes { raw in
        if raw.first.map({ $0 >> 4 }) == 6 {
            guard let ip = try? IPv6PacketView(raw), let view = try? TCPSegmentView(ip.upperLayer), let tcp = try? TCPRepr(view) else { return nil }
            return (tcp, Array(view.payload), view.checksumVerifies(source: ip.source, destination: ip.destination))
        }
        guard let ip = try? IPv4PacketView(raw), let view = try? TCPSegmentView(ip.payload), let tcp = try? TCPRepr(view) else { return nil }
        return (tcp, Array(view.payload), view.checksumVerifies(source: ip.source, destination: ip.destination))
    }
}

let flowEndpoints = FlowEndpoints(localAddress: IPv4Address(10, 77, 0, 2), remoteAddress: IPv4Address(10, 77, 0, 1),
                                  localPort: 80, remotePort: 40000, remoteHardwareAddress: .zero, maximumSegmentSize: 1448)

/// `flowEndpoints` over IPv6 (its MSS 20 bytes smaller).
let flowEndpoints6 = FlowEndpoints(localAddress: IPAddress("fd77::2")!, remoteAddress: IPAddress("fd77::1")!,
                                   localPort: 80, remotePort: 40000, remoteHardwareAddress: .zero, maximumSegmentSize: 1428)

/// The disks a data plane can read real files through, for tests run once with each.
enum DiskKind: String, Sendable, CaseIterable, CustomStringConvertible {
    case ioUring, preadThreads
    var description: String { rawValue }

    func make() throws -> any DiskIO {
        switch self {
        case .ioUring: try URingDisk()
        case .preadThreads: try ThreadPoolDisk(threads: 3)
        }
    }
}

/// A data plane over the export root's files, reading through `disk`.
func makePlane(_ root: ExportRoot, disk: DiskKind = .ioUring, mode: RetransmitStore.Mode = .buffered,
               storeLimitBytes: Int = 192 << 20, directIO: Bool = false) throws -> NICDataPlane {
    NICDataPlane(files: try FileTable(root: root.path, directIO: directIO), disk: try disk.make(), retransmitMode: mode,
                 storeLimitBytes: storeLimitBytes)
}

func openFile(_ nic: NICDataPlane, _ path: String, request: UInt32 = 1) -> (CollectingNICOutput, OffloadedFileID?) {
    var output = CollectingNICOutput()
    Array(path.utf8).withUnsafeBytes { nic.handle(.open(requestID: request, flags: 0, path: $0), received: .zero, now: .zero, output: &output) }
    return (output, output.opened.first?.1)
}

/// Polls until every read is done and nothing more can leave (reads on a real disk finish in their own
/// time: at most `seconds` of waiting).
func settle(_ nic: NICDataPlane, now: Instant = .zero, output: inout CollectingNICOutput, seconds: Double = 10) {
    let deadline = Date().addingTimeInterval(seconds)
    while true {
        nic.poll(now: now, output: &output)
        if nic.disk.inFlight == 0 && (!nic.hasReadyWork || output.refuse) { return }
        if Date() > deadline { return }
        if nic.disk.inFlight > 0 { usleep(100) }
    }
}

/// A data plane over an in-memory copy of the export root's data file (`sub/data.bin`), reading through a
/// `MemoryDisk`: deterministic, for tests about something other than the disk.
func memoryPlane(_ root: ExportRoot, delayNanoseconds: UInt64 = 0) -> NICDataPlane {
    let files = MemoryFiles()
    files.add("sub/data.bin", root.content)
    let disk = MemoryDisk(files: files)
    disk.delayNanoseconds = delayNanoseconds
    return NICDataPlane(files: files, disk: disk)
}

/// An IPv4 packet holding `tcp` and `payload`, checksums filled (a bad TCP checksum when `corrupt`).
func tcpPacket(_ tcp: TCPRepr, from source: IPv4Address, to destination: IPv4Address, payload: [UInt8] = [], corrupt: Bool = false) -> [UInt8] {
    let length = 20 + tcp.headerLength + payload.count
    var packet = [UInt8](repeating: 0, count: length)
    packet.withUnsafeMutableBytes { raw in
        try? IPv4Repr(source: source, destination: destination, protocol: .tcp, payloadLength: length - 20).emit(into: raw)
        let segment = UnsafeMutableRawBufferPointer(rebasing: raw[20...])
        let header = (try? tcp.emitHeader(into: segment)) ?? 20
        for (index, byte) in payload.enumerated() { segment[header + index] = byte }
        TCPRepr.fillChecksum(segment: segment, source: source, destination: destination)
        if corrupt { segment[16] ^= 0xFF }
    }
    return packet
}

/// An IPv4 or IPv6 packet (by the addresses' family) holding `tcp` and `payload`, its checksum filled.
func tcpPacket(_ tcp: TCPRepr, from source: IPAddress, to destination: IPAddress, payload: [UInt8] = []) -> [UInt8] {
    if let source4 = source.ipv4, let destination4 = destination.ipv4 {
        return tcpPacket(tcp, from: source4, to: destination4, payload: payload)
    }
    let length = 40 + tcp.headerLength + payload.count
    var packet = [UInt8](repeating: 0, count: length)
    packet.withUnsafeMutableBytes { raw in
        try? IPv6Repr(source: source.bits, destination: destination.bits, nextHeader: .tcp, payloadLength: length - 40).emit(into: raw)
        let segment = UnsafeMutableRawBufferPointer(rebasing: raw[40...])
        let header = (try? tcp.emitHeader(into: segment)) ?? 20
        for (index, byte) in payload.enumerated() { segment[header + index] = byte }
        TCPRepr.fillChecksum(segment: segment, source: source.bits, destination: destination.bits)
    }
    return packet
}

/// `packet` (IPv4/TCP) as the kernel hands over one it built with checksum offload: the TCP checksum
/// field holds only the pseudo-header sum.
func unsummed(_ packet: [UInt8]) -> [UInt8] {
    var packet = packet
    packet.withUnsafeMutableBytes { raw in
        let ipLength = Int(raw[0] & 0x0F) * 4
        TCPRepr.fillPseudoHeaderChecksum(segment: UnsafeMutableRawBufferPointer(rebasing: raw[ipLength...]),
                                         source: IPv4Address(rawValue: UnsafeRawBufferPointer(raw).bigEndianUInt32(at: 12)),
                                         destination: IPv4Address(rawValue: UnsafeRawBufferPointer(raw).bigEndianUInt32(at: 16)))
    }
    return packet
}

/// Whether `packet`'s TCP checksum field is the pseudo-header sum of its own addresses and length (what a
/// wire finishing the checksum expects), and the packet with the sum finished, as the wire would send it.
func finishedByWire(_ packet: [UInt8]) -> (pseudoSumRight: Bool, finished: [UInt8]) {
    var finished = packet
    let right = unsummed(packet) == packet
    finished.withUnsafeMutableBytes { raw in
        let ipLength = Int(raw[0] & 0x0F) * 4
        TCPRepr.fillChecksum(segment: UnsafeMutableRawBufferPointer(rebasing: raw[ipLength...]),
                             source: IPv4Address(rawValue: UnsafeRawBufferPointer(raw).bigEndianUInt32(at: 12)),
                             destination: IPv4Address(rawValue: UnsafeRawBufferPointer(raw).bigEndianUInt32(at: 16)))
    }
    return (right, finished)
}
