import IOTCPCommon

/// The epoll half of the stack: which sockets are registered for what (with their tokens and trigger
/// modes), and which may be ready. Readiness itself is the stack's to say; this decides what to report.
struct EventRegistrations {
    struct Registration {
        var interests: EventKinds
        var token: UInt64
        var mode: TriggerMode
    }

    private var registrations: [Socket: Registration] = [:]
    /// Sockets that may be ready, with what newly happened to them since they were last reported (the
    /// edges): new events from the engine, and level-triggered sockets reported last time (they stay
    /// until they stop being ready).
    private var candidates: [Socket: EventKinds] = [:]

    /// Whether no socket may be ready (a loop may sleep).
    var nothingPending: Bool { candidates.isEmpty }

    /// Registers (or changes) `socket`; `readyNow` counts as new, as epoll does on registration.
    mutating func register(_ socket: Socket, _ registration: Registration, readyNow: EventKinds) {
        registrations[socket] = registration
        candidates[socket, default: []].formUnion(readyNow)
    }

    mutating func deregister(_ socket: Socket) {
        registrations[socket] = nil
        candidates[socket] = nil
    }

    /// `edges` newly happened to `socket`.
    mutating func mark(_ socket: Socket, _ edges: EventKinds) {
        guard !edges.isEmpty else { return }
        candidates[socket, default: []].formUnion(edges)
    }

    /// Appends the events of registered sockets that are ready (as `readiness` says), up to `maxEvents`:
    /// edge-triggered ones only for what newly happened, level-triggered ones as long as they stay ready.
    mutating func collect(into events: inout [StackEvent], maxEvents: Int, readiness: (Socket) -> EventKinds) {
        for (socket, edges) in candidates {
            guard let registration = registrations[socket] else {
                candidates[socket] = nil
                continue
            }
            var ready = readiness(socket).intersection(registration.interests.union(.always))
            if registration.mode == .edge { ready.formIntersection(edges) }
            if ready.isEmpty || registration.mode == .edge { candidates[socket] = nil } else { candidates[socket] = [] }
            if !ready.isEmpty {
                events.append(.socket(socket, ready, token: registration.token))
                if events.count == maxEvents { return }
            }
        }
    }
}
