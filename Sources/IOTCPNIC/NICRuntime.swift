import CIOTCPSystem
import Glibc
import IOTCPCommon
import IOTCPNICCore
import Logging

/// The NIC stack as one run-to-completion loop: wire → link → data plane → channel, and channel → data
/// plane → wire. It owns the wire and the disk and keeps no TCP state; the host at the other end of the
/// channel decides everything.
///
/// A data packet leaves as a gather write: the Ethernet header and the data plane's IPv4/TCP headers in one
/// small reused buffer, the payload where the disk read left it. Nothing is allocated or copied per packet,
/// except on the diagnostic path (fault injection or capture), which needs each frame whole.
public final class NICRuntime {
    public let wire: any WireBackend
    @exclusivity(unchecked) public var link: EthernetLink
    public let dataPlane: NICDataPlane
    /// The host's channel; nil until a host attaches (the wire is served meanwhile: ARP and ping are
    /// answered, TCP segments dropped).
    @exclusivity(unchecked) public private(set) var channel: (any CommandChannel)?
    @exclusivity(unchecked) private var sender: ChannelSender?
    /// Faults injected between the wire and the NIC, per direction.
    @exclusivity(unchecked) public var inbound = FaultyWire(settings: FaultSettings(), seed: 1)
    @exclusivity(unchecked) public var outbound = FaultyWire(settings: FaultSettings(), seed: 2)
    /// Every frame that crosses the wire, when set.
    @exclusivity(unchecked) public var capture: PcapWriter?
    /// Lets SENDs leave as TCP super-segments when the wire can cut them, and frames come in as the kernel
    /// built them (see `superSegmentsAllowed`).
    @exclusivity(unchecked) public var segmentationOffload = true
    /// Whether the wire was asked to hand frames over unfinished (`WireBackend.acceptSuperSegments`).
    @exclusivity(unchecked) private var superSegmentsOffered = false
    /// The host's HELLO, once it came.
    @exclusivity(unchecked) public private(set) var host: Hello?
    @exclusivity(unchecked) public private(set) var counters = Counters()

    @exclusivity(unchecked) private var frame: UnsafeMutableRawBufferPointer
    /// Whole frames for the diagnostic path (faults, capture), and the Ethernet + IPv4 + TCP headers of a
    /// gathered one.
    @exclusivity(unchecked) private var transmitFrame: UnsafeMutableRawBufferPointer
    @exclusivity(unchecked) private var headerFrame: UnsafeMutableRawBufferPointer
    @exclusivity(unchecked) private var now = Instant(nanoseconds: 0)
    /// Wire refusals seen at the end of the last turn, to notice new ones.
    @exclusivity(unchecked) private var refusalsSeen = 0
    @exclusivity(unchecked) private var wireRefusedThisTurn = false

    public struct Counters: Hashable, Sendable {
        public var framesIn = 0
        public var framesOut = 0
        public var bytesIn = 0
        public var bytesOut = 0
        public var messagesIn = 0
        public var commandsIn = 0
        public var malformedCommands = 0
        /// Frames that were TCP super-segments, cut into MSS-sized segments by the wire.
        public var superSegmentsOut = 0
        /// Frames the wire failed to take for reasons other than a full queue (logged, dropped).
        public var wireErrors = 0
    }

    /// Frames read from the wire per turn at most, so a flood cannot starve the host's commands. Generous:
    /// the frames a content server receives are mostly ACKs, cheap to forward, and an ACK left waiting in the
    /// wire's queue delays its connection's clock (and, past the RTO, makes the host retransmit).
    public static let framesPerTurn = 256

    /// What a turn of the loop found.
    public enum Progress: Equatable {
        case idle
        case worked
        /// The host's end of the channel is gone (closed or its process died); every flow, file and held
        /// byte has been released, and the runtime waits for `attach`.
        case hostGone(ChannelError)
    }

