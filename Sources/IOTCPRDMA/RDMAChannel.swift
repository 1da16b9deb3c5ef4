internal import CRDMA
import Glibc
import IOTCPChannels
import IOTCPCommon
import IOTCPSystem

/// The command channel over RDMA verbs: host and NIC on two machines (or a host and its SmartNIC), each
/// direction a reliable-connected queue pair's SENDs, set up with rdma_cm.
///
/// The NIC side listens (`listen(on:)`, then `accept`); the host connects (`connect(to:)`), proposing the
/// queue depth and message size, which the NIC accepts or rejects with a reason. Queue pairs are set up
/// with no receiver-not-ready retries: the credit window guarantees a posted receive for every SEND, and
/// a bug that broke that would surface as an error rather than as stalls.
public typealias RDMAChannelEnd = QueuePairChannelEnd<VerbsQueuePair>

public enum RDMAChannel {
    /// The host side: connects to the NIC stack at `endpoint`, from the local address `source` (nil: the
    /// route decides), retrying while the NIC may still be starting, until `timeoutNanoseconds` pass.
    public static func connect(
        to endpoint: RDMAEndpoint, from source: String? = nil,
        configuration: ChannelConfiguration = ChannelConfiguration(slotCount: 64, slotBytes: 64 * 1024),
        timeoutNanoseconds: Int64 = 10_000_000_000
    ) throws(ChannelError) -> RDMAChannelEnd {
        if let failure = configuration.validationFailure { throw .setup(failure) }
        guard configuration.slotCount > CreditWindow.controlReserve + 1 else {
            throw .setup("an RDMA channel needs more than \(CreditWindow.controlReserve + 1) buffers")
        }
        var sourceAddress: RDMASocketAddress?
        if let source {
            guard let address = IPAddress(source), address.isIPv4 == endpoint.address.isIPv4 else {
                throw .setup("the RDMA source \(source) is not an address of \(endpoint)'s family")
            }
            sourceAddress = RDMASocketAddress(RDMAEndpoint(address: address, port: 0))
        }
        let deadline = monotonicNanoseconds() + timeoutNanoseconds
        var lastReason = "no attempt finished"
        while true {
            let remaining = deadline - monotonicNanoseconds()
            if remaining <= 0 { throw .timedOut("connecting to the NIC stack at \(endpoint): \(lastReason)") }
            switch try attempt(endpoint, source: sourceAddress, configuration: configuration, within: remaining) {
            case .connected(let channel):
                return channel
            case .retry(let reason):
                lastReason = reason
                usleep(100_000)
            case .fail(let reason):
                throw .setup("connecting to the NIC stack at \(endpoint): \(reason)")
            }
        }
    }

    private enum AttemptResult {
        case connected(RDMAChannelEnd)
        case retry(String)
        case fail(String)
    }

