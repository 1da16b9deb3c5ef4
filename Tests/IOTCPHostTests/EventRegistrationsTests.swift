import IOTCPCommon
import Testing
@testable import IOTCPHost

/// The event queue's bookkeeping on its own: registrations by slot, candidates, trigger modes, stale sockets.
@Suite("Event registrations")
struct EventRegistrationsTests {
    func socket(_ slot: Int32, _ generation: UInt32 = 1) -> Socket { Socket(connection: TCPHandle(slot: slot, generation: generation)) }

    /// Collects with `ready` as the readiness of every socket; returns (socket, kinds, token) triples.
    func collect(_ registrations: inout EventRegistrations, maxEvents: Int = 100, ready: [Socket: EventKinds]) -> [(Socket, EventKinds, UInt64)] {
        var events: [StackEvent] = []
        registrations.collect(into: &events, maxEvents: maxEvents) { ready[$0] ?? [] }
        return events.compactMap { if case .socket(let socket, let kinds, let token) = $0 { (socket, kinds, token) } else { nil } }
    }

    @Test("level-triggered: reported while ready, each socket once per collect, even when re-registered before it")
    func level() {
        var registrations = EventRegistrations()
        let a = socket(3), b = socket(70)
        registrations.register(a, .init(interests: .readable, token: 1, mode: .level), readyNow: .readable)
        registrations.register(b, .init(interests: [.readable, .writable], token: 2, mode: .level), readyNow: [])
        registrations.register(a, .init(interests: [.readable, .writable], token: 11, mode: .level), readyNow: .readable)
        registrations.mark(a, .readable)
        var events = collect(&registrations, ready: [a: [.readable, .writable], b: .writable])
        #expect(events.count == 2)
        #expect(events.contains { $0.0 == a && $0.1 == [.readable, .writable] && $0.2 == 11 })
        #expect(events.contains { $0.0 == b && $0.1 == .writable && $0.2 == 2 })
        events = collect(&registrations, ready: [a: .readable])
        #expect(events.count == 1 && events[0].0 == a, "still ready: again; b no longer ready: dropped")
        events = collect(&registrations, ready: [:])
        #expect(events.isEmpty && registrations.nothingPending)
    }

    @Test("edge-triggered: only what newly happened, once")
    func edge() {
        var registrations = EventRegistrations()
        let a = socket(1)
        registrations.register(a, .init(interests: [.readable, .writable], token: 5, mode: .edge), readyNow: .writable)
        #expect(collect(&registrations, ready: [a: [.readable, .writable]]).map(\.1) == [.writable])
        #expect(collect(&registrations, ready: [a: [.readable, .writable]]).isEmpty && registrations.nothingPending)
        registrations.mark(a, .readable)
        registrations.mark(a, .readable)
        #expect(collect(&registrations, ready: [a: [.readable, .writable]]).map(\.1) == [.readable])
        registrations.mark(a, .hangUp)
        #expect(collect(&registrations, ready: [a: .hangUp]).map(\.1) == [.hangUp], "hang-ups come whatever the interests")
    }

    @Test("a stale socket (its slot reused) and a deregistered one report nothing; the new connection in the slot does")
    func staleAndDeregistered() {
        var registrations = EventRegistrations()
        let old = socket(4, 1), new = socket(4, 2), gone = socket(5)
        registrations.register(old, .init(interests: .readable, token: 1, mode: .level), readyNow: .readable)
        registrations.register(gone, .init(interests: .readable, token: 2, mode: .level), readyNow: .readable)
        registrations.deregister(old)
        registrations.deregister(gone)
        registrations.mark(gone, .readable)
        registrations.register(new, .init(interests: .readable, token: 3, mode: .level), readyNow: [])
        registrations.mark(new, .readable)
        registrations.mark(old, .readable)
        let events = collect(&registrations, ready: [old: .readable, new: .readable, gone: .readable])
        #expect(events.count == 1 && events[0].0 == new && events[0].2 == 3)
        // Registered again after it was dropped: queued again.
        registrations.register(gone, .init(interests: .readable, token: 4, mode: .level), readyNow: .readable)
        #expect(collect(&registrations, ready: [gone: .readable, new: .readable]).map(\.2).sorted() == [3, 4])
    }

    @Test("maxEvents: those not reached come first next time, before the level-triggered ones already reported")
    func fairness() {
        var registrations = EventRegistrations()
        let sockets = (0..<6).map { socket(Int32($0)) }
        var ready: [Socket: EventKinds] = [:]
        for (index, socket) in sockets.enumerated() {
            registrations.register(socket, .init(interests: .readable, token: UInt64(index), mode: .level), readyNow: .readable)
            ready[socket] = .readable
        }
        let first = collect(&registrations, maxEvents: 4, ready: ready).map(\.2)
        #expect(first == [0, 1, 2, 3])
        let second = collect(&registrations, maxEvents: 4, ready: ready).map(\.2)
        #expect(second == [4, 5, 0, 1], "the two left over first")
    }

    @Test("listeners: marked only while registered")
    func listeners() {
        var registrations = EventRegistrations()
        let listener = Socket(listener: 80)
        registrations.mark(listener, .acceptable)
        #expect(registrations.nothingPending)
        registrations.register(listener, .init(interests: .acceptable, token: 0, mode: .level), readyNow: [])
        registrations.mark(listener, .acceptable)
        #expect(collect(&registrations, ready: [listener: .acceptable]).map(\.1) == [.acceptable])
        registrations.deregister(listener)
        registrations.mark(listener, .acceptable)
        #expect(collect(&registrations, ready: [listener: .acceptable]).isEmpty)
        // Queued, closed and listening again before the next collect: reported once, every time.
        registrations.register(listener, .init(interests: .acceptable, token: 0, mode: .level), readyNow: .acceptable)
        registrations.deregister(listener)
        registrations.register(listener, .init(interests: .acceptable, token: 9, mode: .level), readyNow: .acceptable)
        #expect(collect(&registrations, ready: [listener: .acceptable]).map(\.2) == [9])
        #expect(collect(&registrations, ready: [listener: .acceptable]).map(\.2) == [9])
    }
}