    /// Where the runtime says what the counters alone would hide: hosts attaching and leaving (debug),
    /// malformed commands (warning), wire writes and reads that fail (error: the first, then every 1,024th,
    /// with the count). Nothing per packet.
    public var logger: Logger

    public init(wire: any WireBackend, link: EthernetLink, dataPlane: NICDataPlane, channel: (any CommandChannel)? = nil,
                logger: Logger = Logger(label: "iotcp.nic")) {
        self.logger = logger
        self.wire = wire
        self.link = link
        self.dataPlane = dataPlane
        frame = .allocate(byteCount: 65536 + 64, alignment: 64)
        transmitFrame = .allocate(byteCount: 65536 + 64, alignment: 64)
        // Ethernet, the data plane's IPv4/TCP headers, and a SEND's head placed right after them.
        headerFrame = .allocate(byteCount: 14 + 256 + SendRange.maximumHeadLength, alignment: 64)
        if let channel { attach(channel) }
    }

    deinit {
        // The data plane's reads in flight land in its pool: let them finish first.
        dataPlane.drain()
        frame.deallocate()
        transmitFrame.deallocate()
        headerFrame.deallocate()
    }

    /// Serves a new host (after the previous one went away).
    public func attach(_ channel: any CommandChannel) {
        logger.debug("a host attached")
        dataPlane.reset()
        self.channel = channel
        let sender = ChannelSender(channel: channel)
        self.sender = sender
        host = nil
        sender.append(.hello(Hello(role: .nic, maxMessageBytes: UInt32(channel.maxMessageBytes),
                                   maxFlows: UInt32(dataPlane.limits.maximumFlows - 1), maxOpenFiles: UInt32(dataPlane.files.limit),
                                   features: NICFeatures.connectionSetup | NICFeatures.connectionTeardown | NICFeatures.connectionSplicing | NICFeatures.sendHeads
                                       | NICFeatures.ipv6Splicing | NICFeatures.spliceAcknowledgment | NICFeatures.endingsWithData)))
        sender.flush()
    }

    /// Lets go of the host's channel (after it went away): flows, files and held bytes are released.
    public func detach() {
        if channel != nil { logger.debug("the host's channel is closed; its flows, files and stored bytes are released") }
        if let sender { earlierChannels = earlierChannels.adding(sender.statistics) }
        channel?.close()
        channel = nil
        sender = nil
        host = nil
        dataPlane.reset()
    }

    /// Messages and commands sent to hosts, over every host this runtime served.
    public var channelStatistics: ChannelSender.Statistics { earlierChannels.adding(sender?.statistics ?? ChannelSender.Statistics()) }
    @exclusivity(unchecked) private var earlierChannels = ChannelSender.Statistics()

