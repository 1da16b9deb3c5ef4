import ArgumentParser
import Glibc
import IOTCPEmbedded

/// The NIC stack's command-line options, shared by `iotcp-nic` and the embedded file server: the export
/// root's files, the wire's faults and capture, the retransmit store.
public struct WireOptions: ParsableArguments {
    @Option(help: "Write every frame on the wire to this pcap file (opens in tshark).")
    public var pcap: String?

    @Option(help: "Fault injection, both directions: probability a frame is lost.")
    public var loss = 0.0

    @Option(help: "Fault injection, both directions: probability a frame is duplicated.")
    public var duplicate = 0.0

    @Option(help: "Fault injection, both directions: probability a frame is held back 0.1 to 2 ms (reordering).")
    public var reorder = 0.0

    @Option(help: "Fault injection, both directions: probability one byte of a frame is flipped.")
    public var corrupt = 0.0

    @Option(help: "Fault injection, both directions: extra one-way delay in milliseconds.")
    public var delayMs = 0.0

    @Option(help: "Faults for frames from the wire only, e.g. loss=0.02,reorder=0.01,delay-ms=5 (overrides the above).")
    public var inboundFaults: String?

    @Option(help: "Faults for frames to the wire only, same form as --inbound-faults.")
    public var outboundFaults: String?

    @Option(help: "Seed of the fault injection, so a run can be replayed.")
    public var seed: UInt64 = 1

    @Option(help: "Retransmissions from the buffers the data left from (buffered) or by re-reading the file (bufferless).")
    public var retransmit: RetransmitStore.Mode = .buffered

    @Option(help: "Bytes of buffers the retransmit store may keep (buffered mode); past it, ranges are re-read if lost.")
    public var storeLimit = 192 << 20

    @Option(help: "Bytes of buffers for reads in flight and data waiting for the wire, beyond the store's.")
    public var readMemory = 64 << 20

    @Option(help: "How the NIC reads files: io_uring (asynchronous; falls back to pread threads where the kernel refuses it) or pread (worker threads).")
    public var disk: DiskReaderKind = .ioUring

    @Option(help: "Worker threads for --disk pread.")
    public var diskThreads = 4

    @Option(help: "Reads in flight at once, at most.")
    public var diskQueueDepth = 256

    @Flag(help: "Open files with O_DIRECT: reads bypass the page cache (aligned reads into aligned buffers).")
    public var directIo = false

    @Flag(inversion: .prefixedNo, help: "Send what the page cache holds straight from the file's mapping (no read, no copy) where the wire finishes checksums.")
    public var mapFiles = true

    @Option(help: "Make every disk read take this many milliseconds longer (a slow or cold disk, for tests; with --no-map-files every byte is read).")
    public var diskDelayMs = 0.0

    @Flag(inversion: .prefixedNo, help: "Hand the kernel TCP super-segments of up to 64 KiB to cut and checksums to finish (a TAP with a vnet header); off with faults or --pcap, which see real segments.")
    public var gso = true

    @Option(help: "While the queue of frames in front of the NIC stands, drop spliced data read past this many frames of a turn, as a queue this long would (0: never).")
    public var relayQueueFrames = StandingQueueControl.defaultLimitFrames

    @Flag(help: "Take over the client namespace even if another server's interfaces or processes are in it (an empty one left by a server that died is always replaced).")
    public var replaceNetns = false

    public init() {}

    public enum DiskReaderKind: String, ExpressibleByArgument, Sendable {
        case ioUring = "io_uring"
        case pread
    }

    /// The disk `--disk` asks for (pread threads with a word on stderr when io_uring cannot be set up),
    /// slowed by `--disk-delay-ms` if given.
    public func makeDisk() throws -> any DiskIO {
        guard diskThreads > 0, diskQueueDepth > 0, diskDelayMs >= 0 else {
            throw ValidationError("--disk-threads and --disk-queue-depth must be positive, --disk-delay-ms not negative")
        }
        var disk: any DiskIO
        if self.disk == .ioUring {
            do throws(DiskFailure) {
                disk = try URingDisk(entries: UInt32(min(diskQueueDepth, 4096)))
            } catch {
                let line = "iotcp: io_uring unavailable (\(error)); reading files with pread on \(diskThreads) threads\n"
                _ = line.withCString { write(2, $0, strlen($0)) }
                disk = try preadDisk()
            }
        } else {
            disk = try preadDisk()
        }
        if diskDelayMs > 0 { disk = DelayedDisk(base: disk, delayNanoseconds: UInt64(diskDelayMs * 1e6)) }
        return disk
    }

