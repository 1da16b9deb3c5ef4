import Atomics

/// The memory of one direction of a channel: a single-producer single-consumer ring of fixed-size
/// message slots, preceded by four control words on cache lines of their own (so the producer's and
/// the consumer's writes never share a line).
///
/// Indices only grow (64 bits do not wrap in the life of a machine), so `produced - consumed` is the
/// number of messages in flight and a full ring is told apart from an empty one without a spare slot.
/// The layout is plain memory: the same code serves a private allocation (in-process) and a mapping
/// shared between two processes.
enum SlotRingLayout {
    static let producerIndexOffset = 0
    static let consumerIndexOffset = 64
    static let consumerWaitingOffset = 128
    static let producerClosedOffset = 192
    static let slotsOffset = 256

    static func byteCount(slotCount: Int, slotBytes: Int) -> Int { slotsOffset + slotCount * slotBytes }
}

/// The atomics of a ring, bound to its memory.
struct SlotRingControl {
    let base: UnsafeMutableRawPointer
    let slotCount: UInt64
    let slotBytes: Int

    init(base: UnsafeMutableRawPointer, slotCount: Int, slotBytes: Int) {
        precondition(slotCount > 0 && slotCount & (slotCount - 1) == 0, "slot count must be a power of two")
        self.base = base
        self.slotCount = UInt64(slotCount)
        self.slotBytes = slotBytes
    }

    @inline(__always)
    private func word(_ offset: Int) -> UnsafeAtomic<UInt64> {
        UnsafeAtomic(at: (base + offset).assumingMemoryBound(to: UInt64.AtomicRepresentation.self))
    }

    var producerIndex: UnsafeAtomic<UInt64> { word(SlotRingLayout.producerIndexOffset) }
    var consumerIndex: UnsafeAtomic<UInt64> { word(SlotRingLayout.consumerIndexOffset) }
    /// Non-zero while the consumer sleeps on its doorbell: the producer must ring it.
    var consumerWaiting: UnsafeAtomic<UInt64> { word(SlotRingLayout.consumerWaitingOffset) }
    /// Non-zero once the producer has closed its end.
    var producerClosed: UnsafeAtomic<UInt64> { word(SlotRingLayout.producerClosedOffset) }

    @inline(__always)
    func slot(_ index: UInt64) -> UnsafeMutableRawBufferPointer {
        let start = base + SlotRingLayout.slotsOffset + Int(index & (slotCount - 1)) * slotBytes
        return UnsafeMutableRawBufferPointer(start: start, count: slotBytes)
    }

    /// Zeroes the control words; for memory that is not already zero-filled.
    func initialize() {
        for offset in [SlotRingLayout.producerIndexOffset, SlotRingLayout.consumerIndexOffset,
                       SlotRingLayout.consumerWaitingOffset, SlotRingLayout.producerClosedOffset] {
            (base + offset).initializeMemory(as: UInt64.AtomicRepresentation.self, repeating: .init(0), count: 1)
        }
    }
}

/// The producer's side of a ring. It keeps its own index and a cached copy of the consumer's, so a
/// send that finds room touches no shared cache line but the one it publishes to.
struct SlotRingProducer {
    let control: SlotRingControl
    private var produced: UInt64 = 0
    private var knownConsumed: UInt64 = 0

    init(control: SlotRingControl) {
        self.control = control
        produced = control.producerIndex.load(ordering: .relaxed)
        knownConsumed = control.consumerIndex.load(ordering: .acquiring)
    }

    /// The next free slot, or nil when the consumer has not freed one.
    @inline(__always)
    mutating func nextFreeSlot() -> UnsafeMutableRawBufferPointer? {
        if produced &- knownConsumed == control.slotCount {
            knownConsumed = control.consumerIndex.load(ordering: .acquiring)
            if produced &- knownConsumed == control.slotCount { return nil }
        }
        return control.slot(produced)
    }

    /// Publishes the slot `nextFreeSlot` returned.
    @inline(__always)
    mutating func publish() {
        produced &+= 1
        control.producerIndex.store(produced, ordering: .releasing)
    }
}

/// The consumer's side of a ring. It reads the producer's index once per batch (`available`), then
/// takes that many messages without touching the producer's cache line again.
struct SlotRingConsumer {
    let control: SlotRingControl
    private var consumed: UInt64 = 0

    init(control: SlotRingControl) {
        self.control = control
        consumed = control.consumerIndex.load(ordering: .relaxed)
    }

    /// Messages published and not yet released.
    @inline(__always)
    func available() -> UInt64 {
        control.producerIndex.load(ordering: .acquiring) &- consumed
    }

    /// The `n`th message not yet released (0 is the oldest). Only valid for `n < available()`.
    @inline(__always)
    func message(_ n: UInt64) -> UnsafeMutableRawBufferPointer { control.slot(consumed &+ n) }

    /// Frees the oldest `count` slots for the producer.
    @inline(__always)
    mutating func release(_ count: UInt64) {
        consumed &+= count
        control.consumerIndex.store(consumed, ordering: .releasing)
    }
}