    /// One turn: frames from the wire, commands from the host, held frames whose time came, then the disk
    /// and the transmit queues (`NICDataPlane.poll`); then every answer to the host in as few messages as fit.
    public func runOnce(now: Instant) -> Progress {
        self.now = now
        var worked = false
        var output = Output(runtime: self)
        dataPlane.offloads = superSegmentsAllowed ? .all : .none
        // Frames in as the kernel built them too, when nothing between wire and NIC must see real ones.
        let takeSuperSegments = superSegmentsAllowed && inbound.settings.isNone
        if takeSuperSegments != superSegmentsOffered { superSegmentsOffered = wire.acceptSuperSegments(takeSuperSegments) && takeSuperSegments }
        // The wire: a bounded batch per turn, so commands are not starved by a flood.
        for _ in 0..<Self.framesPerTurn {
            let count: Int?
            do throws(WireFailure) { count = try wire.read(into: frame) } catch {
                countWireError(error)
                break
            }
            guard let count else { break }
            worked = true
            dataPlane.standingQueue.frameRead()
            counters.framesIn += 1
            counters.bytesIn += count
            let bytes = UnsafeRawBufferPointer(rebasing: frame[0..<count])
            if let offload = wire.lastReadOffload {
                // Only offered with no capture and no faults: straight to the data plane, which may rewrite it.
                if let packet = link.receive(frame: bytes, now: now, transmit: { putOnWire($0) }) {
                    dataPlane.receive(packet: UnsafeMutableRawBufferPointer(mutating: packet), offload: offload, now: now, output: &output)
                }
                continue
            }
            capture?.write(bytes)
            inbound.send(bytes, now: now) { deliver(frame: $0, output: &output) }
        }
        // How many frames were waiting: whether the queue in front of the NIC stands (relayed data only).
        dataPlane.standingQueue.turnRead(now: now)
        inbound.releaseDue(now: now) { deliver(frame: $0, output: &output) }
        dataPlane.flushRelayed(output: &output)  // the batch's last relayed bytes, held for joining
        // Held outbound frames go straight to the wire: they passed the faults when they were sent, and
        // handing them to `putOnWire` would re-enter `outbound` while it releases.
        outbound.releaseDue(now: now) { transmit($0) }

        // The host's commands.
        var hostGone: ChannelError?
        if let channel, sender != nil {
            do throws(ChannelError) {
                let messages = try channel.receive(limit: 16) { message in
                    counters.messagesIn += 1
                    execute(message: message, output: &output)
                }
                if messages > 0 { worked = true }
            } catch {
                hostGone = error
            }
        }
        // The disk and the transmit queues; also with no host, so abandoned reads are taken back.
        if dataPlane.poll(now: now, output: &output) { worked = true }
        wireRefusedThisTurn = dataPlane.counters.wireRefusals != refusalsSeen
        refusalsSeen = dataPlane.counters.wireRefusals
        if let hostGone {
            detach()
            return .hostGone(hostGone)
        }
        guard let sender else { return worked ? .worked : .idle }
        sender.flush()
        if let failure = sender.failure {
            detach()
            return .hostGone(failure)
        }
        // Chunks ready to leave (the turn's budget ran out) need another turn now; a full wire gets a rest.
        if dataPlane.hasReadyWork && !wireRefusedThisTurn { return .worked }
        return worked ? .worked : .idle
    }

    /// Names the calling thread, so a profile or `/proc/PID/task/TID/comm` tells the NIC stack's CPU from
    /// the host's when both run in one process.
    public static func nameCurrentThread(_ name: String) {
        iotcp_name_thread(name)
    }

    /// Asks glibc to keep freed memory instead of handing it back to the kernel at once. The retransmit
    /// store allocates and frees a buffer per SEND (tens of KiB, thousands a second); with glibc's defaults
    /// many become fresh pages the kernel must fault in and zero: 13% of a loaded file server's CPU, and
    /// 28% more requests a second at 1,600 connections once kept. For executables: a library should not
    /// set its process's malloc policy behind its back.
    public static func keepFreedMemoryForReuse() {
        iotcp_keep_freed_memory()
    }

    /// Sleeps until a frame arrives, the host sends, a read completes, a held frame or a delayed read is
    /// due, or `timeoutNanoseconds` pass.
    public func sleep(timeoutNanoseconds: Int64) {
        var timeout = timeoutNanoseconds
        for due in [inbound.nextRelease, outbound.nextRelease, dataPlane.disk.nextDue] {
            if let due { timeout = min(timeout, Int64(clamping: due.nanoseconds) - Int64(clamping: now.nanoseconds)) }
        }
        // A wire that refused frames is given a moment before the next try; so is a host that stopped reading
        // (messages held for it): looked at again every millisecond, not in a loop that takes a whole core.
        if wireRefusedThisTurn { timeout = min(timeout, 200_000) }
        if (sender?.heldCount ?? 0) > 0 { timeout = min(timeout, 1_000_000) }
        if timeout <= 0 { return }
        let sleeping = channel?.prepareToSleep() ?? false
        let wake = channel?.wakeDescriptor ?? -1
        if wake >= 0 && !sleeping { return }
        var descriptors = [
            pollfd(fd: wire.descriptor, events: Int16(POLLIN), revents: 0),
            pollfd(fd: wake, events: Int16(POLLIN), revents: 0),
            // The peer's socket carries nothing after setup: only its hang-up matters. Watching for input would
            // turn bytes someone wrote into it into a loop that never sleeps.
            pollfd(fd: channel?.peerDescriptor ?? -1, events: Int16(IOTCP_POLLRDHUP), revents: 0),
            pollfd(fd: dataPlane.disk.inFlight > 0 ? dataPlane.disk.wakeDescriptor : -1, events: Int16(POLLIN), revents: 0),
        ]
        if channel != nil && wake < 0 { timeout = min(timeout, 50_000) }  // a busy-polled channel: nap, do not sleep
        _ = iotcp_poll_nanoseconds(&descriptors, 4, timeout)
        if sleeping { channel?.finishSleeping() }
        // The disk's eventfd stays readable until read: reset it, or the next sleep would return at once.
        if descriptors[3].revents != 0 { dataPlane.disk.clearWake() }
    }