    private static func attempt(
        _ endpoint: RDMAEndpoint, source: RDMASocketAddress?, configuration: ChannelConfiguration, within nanoseconds: Int64
    ) throws(ChannelError) -> AttemptResult {
        let stepLimit = min(nanoseconds, 5_000_000_000)
        let (events, id) = try makeIdentifier()
        // Until the queue pair exists the identifier and channel are ours to free; then it owns them.
        func abandon() {
            drain(events)
            rdma_destroy_id(id)
            rdma_destroy_event_channel(events)
        }
        var destination = RDMASocketAddress(endpoint)
        var local = source
        let resolved = destination.withMutableSocketAddress { destination in
            if local == nil { return rdma_resolve_addr(id, nil, destination, 2000) }
            return local!.withMutableSocketAddress { rdma_resolve_addr(id, $0, destination, 2000) }
        }
        /// A resolution step: nil when it completed, else what the attempt comes to (resources freed).
        func step(_ started: Int32, _ name: String, awaiting event: rdma_cm_event_type) -> AttemptResult? {
            let outcome: QueuePairConnectPolicy.Outcome
            if started != 0 {
                outcome = .unreachable("rdma_\(name): \(Errno(rawValue: errno).description)")
            } else {
                switch wait(events, for: event, nanoseconds: stepLimit) {
                case .arrived: return nil
                case .other(let event): outcome = .unreachable("\(name): \(event.name)")
                case .failed(let why): outcome = .unreachable("\(name): \(why)")
                case .timedOut: outcome = .timedOut
                }
            }
            abandon()
            return decision(outcome, configuration)
        }
        if let failed = step(resolved, "resolve_addr", awaiting: RDMA_CM_EVENT_ADDR_RESOLVED) { return failed }
        if let failed = step(rdma_resolve_route(id, 2000), "resolve_route", awaiting: RDMA_CM_EVENT_ROUTE_RESOLVED) { return failed }
        let transport = try VerbsQueuePair(id: id, events: events, depth: configuration.slotCount, bufferBytes: configuration.slotBytes)
        // Every receive is posted (by the channel end) before the NIC side can send.
        let channel = try RDMAChannelEnd(transport: transport, waiting: configuration.waiting)
        var proposal = QueuePairHandshake(configuration: configuration).encode()
        let connected = proposal.withUnsafeMutableBytes { bytes in
            var parameters = connectionParameters(privateData: bytes)
            return rdma_connect(id, &parameters)
        }
        guard connected == 0 else {
            let code = errno
            return decision(.unreachable("rdma_connect: \(Errno(rawValue: code).description)"), configuration)
        }
        switch wait(events, for: RDMA_CM_EVENT_ESTABLISHED, nanoseconds: stepLimit) {
        case .arrived(let data):
            return decision(.accepted(QueuePairHandshake.decode(data)), configuration, channel: channel)
        case .other(let event) where event.type == RDMA_CM_EVENT_REJECTED:
            return decision(.rejected(QueuePairHandshake.decode(event.data)), configuration)
        case .other(let event):
            return decision(.unreachable("connecting: \(event.name)"), configuration)
        case .failed(let why):
            return decision(.unreachable("connecting: \(why)"), configuration)
        case .timedOut:
            return decision(.timedOut, configuration)
        }
    }

    /// What the policy makes of an attempt's outcome; `channel` is the end to hand back if it connected.
    private static func decision(
        _ outcome: QueuePairConnectPolicy.Outcome, _ configuration: ChannelConfiguration, channel: RDMAChannelEnd? = nil
    ) -> AttemptResult {
        switch QueuePairConnectPolicy.decide(outcome, proposed: configuration) {
        case .connected:
            return channel.map { .connected($0) } ?? .fail("the connection manager reported a connection that was not established")
        case .retry(let reason): return .retry(reason)
        case .fail(let reason): return .fail(reason)
        }
    }

    /// The NIC side: listens for hosts at `endpoint` (its address must belong to an RDMA device).
    public static func listen(on endpoint: RDMAEndpoint, maximumBufferBytes: Int = 256 << 20) throws(ChannelError) -> RDMAListener {
        let (events, id) = try makeIdentifier()
        var address = RDMASocketAddress(endpoint)
        let bound = address.withMutableSocketAddress { rdma_bind_addr(id, $0) }
        guard bound == 0 else {
            let code = errno
            rdma_destroy_id(id)
            rdma_destroy_event_channel(events)
            let hint = code == EADDRNOTAVAIL || code == ENODEV
                ? " (no RDMA device has that address: is an rxe link added over its interface?)" : ""
            throw ChannelError(SystemCallError("binding the RDMA listener to \(endpoint)\(hint)", errno: Errno(rawValue: code)))
        }
        guard rdma_listen(id, 4) == 0 else {
            let error = systemError("rdma_listen on \(endpoint)")
            rdma_destroy_id(id)
            rdma_destroy_event_channel(events)
            throw error
        }
        return RDMAListener(id: id, events: events, endpoint: endpoint, maximumBufferBytes: maximumBufferBytes)
    }

    // MARK: - Helpers

    static func connectionParameters(privateData: UnsafeMutableRawBufferPointer) -> rdma_conn_param {
        var parameters = rdma_conn_param()
        parameters.private_data = UnsafeRawPointer(privateData.baseAddress)
        parameters.private_data_len = UInt8(privateData.count)
        parameters.responder_resources = 0
        parameters.initiator_depth = 0
        parameters.retry_count = 7
        // No receiver-not-ready retries: credits guarantee a posted receive for every SEND.
        parameters.rnr_retry_count = 0
        return parameters
    }

    static func setNonBlocking(_ descriptor: Int32) {
        let flags = fcntl(descriptor, F_GETFL)
        _ = fcntl(descriptor, F_SETFL, flags | O_NONBLOCK)
    }

