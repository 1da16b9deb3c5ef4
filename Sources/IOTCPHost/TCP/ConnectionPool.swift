/// Connection control blocks in one reservation made up front: a slot never moves, nothing is copied
/// in or out to work on one (`pool[slot].method()` mutates in place through its address), and the pages
/// no connection has touched are never made resident.
final class ConnectionPool {
    private let base: UnsafeMutablePointer<TCPConnection>
    let capacity: Int
    /// Unchecked for the same reason as the engine's state (`TCPEngine`): one thread, consulted per packet.
    @exclusivity(unchecked) private var live: [Bool] = []

    init(capacity: Int) {
        self.capacity = capacity
        base = .allocate(capacity: capacity)
        live.reserveCapacity(capacity)
    }

    deinit {
        for slot in live.indices where live[slot] { (base + slot).deinitialize(count: 1) }
        base.deallocate()
    }

    /// Slots handed out so far, live or free.
    var slotCount: Int { live.count }

    @inline(__always)
    func isLive(_ slot: Int) -> Bool { slot >= 0 && slot < live.count && live[slot] }

    /// The control block in `slot`, which must be live.
    subscript(slot: Int) -> TCPConnection {
        @inline(__always) unsafeAddress { UnsafePointer(base + slot) }
        @inline(__always) unsafeMutableAddress { base + slot }
    }

    /// A new slot at the end; nil when the reservation is used up.
    func grow() -> Int? {
        guard live.count < capacity else { return nil }
        live.append(false)
        return live.count - 1
    }

    func insert(_ connection: TCPConnection, at slot: Int) {
        precondition(!live[slot], "slot \(slot) is in use")
        (base + slot).initialize(to: connection)
        live[slot] = true
    }

    func remove(_ slot: Int) {
        guard live[slot] else { return }
        (base + slot).deinitialize(count: 1)
        live[slot] = false
    }
}
