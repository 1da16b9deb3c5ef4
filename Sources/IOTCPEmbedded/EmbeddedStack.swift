@_exported import IOTCPCommon
@_exported import IOTCPHost
@_exported import IOTCPNIC

/// Both halves of the stack in one process, over a TAP device: the host engine's commands go straight
/// to the NIC data plane, the NIC's answers straight back. No channel in between (the in-process and
/// shared-memory channels carry the same commands when the halves are apart).
///
/// Drive it from an event loop: `poll(now:)` moves frames in and out and runs timers; the application uses
/// `engine` with `hostOutput(now:)` as the output of every call.
public final class EmbeddedStack {
    public let tap: TapDevice
    public var link: EthernetLink
    public let nic: NICDataPlane
    public let engine: TCPEngine
    var echoes: [(FlowID, SequenceNumber, UInt64)] = []
    var packetsIn: [(FlowID, [UInt8])] = []
    /// ERROR answers from the NIC, as text, for the operator.
    public private(set) var errors: [String] = []
    private var frame = [UInt8](repeating: 0, count: 65536)
    /// Every frame that crosses the TAP, when set.
    public var capture: PcapWriter?
    /// Faults injected between the NIC and the TAP, per direction.
    public var inbound = FaultyWire(settings: FaultSettings(), seed: 1)
    public var outbound = FaultyWire(settings: FaultSettings(), seed: 2)

    public init(
        tap: TapDevice, address: IPv4Address, hardwareAddress: MACAddress = MACAddress(0x02, 0, 0, 0x77, 0, 2),
        files: FileTable, configuration: TCPConfiguration = TCPConfiguration(), secret: (UInt64, UInt64), now: Instant
    ) {
        self.tap = tap
        link = EthernetLink(hardwareAddress: hardwareAddress, address: address)
        nic = NICDataPlane(files: files)
        engine = TCPEngine(localAddress: address, configuration: configuration, secret: secret, now: now)
    }

    /// A frame for the TAP, through the outbound faults and the capture.
    func transmitFrame(_ frame: UnsafeRawBufferPointer, now: Instant) {
        let tap = self.tap, capture = self.capture
        outbound.send(frame, now: now) { bytes in
            capture?.write(bytes)
            try? tap.write(bytes)
        }
    }

    /// The NIC's side: frames to the TAP, answers queued for the host.
    public struct NICSide: NICOutput {
        unowned let stack: EmbeddedStack
        var now: Instant
        public mutating func transmit(length: Int, _ build: (UnsafeMutableRawBufferPointer) -> Void) {
            var packet = [UInt8](repeating: 0, count: length)
            packet.withUnsafeMutableBytes { build($0) }
            let stack = self.stack, now = self.now
            packet.withUnsafeBytes { bytes in stack.link.send(packet: bytes) { frame in stack.transmitFrame(frame, now: now) } }
        }
        public mutating func reply(_ command: Command) {
            switch command {
            case .echo(let flow, let end, let delay): stack.echoes.append((flow, end, delay))
            case .packetIn(let flow, let packet): stack.packetsIn.append((flow, Array(packet)))
            case .error(_, let report): stack.errors.append(report.textString)
            default: break
            }
        }
    }

    /// The host's side: every command goes to the NIC data plane at once.
    public struct HostSide: CommandOutput {
        unowned let stack: EmbeddedStack
        public var now: Instant
        public mutating func emit(_ command: Command) {
            var side = NICSide(stack: stack, now: now)
            stack.nic.handle(command, received: now, now: now, output: &side)
        }
        public mutating func emitPacket(flow: FlowID, length: Int, _ build: (UnsafeMutableRawBufferPointer) -> Void) {
            var packet = [UInt8](repeating: 0, count: length)
            packet.withUnsafeMutableBytes { build($0) }
            packet.withUnsafeBytes { emit(.packetOut(flow, packet: $0)) }
        }
    }

    public func hostOutput(now: Instant) -> HostSide { HostSide(stack: self, now: now) }

    /// The ERROR texts since the last call.
    public func takeErrors() -> [String] {
        defer { errors.removeAll() }
        return errors
    }

    /// One turn of the loop: frames in, PACKET_IN and ECHO to the engine, timers.
    public func poll(now: Instant) {
        var host = hostOutput(now: now)
        var nicSide = NICSide(stack: self, now: now)
        let tap = self.tap
        var arrived: [[UInt8]] = []
        while let count = (try? frame.withUnsafeMutableBytes { try tap.read(into: $0) }) ?? nil {
            frame.withUnsafeBytes { raw in
                let bytes = UnsafeRawBufferPointer(rebasing: raw[0..<count])
                capture?.write(bytes)
                inbound.send(bytes, now: now) { arrived.append(Array($0)) }
            }
        }
        inbound.releaseDue(now: now) { arrived.append(Array($0)) }
        outbound.releaseDue(now: now) { bytes in
            capture?.write(bytes)
            try? tap.write(bytes)
        }
        for frame in arrived {
            frame.withUnsafeBytes { bytes in
                if let packet = link.receive(frame: bytes, transmit: { transmitFrame($0, now: now) }) {
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
