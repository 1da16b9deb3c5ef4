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
    private var counters: CumulativeCounters<IOTCPStack>

    /// `dimensions` are added to every metric (to tell several stacks in one process apart).
    public init(dimensions: [(String, String)] = []) {
        var byState: [TCPState: Gauge] = [:]
        for state in TCPState.allCases {
            byState[state] = Gauge(label: "iotcp_host_connections", dimensions: dimensions + [("state", state.rawValue)])
        }
        connections = byState
        offloadedFiles = Gauge(label: "iotcp_host_offloaded_files", dimensions: dimensions)
        counters = CumulativeCounters(prefix: "iotcp_host_", dimensions: dimensions, [
            "segments_received": { $0.engine.statistics.segmentsReceived },
            "malformed_packets": { $0.engine.statistics.malformedPackets },
            "bad_checksums": { $0.engine.statistics.badChecksums },
            "resets_sent": { $0.engine.statistics.resetsSent },
            "syn_cookies_sent": { $0.engine.statistics.synCookiesSent },
            "syn_cookies_accepted": { $0.engine.statistics.synCookiesAccepted },
            "syn_cookies_rejected": { $0.engine.statistics.synCookiesRejected },
            "handshakes_from_nic": { $0.engine.statistics.handshakesFromNIC },
            "refused_handshakes": { $0.engine.statistics.refusedHandshakes },
            "accept_queue_overflows": { $0.engine.statistics.acceptQueueOverflows },
            "connections_opened": { $0.engine.statistics.connectionsOpened },
            "connections_closed": { $0.engine.statistics.connectionsClosed },
            "syns_dropped_at_listener": { $0.engine.statistics.droppedAtListener },
            "retransmission_timeouts": { $0.engine.lossRecovery.timeouts },
            "fast_recoveries": { $0.engine.lossRecovery.fastRecoveries },
            "loss_probes": { $0.engine.lossRecovery.lossProbes },
            "loss_probe_repairs": { $0.engine.lossRecovery.lossProbeRepairs },
            "lost_retransmissions": { $0.engine.lossRecovery.lostRetransmissions },
            "reordering_window_losses": { $0.engine.lossRecovery.reorderingWindowLosses },
            "sack_renegings": { $0.engine.lossRecovery.sackRenegings },
            "nic_errors": { $0.statistics.nicErrors },
            "malformed_commands": { $0.statistics.malformedCommands },
            "channel_messages_in": { $0.statistics.messagesIn },
            "channel_messages_out": { $0.channelStatistics.messages },
            "channel_stalls": { $0.channelStatistics.heldMessages },
        ])
    }

    /// Reads the stack's counters into the metrics. Walks the connection table (for the states and the
    /// open connections' recoveries): call it once an interval, not per event.
    public func record(_ stack: IOTCPStack) {
        let counts = stack.engine.connectionsByState
        for (state, gauge) in connections { gauge.record(counts[state] ?? 0) }
        offloadedFiles.record(stack.openFileCount)
        counters.update(from: stack)
    }
}