    static func systemError(_ operation: String) -> ChannelError {
        let code = errno
        return ChannelError(SystemCallError(operation, errno: Errno(rawValue: code)))
    }

    /// A new rdma_cm identifier on an event channel of its own, which never blocks.
    static func makeIdentifier() throws(ChannelError) -> (UnsafeMutablePointer<rdma_event_channel>, UnsafeMutablePointer<rdma_cm_id>) {
        guard let events = rdma_create_event_channel() else { throw systemError("rdma_create_event_channel") }
        var created: UnsafeMutablePointer<rdma_cm_id>?
        guard rdma_create_id(events, &created, nil, RDMA_PS_TCP) == 0, let id = created else {
            let error = systemError("rdma_create_id")
            rdma_destroy_event_channel(events)
            throw error
        }
        setNonBlocking(events.pointee.fd)
        return (events, id)
    }

    /// A connection event, taken and acknowledged (its private data copied first: acknowledging frees it).
    struct ConnectionEvent {
        let type: rdma_cm_event_type
        let data: [UInt8]
        /// The identifier the event is for (a connection request's new one).
        let id: UnsafeMutablePointer<rdma_cm_id>?
        var name: String { String(cString: rdma_event_str(type)) }
    }

    /// The next event on a non-blocking event channel, waiting until `deadline` (nil: no limit; a past
    /// deadline: only what already waits). Nil when none came in time.
    static func nextEvent(_ events: UnsafeMutablePointer<rdma_event_channel>, until deadline: Int64?) throws(ChannelError) -> ConnectionEvent? {
        while true {
            var event: UnsafeMutablePointer<rdma_cm_event>?
            if rdma_get_cm_event(events, &event) == 0, let taken = event {
                let connection = taken.pointee.param.conn
                var data: [UInt8] = []
                if let bytes = connection.private_data, connection.private_data_len > 0 {
                    data = Array(UnsafeRawBufferPointer(start: bytes, count: Int(connection.private_data_len)))
                }
                let result = ConnectionEvent(type: taken.pointee.event, data: data, id: taken.pointee.id)
                rdma_ack_cm_event(taken)
                return result
            }
            guard errno == EAGAIN || errno == EINTR else { throw systemError("rdma_get_cm_event") }
            var milliseconds: Int32 = -1
            if let deadline {
                let remaining = deadline - monotonicNanoseconds()
                if remaining <= 0 { return nil }
                milliseconds = Int32(clamping: (remaining + 999_999) / 1_000_000)
            }
            var descriptor = pollfd(fd: events.pointee.fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&descriptor, 1, milliseconds)
        }
    }

    enum WaitResult {
        /// The awaited event, with its private data.
        case arrived([UInt8])
        case other(ConnectionEvent)
        case failed(String)
        case timedOut
    }

    /// Waits up to `nanoseconds` for one connection event and says whether it is `wanted`.
    static func wait(_ events: UnsafeMutablePointer<rdma_event_channel>, for wanted: rdma_cm_event_type, nanoseconds: Int64) -> WaitResult {
        do {
            guard let event = try nextEvent(events, until: monotonicNanoseconds() + nanoseconds) else { return .timedOut }
            return event.type == wanted ? .arrived(event.data) : .other(event)
        } catch {
            return .failed("\(error)")
        }
    }

    /// Takes and acknowledges every event waiting (an identifier is destroyed only once its events are).
    static func drain(_ events: UnsafeMutablePointer<rdma_event_channel>) {
        while (try? nextEvent(events, until: 0)) != nil {}
    }

    /// Turns a connection request away with `reason` in the reply's private data, and frees its identifier.
    static func reject(_ requester: UnsafeMutablePointer<rdma_cm_id>, _ reason: QueuePairHandshake.Rejection) {
        var reply = QueuePairHandshake(configuration: ChannelConfiguration(), rejection: reason).encode()
        _ = reply.withUnsafeMutableBytes { rdma_reject(requester, $0.baseAddress, UInt8($0.count)) }
        rdma_destroy_id(requester)
    }
}

/// An NIC stack's RDMA listener: accepts one host at a time, and turns away others while one is attached.
public final class RDMAListener: @unchecked Sendable {
    public let endpoint: RDMAEndpoint
    private let id: UnsafeMutablePointer<rdma_cm_id>
    private let events: UnsafeMutablePointer<rdma_event_channel>
    private let maximumBufferBytes: Int

