/// Round-trip time and retransmission timeout per RFC 6298, in nanoseconds.
///
/// Samples come from the time a byte reached the wire (the NIC's ECHO, or the host's own transmission
/// for packets it builds) to the ACK that covers it, so the NIC's disk and queueing time never inflates
/// the estimate; Karn's rule (no sample across a retransmission) is applied by the caller.
struct RTTEstimator {
    private(set) var smoothed: UInt64 = 0
    private(set) var variation: UInt64 = 0
    private(set) var hasSample = false
    private(set) var timeout: UInt64
    private let minimum: UInt64
    private let maximum: UInt64
    /// Clock granularity G of RFC 6298 §2.
    private let granularity: UInt64 = Nanoseconds.millisecond

    init(initial: UInt64, minimum: UInt64, maximum: UInt64) {
        timeout = initial
        self.minimum = minimum
        self.maximum = maximum
    }

    mutating func addSample(_ rtt: UInt64) {
        if !hasSample {
            smoothed = rtt
            variation = rtt / 2
            hasSample = true
        } else {
            let difference = smoothed > rtt ? smoothed - rtt : rtt - smoothed
            variation = (3 * variation + difference) / 4
            smoothed = (7 * smoothed + rtt) / 8
        }
        timeout = min(max(smoothed + max(granularity, 4 * variation), minimum), maximum)
    }

    /// RFC 6298 §5.5: after a timeout, the next one waits twice as long.
    mutating func backOff() {
        timeout = min(timeout * 2, maximum)
    }
}
