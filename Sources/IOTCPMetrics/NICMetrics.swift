import IOTCPNIC
import IOTCPNICCore
import Metrics

/// The NIC runtime's counters as swift-metrics metrics, named `iotcp_nic_*`: frames and bytes on the wire,
/// SENDs, segments, retransmitted bytes, disk reads, TLS records sealed, the ECHO delay it reported, the retransmit store's
/// bytes, flows, open files, and stalls (the wire refusing frames, messages waiting for the channel).
///
/// Like `HostMetrics`: call `record(_:)` from the thread that runs the runtime, once an interval.
public final class NICMetrics {
    private var counters: CumulativeCounters<NICRuntime>
    private let echoDelay: Gauge, echoDelayMaximum: Gauge
    private let storeBytes: Gauge, storeBufferedBytes: Gauge, flows: Gauge, openFiles: Gauge, bufferMemory: Gauge
    private var lastEchoes = 0
    private var lastEchoDelayTotal: UInt64 = 0

    /// `dimensions` are added to every metric.
    public init(dimensions: [(String, String)] = []) {
        func gauge(_ name: String) -> Gauge { Gauge(label: "iotcp_nic_\(name)", dimensions: dimensions) }
        counters = CumulativeCounters(prefix: "iotcp_nic_", dimensions: dimensions, [
            "frames_in": { $0.counters.framesIn },
            "frames_out": { $0.counters.framesOut },
            "bytes_in": { $0.counters.bytesIn },
            "bytes_out": { $0.counters.bytesOut },
            "wire_errors": { $0.counters.wireErrors },
            "wire_refusals": { $0.dataPlane.counters.wireRefusals },
            "commands_in": { $0.counters.commandsIn },
            "malformed_commands": { $0.counters.malformedCommands },
            "sends": { $0.dataPlane.counters.sends },
            "segments_out": { $0.dataPlane.counters.packetsOut },
            "retransmitted_bytes": { $0.dataPlane.counters.retransmittedBytes },
            "errors_sent": { $0.dataPlane.counters.errors },
            "disk_reads": { $0.dataPlane.counters.reads },
            "disk_read_bytes": { $0.dataPlane.counters.readBytes },
            "disk_read_failures": { $0.dataPlane.counters.readFailures },
            "buffer_waits": { $0.dataPlane.counters.bufferWaits },
            "echoes": { $0.dataPlane.counters.echoes },
            "tls_flows": { $0.dataPlane.counters.tlsFlows },
            "syn_cookies_sent": { $0.dataPlane.counters.synCookiesSent },
            "handshakes_completed": { $0.dataPlane.counters.handshakesCompleted },
            "cookies_rejected": { $0.dataPlane.counters.cookiesRejected },
            "accepts_deferred": { $0.dataPlane.counters.acceptsDeferred },
            "deferred_accepts_out_of_order": { $0.dataPlane.counters.deferredAcceptsOutOfOrder },
            "deferrals_refused": { $0.dataPlane.counters.deferralsRefused },
            "teardowns": { $0.dataPlane.counters.teardowns },
            "endings_with_data": { $0.dataPlane.counters.endingsWithData },
            "ending_data_resends": { $0.dataPlane.counters.endingDataResends },
            "flows_released": { $0.dataPlane.counters.flowsReleased },
            "fin_retransmissions": { $0.dataPlane.counters.finRetransmissions },
            "endings_abandoned": { $0.dataPlane.counters.closingAbandoned },
            "splices": { $0.dataPlane.counters.splices },
            "spliced_segments": { $0.dataPlane.counters.splicedSegments },
            "spliced_bytes": { $0.dataPlane.counters.splicedBytes },
            "splice_queue_drops": { $0.dataPlane.counters.spliceQueueDrops },
            "tls_records_sealed": { $0.dataPlane.counters.recordsSealed },
            "tls_sealed_bytes": { $0.dataPlane.counters.sealedBytes },
            "channel_stalls": { $0.channelStatistics.heldMessages },
            "channel_dropped_packets": { $0.channelStatistics.droppedPackets },
        ])
        echoDelay = gauge("echo_delay_seconds")
        echoDelayMaximum = gauge("echo_delay_max_seconds")
        storeBytes = gauge("store_bytes")
        storeBufferedBytes = gauge("store_buffered_bytes")
        flows = gauge("flows")
        openFiles = gauge("open_files")
        bufferMemory = gauge("buffer_memory_bytes")
    }

    /// Reads the runtime's counters into the metrics. `echo_delay_seconds` is the mean NIC delay of the
    /// ECHOs since the previous call (unchanged when there were none).
    public func record(_ runtime: NICRuntime) {
        counters.update(from: runtime)
        let plane = runtime.dataPlane.counters
        if plane.echoes > lastEchoes && plane.echoDelayTotal >= lastEchoDelayTotal {
            let mean = Double(plane.echoDelayTotal - lastEchoDelayTotal) / Double(plane.echoes - lastEchoes)
            echoDelay.record(mean / 1e9)
        }
        lastEchoes = plane.echoes
        lastEchoDelayTotal = plane.echoDelayTotal
        echoDelayMaximum.record(Double(plane.echoDelayMaximum) / 1e9)
        let dataPlane = runtime.dataPlane
        storeBytes.record(dataPlane.store.heldBytes)
        storeBufferedBytes.record(dataPlane.store.bufferedBytes)
        flows.record(dataPlane.flowCount)
        openFiles.record(dataPlane.files.openCount)
        bufferMemory.record(dataPlane.pool.allocatedBytes)
    }
}
