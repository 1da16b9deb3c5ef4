import IOTCPCommon
@testable import IOTCPHost

/// What the engine emitted, with packets parsed so tests can check every field.
enum Emitted {
    case segment(Segment)
    case send(FlowID, SendRange)
    case sendWithHead(FlowID, SendRange, head: [UInt8])
    case sendRecords(FlowID, RecordSendRange)
    case tlsKeys(FlowID, version: TLSRecordVersion, keyLength: Int)
    case retransmit(FlowID, sequence: SequenceNumber, length: UInt32, template: SegmentTemplate)
    case acknowledged(FlowID, through: SequenceNumber)
    case flowOpen(FlowID, FlowEndpoints)
    case flowClose(FlowID)
    case splice(FlowID, SpliceParameters, head: [UInt8])
    case teardownWithData(FlowID, TeardownParameters, unacknowledged: SequenceNumber, hostBytes: [UInt8])
    case other(String)
}

/// A TCP segment the engine built, parsed back from its IPv4 or IPv6 packet.
struct Segment {
    var flow: FlowID
    var source: IPAddress
    var destination: IPAddress
    var ipv4: IPv4Repr?
    var ipv6: IPv6Repr?
    var tcp: TCPRepr
    var payload: [UInt8]
    var bytes: [UInt8]
    var flags: TCPFlags { tcp.flags }
    var sequence: SequenceNumber { tcp.sequenceNumber }
    var acknowledgment: SequenceNumber { tcp.acknowledgmentNumber }
}

/// Records everything the engine emits, checking every packet is well formed on the way.
struct RecordingOutput: CommandOutput {
    var emitted: [Emitted] = []

    mutating func emit(_ command: Command) {
        switch command {
        case .send(let flow, let range): emitted.append(.send(flow, range))
        case .sendWithHead(let flow, let range, let head): emitted.append(.sendWithHead(flow, range, head: Array(head)))
        case .sendRecords(let flow, let range): emitted.append(.sendRecords(flow, range))
        case .tlsKeys(let flow, let keys): emitted.append(.tlsKeys(flow, version: keys.version, keyLength: keys.key.count))
        case .retransmit(let flow, let sequence, let length, let template):
            emitted.append(.retransmit(flow, sequence: sequence, length: length, template: template))
        case .acknowledged(let flow, let through): emitted.append(.acknowledged(flow, through: through))
        case .flowOpen(let flow, let endpoints): emitted.append(.flowOpen(flow, endpoints))
        case .flowClose(let flow, _): emitted.append(.flowClose(flow))
        case .splice(let flow, let parameters, let head): emitted.append(.splice(flow, parameters, head: Array(head)))
        case .teardownWithData(let flow, let parameters, let unacknowledged, let hostBytes):
            emitted.append(.teardownWithData(flow, parameters, unacknowledged: unacknowledged, hostBytes: Array(hostBytes)))
        default: emitted.append(.other(String(describing: command.kind)))
        }
    }

    mutating func emitPacket(flow: FlowID, length: Int, _ build: (UnsafeMutableRawBufferPointer) -> Void) {
        var bytes = [UInt8](repeating: 0xAA, count: length)
        bytes.withUnsafeMutableBytes { build($0) }
        let parsed: Segment? = bytes.withUnsafeBytes { raw in
            if raw[0] >> 4 == 6 {
                guard let ip = try? IPv6PacketView(raw), ip.upperLayerProtocol == .tcp, !ip.hasExtensionHeaders,
                      let view = try? TCPSegmentView(ip.upperLayer), view.checksumVerifies(source: ip.source, destination: ip.destination),
                      let tcp = try? TCPRepr(view)
                else { return nil }
                return Segment(flow: flow, source: IPAddress(ip.source), destination: IPAddress(ip.destination), ipv4: nil,
                               ipv6: IPv6Repr(ip), tcp: tcp, payload: Array(view.payload), bytes: bytes)
            }
            guard let ip = try? IPv4PacketView(raw), let view = try? TCPSegmentView(ip.payload),
                  view.checksumVerifies(source: ip.source, destination: ip.destination),
                  let tcp = try? TCPRepr(view), ip.totalLength == length
            else { return nil }
            return Segment(flow: flow, source: IPAddress(ip.source), destination: IPAddress(ip.destination), ipv4: IPv4Repr(ip),
                           ipv6: nil, tcp: tcp, payload: Array(view.payload), bytes: bytes)
        }
        if let parsed { emitted.append(.segment(parsed)) } else { emitted.append(.other("malformed packet of \(length) bytes")) }
    }

    var segments: [Segment] {
        emitted.compactMap { if case .segment(let segment) = $0 { segment } else { nil } }
    }

