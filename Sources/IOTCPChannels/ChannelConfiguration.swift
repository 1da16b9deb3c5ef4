/// The shape of a channel's rings and how a receiver waits.
public struct ChannelConfiguration: Hashable, Sendable {
    /// Messages that can be in flight in each direction; a power of two.
    public var slotCount: Int
    /// The largest message, header included.
    public var slotBytes: Int
    public var waiting: Waiting

    public enum Waiting: Hashable, Sendable {
        /// The receiver sleeps on an eventfd, which the sender rings only when the receiver said it sleeps.
        case doorbell
        /// The receiver spins and the sender never makes a system call: lowest latency, one core busy.
        case busyPoll
    }

    public init(slotCount: Int = 64, slotBytes: Int = 64 * 1024, waiting: Waiting = .doorbell) {
        self.slotCount = slotCount
        self.slotBytes = slotBytes
        self.waiting = waiting
    }

    /// Why this configuration cannot be used, or nil.
    public var validationFailure: String? {
        if slotCount < 2 || slotCount > 1 << 16 || slotCount & (slotCount - 1) != 0 {
            return "slot count \(slotCount) must be a power of two from 2 to 65536"
        }
        if slotBytes < 256 || slotBytes > 16 << 20 || slotBytes % 64 != 0 {
            return "slot size \(slotBytes) must be a multiple of 64 from 256 bytes to 16 MiB"
        }
        return nil
    }

    var ringBytes: Int { SlotRingLayout.byteCount(slotCount: slotCount, slotBytes: slotBytes) }
}