    private func preadDisk() throws -> any DiskIO {
        do throws(DiskFailure) { return try ThreadPoolDisk(threads: diskThreads, capacity: diskQueueDepth) } catch {
            throw RuntimeFailure("cannot start the disk threads: \(error)")
        }
    }

    /// The export root's file table as these options ask for it.
    public func makeFileTable(root: String) throws -> FileTable {
        do { return try FileTable(root: root, directIO: directIo, mapFiles: mapFiles) } catch { throw RuntimeFailure("export root \(root): \(error)") }
    }

    /// The data plane over `files`, with the disk, store and memory these options ask for.
    public func makeDataPlane(files: any FileService) throws -> NICDataPlane {
        guard storeLimit >= 0, readMemory > 0, relayQueueFrames >= 0 else {
            throw ValidationError("--store-limit and --relay-queue-frames must not be negative, --read-memory must be positive")
        }
        let plane = NICDataPlane(files: files, disk: try makeDisk(), pool: BufferPool(capacityBytes: storeLimit + readMemory),
                                 retransmitMode: retransmit, storeLimitBytes: storeLimit)
        plane.standingQueue = StandingQueueControl(limitFrames: relayQueueFrames)
        plane.recordSealers = TLSRecordSealers()
        return plane
    }

    public func faults() throws -> (inbound: FaultSettings, outbound: FaultSettings) {
        let both = FaultSettings(loss: loss, duplication: duplicate, reordering: reorder, corruption: corrupt,
                                 delayNanoseconds: UInt64(max(delayMs, 0) * 1e6))
        let inbound = try inboundFaults.map { try Self.parse($0, option: "--inbound-faults") } ?? both
        let outbound = try outboundFaults.map { try Self.parse($0, option: "--outbound-faults") } ?? both
        for settings in [inbound, outbound] {
            if let failure = settings.validationFailure { throw ValidationError(failure) }
        }
        return (inbound, outbound)
    }

    static func parse(_ spec: String, option: String) throws -> FaultSettings {
        var settings = FaultSettings()
        for item in spec.split(separator: ",") {
            let pair = item.split(separator: "=", maxSplits: 1)
            guard pair.count == 2, let value = Double(pair[1]) else { throw ValidationError("\(option): '\(item)' is not NAME=NUMBER") }
            switch pair[0] {
            case "loss": settings.loss = value
            case "duplicate": settings.duplication = value
            case "reorder": settings.reordering = value
            case "corrupt": settings.corruption = value
            case "delay-ms": settings.delayNanoseconds = UInt64(max(value, 0) * 1e6)
            default: throw ValidationError("\(option): unknown fault '\(pair[0])' (loss, duplicate, reorder, corrupt, delay-ms)")
            }
        }
        return settings
    }

    /// Opens the export root and a TAP, creates the client namespace around the TAP, and builds the NIC
    /// runtime, with no host attached yet. On failure, nothing it created is left behind.
    public func makeRuntime(root: String, namespace: NetworkNamespace) throws -> NICRuntime {
        let (inbound, outbound) = try faults()
        let dataPlane = try makeDataPlane(files: try makeFileTable(root: root))
        let capture: PcapWriter?
        do { capture = try pcap.map { try PcapWriter(path: $0) } } catch { throw RuntimeFailure("--pcap \(pcap!): \(error)") }
        let tap: TapDevice
        do { tap = try TapDevice(name: "iotcp\(getpid() % 10_000)", vnetHeader: true) } catch { throw RuntimeFailure("\(error)") }
        do { try namespace.create(with: tap, replacing: replaceNetns) } catch { throw RuntimeFailure("\(error)") }
        let link = EthernetLink(hardwareAddress: MACAddress(0x02, 0, 0, 0x77, 0, 2), address: namespace.stackAddress,
                                prefixLength: namespace.prefixLength,
                                ipv6: namespace.ipv6.map { IPv6Settings(address: $0.stackAddress, prefixLength: $0.prefixLength) })
        let runtime = NICRuntime(wire: tap, link: link, dataPlane: dataPlane)
        runtime.inbound = FaultyWire(settings: inbound, seed: seed)
        runtime.outbound = FaultyWire(settings: outbound, seed: seed &+ 1)
        runtime.capture = capture
        runtime.segmentationOffload = gso
        if !inbound.isNone || !outbound.isNone {
            let line = "iotcp: injecting faults: inbound \(inbound), outbound \(outbound), seed \(seed)\n"
            _ = line.withCString { write(2, $0, strlen($0)) }
        }
        return runtime
    }
}

extension RetransmitStore.Mode: ExpressibleByArgument {}
