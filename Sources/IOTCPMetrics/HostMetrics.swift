import IOTCPHost
import Metrics

/// The host stack's counters as swift-metrics metrics, named `iotcp_host_*`: connections by state,
/// retransmissions, SYN cookies, resets, NIC errors, malformed commands, offloaded files and channel stalls.
///
/// The stack is single-threaded and keeps its counts in plain integers; call `record(_:)` from the thread
/// that owns it, as often as the metrics should be fresh (the file server does once a second). Whatever
/// backend the process bootstrapped (`MetricsSystem.bootstrap`) receives them; with none, they cost nothing.
///
/// ```swift
/// let metrics = HostMetrics()
/// // in the event loop, at most once a second:
/// metrics.record(stack)
/// ```
public final class HostMetrics {
    private let connections: [TCPState: Gauge]
    private let offloadedFiles: Gauge
    private var segmentsReceived, malformedPackets, badChecksums, resetsSent: CumulativeCounter
    private var synCookiesSent, synCookiesAccepted, synCookiesRejected: CumulativeCounter
    private var connectionsOpened, connectionsClosed, droppedAtListener: CumulativeCounter
    private var retransmissionTimeouts, fastRecoveries: CumulativeCounter
    private var nicErrors, malformedCommands, messagesIn, messagesOut, channelStalls: CumulativeCounter

    /// `dimensions` are added to every metric (to tell several stacks in one process apart).
    public init(dimensions: [(String, String)] = []) {
        func counter(_ name: String) -> CumulativeCounter { CumulativeCounter("iotcp_host_\(name)_total", dimensions: dimensions) }
        var byState: [TCPState: Gauge] = [:]
        for state in TCPState.allCases {
            byState[state] = Gauge(label: "iotcp_host_connections", dimensions: dimensions + [("state", state.rawValue)])
        }
        connections = byState
        offloadedFiles = Gauge(label: "iotcp_host_offloaded_files", dimensions: dimensions)
        segmentsReceived = counter("segments_received")
        malformedPackets = counter("malformed_packets")
        badChecksums = counter("bad_checksums")
        resetsSent = counter("resets_sent")
        synCookiesSent = counter("syn_cookies_sent")
        synCookiesAccepted = counter("syn_cookies_accepted")
        synCookiesRejected = counter("syn_cookies_rejected")
        connectionsOpened = counter("connections_opened")
        connectionsClosed = counter("connections_closed")
        droppedAtListener = counter("syns_dropped_at_listener")
        retransmissionTimeouts = counter("retransmission_timeouts")
        fastRecoveries = counter("fast_recoveries")
        nicErrors = counter("nic_errors")
        malformedCommands = counter("malformed_commands")
        messagesIn = counter("channel_messages_in")
        messagesOut = counter("channel_messages_out")
        channelStalls = counter("channel_stalls")
    }

    /// Reads the stack's counters into the metrics. Walks the connection table (for the states): call it
    /// once an interval, not per event.
    public func record(_ stack: IOTCPStack) {
        let counts = stack.engine.connectionsByState
        for (state, gauge) in connections { gauge.record(counts[state] ?? 0) }
        offloadedFiles.record(stack.openFileCount)
        let tcp = stack.engine.statistics
        segmentsReceived.update(tcp.segmentsReceived)
        malformedPackets.update(tcp.malformedPackets)
        badChecksums.update(tcp.badChecksums)
        resetsSent.update(tcp.resetsSent)
        synCookiesSent.update(tcp.synCookiesSent)
        synCookiesAccepted.update(tcp.synCookiesAccepted)
        synCookiesRejected.update(tcp.synCookiesRejected)
        connectionsOpened.update(tcp.connectionsOpened)
        connectionsClosed.update(tcp.connectionsClosed)
        droppedAtListener.update(tcp.droppedAtListener)
        let recovery = stack.engine.lossRecovery
        retransmissionTimeouts.update(recovery.timeouts)
        fastRecoveries.update(recovery.fastRecoveries)
        nicErrors.update(stack.statistics.nicErrors)
        malformedCommands.update(stack.statistics.malformedCommands)
        messagesIn.update(stack.statistics.messagesIn)
        let channel = stack.channelStatistics
        messagesOut.update(channel.messages)
        channelStalls.update(channel.heldMessages)
    }
}
