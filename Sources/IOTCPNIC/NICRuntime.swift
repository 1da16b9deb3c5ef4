import CIOTCPSystem
import Glibc
import IOTCPCommon

/// The NIC stack as one run-to-completion loop: wire → link → data plane → channel, and channel → data
/// plane → wire. It owns the wire and the disk and keeps no TCP state; the host at the other end of the
/// channel decides everything.
///
/// Frames are built in one reused buffer (a packet from the data plane is built 14 bytes in, and the
/// Ethernet header written in front of it), so sending allocates nothing per packet.
public final class NICRuntime {
    public let wire: any WireBackend
    public var link: EthernetLink
    public let dataPlane: NICDataPlane
    /// The host's channel; nil until a host attaches (the wire is served meanwhile: ARP and ping are
    /// answered, TCP segments dropped).
    public private(set) var channel: (any CommandChannel)?
    private var sender: ChannelSender?
    /// Faults injected between the wire and the NIC, per direction.
    public var inbound = FaultyWire(settings: FaultSettings(), seed: 1)
    public var outbound = FaultyWire(settings: FaultSettings(), seed: 2)
    /// Every frame that crosses the wire, when set.
    public var capture: PcapWriter?
    /// Lets SENDs leave as TCP super-segments when the wire can cut them (see `superSegmentsAllowed`).
    public var segmentationOffload = true
    /// The host's HELLO, once it came.
    public private(set) var host: Hello?
    public private(set) var counters = Counters()