    private func deliver(frame bytes: UnsafeRawBufferPointer, output: inout Output) {
        if let packet = link.receive(frame: bytes, now: now, transmit: { putOnWire($0) }) {
            dataPlane.receive(packet: packet, now: now, output: &output)
        }
    }

    /// A whole frame leaving the NIC (ARP, ICMP, or any frame on the diagnostic path): through the outbound
    /// faults, then onto the wire (now or when its delay ends).
    private func putOnWire(_ bytes: UnsafeRawBufferPointer) {
        counters.framesOut += 1
        counters.bytesOut += bytes.count
        outbound.send(bytes, now: now) { transmit($0) }
    }

    /// Whether packets may leave with checksum and segmentation offload: the wire does them (a TAP with a
    /// vnet header), the owner did not turn them off, and nothing between NIC and wire needs to see real,
    /// checksummed segments (faults, capture).
    public var superSegmentsAllowed: Bool {
        segmentationOffload && wire.takesSuperSegments && capture == nil && outbound.settings.isNone
    }

    private func transmit(_ bytes: UnsafeRawBufferPointer) {
        capture?.write(bytes)
        do throws(WireFailure) { _ = try wire.write(bytes) } catch { countWireError(error) }
    }

    /// A wire failure is counted, and logged the first time and every 1,024th after (a broken TAP fails
    /// every frame; the log must not become the bottleneck).
    private func countWireError(_ error: WireFailure) {
        counters.wireErrors += 1
        if counters.wireErrors & 1023 == 1 {
            logger.error("the wire failed a frame: \(error)", metadata: ["wire-errors": "\(counters.wireErrors)"])
        }
    }

    private func execute(message: UnsafeRawBufferPointer, output: inout Output) {
        var reader: CommandReader
        do throws(CommandDecodeError) {
            reader = try CommandReader(message: message, maxMessageBytes: channel?.maxMessageBytes ?? 0)
        } catch {
            report(error)
            return
        }
        while true {
            do throws(CommandDecodeError) {
                guard let command = try reader.next() else { return }
                counters.commandsIn += 1
                if case .hello(let hello) = command {
                    host = hello
                    continue
                }
                dataPlane.handle(command, received: now, now: now, output: &output)
            } catch {
                report(error)
                if !error.isRecoverable { return }
            }
        }
    }

