import IOTCPCommon

/// The connection table: control blocks in one reservation made up front, and each slot's generation.
/// A slot never moves, nothing is copied in or out to work on one (`pool[slot].method()` mutates in place
/// through its address), and the pages no connection has touched are never made resident. A freed slot's
/// generation advances, so a handle (or a flow id the NIC answers with) kept past its connection never
/// reaches the next one in that slot.
final class ConnectionPool {
    private let base: UnsafeMutablePointer<TCPConnection>
    let capacity: Int
    /// Unchecked for the same reason as the engine's state (`TCPEngine`): one thread, consulted per packet.
    @exclusivity(unchecked) private var live: [Bool] = []
    @exclusivity(unchecked) private var generations: [UInt32] = []
    @exclusivity(unchecked) private var freeSlots: [Int32] = []
    /// Slots out of use until their flow id comes back from the NIC (`retire`).
    @exclusivity(unchecked) private var retired: [Bool] = []

    init(capacity: Int) {
        self.capacity = capacity
        base = .allocate(capacity: capacity)
        live.reserveCapacity(capacity)
        generations.reserveCapacity(capacity)
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

    /// Asks `body` about the control block in `slot` where it lies. A non-mutating method called through the
    /// subscript copies the whole block first (the addressor promises nothing about the memory's lifetime,
    /// so the compiler takes a copy and retains everything in it): `isWritable` paid that for every event
    /// collected, 2% of the host thread serving 4 KiB with keep-alive (`perf record`).
    @inline(__always)
    func inspect<Result>(_ slot: Int, _ body: (inout TCPConnection) -> Result) -> Result {
        body(&(base + slot).pointee)
    }

    /// A slot for a new connection: a freed one if there is one, else a new one at the end (`slotCount`
    /// grows); nil when the reservation is used up.
    func allocate() -> Int? {
        if let slot = freeSlots.popLast() { return Int(slot) }
        guard live.count < capacity else { return nil }
        live.append(false)
        generations.append(0)
        retired.append(false)
        return live.count - 1
    }

    /// The handle of the connection that is (or will be) in `slot`.
    @inline(__always)
    func handle(of slot: Int) -> TCPHandle { TCPHandle(slot: Int32(slot), generation: generations[slot]) }

    /// Whether `handle` names the live connection in its slot (not an earlier one).
    @inline(__always)
    func isCurrent(_ handle: TCPHandle) -> Bool {
        let slot = Int(handle.slot)
        return isLive(slot) && generations[slot] == handle.generation
    }

    /// The live slot a NIC flow id names, if its generation is the slot's current one.
    @inline(__always)
    func slot(of flow: FlowID) -> Int? {
        let slot = Int(flow.index) - 1
        guard isLive(slot), generations[slot] & FlowID.generationMask == flow.generation else { return nil }
        return slot
    }

    /// Moves `connection` into `slot` (consumed: no copy of the block, no retain of what it holds).
    func insert(_ connection: consuming TCPConnection, at slot: Int) {
        precondition(!live[slot], "slot \(slot) is in use")
        (base + slot).initialize(to: connection)
        live[slot] = true
    }

    /// Frees `slot`: its generation advances and it is handed out again.
    func remove(_ slot: Int) {
        guard live[slot] else { return }
        (base + slot).deinitialize(count: 1)
        live[slot] = false
        generations[slot] &+= 1
        freeSlots.append(Int32(slot))
    }

    /// Slots freed by `retire` and not yet given back.
    private(set) var retiredCount = 0

    /// Frees `slot`'s control block but keeps the slot out of use until `reinstate`: its flow id is still the
    /// NIC's (an ending handed over with data). Returns the handle the connection had.
    func retire(_ slot: Int) -> TCPHandle {
        let handle = handle(of: slot)
        (base + slot).deinitialize(count: 1)
        live[slot] = false
        generations[slot] &+= 1
        retired[slot] = true
        retiredCount += 1
        return handle
    }

    /// The retired slot `flow` names (the flow id the connection had), if it is one.
    func retiredSlot(of flow: FlowID) -> Int? {
        let slot = Int(flow.index) - 1
        guard slot >= 0, slot < retired.count, retired[slot],
              (generations[slot] &- 1) & FlowID.generationMask == flow.generation else { return nil }
        return slot
    }

    /// Whether `handle` names a connection whose slot is retired (not yet given back).
    func isRetired(_ handle: TCPHandle) -> Bool {
        let slot = Int(handle.slot)
        return slot >= 0 && slot < retired.count && retired[slot] && generations[slot] &- 1 == handle.generation
    }

    /// Gives a retired slot back to use; returns the handle its connection had.
    @discardableResult
    func reinstate(_ slot: Int) -> TCPHandle {
        retired[slot] = false
        retiredCount -= 1
        freeSlots.append(Int32(slot))
        return TCPHandle(slot: Int32(slot), generation: generations[slot] &- 1)
    }

    /// Every retired slot, given back (the NIC that held their flows is gone); returns their handles.
    func reinstateAll() -> [TCPHandle] {
        guard retiredCount > 0 else { return [] }
        return retired.indices.filter { retired[$0] }.map { reinstate($0) }
    }
}