    init(id: UnsafeMutablePointer<rdma_cm_id>, events: UnsafeMutablePointer<rdma_event_channel>, endpoint: RDMAEndpoint, maximumBufferBytes: Int) {
        self.id = id
        self.events = events
        self.endpoint = endpoint
        self.maximumBufferBytes = maximumBufferBytes
    }

    deinit {
        RDMAChannel.drain(events)
        rdma_destroy_id(id)
        rdma_destroy_event_channel(events)
    }

    /// A descriptor that turns readable when a host asks to connect.
    public var descriptor: Int32 { events.pointee.fd }

    /// Waits up to `timeoutNanoseconds` (nil: no limit) for a host, agrees on the terms it proposes (or
    /// rejects them, saying why) and returns the NIC's end once the connection is established.
    public func accept(timeoutNanoseconds: Int64? = nil) throws(ChannelError) -> RDMAChannelEnd {
        let deadline = timeoutNanoseconds.map { monotonicNanoseconds() + $0 }
        while true {
            guard let request = try nextRequest(until: deadline) else { throw .timedOut("waiting for a host at \(endpoint)") }
            if let channel = try answer(request.id, proposal: request.proposal) { return channel }
        }
    }

    /// Turns away every host waiting to connect: the NIC stack already serves one.
    public func rejectWaiting() {
        while let request = try? nextRequest(until: 0) {
            RDMAChannel.reject(request.id, QueuePairConnectPolicy.answer(request.proposal, busy: true, maximumBytes: maximumBufferBytes) ?? .busy)
        }
    }

    private struct Request {
        let id: UnsafeMutablePointer<rdma_cm_id>
        let proposal: QueuePairHandshake.Decoded
    }

    /// The next connection request (other events on the listener are acknowledged and skipped).
    private func nextRequest(until deadline: Int64?) throws(ChannelError) -> Request? {
        while let event = try RDMAChannel.nextEvent(events, until: deadline) {
            if event.type == RDMA_CM_EVENT_CONNECT_REQUEST, let requester = event.id {
                return Request(id: requester, proposal: QueuePairHandshake.decode(event.data))
            }
        }
        return nil
    }

    private func answer(_ requester: UnsafeMutablePointer<rdma_cm_id>, proposal: QueuePairHandshake.Decoded) throws(ChannelError) -> RDMAChannelEnd? {
        if let rejection = QueuePairConnectPolicy.answer(proposal, busy: false, maximumBytes: maximumBufferBytes) {
            RDMAChannel.reject(requester, rejection)
            return nil
        }
        guard case .handshake(let offer) = proposal else { return nil }
        // The connection gets an event channel of its own: its disconnect must reach its channel end,
        // not the listener.
        guard let connectionEvents = rdma_create_event_channel() else {
            rdma_destroy_id(requester)
            throw RDMAChannel.systemError("rdma_create_event_channel")
        }
        RDMAChannel.setNonBlocking(connectionEvents.pointee.fd)
        guard rdma_migrate_id(requester, connectionEvents) == 0 else {
            let error = RDMAChannel.systemError("rdma_migrate_id")
            rdma_destroy_id(requester)
            rdma_destroy_event_channel(connectionEvents)
            throw error
        }
        let configuration = offer.configuration
        let transport = try VerbsQueuePair(
            id: requester, events: connectionEvents, depth: configuration.slotCount, bufferBytes: configuration.slotBytes)
        let channel = try RDMAChannelEnd(transport: transport, waiting: configuration.waiting)
        var reply = QueuePairHandshake(configuration: configuration).encode()
        let accepted = reply.withUnsafeMutableBytes { bytes in
            var parameters = RDMAChannel.connectionParameters(privateData: bytes)
            return rdma_accept(requester, &parameters)
        }
        guard accepted == 0 else { throw RDMAChannel.systemError("rdma_accept") }
        switch RDMAChannel.wait(connectionEvents, for: RDMA_CM_EVENT_ESTABLISHED, nanoseconds: 5_000_000_000) {
        case .arrived: return channel
        case .other(let event): throw .setup("a host's connection did not complete: \(event.name)")
        case .failed(let why): throw .setup("a host's connection did not complete: \(why)")
        case .timedOut:
            throw .timedOut("a host's connection did not complete within 5 s")
        }
    }
}