    private var frame: UnsafeMutableRawBufferPointer
    private var transmitFrame: UnsafeMutableRawBufferPointer
    private var now = Instant(nanoseconds: 0)

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
    }

    /// What a turn of the loop found.
    public enum Progress: Equatable {
        case idle
        case worked
        /// The host's end of the channel is gone (closed or its process died); every flow, file and held
        /// byte has been released, and the runtime waits for `attach`.
        case hostGone(ChannelError)
    }

    public init(wire: any WireBackend, link: EthernetLink, dataPlane: NICDataPlane, channel: (any CommandChannel)? = nil) {
        self.wire = wire
        self.link = link
        self.dataPlane = dataPlane
        frame = .allocate(byteCount: 65536 + 64, alignment: 64)
        transmitFrame = .allocate(byteCount: 65536 + 64, alignment: 64)
        if let channel { attach(channel) }
    }

    deinit {
        frame.deallocate()
        transmitFrame.deallocate()
    }

    /// Serves a new host (after the previous one went away).
    public func attach(_ channel: any CommandChannel) {
        dataPlane.reset()
        self.channel = channel
        let sender = ChannelSender(channel: channel)
        self.sender = sender
        host = nil
        sender.append(.hello(Hello(role: .nic, maxMessageBytes: UInt32(channel.maxMessageBytes), maxFlows: 1 << 20,
                                   maxOpenFiles: UInt32(dataPlane.files.limit))))
        sender.flush()
    }

    /// Lets go of the host's channel (after it went away): flows, files and held bytes are released.
    public func detach() {
        if let sender { earlierChannels = earlierChannels.adding(sender.statistics) }
        channel?.close()
        channel = nil
        sender = nil
        host = nil
        dataPlane.reset()
    }

    /// Messages and commands sent to hosts, over every host this runtime served.
    public var channelStatistics: ChannelSender.Statistics { earlierChannels.adding(sender?.statistics ?? ChannelSender.Statistics()) }
    private var earlierChannels = ChannelSender.Statistics()

    /// One turn: frames from the wire, commands from the host, held frames whose time came; then every
    /// answer to the host in as few messages as fit.
    public func runOnce(now: Instant) -> Progress {
        self.now = now
        var worked = false
        var output = Output(runtime: self)
        // The wire: a bounded batch per turn, so commands are not starved by a flood.
        for _ in 0..<64 {
            guard let count = (try? wire.read(into: frame)) ?? nil else { break }
            worked = true
            counters.framesIn += 1
            counters.bytesIn += count
            let bytes = UnsafeRawBufferPointer(rebasing: frame[0..<count])
            capture?.write(bytes)
            inbound.send(bytes, now: now) { deliver(frame: $0, output: &output) }
        }
        inbound.releaseDue(now: now) { deliver(frame: $0, output: &output) }
        // Held outbound frames go straight to the wire: they passed the faults when they were sent, and
        // handing them to `putOnWire` would re-enter `outbound` while it releases.
        outbound.releaseDue(now: now) { transmit($0) }

        // The host's commands.
        guard let channel, let sender else { return worked ? .worked : .idle }
        dataPlane.superSegmentLimit = superSegmentsAllowed ? Int(UInt16.max) : 0
        do throws(ChannelError) {
            let messages = try channel.receive(limit: 16) { message in
                counters.messagesIn += 1
                execute(message: message, output: &output)
            }
            if messages > 0 { worked = true }
        } catch {
            detach()
            return .hostGone(error)
        }
        sender.flush()
        if let failure = sender.failure {
            detach()
            return .hostGone(failure)
        }
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

    /// Sleeps until a frame arrives, the host sends, a held frame is due, or `timeoutNanoseconds` pass.
    public func sleep(timeoutNanoseconds: Int64) {
        var timeout = timeoutNanoseconds
        for due in [inbound.nextRelease, outbound.nextRelease] {
            if let due { timeout = min(timeout, Int64(clamping: due.nanoseconds) - Int64(clamping: now.nanoseconds)) }
        }
        if timeout <= 0 || (sender?.heldCount ?? 0) > 0 { return }
        let sleeping = channel?.prepareToSleep() ?? false
        let wake = channel?.wakeDescriptor ?? -1
        if wake >= 0 && !sleeping { return }
        var descriptors = [
            pollfd(fd: wire.descriptor, events: Int16(POLLIN), revents: 0),
            pollfd(fd: wake, events: Int16(POLLIN), revents: 0),
            pollfd(fd: channel?.peerDescriptor ?? -1, events: Int16(POLLIN), revents: 0),
        ]
        if channel != nil && wake < 0 { timeout = min(timeout, 50_000) }  // a busy-polled channel: nap, do not sleep
        _ = iotcp_poll_nanoseconds(&descriptors, 3, timeout)
        if sleeping { channel?.finishSleeping() }
    }

    private func deliver(frame bytes: UnsafeRawBufferPointer, output: inout Output) {
        if let packet = link.receive(frame: bytes, transmit: { putOnWire($0) }) {
            dataPlane.receive(packet: packet, output: &output)
        }
    }

    /// A frame leaving the NIC: through the outbound faults, then onto the wire (now or when its delay ends).
    /// A super-segment goes straight to the wire: they are only built when there are no faults to apply
    /// and no capture to write (`superSegmentsAllowed`).
    private func putOnWire(_ bytes: UnsafeRawBufferPointer, offload: SegmentationOffload? = nil) {
        counters.framesOut += 1
        counters.bytesOut += bytes.count
        if let offload {
            counters.superSegmentsOut += 1
            try? wire.write(bytes, offload: offload)
            return
        }
        outbound.send(bytes, now: now) { transmit($0) }
    }

    /// Whether SENDs may leave as super-segments: the wire cuts them (a TAP with a vnet header), the
    /// owner did not turn them off, and nothing between NIC and wire needs to see real segments.
    public var superSegmentsAllowed: Bool {
        segmentationOffload && wire.takesSuperSegments && capture == nil && outbound.settings.isNone
    }

    private func transmit(_ bytes: UnsafeRawBufferPointer) {
        capture?.write(bytes)
        try? wire.write(bytes)
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
        let fields = error.errorReportFields
        var text = error.description
        text.withUTF8 { bytes in
            let cut = UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(bytes)[0..<min(bytes.count, CommandProtocol.maxErrorTextLength)])
            sender?.append(.error(fields.flow, ErrorReport(code: fields.code, failedKind: fields.failedKind, reference: 0, text: cut)))
        }
    }

    /// The data plane's side: packets into the frame buffer and onto the wire, answers into the channel.
    struct Output: NICOutput {
        unowned let runtime: NICRuntime

        mutating func transmit(length: Int, segmentSize: Int, _ build: (UnsafeMutableRawBufferPointer) -> Void) {
            let runtime = self.runtime
            guard length + 14 <= runtime.transmitFrame.count else { return }
            let frame = UnsafeMutableRawBufferPointer(rebasing: runtime.transmitFrame[0..<(14 + length)])
            build(UnsafeMutableRawBufferPointer(rebasing: frame[14...]))
            guard runtime.link.addressFrame(frame, transmit: { runtime.putOnWire($0) }) else { return }
            if segmentSize > 0 {
                // Ethernet 14, IPv4 (its IHL), TCP (its data offset): the headers the kernel repeats per segment.
                let ipLength = Int(frame[14] & 0x0F) * 4
                let tcpLength = Int(frame[14 + ipLength + 12] >> 4) * 4
                runtime.putOnWire(UnsafeRawBufferPointer(frame), offload: SegmentationOffload(
                    segmentSize: UInt16(segmentSize), headerLength: UInt16(14 + ipLength + tcpLength), checksumStart: UInt16(14 + ipLength)))
            } else {
                runtime.putOnWire(UnsafeRawBufferPointer(frame))
            }
        }

        mutating func reply(_ command: Command) {
            runtime.sender?.append(command)
        }
    }
}