    /// A command that could not be decoded is answered with ERROR and dropped.
    private func report(_ error: CommandDecodeError) {
        counters.malformedCommands += 1
        logger.warning("dropped a malformed command from the host: \(error)")
        let fields = error.errorReportFields
        var text = error.description
        text.withUTF8 { bytes in
            let cut = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[0..<min(bytes.count, CommandProtocol.maxErrorTextLength)])
            sender?.append(.error(fields.flow, ErrorReport(code: fields.code, failedKind: fields.failedKind, reference: 0, text: cut)))
        }
    }

    /// The data plane's side: packets onto the wire (gathered: Ethernet and IPv4/TCP headers from one small
    /// buffer, the payload from where it lies), answers into the channel.
    struct Output: NICOutput {
        unowned let runtime: NICRuntime

        mutating func transmit(headers: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, offload: PacketOffload?) -> TransmitResult {
            let runtime = self.runtime
            let length = 14 + headers.count + payload.count
            guard headers.count >= 20, length <= runtime.transmitFrame.count else {
                return .sent  // cannot be framed: dropped, as a wire drops an oversized frame
            }
            let ethernet = UnsafeMutableRawBufferPointer(rebasing: runtime.headerFrame[0..<14])
            if headers[0] >> 4 == 6 {
                // IPv6: an unknown neighbour is solicited and the packet lost, as on a wire (TCP recovers).
                guard headers.count >= IPv6PacketView.headerLength,
                      runtime.link.writeHeader(into: ethernet, destination: IPv6Address.load(from: headers, at: 24),
                                               transmit: { runtime.putOnWire($0) })
                else { return .sent }
            } else {
                let destination = IPv4Address(rawValue: headers.bigEndianUInt32(at: 16))
                // An unknown neighbour is asked for by ARP; a packet without offload waits for the answer in the
                // link, anything else is dropped as a lost frame (TCP recovers).
                guard runtime.link.writeHeader(into: ethernet, destination: destination, transmit: { runtime.putOnWire($0) }) else {
                    if offload == nil { runtime.link.hold(header: headers, payload: payload, now: runtime.now) }
                    return .sent
                }
            }
            if runtime.capture != nil || !runtime.outbound.settings.isNone {
                // The diagnostic path (faults, capture) needs each frame whole.
                let frame = UnsafeMutableRawBufferPointer(rebasing: runtime.transmitFrame[0..<length])
                frame.copyMemory(from: UnsafeRawBufferPointer(ethernet))
                UnsafeMutableRawBufferPointer(rebasing: frame[14..<(14 + headers.count)]).copyMemory(from: headers)
                if !payload.isEmpty { UnsafeMutableRawBufferPointer(rebasing: frame[(14 + headers.count)...]).copyMemory(from: payload) }
                runtime.putOnWire(UnsafeRawBufferPointer(frame))
                return .sent
            }
            let wireOffload = offload.map {
                SegmentationOffload(segmentSize: $0.segmentSize, headerLength: 14 + $0.headerLength, checksumStart: 14 + $0.transportStart)
            }
            if payload.isEmpty {
                // A whole packet (the host's, or ARP/ICMP): the Ethernet header, then the packet where it lies.
                return runtime.gather(header: UnsafeRawBufferPointer(ethernet), payload: headers, offload: wireOffload)
            }
            // Data: Ethernet and the data plane's IPv4/TCP headers (and a SEND's head) together, then the payload
            // from its buffer. Headers longer than the frame for them are a bug, not a lost frame: the data plane's
            // counters would say it left.
            precondition(14 + headers.count <= runtime.headerFrame.count, "\(headers.count) bytes of headers do not fit the header frame")
            UnsafeMutableRawBufferPointer(rebasing: runtime.headerFrame[14..<(14 + headers.count)]).copyMemory(from: headers)
            return runtime.gather(header: UnsafeRawBufferPointer(rebasing: runtime.headerFrame[0..<(14 + headers.count)]),
                                  payload: payload, offload: wireOffload)
        }

        mutating func reply(_ command: Command) {
            runtime.sender?.append(command)
        }
    }

    /// A data frame straight to the wire from its two pieces.
    fileprivate func gather(header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, offload: SegmentationOffload?) -> TransmitResult {
        let result: TransmitResult
        do throws(WireFailure) {
            result = try wire.write(header: header, payload: payload, offload: offload)
        } catch {
            // Not a full queue but a broken write: the frame is lost, as on a wire.
            countWireError(error)
            return .sent
        }
        guard result == .sent else { return result }
        counters.framesOut += 1
        counters.bytesOut += header.count + payload.count
        if let offload, offload.segmentSize > 0 { counters.superSegmentsOut += 1 }
        return .sent
    }
}
