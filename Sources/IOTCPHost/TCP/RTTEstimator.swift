import IOTCPCommon

/// Round-trip time and retransmission timeout per RFC 6298, in nanoseconds.
///
/// Samples come from the time a byte reached the wire (the NIC's ECHO, or the host's own transmission
/// for packets it builds) to the ACK that covers it, so the NIC's disk and queueing time never inflates
/// the estimate; Karn's rule (no sample across a retransmission) is applied by the caller.
struct RTTEstimator {
    private(set) var smoothed: UInt64 = 0
    private(set) var variation: UInt64 = 0
    private(set) var timeout: UInt64
    var hasSample: Bool { smoothed != 0 || variation != 0 }
    /// Clock granularity G of RFC 6298 §2.
    private static let granularity: UInt64 = Nanoseconds.millisecond

    init(initial: UInt64) { timeout = initial }

    /// The bounds come from the configuration, not from each connection's memory.
    mutating func addSample(_ rtt: UInt64, configuration: TCPConfiguration) {
        let sample = max(rtt, 1)
        if !hasSample {
            smoothed = sample
            variation = sample / 2
        } else {
            let difference = smoothed > sample ? smoothed - sample : sample - smoothed
            variation = (3 * variation + difference) / 4
            smoothed = (7 * smoothed + sample) / 8
        }
        timeout = min(max(smoothed + max(Self.granularity, 4 * variation), configuration.minimumRetransmissionTimeout),
                      configuration.maximumRetransmissionTimeout)
    }

    /// RFC 6298 §5.7: a connection whose SYN (or SYN-ACK) had to be sent again starts its data with an RTO
    /// of 3 s when no RTT was measured, not with the handshake's backed-off value.
    mutating func restartAfterSynTimeout() {
        guard !hasSample else { return }
        timeout = 3 * Nanoseconds.second
    }

    /// RFC 6298 §5.5: after a timeout, the next one waits twice as long.
    mutating func backOff(configuration: TCPConfiguration) {
        timeout = min(timeout * 2, configuration.maximumRetransmissionTimeout)
    }
}
