import Foundation
import IOTCPChannels
import IOTCPCommon
import IOTCPHost
import IOTCPNIC
import Testing

/// An `IOTCPStack` on an in-process channel, the real NIC data plane on the other end, and a second TCP
/// engine as the remote client, all on one thread and one virtual clock. Packets the NIC puts on the
/// "wire" go to the client engine; the client's packets come back through the NIC's flow demux.
final class StackHarness {
    static let serverAddress = IPv4Address(10, 0, 0, 2)
    static let clientAddress = IPv4Address(10, 0, 0, 1)

    var time = Instant(nanoseconds: Nanoseconds.second)
    let stack: IOTCPStack
    let nic: NICDataPlane
    let nicEnd: RingChannelEnd
    var nicSender: ChannelSender
    let client: TCPEngine
    /// Frames headed to the client, and to the NIC, waiting for the next step (so nothing re-enters).
    var toClient: [[UInt8]] = []
    var toNIC: [[UInt8]] = []
    /// Every frame delivered to the client so far, when a test asks for them (`keepsClientFrames`).
    var keepsClientFrames = false
    var clientFrames: [[UInt8]] = []
    /// Frames to the client the wire loses: those this says so of (a test's loss).
    var losesToClient: (([UInt8]) -> Bool)?
    var events: [StackEvent] = []
    var nicErrors: [String] = []

    init(root: String, configuration: TCPConfiguration = TCPConfiguration(), slots: Int = 64, disk: any DiskIO = PreadDisk()) throws {
        let (host, nicEnd) = try InProcessChannel.makePair(configuration: ChannelConfiguration(slotCount: slots))
        self.nicEnd = nicEnd
        nicSender = ChannelSender(channel: nicEnd)
        nic = NICDataPlane(files: try FileTable(root: root), disk: disk)
        client = TCPEngine(localAddress: Self.clientAddress, configuration: configuration, secret: (3, 4), now: time)
        let timeSource = TimeSource()
        timeSource.now = time
        self.timeSource = timeSource
        stack = IOTCPStack(channel: host, address: Self.serverAddress, configuration: configuration, secret: (1, 2),
                           clock: { timeSource.now })
    }

    final class TimeSource: @unchecked Sendable { var now = Instant(nanoseconds: 0) }
    let timeSource: TimeSource

    struct NICSide: NICOutput {
        unowned let harness: StackHarness
        mutating func transmit(headers: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, offload: PacketOffload?) -> TransmitResult {
            #expect(offload == nil, "offloads are off unless a wire asks for them")
            harness.toClient.append(Array(headers) + Array(payload))
            return .sent
        }
        mutating func reply(_ command: Command) {
            if case .error(_, let report) = command { harness.nicErrors.append(report.textString) }
            harness.nicSender.append(command)
        }
    }

    struct ClientSide: CommandOutput {
        unowned let harness: StackHarness
        mutating func emit(_ command: Command) {}
        mutating func emitPacket(flow: FlowID, length: Int, _ build: (UnsafeMutableRawBufferPointer) -> Void) {
            var packet = [UInt8](repeating: 0, count: length)
            packet.withUnsafeMutableBytes { build($0) }
            harness.toNIC.append(packet)
        }
    }

    var clientOutput: ClientSide { ClientSide(harness: self) }

    /// One millisecond of everything: the NIC's commands, the wire both ways, the stack's `wait`.
    func step(milliseconds: UInt64 = 1) throws(IOTCPError) {
        time = time + milliseconds * Nanoseconds.millisecond
        timeSource.now = time
        var side = NICSide(harness: self)
        _ = try? nicEnd.receive(limit: 64) { message in
            guard var reader = try? CommandReader(message: message) else { return }
            while let command = try? reader.next() {
                nic.handle(command, received: time, now: time, output: &side)
            }
        }
        for packet in toNIC { packet.withUnsafeBytes { nic.receive(packet: $0, output: &side) } }
        toNIC.removeAll()
        nic.poll(now: time, output: &side)
        nicSender.flush()
        var output = clientOutput
        var frames = toClient
        toClient.removeAll()
        if let losesToClient { frames.removeAll(where: losesToClient) }
        if keepsClientFrames { clientFrames += frames }
        for packet in frames { packet.withUnsafeBytes { client.handlePacket($0, now: time, output: &output) } }
        client.sendOwedAcknowledgments(now: time, output: &output)
        client.handleTimers(now: time, output: &output)
        try stack.wait(into: &events, timeoutNanoseconds: 0)
    }

    /// Steps until `condition` holds (checked after each step), at most `limit` steps; false if it never did.
    @discardableResult
    func run(limit: Int = 5000, until condition: () -> Bool) throws(IOTCPError) -> Bool {
        for _ in 0..<limit {
            try step()
            if condition() { return true }
        }
        return false
    }

    /// The client connects to the stack's `port`; returns its handle once established.
    func connectClient(port: UInt16) throws -> TCPHandle {
        var output = clientOutput
        let handle = try client.connect(to: Self.serverAddress, port: port, now: time, output: &output)
        _ = try run { client.state(of: handle) == .established }
        return handle
    }

    /// Everything the client can read now.
    func clientRead(_ handle: TCPHandle) -> [UInt8] {
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65536)
        var output = clientOutput
        while true {
            let count = (try? buffer.withUnsafeMutableBytes { try client.read(handle, into: $0, now: time, output: &output) }) ?? 0
            if count == 0 { break }
            bytes += buffer[0..<count]
        }
        return bytes
    }

    func clientWrite(_ handle: TCPHandle, _ text: String) throws {
        var output = clientOutput
        _ = try Array(text.utf8).withUnsafeBytes { try client.write(handle, $0, now: time, output: &output) }
    }
}
