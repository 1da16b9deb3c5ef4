import IOTCPCommon

/// The epoll half of the stack: which sockets are registered for what (with their tokens and trigger
/// modes), and which may be ready. Readiness itself is the stack's to say; this decides what to report.
///
/// Connections are kept by their slot in an array, not hashed: a short request registers, is marked,
/// collected and deregistered a few times each, and hashing sockets for all of that was a few percent of
/// the host's CPU. Listeners are few and stay in dictionaries.
struct EventRegistrations {
    struct Registration {
        var interests: EventKinds
        var token: UInt64
        var mode: TriggerMode
    }

    /// A registered connection: its handle (the slot may hold a newer connection than a stale socket's),
    /// what newly happened to it since it was last reported (the edges), and whether it is in `candidates`.
    private struct ConnectionEntry {
        var handle: TCPHandle
        var registration: Registration?
        var edges: EventKinds = []
        var isCandidate = false
    }

    private var connections: [ConnectionEntry?] = []
    private var listeners: [UInt16: Registration] = [:]
    private var listenerEdges: [UInt16: EventKinds] = [:]
    /// Registered sockets that may be ready, each once, in the order they became so: new events from the
    /// engine, and level-triggered sockets reported last time (they stay until they stop being ready).
    private var candidates: [Socket] = []
    /// Scratch for `collect`, kept for its capacity.
    private var stillReady: [Socket] = []

    /// Whether no socket may be ready (a loop may sleep).
    var nothingPending: Bool { candidates.isEmpty }

    /// Registers (or changes) `socket`; `readyNow` counts as new, as epoll does on registration.
    mutating func register(_ socket: Socket, _ registration: Registration, readyNow: EventKinds) {
        switch socket.kind {
        case .listener(let port):
            listeners[port] = registration
            markListener(port, readyNow)
        case .connection(let handle):
            let slot = Int(handle.slot)
            if connections.count <= slot { connections.append(contentsOf: repeatElement(nil, count: slot + 1 - connections.count)) }
            if connections[slot]?.handle != handle { connections[slot] = ConnectionEntry(handle: handle) }
            connections[slot]!.registration = registration
            markConnection(handle, readyNow)
        }
    }

    mutating func deregister(_ socket: Socket) {
        switch socket.kind {
        case .listener(let port):
            listeners[port] = nil
            // Still in `candidates` if it was: it stays marked as such (dropped when collected), so registering
            // again before then does not queue it twice.
            if listenerEdges[port] != nil { listenerEdges[port] = [] }
        case .connection(let handle):
            let slot = Int(handle.slot)
            guard slot < connections.count, connections[slot]?.handle == handle else { return }
            // The entry stays, unregistered, so a socket still in `candidates` is not queued twice if it is
            // registered again before it is collected (then dropped).
            connections[slot]!.registration = nil
            connections[slot]!.edges = []
        }
    }

    /// `edges` newly happened to `socket`; nothing to do unless it is registered.
    mutating func mark(_ socket: Socket, _ edges: EventKinds) {
        guard !edges.isEmpty else { return }
        switch socket.kind {
        case .listener(let port): if listeners[port] != nil { markListener(port, edges) }
        case .connection(let handle): markConnection(handle, edges)
        }
    }

    private mutating func markConnection(_ handle: TCPHandle, _ edges: EventKinds) {
        let slot = Int(handle.slot)
        guard slot < connections.count, connections[slot]?.handle == handle, connections[slot]!.registration != nil else { return }
        connections[slot]!.edges.formUnion(edges)
        if !connections[slot]!.isCandidate {
            connections[slot]!.isCandidate = true
            candidates.append(Socket(connection: handle))
        }
    }

    private mutating func markListener(_ port: UInt16, _ edges: EventKinds) {
        if let queued = listenerEdges[port] {
            listenerEdges[port] = queued.union(edges)
        } else {
            listenerEdges[port] = edges
            candidates.append(Socket(listener: port))
        }
    }

    /// Appends the events of registered sockets that are ready (as `readiness` says), up to `maxEvents`:
    /// edge-triggered ones only for what newly happened, level-triggered ones as long as they stay ready.
    /// Candidates left when `maxEvents` is reached come first next time.
    mutating func collect(into events: inout [StackEvent], maxEvents: Int, readiness: (Socket) -> EventKinds) {
        guard !candidates.isEmpty else { return }
        stillReady.removeAll(keepingCapacity: true)
        var index = 0
        while index < candidates.count, events.count < maxEvents {
            let socket = candidates[index]
            index += 1
            guard let (registration, edges) = takeEdges(of: socket) else { continue }
            var ready = readiness(socket).intersection(registration.interests.union(.always))
            if registration.mode == .edge { ready.formIntersection(edges) }
            if !ready.isEmpty { events.append(.socket(socket, ready, token: registration.token)) }
            if !ready.isEmpty && registration.mode == .level {
                stillReady.append(socket)
            } else {
                leaveCandidates(socket)
            }
        }
        // Those not looked at yet go first next time, then the level-triggered ones that stay ready.
        candidates.removeFirst(index)
        candidates.append(contentsOf: stillReady)
    }

    /// A candidate's registration and edges (cleared), nil when it is no longer registered (dropped).
    private mutating func takeEdges(of socket: Socket) -> (Registration, EventKinds)? {
        switch socket.kind {
        case .listener(let port):
            guard let registration = listeners[port], let edges = listenerEdges[port] else {
                listenerEdges[port] = nil
                return nil
            }
            listenerEdges[port] = []
            return (registration, edges)
        case .connection(let handle):
            let slot = Int(handle.slot)
            // The slot may hold a newer connection than this stale socket: its own entry is queued apart.
            guard slot < connections.count, connections[slot]?.handle == handle else { return nil }
            guard let registration = connections[slot]!.registration else {
                connections[slot]!.isCandidate = false  // deregistered since it was queued
                return nil
            }
            let edges = connections[slot]!.edges
            connections[slot]!.edges = []
            return (registration, edges)
        }
    }

    private mutating func leaveCandidates(_ socket: Socket) {
        switch socket.kind {
        case .listener(let port): listenerEdges[port] = nil
        case .connection(let handle): connections[Int(handle.slot)]?.isCandidate = false
        }
    }
}
