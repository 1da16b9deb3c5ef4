import IOTCPCommon

/// Keeps the queue of frames in front of the NIC short when relayed (spliced) data stands in it.
///
/// When the NIC is the bottleneck of spliced traffic, the senders behind it (backends, clients) fill the
/// kernel's queue toward the NIC, and that queue is deep on purpose (10,000 frames, so that a thousand
/// clients connecting at once lose no SYN). A standing queue there is worse than slow: Linux cuts a
/// flow's TSO frames to about a millisecond of its pacing rate, which is its window over the round trip,
/// so a long queue makes every sender hand over frames of two segments, each costing the NIC a read and a
/// write, and the NIC falls further behind: a stable state of small frames and long delays. iotcp-proxy
/// with 100 clients each fetching 500 KiB on a new connection made about 200 requests a second there.
///
/// Drops break it, but only drops that keep the queue short: spread over time (CoDel's control law) or at
/// random (RED) they left the queue, the round trip (20-30 ms) and the rate as they were, while cutting the
/// kernel's queue to 100 frames made 1,900 requests a second, at the price of SYNs and ACKs dropped with
/// the data. So this is a tail drop for relayed data alone, at a queue of `limitFrames`, and only while the
/// queue is standing: a turn that read more than `targetFrames` frames found that many waiting (the
/// TAP tells no sojourn times), and a queue is standing once every turn for `interval` found so (CoDel's
/// test), so a burst is never cut. Handshakes, pure ACKs, FINs and RSTs are never dropped here.
public struct StandingQueueControl: Sendable {
    /// How long the queue must stay above target before it counts as standing.
    public static let interval: UInt64 = 100 * Nanoseconds.millisecond
    /// Frames read in one turn past which the queue was above target.
    public static let targetFrames = 64
    /// While the queue stands, relayed data read past this many frames in a turn is dropped, as a queue
    /// this long would drop it; 0 never drops (a capture that must show every byte crossing, say).
    public static let defaultLimitFrames = 100
    public let limitFrames: Int

    /// When the queue, above target at every turn since, counts as standing; nil while it is not above target.
    private var standingFrom: Instant?
    /// Whether the queue is standing (above target at every turn for `interval`).
    public private(set) var isStanding = false
    /// The place in the turn's batch of the frame being handled (1 for the first).
    public private(set) var position = 0

    public init(limitFrames: Int = Self.defaultLimitFrames) { self.limitFrames = max(limitFrames, 0) }

    /// A frame was read from the wire, before it is handled.
    public mutating func frameRead() { position += 1 }

    /// After each turn's read of the wire: the frames it read (`position`; the runtime stops at its batch
    /// limit) tell whether the queue was above target, and the next turn starts at the first frame again.
    public mutating func turnRead(now: Instant) {
        let frames = position
        position = 0
        guard frames > Self.targetFrames else {
            standingFrom = nil
            isStanding = false
            return
        }
        if let standingFrom {
            if now >= standingFrom { isStanding = true }
        } else {
            standingFrom = now + Self.interval
        }
    }

    /// Whether relayed data in hand now should be dropped.
    public var dropsRelayedData: Bool { isStanding && limitFrames > 0 && position > limitFrames }
}