    mutating func takeSegments() -> [Segment] { take().segments }

    mutating func take() -> [Emitted] {
        defer { emitted.removeAll() }
        return emitted
    }
}

/// One engine and a scripted remote peer at 10.0.0.2 talking to it at 10.0.0.1 (over IPv6, fd00::2 to
/// fd00::1).
struct Script {
    static let local = IPv4Address(10, 0, 0, 1)
    static let remote = IPv4Address(10, 0, 0, 2)
    static let local6 = IPv6Address("fd00::1")!
    static let remote6 = IPv6Address("fd00::2")!

    var engine: TCPEngine
    /// The peer's address and the engine's, of the family the script speaks.
    let remoteAddress: IPAddress
    let localAddress: IPAddress
    var output = RecordingOutput()
    var now = Instant.milliseconds(1_000)
    var remotePort: UInt16 = 40000
    var localPort: UInt16 = 80

    init(configuration: TCPConfiguration = TCPConfiguration(), ipv6: Bool = false) {
        engine = TCPEngine(localAddress: Self.local, ipv6Address: Self.local6, configuration: configuration, secret: (1, 2), now: now)
        remoteAddress = ipv6 ? IPAddress(Self.remote6) : IPAddress(Self.remote)
        localAddress = ipv6 ? IPAddress(Self.local6) : IPAddress(Self.local)
    }

    /// Builds a segment from the peer and hands it to the engine; returns what the engine emitted.
    @discardableResult
    mutating func inject(
        sequence: UInt32, acknowledgment: UInt32 = 0, flags: TCPFlags, window: UInt16 = 65535,
        options: TCPOptions = TCPOptions(), payload: [UInt8] = [], from port: UInt16? = nil
    ) -> [Emitted] {
        let tcp = TCPRepr(
            sourcePort: port ?? remotePort, destinationPort: localPort, sequenceNumber: SequenceNumber(sequence),
            acknowledgmentNumber: SequenceNumber(acknowledgment), flags: flags, window: window, options: options)
        let network = remoteAddress.headerLength
        var packet = [UInt8](repeating: 0, count: network + tcp.headerLength + payload.count)
        let (source, destination) = (remoteAddress, localAddress)
        packet.withUnsafeMutableBytes { buffer in
            if let source4 = source.ipv4, let destination4 = destination.ipv4 {
                try! IPv4Repr(source: source4, destination: destination4, protocol: .tcp,
                              payloadLength: tcp.headerLength + payload.count).emit(into: buffer)
            } else {
                try! IPv6Repr(source: source.bits, destination: destination.bits, nextHeader: .tcp,
                              payloadLength: tcp.headerLength + payload.count).emit(into: buffer)
            }
            let segment = UnsafeMutableRawBufferPointer(rebasing: buffer[network...])
            let length = try! tcp.emitHeader(into: segment)
            for (index, byte) in payload.enumerated() { segment[length + index] = byte }
            TCPRepr.fillChecksum(segment: segment, source: source, destination: destination)
        }
        packet.withUnsafeBytes { engine.handlePacket($0, now: now, output: &output) }
        return output.take()
    }

    /// Moves the clock and runs the timers; returns what they emitted.
    @discardableResult
    mutating func advance(milliseconds: UInt64) -> [Emitted] {
        advance(nanoseconds: milliseconds * Nanoseconds.millisecond)
    }

    @discardableResult
    mutating func advance(nanoseconds: UInt64) -> [Emitted] {
        now = now + nanoseconds
        engine.handleTimers(now: now, output: &output)
        return output.take()
    }

    /// Linux's SYN options.
    static func linuxSynOptions(timestamp: UInt32 = 1000) -> TCPOptions {
        TCPOptions(maximumSegmentSize: 1460, windowScale: 7, sackPermitted: true,
                   timestamps: TCPTimestamps(value: timestamp, echoReply: 0))
    }
}

extension Array where Element == Emitted {
    var segments: [Segment] { compactMap { if case .segment(let segment) = $0 { segment } else { nil } } }
    var sends: [(FlowID, SendRange)] { compactMap { if case .send(let flow, let range) = $0 { (flow, range) } else { nil } } }
    var recordSends: [RecordSendRange] { compactMap { if case .sendRecords(_, let range) = $0 { range } else { nil } } }
    var retransmits: [(SequenceNumber, UInt32)] {
        compactMap { if case .retransmit(_, let sequence, let length, _) = $0 { (sequence, length) } else { nil } }
    }
    var acknowledgedCommands: [SequenceNumber] {
        compactMap { if case .acknowledged(_, let through) = $0 { through } else { nil } }
    }
    var malformed: [String] { compactMap { if case .other(let text) = $0 { text } else { nil } } }
}
