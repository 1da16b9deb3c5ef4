@_exported import IOTCPChannels
@_exported import IOTCPCommon
@_exported import IOTCPHost
@_exported import IOTCPNIC
import Atomics
import Glibc

/// The NIC stack on a thread of this process, reached through an in-process channel: the embedded
/// arrangement. The application builds an `IOTCPStack` on `hostChannel` and runs its own loop; the NIC
/// thread owns the wire and the files, as a SmartNIC (or a dedicated core) would.
///
/// ```swift
/// let nic = try EmbeddedNIC(runtime: ...)      // or EmbeddedNIC(tap:address:files:)
/// nic.start()
/// let stack = IOTCPStack(channel: nic.hostChannel, address: address)
/// ...
/// nic.stop()
/// ```
public final class EmbeddedNIC: @unchecked Sendable {
    /// Owned by the NIC thread between `start` and `stop`: read it only before or after.
    public let runtime: NICRuntime
    public let hostChannel: RingChannelEnd
    private let stopRequested = ManagedAtomic<Bool>(false)
    private var thread: pthread_t?
    /// Why the NIC loop ended on its own (the host's channel end went away), if it did.
    public private(set) var endedBecause: ChannelError?
    private var periodicWork: (interval: UInt64, body: (NICRuntime) -> Void)?

    /// Runs `body` on the NIC thread about every `intervalNanoseconds` (and once as the thread stops), with
    /// the runtime it owns: the way to read its counters while it runs (metrics, listings) without racing it.
    /// Set it before `start()`.
    public func periodically(everyNanoseconds intervalNanoseconds: UInt64, _ body: @escaping (NICRuntime) -> Void) {
        precondition(thread == nil, "EmbeddedNIC.periodically must be set before start()")
        periodicWork = (intervalNanoseconds, body)
    }

    public convenience init(
        tap: TapDevice, address: IPv4Address, ipv6: IPv6Settings? = nil, hardwareAddress: MACAddress = MACAddress(0x02, 0, 0, 0x77, 0, 2),
        files: any FileService, retransmitMode: RetransmitStore.Mode = .buffered, storeLimitBytes: Int = 192 << 20,
        channel configuration: ChannelConfiguration = ChannelConfiguration()
    ) throws(ChannelError) {
        let (host, nic) = try InProcessChannel.makePair(configuration: configuration)
        let runtime = NICRuntime(
            wire: tap, link: EthernetLink(hardwareAddress: hardwareAddress, address: address, ipv6: ipv6),
            dataPlane: .standard(files: files, retransmitMode: retransmitMode, storeLimitBytes: storeLimitBytes), channel: nic)
        self.init(runtime: runtime, hostChannel: host)
    }

    public init(runtime: NICRuntime, hostChannel: RingChannelEnd) {
        self.runtime = runtime
        self.hostChannel = hostChannel
    }

    /// Attaches `runtime` to a new in-process channel; the host end is `hostChannel`.
    public convenience init(runtime: NICRuntime, channel configuration: ChannelConfiguration = ChannelConfiguration()) throws(ChannelError) {
        let (host, nic) = try InProcessChannel.makePair(configuration: configuration)
        runtime.attach(nic)
        self.init(runtime: runtime, hostChannel: host)
    }

    /// Starts the NIC thread.
    public func start() {
        guard thread == nil else { return }
        let context = Unmanaged.passRetained(self).toOpaque()
        var created = pthread_t()
        let result = pthread_create(&created, nil, { context in
            let nic = Unmanaged<EmbeddedNIC>.fromOpaque(context!).takeRetainedValue()
            nic.loop()
            return nil
        }, context)
        precondition(result == 0, "pthread_create failed: \(result)")
        thread = created
    }

    /// Stops the NIC thread and waits for it; `runtime` may be read afterwards.
    public func stop() {
        guard let thread else { return }
        stopRequested.store(true, ordering: .releasing)
        pthread_join(thread, nil)
        self.thread = nil
    }

    private func loop() {
        NICRuntime.nameCurrentThread("iotcp-nic")
        var lastPeriodic = IOTCPStack.monotonicNow()
        defer { periodicWork?.body(runtime) }
        defer {
            // What the host sent before it asked to stop (its last closes) is still taken, so what is read
            // of the NIC after `stop` includes it.
            if endedBecause == nil {
                for _ in 0..<16 {
                    guard case .worked = runtime.runOnce(now: IOTCPStack.monotonicNow()) else { break }
                }
            }
        }
        while !stopRequested.load(ordering: .acquiring) {
            let now = IOTCPStack.monotonicNow()
            if let periodicWork, now - lastPeriodic >= periodicWork.interval {
                lastPeriodic = now
                periodicWork.body(runtime)
            }
            switch runtime.runOnce(now: now) {
            case .worked: continue
            case .idle: runtime.sleep(timeoutNanoseconds: 5_000_000)
            case .hostGone(let error):
                endedBecause = error
                return
            }
        }
    }
}
