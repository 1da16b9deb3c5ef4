import IOTCPNIC
import IOTCPNICCore
import Metrics

/// The NIC runtime's counters as swift-metrics metrics, named `iotcp_nic_*`: frames and bytes on the wire,
/// SENDs, segments, retransmitted bytes, disk reads, the ECHO delay it reported, the retransmit store's
/// bytes, flows, open files, and stalls (the wire refusing frames, messages waiting for the channel).
///
/// Like `HostMetrics`: call `record(_:)` from the thread that runs the runtime, once an interval.
public final class NICMetrics {
    private var framesIn, framesOut, bytesIn, bytesOut, wireErrors, wireRefusals: CumulativeCounter
    private var commandsIn, malformedCommands, sends, segmentsOut, retransmittedBytes, errors: CumulativeCounter
    private var reads, readBytes, readFailures, bufferWaits, echoes, channelStalls, droppedPackets: CumulativeCounter
    private let echoDelay: Gauge, echoDelayMaximum: Gauge
    private let storeBytes: Gauge, storeBufferedBytes: Gauge, flows: Gauge, openFiles: Gauge, bufferMemory: Gauge
    private var lastEchoes = 0
    private var lastEchoDelayTotal: UInt64 = 0

    /// `dimensions` are added to every metric.
    public init(dimensions: [(String, String)] = []) {
        func counter(_ name: String) -> CumulativeCounter { CumulativeCounter("iotcp_nic_\(name)_total", dimensions: dimensions) }
        func gauge(_ name: String) -> Gauge { Gauge(label: "iotcp_nic_\(name)", dimensions: dimensions) }
        framesIn = counter("frames_in")
        framesOut = counter("frames_out")
        bytesIn = counter("bytes_in")
        bytesOut = counter("bytes_out")
        wireErrors = counter("wire_errors")
        wireRefusals = counter("wire_refusals")
        commandsIn = counter("commands_in")
        malformedCommands = counter("malformed_commands")
        sends = counter("sends")
        segmentsOut = counter("segments_out")
        retransmittedBytes = counter("retransmitted_bytes")
        errors = counter("errors_sent")
        reads = counter("disk_reads")
        readBytes = counter("disk_read_bytes")
        readFailures = counter("disk_read_failures")
        bufferWaits = counter("buffer_waits")
        echoes = counter("echoes")
        channelStalls = counter("channel_stalls")
        droppedPackets = counter("channel_dropped_packets")
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
        let wire = runtime.counters, plane = runtime.dataPlane.counters, channel = runtime.channelStatistics
        framesIn.update(wire.framesIn)
        framesOut.update(wire.framesOut)
        bytesIn.update(wire.bytesIn)
        bytesOut.update(wire.bytesOut)
        wireErrors.update(wire.wireErrors)
        wireRefusals.update(plane.wireRefusals)
        commandsIn.update(wire.commandsIn)
        malformedCommands.update(wire.malformedCommands)
        sends.update(plane.sends)
        segmentsOut.update(plane.packetsOut)
        retransmittedBytes.update(plane.retransmittedBytes)
        errors.update(plane.errors)
        reads.update(plane.reads)
        readBytes.update(plane.readBytes)
        readFailures.update(plane.readFailures)
        bufferWaits.update(plane.bufferWaits)
        echoes.update(plane.echoes)
        channelStalls.update(channel.heldMessages)
        droppedPackets.update(channel.droppedPackets)
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
