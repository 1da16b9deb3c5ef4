import IOTCPCommon

/// Counters an operator reads to see what the engine did with what it was given.
public struct TCPStatistics: Hashable, Sendable {
    public var segmentsReceived = 0
    public var malformedPackets = 0
    public var badChecksums = 0
    public var resetsSent = 0
    public var synCookiesSent = 0
    public var synCookiesAccepted = 0
    public var synCookiesRejected = 0
    /// Connections made from handshakes the NIC completed (ESTABLISHED), and ESTABLISHED commands whose
    /// packet did not match their parameters or came for a port no longer listening.
    public var handshakesFromNIC = 0
    public var refusedHandshakes = 0
    /// Connections whose ending was handed to the NIC (TEARDOWN): their control blocks were freed then.
    public var endingsHandedOver = 0
    /// Of those, the ones handed over with their data unacknowledged (TEARDOWN with data), and the flows the
    /// NIC has since released (FLOW_RELEASED), in all and for another reason than the data's acknowledgment
    /// (a reset, retransmissions run out).
    public var endingsHandedOverWithData = 0
    public var flowsReleased = 0
    public var flowsReleasedUnacknowledged = 0
    /// Segments of a connection just handed over that reached the host anyway (the NIC forwarded them before
    /// it took the TEARDOWN): dropped unanswered, so the peer sends them again to the NIC, which now has the
    /// connection; a RST from here would kill the connection the NIC is ending.
    public var segmentsAfterHandOver = 0
    /// Connection pairs handed to the NIC to relay (SPLICE), splices it has since ended (SPLICE_ENDED) and
    /// the payload bytes it relayed for them (both ways).
    public var splicesHandedOver = 0
    public var splicesEnded = 0
    public var splicedBytes: UInt64 = 0
    /// Splices ended with the client closing first, whose backend 4-tuple the host then held in TIME-WAIT.
    public var backendTimeWaits = 0
    /// Handshakes completed (a valid cookie's ACK) while the accept queue was full: dropped unanswered, as
    /// Linux does, so the peer sends again once the application has accepted (a reset would fail it).
    public var acceptQueueOverflows = 0
    public var connectionsOpened = 0
    public var connectionsClosed = 0
    /// What loss recovery did on connections already closed (`TCPEngine.lossRecovery` adds the open ones).
    public var closedLossRecovery = LossRecoveryCounts()
    /// Segments with neither SYN nor ACK sent to a listening port, dropped unanswered.
    public var droppedAtListener = 0
    /// TIME-WAIT connections ended early by a new SYN for the same endpoints (RFC 6191).
    public var timeWaitReopened = 0
    /// ECHOs about a connection no longer in its slot (closed while the ECHO was on its way), ignored.
    public var staleEchoes = 0
    /// ICMPv6 Packet Too Big messages that lowered a connection's segment size (RFC 8201), and those
    /// ignored (for no connection, a sequence number not in flight, or no smaller than its segments).
    public var pathMTUDecreases = 0
    public var packetTooBigIgnored = 0
}

/// The host's TCP control plane for one local IPv4 address (and an IPv6 one): every connection and listener, driven by
/// calls that each take the time and an output for what the NIC must do.
///
/// It is the sans-I/O core of IOTCPHost: received packets come in through `handlePacket`, the NIC's
/// ECHOs through `handleEcho`, the passage of time through `handleTimers`; SEND, RETRANSMIT, ACKD,
/// FLOW_OPEN, FLOW_CLOSE and PACKET_OUT go to the output. Memory per idle connection is its control
/// block alone: buffers are allocated with the first byte.
///
/// Its parts with a life of their own are types of their own: the connection table (`ConnectionPool`, with
/// slot generations), listeners (`ListenerState`), keyed numbers and SYN cookies (`ConnectionSecrets`), the
/// timer wheel; what is left here (about 550 lines) is the demultiplexing and bookkeeping that ties them
/// to the connections.
public final class TCPEngine {
    @exclusivity(unchecked) public internal(set) var configuration: TCPConfiguration
    public let localAddress: IPv4Address
    /// The engine's IPv6 address, if it has one: segments to it are TCP over IPv6.
    public let localIPv6Address: IPv6Address?
    public let maximumConnections: Int
    // The engine's state is `@exclusivity(unchecked)`: it is only ever touched by the one thread driving the
    // engine, through methods that never hold an access to one property across a call that takes another,
    // and the runtime's dynamic exclusivity bookkeeping for it was a third of the cost of an ACK
    // (`iotcp-bench --only engine`: best of five runs 156 ns/ACK checked, 108 ns unchecked). The compiler
    // still checks every access it can see statically.
    /// Checked by the host because a NIC that already verified could still be a buggy one.
    @exclusivity(unchecked) public var verifyChecksums = true
    @exclusivity(unchecked) public private(set) var statistics = TCPStatistics()
    /// The NIC takes connections' endings (its HELLO offered TEARDOWN); with `configuration.teardownOnNIC`
    /// a closed connection is handed over once everything it sent is acknowledged.
    @exclusivity(unchecked) public var endingsOnNIC = false
    /// The NIC takes endings with their data unacknowledged (its HELLO offered `NICFeatures.endingsWithData`);
    /// used with `configuration.endingsWithDataOnNIC`.
    @exclusivity(unchecked) public var endingsWithDataOnNIC = false
    /// The NIC relays spliced connections (its HELLO offered SPLICE).
    @exclusivity(unchecked) public var splicingOnNIC = false
    /// The NIC relays spliced IPv6 connections too (its HELLO offered SPLICE6).
    @exclusivity(unchecked) public var ipv6SplicingOnNIC = false
    /// The NIC acknowledges the client's bytes itself as it takes a splice, and a SPLICE closes both flows
    /// there (its HELLO offered `NICFeatures.spliceAcknowledgment`): the host sends neither first.
    @exclusivity(unchecked) public var spliceAcknowledgmentOnNIC = false
    /// Backends' 4-tuples the NIC is relaying (until SPLICE_ENDED): no new connection may take one.
    @exclusivity(unchecked) private var splicedBackends: Set<EndpointKey> = []
    /// Backends' 4-tuples whose TIME-WAIT is ours: their splice ended with the client closing first.
    @exclusivity(unchecked) private var backendTimeWaits = HeldBackendEndpoints()

    private let secrets: ConnectionSecrets
    private let pool: ConnectionPool
    @exclusivity(unchecked) private var byEndpoints: [EndpointKey: Int32] = [:]
    @exclusivity(unchecked) private var listeners: [UInt16: ListenerState] = [:]
    @exclusivity(unchecked) private var wheel: TimerWheel
    @exclusivity(unchecked) private var readyConnections: [Int32] = []
    @exclusivity(unchecked) private var isReady: [Bool] = []
    @exclusivity(unchecked) private var readyListeners: [UInt16] = []
    /// Connections the application let go of that have since had everything acknowledged, or closed:
    /// nobody reads their events, but whoever holds resources for their data (offloaded files) must hear.
    @exclusivity(unchecked) private var settledOrphans: [TCPHandle] = []
    @exclusivity(unchecked) private var dueScratch: [Int] = []
    /// Where a hand-over with data gathers the host bytes it carries.
    private let endingScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: SendRange.maximumHeadLength, alignment: 16)
    /// Active opens whose handshake ACK waits for the application's turn (`acknowledgeConnectWithData`).
    @exclusivity(unchecked) private var owedAcknowledgments: [TCPHandle] = []
    @exclusivity(unchecked) private var nextEphemeralPort: UInt16 = 32768
    /// Connections handed to the NIC in the last `handOverGrace`, with their peers' ISNs: segments for them
    /// still in flight from the NIC go back to it, not reset; an ESTABLISHED with that ISN is a duplicate of
    /// the old handshake, one with another a new connection on a reused port (the NIC ended the old one's
    /// TIME-WAIT for it). Bounded by the hand-over rate times the grace.
    @exclusivity(unchecked) private var recentHandOvers = RecentHandOvers<UInt64>(grace: TCPEngine.handOverGrace)
    private var recentHandOvers6 = RecentHandOvers<EndpointKey>(
        grace: TCPEngine.handOverGrace, emptyKey: EndpointKey(remoteAddress: IPAddress(IPv6Address.unspecified), remotePort: 0, localPort: 0))
    /// Longer than any message takes between the halves, shorter than a peer's retransmission backoff grows.
    static let handOverGrace = 2 * Nanoseconds.second

    struct EndpointKey: Hashable {
        var remoteAddress: IPAddress
        var remotePort: UInt16
        var localPort: UInt16

        /// An IPv4 key's three fields in one word (the mapped address keeps IPv4's in its low 32 bits).
        var packed: UInt64 {
            UInt64(truncatingIfNeeded: remoteAddress.bits.low) << 32 | UInt64(remotePort) << 16 | UInt64(localPort)
        }


        /// One word through the hasher for IPv4 instead of three fields: these tables are hit several times
        /// for every connection (its handshake, its hand-over, its segments). Equal keys are of one family,
        /// so they hash alike.
        func hash(into hasher: inout Hasher) {
            if remoteAddress.isIPv4 {
                hasher.combine(packed)
            } else {
                hasher.combine(remoteAddress.bits.high)
                hasher.combine(remoteAddress.bits.low)
                hasher.combine(UInt32(remotePort) << 16 | UInt32(localPort))
            }
        }
    }

    /// `secret` keys the ISN and SYN-cookie hashes; give each engine fresh random bits.
    public init(
        localAddress: IPv4Address, ipv6Address: IPv6Address? = nil, configuration: TCPConfiguration = TCPConfiguration(),
        secret: (UInt64, UInt64), maximumConnections: Int = 1 << 18, now: Instant
    ) {
        self.localAddress = localAddress
        localIPv6Address = ipv6Address
        self.configuration = configuration
        self.maximumConnections = min(max(maximumConnections, 1), Int(FlowID.maximumIndex))
        // The table is reserved whole, as a preallocated pool: it never moves, never doubles, and pages
        // no connection has touched are never made resident.
        pool = ConnectionPool(capacity: self.maximumConnections)
        isReady.reserveCapacity(self.maximumConnections)
        secrets = ConnectionSecrets(key0: secret.0, key1: secret.1)
        wheel = TimerWheel(start: now)
    }

    deinit { endingScratch.deallocate() }

    // MARK: - Listening and connecting

    public func listen(port: UInt16, backlog: Int = 128) throws(TCPError) -> TCPListenerID {
        guard port != 0 else { throw .invalidArgument("port 0") }
        guard listeners[port] == nil else { throw .portInUse(port) }
        listeners[port] = ListenerState(backlog: max(backlog, 1))
        return TCPListenerID(port: port)
    }

    /// Stops listening; connections not yet accepted are reset.
    public func stopListening<O: CommandOutput>(_ listener: TCPListenerID, now: Instant, output: inout O) {
        guard listeners.removeValue(forKey: listener.port) != nil else { return }
        for slot in 0..<pool.slotCount where pool.isLive(slot) && pool[slot].listenerPort == listener.port {
            pool[slot].abort(output: &output)
            pool[slot].ownedByApplication = false
            pool[slot].listenerPort = nil
            afterChange(slot)
        }
    }

    /// The next established connection from `listener`, or nil.
    public func accept(_ listener: TCPListenerID) -> TCPHandle? {
        guard listeners[listener.port] != nil else { return nil }
        while let handle = listeners[listener.port]!.acceptQueue.popFirst() {
            guard let slot = try? validSlot(handle), pool[slot].awaitingAccept else { continue }
            listeners[listener.port]!.pending -= 1
            pool[slot].awaitingAccept = false
            pool[slot].listenerPort = nil
            pool[slot].ownedByApplication = true
            return handle
        }
        return nil
    }

    public func isListening(_ listener: TCPListenerID) -> Bool { listeners[listener.port] != nil }

    /// Whether `listener` has connections waiting for `accept`.
    public func hasPendingConnections(_ listener: TCPListenerID) -> Bool {
        (listeners[listener.port]?.waiting ?? 0) > 0
    }

    /// Active open to `address:port` from an ephemeral port (or `localPort`).
    public func connect<O: CommandOutput>(
        to address: IPv4Address, port: UInt16, localPort: UInt16? = nil, now: Instant, output: inout O
    ) throws(TCPError) -> TCPHandle {
        try connect(to: IPAddress(address), port: port, localPort: localPort, now: now, output: &output)
    }

    /// Active open to an address of either family (IPv6 needs the engine's own IPv6 address).
    public func connect<O: CommandOutput>(
        to address: IPAddress, port: UInt16, localPort: UInt16? = nil, now: Instant, output: inout O
    ) throws(TCPError) -> TCPHandle {
        guard port != 0 else { throw .invalidArgument("port 0") }
        guard address.isIPv4 || localIPv6Address != nil else { throw .invalidArgument("\(address) is IPv6 and the stack has no IPv6 address") }
        backendTimeWaits.expire(now: now)
        let chosen: UInt16
        if let localPort { chosen = localPort } else { chosen = try ephemeralPort(for: address, remotePort: port, now: now) }
        let key = EndpointKey(remoteAddress: address, remotePort: port, localPort: chosen)
        guard byEndpoints[key] == nil, !splicedBackends.contains(key), !backendTimeWaits.holds(key, now: now) else {
            throw .portInUse(chosen)
        }
        let slot = try allocateSlot()
        var connection = newConnection(in: slot, remote: address, localPort: chosen, remotePort: port, state: .synSent, now: now)
        // Its ending stays here: the host would not know its 4-tuple is still held by the NIC (TIME-WAIT) when
        // it picks the next ephemeral port.
        connection.openedActively = true
        connection.open(now: now, configuration: configuration, output: &output)
        let handle = connection.handle
        install(consume connection, at: slot, key: key)
        afterChange(slot)
        return handle
    }

    private func ephemeralPort(for address: IPAddress, remotePort: UInt16, now: Instant) throws(TCPError) -> UInt16 {
        for _ in 0..<(65536 - 32768) {
            let candidate = nextEphemeralPort
            nextEphemeralPort = nextEphemeralPort == 65535 ? 32768 : nextEphemeralPort + 1
            let key = EndpointKey(remoteAddress: address, remotePort: remotePort, localPort: candidate)
            if byEndpoints[key] == nil && listeners[candidate] == nil && !splicedBackends.contains(key)
                && !backendTimeWaits.holds(key, now: now) {
                return candidate
            }
        }
        throw .noFreePort
    }

    // MARK: - The application's calls

    /// With `more`, the bytes are only queued (MSG_MORE): what is written next (a file range, typically)
    /// may leave with them; `flush(_:now:output:)` sends them if nothing does.
    public func write<O: CommandOutput>(
        _ handle: TCPHandle, _ bytes: UnsafeRawBufferPointer, more: Bool = false, now: Instant, output: inout O
    ) throws(TCPError) -> Int {
        let slot = try validSlot(handle)
        defer { afterChange(slot) }
        return try pool[slot].write(bytes, flush: !more, now: now, configuration: configuration, output: &output)
    }

    /// Sends what the connection's windows allow now (bytes written with `more`).
    public func flush<O: CommandOutput>(_ handle: TCPHandle, now: Instant, output: inout O) {
        guard let slot = try? validSlot(handle) else { return }
        defer { afterChange(slot) }
        pool[slot].flush(now: now, configuration: configuration, output: &output)
    }

    /// Records whether the NIC takes SEND heads (its HELLO).
    public func nicOffersHeads(_ offered: Bool) {
        configuration.nicTakesHeads = offered
    }

    /// Queues `length` bytes of an offloaded file from `offset`; returns how many were taken (sendfile's
    /// partial progress: 0 means the queue is full, wait for `.writable`).
    /// With `shutdownAfter`, once the whole range is taken the sending side is shut down after it (as by
    /// `shutdownWrite`) before anything goes, so the FIN rides on the range's last segment.
    public func writeFile<O: CommandOutput>(
        _ handle: TCPHandle, file: OffloadedFileID, offset: UInt64, length: Int, shutdownAfter: Bool = false, now: Instant,
        output: inout O
    ) throws(TCPError) -> Int {
        guard length >= 0 else { throw .invalidArgument("negative length") }
        let slot = try validSlot(handle)
        defer { afterChange(slot) }
        return try pool[slot].writeFile(file, offset: offset, length: length, shutdownAfter: shutdownAfter, now: now,
                                        configuration: configuration, output: &output)
    }

    /// Hands the NIC the connection's TLS record keys (TLS_KEYS); from now on `writeRecords` may queue
    /// records it seals. The keys are copied into the command and kept nowhere here.
    public func setRecordKeys<O: CommandOutput>(_ handle: TCPHandle, _ keys: TLSKeys, output: inout O) throws(TCPError) {
        let slot = try validSlot(handle)
        guard keys.key.count == 16 || keys.key.count == 32, keys.iv.count == TLSKeys.ivLength(keys.version) else {
            throw .invalidArgument("TLS keys of \(keys.key.count) and \(keys.iv.count) bytes")
        }
        pool[slot].recordOverhead = keys.version.overhead
        pool[slot].openFlowOnNIC(output: &output)
        output.emit(.tlsKeys(handle.flow, keys))
    }

    /// Queues `length` bytes of an offloaded file as TLS records of `recordPlaintext` bytes (at most 16 KiB)
    /// numbered from `firstRecord`, sealed on the NIC. Whole records only; returns the plaintext bytes taken
    /// (0: the queue is full, wait for `.writable`).
    public func writeRecords<O: CommandOutput>(
        _ handle: TCPHandle, file: OffloadedFileID, offset: UInt64, length: Int, recordPlaintext: Int, firstRecord: UInt64,
        now: Instant, output: inout O
    ) throws(TCPError) -> Int {
        guard length >= 0, recordPlaintext > 0, recordPlaintext <= RecordSendRange.maximumRecordPlaintext,
              UInt64(length) <= UInt64(UInt32.max) else {
            throw .invalidArgument("records of \(recordPlaintext) bytes over \(length) bytes")
        }
        let slot = try validSlot(handle)
        defer { afterChange(slot) }
        return try pool[slot].writeRecords(file, offset: offset, length: length, recordPlaintext: recordPlaintext, firstRecord: firstRecord,
                                           now: now, configuration: configuration, output: &output)
    }

    public func read<O: CommandOutput>(
        _ handle: TCPHandle, into buffer: UnsafeMutableRawBufferPointer, now: Instant, output: inout O
    ) throws(TCPError) -> Int {
        let slot = try validSlot(handle)
        defer { afterChange(slot) }
        let count = pool[slot].read(into: buffer, now: now, configuration: configuration, output: &output)
        if count == 0, let error = pool[slot].error { throw error }
        return count
    }

    /// Sends FIN after the queued data; reading goes on until the peer closes.
    public func shutdownWrite<O: CommandOutput>(_ handle: TCPHandle, now: Instant, output: inout O) throws(TCPError) {
        let slot = try validSlot(handle)
        pool[slot].shutdownWrite(now: now, configuration: configuration, output: &output)
        afterChange(slot)
    }

    /// Per-connection options (nil leaves one as it is): `noDelay` is TCP_NODELAY (Nagle off), `keepalive`
    /// SO_KEEPALIVE (probes after the idle time, the configuration's or Linux's defaults).
    public func setOptions<O: CommandOutput>(
        _ handle: TCPHandle, noDelay: Bool? = nil, keepalive: Bool? = nil, now: Instant, output: inout O
    ) throws(TCPError) {
        let slot = try validSlot(handle)
        defer { afterChange(slot) }
        if let keepalive {
            pool[slot].keepaliveRequested = keepalive
            if keepalive {
                pool[slot].refreshKeepalive(now: now, configuration: configuration)
            } else if configuration.keepalive == nil {
                pool[slot].timers[.keepalive] = nil
            }
        }
        if let noDelay {
            pool[slot].noDelay = noDelay
            // A short segment Nagle was holding may go now.
            if noDelay { pool[slot].flush(now: now, configuration: configuration, output: &output) }
        }
    }

    /// Closes the connection for the application: FIN after the queued data, and the handle is released
    /// (the engine finishes the close on its own, TIME-WAIT included).
    public func close<O: CommandOutput>(_ handle: TCPHandle, now: Instant, output: inout O) throws(TCPError) {
        let slot = try validSlot(handle)
        pool[slot].ownedByApplication = false
        let state = pool[slot].state
        if endingsOnNIC && configuration.teardownOnNIC && !pool[slot].openedActively
            && (state == .established || state == .closeWait || state == .finWait1 || state == .lastAck) {
            // The FIN goes after the data as always (a client that sees it with the response closes second,
            // and so holds no TIME-WAIT); the rest of the ending goes to the NIC once the data is acknowledged.
            // FIN-WAIT-1 and LAST-ACK: the sending side was shut down already (its FIN perhaps on the response's
            // last segment, `writeFile(shutdownAfter:)`).
            pool[slot].endingOnNIC = true
        }
        pool[slot].shutdownWrite(now: now, configuration: configuration, output: &output)
        pool[slot].markClosedByApplication(now: now, configuration: configuration)
        if !handOverIfDone(slot, now: now, atClose: true, output: &output) { afterChange(slot) }
    }

    /// Resets the connection and releases the handle.
    public func abort<O: CommandOutput>(_ handle: TCPHandle, output: inout O) throws(TCPError) {
        let slot = try validSlot(handle)
        pool[slot].ownedByApplication = false
        pool[slot].abort(output: &output)
        afterChange(slot)
    }

    /// Resets a connection whose data the NIC could not send (ERROR for its SEND or RETRANSMIT); the
    /// application keeps its handle and reads `TCPError.nicFailed`.
    public func failOnNIC<O: CommandOutput>(_ handle: TCPHandle, output: inout O) {
        guard let slot = try? validSlot(handle) else { return }
        pool[slot].failOnNIC(output: &output)
        afterChange(slot)
    }

    /// The handle of the connection the NIC knows as `flow`, if it is live (and `flow` is not about an
    /// earlier connection in the same slot).
    public func handle(for flow: FlowID) -> TCPHandle? {
        guard let slot = liveSlot(flow) else { return nil }
        return pool[slot].handle
    }

    /// The slot of the live connection `flow` names, generation included.
    private func liveSlot(_ flow: FlowID) -> Int? {
        flow == .none ? nil : pool.slot(of: flow)
    }

    /// Whether a write or an offloaded write would take at least one byte now.
    public func isWritable(_ handle: TCPHandle) -> Bool {
        guard let slot = try? validSlot(handle) else { return false }
        let configuration = configuration
        return pool.inspect(slot) { $0.isWritable(configuration: configuration) }
    }

    /// Whether the peer has closed its sending side (reads return 0 once the buffer is drained).
    public func isReadClosed(_ handle: TCPHandle) -> Bool {
        guard let slot = try? validSlot(handle) else { return true }
        return pool[slot].readClosed
    }

    public func state(of handle: TCPHandle) -> TCPState? {
        guard let slot = try? validSlot(handle) else { return nil }
        return pool[slot].state
    }

    public func error(of handle: TCPHandle) -> TCPError? {
        guard let slot = try? validSlot(handle) else { return nil }
        return pool[slot].error
    }

    /// Whether a connection has bytes queued that its peer has not acknowledged, and is not closed: whoever
    /// holds resources for its data (an offloaded file) must keep them.
    public func hasQueuedData(_ handle: TCPHandle) -> Bool {
        // Handed over with its data: the NIC may read the connection's files again until it releases the flow.
        guard let slot = try? validSlot(handle) else { return pool.isRetired(handle) }
        return pool[slot].sendQueue.count > 0 && pool[slot].state != .closed
    }

    /// The right edge of the receive window last advertised (tests and the fuzz target check it never
    /// moves left).
    func receiveWindowEdge(of handle: TCPHandle) -> SequenceNumber? {
        guard let slot = try? validSlot(handle) else { return nil }
        return pool[slot].advertisedWindowEdge
    }

    /// Bytes of send and receive buffers a connection holds (allocated, not necessarily used).
    func bufferBytes(of handle: TCPHandle) -> Int? {
        guard let slot = try? validSlot(handle) else { return nil }
        return pool[slot].bufferBytes
    }

    /// A snapshot of a connection's control block.
    public func info(of handle: TCPHandle) -> TCPConnectionInfo? {
        guard let slot = try? validSlot(handle) else { return nil }
        return pool[slot].info
    }

    /// Every connection's handle, for diagnostics.
    public var handles: [TCPHandle] { (0..<pool.slotCount).filter { pool.isLive($0) }.map { pool[$0].handle } }

    /// The addresses and ports of a connection.
    public func endpoints(of handle: TCPHandle) -> FlowEndpoints? {
        guard let slot = try? validSlot(handle) else { return nil }
        return pool.inspect(slot) { $0.endpoints }
    }

    public func readableBytes(_ handle: TCPHandle) -> Int {
        guard let slot = try? validSlot(handle) else { return 0 }
        return pool.inspect(slot) { $0.readableBytes }
    }

    /// Calls `body` with each connection that has new events, and each listener with connections to
    /// accept (as `nil` handle), clearing them.
    /// Hands each connection's new events to `body` (connections the application holds), listeners with
    /// connections to accept to `listeners`, and to `settled` each connection the application closed that
    /// has since had all its data acknowledged or ended (so offloaded files held for it can be closed).
    public func drainEvents(
        _ body: (TCPHandle, TCPEvents) -> Void, listeners listenerBody: (TCPListenerID) -> Void = { _ in },
        settled: (TCPHandle) -> Void = { _ in }
    ) {
        if !settledOrphans.isEmpty {
            for handle in settledOrphans { settled(handle) }
            settledOrphans.removeAll(keepingCapacity: true)
        }
        for slot in readyConnections.map(Int.init) {
            isReady[slot] = false
            guard pool.isLive(slot), !pool[slot].events.isEmpty else { continue }
            let events = pool[slot].events
            pool[slot].events = []
            if pool[slot].ownedByApplication { body(pool[slot].handle, events) }
        }
        readyConnections.removeAll(keepingCapacity: true)
        for port in readyListeners where hasPendingConnections(TCPListenerID(port: port)) { listenerBody(TCPListenerID(port: port)) }
        readyListeners.removeAll(keepingCapacity: true)
    }

    public var connectionCount: Int { byEndpoints.count }

    /// Bytes of one connection's control block in the table, before any buffer is allocated.
    public static var controlBlockBytes: Int { MemoryLayout<TCPConnection?>.stride }

    // MARK: - Input from the NIC

    /// The addresses of a received packet.
    struct PacketAddresses {
        var source: IPAddress
        var destination: IPAddress
    }

    /// Counts a received packet and parses it: a TCP segment to one of this engine's addresses, over IPv4 or
    /// IPv6, with a good checksum, or nil (counted as malformed or as a bad checksum). PACKET_IN and
    /// ESTABLISHED both come through here.
    private func receivedSegment(
        _ packet: UnsafeRawBufferPointer
    ) -> (ip: PacketAddresses, view: TCPSegmentView, segment: TCPRepr)? {
        statistics.segmentsReceived += 1
        let addresses: PacketAddresses
        let tcp: UnsafeRawBufferPointer
        if packet.count > 0 && packet[0] >> 4 == 6 {
            // An IPv6 source that is multicast, unspecified or IPv4-mapped cannot open or be part of a
            // connection (RFC 4291 §2.5.5.2 for the mapped: it would alias an IPv4 peer).
            guard let localIPv6Address, let ip = try? IPv6PacketView(packet), ip.upperLayerProtocol == .tcp,
                  ip.destination == localIPv6Address, !ip.source.isMulticast, !ip.source.isUnspecified, !ip.source.isIPv4Mapped
            else {
                statistics.malformedPackets += 1
                return nil
            }
            addresses = PacketAddresses(source: IPAddress(ip.source), destination: IPAddress(ip.destination))
            tcp = ip.upperLayer
        } else {
            guard let ip = try? IPv4PacketView(packet), ip.protocol == .tcp, ip.destination == localAddress else {
                statistics.malformedPackets += 1
                return nil
            }
            addresses = PacketAddresses(source: IPAddress(ip.source), destination: IPAddress(ip.destination))
            tcp = ip.payload
        }
        guard let view = try? TCPSegmentView(tcp), let segment = try? TCPRepr(view) else {
            statistics.malformedPackets += 1
            return nil
        }
        if verifyChecksums && !view.checksumVerifies(source: addresses.source, destination: addresses.destination) {
            statistics.badChecksums += 1
            return nil
        }
        return (addresses, view, segment)
    }

    /// This engine's address of `remote`'s family: the one it answers from.
    private func localAddress(for remote: IPAddress) -> IPAddress {
        remote.isIPv4 ? IPAddress(localAddress) : IPAddress(localIPv6Address ?? .unspecified)
    }

    /// A received IPv4 or IPv6 packet (PACKET_IN). `flow` is the NIC's guess of its connection, checked here.
    public func handlePacket<O: CommandOutput>(
        _ packet: UnsafeRawBufferPointer, flow: FlowID = .none, now: Instant, output: inout O
    ) {
        if packet.count > 6 && packet[0] >> 4 == 6 && packet[6] == IPProtocol.icmpv6.rawValue {
            handleICMPv6(packet, now: now, output: &output)
            return
        }
        guard let (ip, view, segment) = receivedSegment(packet) else { return }
        let key = EndpointKey(remoteAddress: ip.source, remotePort: segment.sourcePort, localPort: segment.destinationPort)
        var slot: Int?
        if let hinted = liveSlot(flow), pool[hinted].remoteAddress == ip.source,
           pool[hinted].remotePort == segment.sourcePort, pool[hinted].localPort == segment.destinationPort {
            slot = hinted
        } else if let found = byEndpoints[key] {
            slot = Int(found)
        }
        if let slot, pool[slot].state == .timeWait, listeners[segment.destinationPort] != nil,
           pool.inspect(slot, { $0.acceptsNewConnection(segment) }) {
            // RFC 6191 (and RFC 1122 §4.2.2.13): a SYN that is certainly newer than the old connection ends
            // its TIME-WAIT and opens a new one, as a client reusing its port expects.
            statistics.timeWaitReopened += 1
            pool[slot].closeQuietly(output: &output)
            release(slot)
            handleUnmatched(segment, payload: view.payload, from: ip.source, key: key, packet: packet, now: now, output: &output)
            return
        }
        if let slot {
            pool[slot].handle(segment, payload: view.payload, now: now, configuration: configuration, output: &output)
            if !handOverIfDone(slot, now: now, output: &output) { afterChange(slot) }
            return
        }
        handleUnmatched(segment, payload: view.payload, from: ip.source, key: key, packet: packet, now: now, output: &output)
    }

    /// An ICMPv6 message the NIC passed up: a Packet Too Big about one of our segments (RFC 8201) lowers its
    /// connection's segment size. The quote must be of a TCP segment from our address (without extension
    /// headers, as we send them) and long enough to name its ports and sequence number.
    private func handleICMPv6<O: CommandOutput>(_ packet: UnsafeRawBufferPointer, now: Instant, output: inout O) {
        statistics.segmentsReceived += 1
        guard let localIPv6Address, let ip = try? IPv6PacketView(packet), ip.upperLayerProtocol == .icmpv6,
              ip.destination == localIPv6Address,
              let (icmp, quote) = try? ICMPv6Repr.parse(ip.upperLayer, source: ip.source, destination: ip.destination),
              case .packetTooBig(let mtu) = icmp.message
        else {
            statistics.malformedPackets += 1
            return
        }
        let tcp = IPv6PacketView.headerLength
        guard quote.count >= tcp + 8, quote[0] >> 4 == 6, quote[6] == IPProtocol.tcp.rawValue,
              IPv6Address.load(from: quote, at: 8) == localIPv6Address
        else {
            statistics.packetTooBigIgnored += 1
            return
        }
        let key = EndpointKey(remoteAddress: IPAddress(IPv6Address.load(from: quote, at: 24)),
                              remotePort: quote.bigEndianUInt16(at: tcp + 2), localPort: quote.bigEndianUInt16(at: tcp))
        guard let slot = byEndpoints[key].map(Int.init),
              pool[slot].packetTooBig(mtu: Int(min(mtu, 65_535)), quotedSequence: SequenceNumber(quote.bigEndianUInt32(at: tcp + 4)),
                                      now: now, configuration: configuration, output: &output)
        else {
            statistics.packetTooBigIgnored += 1
            return
        }
        statistics.pathMTUDecreases += 1
        afterChange(slot)
    }

    /// The NIC put a SEND's data on the wire (ECHO).
    public func handleEcho<O: CommandOutput>(
        flow: FlowID, sequenceEnd: SequenceNumber, nicDelayNanoseconds: UInt64, now: Instant, output: inout O
    ) {
        guard let slot = liveSlot(flow) else {
            statistics.staleEchoes += 1
            return
        }
        pool[slot].handleEcho(sequenceEnd: sequenceEnd, nicDelayNanoseconds: nicDelayNanoseconds, now: now,
                              configuration: configuration, output: &output)
        afterChange(slot)
    }

    /// A handshake the NIC completed with a SYN cookie (ESTABLISHED): the connection starts established, and
    /// `packet`, the client's ACK, is taken as its first segment (data in it is the eager receive that reaches
    /// the application with the accept). An ESTABLISHED for a connection that exists already (the NIC saw the
    /// client's next segment before the host's FLOW_OPEN) is just that segment.
    public func handleEstablished<O: CommandOutput>(
        _ parameters: HandshakeParameters, packet: UnsafeRawBufferPointer, now: Instant, output: inout O
    ) {
        guard case (let ip, let view, var segment)? = receivedSegment(packet) else { return }
        guard segment.flags.contains(.ack), !segment.flags.contains(.syn), !segment.flags.contains(.rst),
              segment.acknowledgmentNumber == parameters.localInitialSequence + 1,
              segment.sequenceNumber == parameters.peerInitialSequence + 1
        else {
            statistics.refusedHandshakes += 1
            return
        }
        // Timestamps are on only if the cookie's SYN-ACK offered them; an ACK carrying them anyway is not
        // believed (nor the window shift and SACK its TSecr would claim: the NIC sent none).
        if !parameters.timestamps { segment.options.timestamps = nil }
        let key = EndpointKey(remoteAddress: ip.source, remotePort: segment.sourcePort, localPort: segment.destinationPort)
        if let recent = recentHandOver(key, now: now), recent.peerInitialSequence == parameters.peerInitialSequence {
            // A duplicate of the handshake's ACK from before the connection was handed over to the NIC for
            // its ending: that connection is the NIC's now, and this must not become a second one.
            statistics.segmentsAfterHandOver += 1
            output.emit(.redeliver(packet: packet))
            return
        }
        if let existing = byEndpoints[key].map(Int.init) {
            if pool[existing].state != .timeWait || !pool[existing].acceptsNewIncarnation(segment) {
                pool[existing].handle(segment, payload: view.payload, now: now, configuration: configuration, output: &output)
                if !handOverIfDone(existing, now: now, output: &output) { afterChange(existing) }
                return
            }
            // The client reused its port while the old connection waited out TIME-WAIT here, and the NIC took
            // its new SYN: with evidence that it is newer (RFC 6191), the old one's wait ends. A delayed
            // duplicate of the old handshake's ACK has none, and is answered as TIME-WAIT answers anything.
            statistics.timeWaitReopened += 1
            pool[existing].closeQuietly(output: &output)
            release(existing)
        }
        guard listeners[segment.destinationPort] != nil else {
            statistics.refusedHandshakes += 1
            sendReset(answering: segment, payloadLength: view.payload.count, to: ip.source, output: &output)
            return
        }
        let cookie = SYNCookies.Parameters(
            initialSequence: parameters.localInitialSequence, peerSegmentSize: Int(parameters.peerSegmentSize),
            windowShift: parameters.peerWindowShift, selectiveAcknowledgments: parameters.selectiveAcknowledgments,
            handshakeRoundTrip: parameters.handshakeRoundTripMicroseconds == 0 ? nil
                : UInt64(parameters.handshakeRoundTripMicroseconds) * 1_000)
        // Later TSvals continue from the SYN-ACK's (the NIC's clock), whatever this clock reads.
        let offset = parameters.synAckTimestamp &- UInt32(truncatingIfNeeded: now.nanoseconds / Nanoseconds.millisecond)
        if establish(segment, payload: view.payload, remote: ip.source, key: key, cookie: cookie, timestampOffset: offset,
                     now: now, output: &output) {
            statistics.handshakesFromNIC += 1
        }
    }

    /// Runs every timer due by `now`.
    public func handleTimers<O: CommandOutput>(now: Instant, output: inout O) {
        dueScratch.removeAll(keepingCapacity: true)
        wheel.popExpired(now: now, into: &dueScratch)
        for slot in dueScratch where pool.isLive(slot) {
            pool[slot].handleTimers(now: now, configuration: configuration, output: &output)
            afterChange(slot)
        }
        // Driven without `sendOwedAcknowledgments`, the timers send what was owed: forget those.
        if !owedAcknowledgments.isEmpty {
            owedAcknowledgments.removeAll { !pool.isCurrent($0) || !pool[Int($0.slot)].owesHandshakeAcknowledgment }
        }
    }

    /// The earliest timer deadline, for an event loop's wait.
    public var nextDeadline: Instant? { wheel.earliestDeadline() }

    /// Whether a handshake's ACK waits for `sendOwedAcknowledgments` (an event loop must not sleep on it).
    public var owesAcknowledgments: Bool {
        owedAcknowledgments.contains { pool.isCurrent($0) && pool[Int($0.slot)].owesHandshakeAcknowledgment }
    }

    /// Sends the handshake ACKs still owed: the application's turn is over and nothing it wrote carried
    /// them (`TCPConfiguration.acknowledgeConnectWithData`). An event loop calls this before it takes new
    /// input or sleeps; `IOTCPStack` does.
    public func sendOwedAcknowledgments<O: CommandOutput>(now: Instant, output: inout O) {
        guard !owedAcknowledgments.isEmpty else { return }
        for handle in owedAcknowledgments where pool.isCurrent(handle) {
            let slot = Int(handle.slot)
            guard pool[slot].owesHandshakeAcknowledgment else { continue }
            pool[slot].sendAcknowledgment(now: now, output: &output)
            afterChange(slot)
        }
        owedAcknowledgments.removeAll(keepingCapacity: true)
    }

    // MARK: - SYNs, cookies and strays

    /// `packet` is the whole IP packet `segment` came in (given back to the NIC if the connection was just
    /// handed to it).
    private func handleUnmatched<O: CommandOutput>(
        _ segment: TCPRepr, payload: UnsafeRawBufferPointer, from remote: IPAddress, key: EndpointKey, packet: UnsafeRawBufferPointer,
        now: Instant, output: inout O
    ) {
        let flags = segment.flags
        // A RST too goes back to a connection just handed over: the NIC's side of it (a splice, a teardown)
        // must hear that the peer gave up.
        if !flags.contains(.syn), recentHandOver(key, now: now) != nil {
            statistics.segmentsAfterHandOver += 1
            output.emit(.redeliver(packet: packet))
            return
        }
        if flags.contains(.rst) { return }
        if let listener = listeners[segment.destinationPort] {
            if flags.contains(.syn) && !flags.contains(.ack) {
                if listener.pending < listener.backlog, let slot = try? allocateSlot() {
                    var connection = newConnection(in: slot, remote: remote, localPort: segment.destinationPort,
                                                   remotePort: segment.sourcePort, state: .synReceived, now: now,
                                                   listenerPort: segment.destinationPort)
                    connection.acceptSynchronize(segment, now: now, configuration: configuration, output: &output)
                    install(consume connection, at: slot, key: key)
                    afterChange(slot)
                } else {
                    // The backlog is full: answer statelessly, with the state folded into the ISN (RFC 4987 §3.6).
                    sendCookie(for: segment, remote: remote, now: now, output: &output)
                    listeners[segment.destinationPort]!.lastCookieSent = now
                }
                return
            }
            if flags.contains(.ack) && !flags.contains(.syn), let sent = listener.lastCookieSent,
               now - sent < 2 * 64 * Nanoseconds.second {
                if acceptCookie(segment, payload: payload, remote: remote, key: key, now: now, output: &output) { return }
            }
            // RFC 9293 §3.10.7.2, LISTEN, fourth: neither SYN nor ACK (nor RST): drop it, answer nothing.
            if !flags.contains(.syn) && !flags.contains(.ack) {
                statistics.droppedAtListener += 1
                return
            }
        }
        sendReset(answering: segment, payloadLength: payload.count, to: remote, output: &output)
    }

    /// Answers a SYN with a cookie instead of a control block.
    private func sendCookie<O: CommandOutput>(for segment: TCPRepr, remote: IPAddress, now: Instant, output: inout O) {
        let local = localAddress(for: remote)
        let reply = secrets.cookieReply(to: segment, remote: remote, local: local, now: now, configuration: configuration)
        PacketBuilder.emit(reply, from: local, to: remote, flow: .none, output: &output)
        statistics.synCookiesSent += 1
    }

    private func acceptCookie<O: CommandOutput>(
        _ segment: TCPRepr, payload: UnsafeRawBufferPointer, remote: IPAddress, key: EndpointKey, now: Instant,
        output: inout O
    ) -> Bool {
        guard let cookie = secrets.verifyCookie(in: segment, remote: remote, local: localAddress(for: remote), now: now) else {
            statistics.synCookiesRejected += 1
            return false
        }
        if establish(segment, payload: payload, remote: remote, key: key, cookie: cookie, timestampOffset: 0, now: now, output: &output) {
            statistics.synCookiesAccepted += 1
        }
        return true
    }

    /// Makes an established connection from a verified cookie (the host's or the NIC's); false when the
    /// accept queue has no room (the peer sends again, and the cookie is still good then).
    private func establish<O: CommandOutput>(
        _ segment: TCPRepr, payload: UnsafeRawBufferPointer, remote: IPAddress, key: EndpointKey, cookie: SYNCookies.Parameters,
        timestampOffset: UInt32, now: Instant, output: inout O
    ) -> Bool {
        guard let listener = listeners[segment.destinationPort], listener.waiting < listener.backlog,
              let slot = try? allocateSlot()
        else {
            // A genuine handshake the application has no room for yet: the peer retransmits this ACK (or
            // its first data) and the cookie is still good then.
            statistics.acceptQueueOverflows += 1
            return false
        }
        var connection = newConnection(in: slot, remote: remote, localPort: segment.destinationPort, remotePort: segment.sourcePort,
                                       state: .synReceived, now: now, initialSequence: cookie.initialSequence,
                                       timestampOffset: timestampOffset, listenerPort: segment.destinationPort)
        connection.establishFromCookie(segment, peerSegmentSize: cookie.peerSegmentSize, windowShift: cookie.windowShift,
                                       sack: cookie.selectiveAcknowledgments, roundTrip: cookie.handshakeRoundTrip, now: now,
                                       configuration: configuration, output: &output)
        install(consume connection, at: slot, key: key)
        // The ACK may carry data (and a FIN): process it as the first segment of the connection.
        if !payload.isEmpty || segment.flags.contains(.fin) {
            pool[slot].handle(segment, payload: payload, now: now, configuration: configuration, output: &output)
        }
        afterChange(slot)
        return true
    }

    /// RFC 9293 §3.10.7.1: a segment for no connection is answered with a RST that the sender will accept.
    private func sendReset<O: CommandOutput>(
        answering segment: TCPRepr, payloadLength: Int, to remote: IPAddress, output: inout O
    ) {
        let reset = TCPRepr.reset(answering: segment, payloadLength: payloadLength)
        PacketBuilder.emit(reset, from: localAddress(for: remote), to: remote, flow: .none, output: &output)
        statistics.resetsSent += 1
    }

    // MARK: - Endings on the NIC

    /// Hands a closed connection to the NIC and frees its control block; false when it is not ready (or not
    /// the NIC's to end). With everything before the FIN acknowledged it goes as a TEARDOWN and its slot is
    /// free at once. At the application's close, a response not yet acknowledged goes with it when the NIC
    /// takes that (TEARDOWN with data: the connection never needed more of a control block than a quasi-TCB's,
    /// from its handshake to the close); the slot then waits for FLOW_RELEASED, when the NIC is done with its
    /// flow id. Only at the close: the tail of a large response, handed over later, would trade the host's SACK
    /// recovery for the NIC's resending from a timeout, and the peer would see duplicates it already had.
    private func handOverIfDone<O: CommandOutput>(_ slot: Int, now: Instant, atClose: Bool = false, output: inout O) -> Bool {
        guard pool.isLive(slot) else { return false }
        // How many host bytes go with the ending when its data does; nil for a plain TEARDOWN.
        let withData: Int?
        if pool[slot].readyForTeardown {
            withData = nil
        } else if atClose, endingsWithDataOnNIC, configuration.endingsWithDataOnNIC, pool.retiredCount < maximumConnections / 2,
                  let hostBytes = pool.inspect(slot, { $0.hostBytesForEndingWithData }) {
            withData = hostBytes
        } else {
            return false
        }
        let parameters = pool[slot].teardownParameters(now: now, configuration: configuration)
        let key = EndpointKey(remoteAddress: pool[slot].remoteAddress, remotePort: pool[slot].remotePort, localPort: pool[slot].localPort)
        let peerInitialSequence = pool[slot].initialReceiveSequence
        statistics.endingsHandedOver += 1
        if let withData {
            let hostBytes = UnsafeMutableRawBufferPointer(rebasing: endingScratch[0..<withData])
            let unacknowledged = pool.inspect(slot) { connection in
                connection.copyUnacknowledgedBytes(withData, into: hostBytes)
                return connection.sendUnacknowledged
            }
            output.emit(.teardownWithData(pool[slot].handle.flow, parameters, unacknowledged: unacknowledged,
                                          hostBytes: UnsafeRawBufferPointer(hostBytes)))
            statistics.endingsHandedOverWithData += 1
            // Its offloaded files stay in use, and its slot out of use, until the NIC releases the flow.
            release(slot, retiring: true)
        } else {
            pool[slot].openFlowOnNIC(output: &output)
            output.emit(.teardown(pool[slot].handle.flow, parameters))
            // Whoever holds resources for its data (offloaded files) hears it is settled.
            settledOrphans.append(pool[slot].handle)
            release(slot)
        }
        rememberHandOver(key, peerInitialSequence: peerInitialSequence, now: now)
        return true
    }

    /// FLOW_RELEASED: the NIC is done with the flow of an ending handed over with data; its slot is free again
    /// and its offloaded files are settled.
    public func flowReleased(_ flow: FlowID, reason: FlowReleaseReason) {
        guard let slot = pool.retiredSlot(of: flow) else { return }
        settledOrphans.append(pool.reinstate(slot))
        statistics.flowsReleased += 1
        if reason != .acknowledged { statistics.flowsReleasedUnacknowledged += 1 }
    }

    /// Segments of `key` that reach the host in the next `handOverGrace` go back to the NIC (REDELIVER).
    private func rememberHandOver(_ key: EndpointKey, peerInitialSequence: SequenceNumber, now: Instant) {
        if key.remoteAddress.isIPv4 {
            recentHandOvers.insert(key.packed, peerInitialSequence: peerInitialSequence, now: now)
        } else {
            recentHandOvers6.insert(key, peerInitialSequence: peerInitialSequence, now: now)
        }
    }

    /// The hand-over of `key` in the last `handOverGrace`, if there was one.
    private func recentHandOver(_ key: EndpointKey, now: Instant) -> (at: Instant, peerInitialSequence: SequenceNumber)? {
        key.remoteAddress.isIPv4 ? recentHandOvers.lookUp(key.packed, now: now) : recentHandOvers6.lookUp(key, now: now)
    }

    // MARK: - Splicing

    /// Joins two established connections on the NIC (AccelTCP's splicing, for an L7 proxy): `head` and any
    /// bytes of `client`'s not yet read go to `backend` first, then each peer's segments are relayed to the
    /// other by the NIC, rewritten; the host sees none of them. Both handles are released at once (as by
    /// `close`); the NIC reports the end with SPLICE_ENDED (`spliceEnded`).
    ///
    /// Throws `.cannotSplice` (changing nothing) unless the NIC splices, both connections are established
    /// with nothing in flight or queued, the backend has sent nothing, both or neither use timestamps, both
    /// peers take full-sized segments, and the head fits `SpliceParameters.maximumHeadLength`. A caller
    /// falls back to copying between the two.
    /// `maximumHeadLength` is the most head (given and unread) the command may carry: less than
    /// `SpliceParameters.maximumHeadLength` when the channel's messages are smaller.
    public func splice<O: CommandOutput>(
        _ client: TCPHandle, to backend: TCPHandle, head: UnsafeRawBufferPointer, now: Instant, output: inout O,
        maximumHeadLength: Int = SpliceParameters.maximumHeadLength
    ) throws(TCPError) {
        guard splicingOnNIC else { throw .cannotSplice("the NIC does not offer splicing") }
        let clientSlot = try validSlot(client), backendSlot = try validSlot(backend)
        guard clientSlot != backendSlot else { throw .cannotSplice("a connection cannot be spliced to itself") }
        // The NIC rewrites relayed packets in place: a header cannot change family (or size) on the way.
        let ipv4 = pool[clientSlot].remoteAddress.isIPv4
        guard pool[backendSlot].remoteAddress.isIPv4 == ipv4 else {
            throw .cannotSplice("the client and the backend are of two address families")
        }
        guard ipv4 || ipv6SplicingOnNIC else { throw .cannotSplice("the NIC does not splice IPv6 connections") }
        let configuration = configuration
        if let why = pool.inspect(clientSlot, { $0.spliceRefusal(asBackend: false, configuration: configuration) }) {
            throw .cannotSplice("the client connection: \(why)")
        }
        if let why = pool.inspect(backendSlot, { $0.spliceRefusal(asBackend: true, configuration: configuration) }) {
            throw .cannotSplice("the backend connection: \(why)")
        }
        guard pool[clientSlot].timestampsEnabled == pool[backendSlot].timestampsEnabled else {
            throw .cannotSplice("one connection uses timestamps and the other does not")
        }
        let unread = pool.inspect(clientSlot) { $0.readableBytes }
        let headLimit = min(maximumHeadLength, SpliceParameters.maximumHeadLength)
        guard head.count + unread <= headLimit else {
            throw .cannotSplice("\(head.count + unread) bytes of head, more than \(headLimit)")
        }
        // The head and the unread bytes side by side for the command: on the stack (they are at most
        // `maximumHeadLength`), so a splice allocates nothing for them.
        withUnsafeTemporaryAllocation(byteCount: head.count + unread, alignment: 1) { buffer in
            if !head.isEmpty { UnsafeMutableRawBufferPointer(rebasing: buffer[0..<head.count]).copyMemory(from: head) }
            if unread > 0 {
                _ = pool[clientSlot].read(into: UnsafeMutableRawBufferPointer(rebasing: buffer[head.count...]), now: now,
                                          configuration: configuration, output: &output)
            }
            emitSplice(clientSlot: clientSlot, backendSlot: backendSlot, head: UnsafeRawBufferPointer(buffer), now: now, output: &output)
        }
        statistics.splicesHandedOver += 1
        for slot in [clientSlot, backendSlot] {
            let key = EndpointKey(remoteAddress: pool[slot].remoteAddress, remotePort: pool[slot].remotePort,
                                  localPort: pool[slot].localPort)
            let peerInitialSequence = pool[slot].initialReceiveSequence
            if slot == backendSlot { splicedBackends.insert(key) }
            pool[slot].ownedByApplication = false
            release(slot)
            rememberHandOver(key, peerInitialSequence: peerInitialSequence, now: now)
        }
    }

    /// The ACK to the client, both flows closed on the NIC and the SPLICE itself, in that order; or, to a NIC
    /// that does the first two itself (`spliceAcknowledgmentOnNIC`), the SPLICE alone.
    private func emitSplice<O: CommandOutput>(
        clientSlot: Int, backendSlot: Int, head bytes: UnsafeRawBufferPointer, now: Instant, output: inout O
    ) {
        // The backend's handshake ACK rides the head the NIC sends; with no head, it goes now.
        if pool[backendSlot].owesHandshakeAcknowledgment && bytes.isEmpty {
            pool[backendSlot].sendAcknowledgment(now: now, output: &output)
        }
        let nicAcknowledges = spliceAcknowledgmentOnNIC
        if !nicAcknowledges {
            // The client hears now that everything it sent is ours: what it sends again of it later would
            // have to be answered by the NIC.
            pool[clientSlot].ackNow = true
            pool[clientSlot].flush(now: now, configuration: configuration, output: &output)
        }
        for slot in [clientSlot, backendSlot] where pool[slot].flowOpenOnNIC {
            pool[slot].flowOpenOnNIC = false
            if !nicAcknowledges { output.emit(.flowClose(pool[slot].handle.flow, reason: 0)) }
        }
        func milliseconds(_ nanoseconds: UInt64) -> UInt32 { UInt32(clamping: max(nanoseconds / Nanoseconds.millisecond, 1)) }
        let parameters = SpliceParameters(
            client: pool[clientSlot].spliceState(now: now), backend: pool[backendSlot].spliceState(now: now),
            backendFlow: pool[backendSlot].handle.flow, localAddress: localAddress(for: pool[clientSlot].remoteAddress),
            retransmissionTimeoutMilliseconds: milliseconds(pool[backendSlot].rtt.timeout),
            maximumRetransmissions: UInt16(clamping: configuration.maximumRetransmissions),
            idleTimeoutMilliseconds: milliseconds(configuration.spliceIdleTimeout),
            lingerMilliseconds: UInt32(clamping: configuration.spliceLinger / Nanoseconds.millisecond),
            acknowledgeClient: nicAcknowledges)
        output.emit(.splice(pool[clientSlot].handle.flow, parameters, head: bytes))
    }

    /// SPLICE_ENDED: the NIC has let go of a splice. Its backend 4-tuple is free again, unless the client
    /// closed first: then the backend saw our side close first and our side keeps TIME-WAIT for it, so the
    /// 4-tuple stays out of use for `timeWaitDuration` from now.
    public func spliceEnded(_ report: SpliceReport, now: Instant) {
        statistics.splicesEnded += 1
        statistics.splicedBytes += report.clientBytes &+ report.backendBytes
        let key = EndpointKey(remoteAddress: report.backendAddress, remotePort: report.backendPort, localPort: report.backendLocalPort)
        // Only a 4-tuple this engine handed over: a stray report must not hold ports.
        guard splicedBackends.remove(key) != nil else { return }
        if report.clientClosedFirst {
            backendTimeWaits.hold(key, until: now + configuration.timeWaitDuration, now: now)
            statistics.backendTimeWaits += 1
        }
    }

    /// Splices the NIC is relaying for this engine.
    public var activeSplices: Int { splicedBackends.count }

    /// Backends' 4-tuples in the TIME-WAIT the host keeps after splices their clients closed first.
    public var backendsInTimeWait: Int { backendTimeWaits.count }

    /// A NIC that says HELLO starts with no splices: the backends' 4-tuples it held are free again.
    public func nicStarted() {
        splicedBackends.removeAll()
        // A NIC that starts holds no flow: every slot waiting for a release is free.
        settledOrphans.append(contentsOf: pool.reinstateAll())
    }

    // MARK: - Slots

    private func allocateSlot() throws(TCPError) -> Int {
        guard let slot = pool.allocate() else { throw .tooManyConnections }
        if slot >= isReady.count {
            isReady.append(false)
            wheel.ensureCapacity(slots: slot + 1)
        }
        return slot
    }

    /// A new connection's control block for `slot`, its ISN and timestamp offset keyed from the secret
    /// unless given (a SYN cookie fixes the ISN, and the TSval its SYN-ACK carried fixes the offset).
    private func newConnection(
        in slot: Int, remote: IPAddress, localPort: UInt16, remotePort: UInt16, state: TCPState, now: Instant,
        initialSequence: SequenceNumber? = nil, timestampOffset: UInt32? = nil, listenerPort: UInt16? = nil
    ) -> TCPConnection {
        let local = localAddress(for: remote)
        var connection = TCPConnection(
            handle: pool.handle(of: slot), localAddress: local, remoteAddress: remote, localPort: localPort,
            remotePort: remotePort,
            initialSequence: initialSequence
                ?? secrets.initialSequence(local: local, remote: remote, remotePort: remotePort, localPort: localPort, now: now),
            timestampOffset: timestampOffset ?? secrets.timestampOffset(remote: remote, remotePort: remotePort, localPort: localPort),
            state: state, ownedByApplication: listenerPort == nil, configuration: configuration)
        connection.listenerPort = listenerPort
        return connection
    }

    /// Puts a new connection in its slot and the endpoint index; counts it, and its listener's pending.
    private func install(_ connection: consuming TCPConnection, at slot: Int, key: EndpointKey) {
        let listenerPort = connection.listenerPort
        pool.insert(connection, at: slot)
        byEndpoints[key] = Int32(slot)
        if let port = listenerPort { listeners[port]!.pending += 1 }
        statistics.connectionsOpened += 1
    }

    private func validSlot(_ handle: TCPHandle) throws(TCPError) -> Int {
        guard pool.isCurrent(handle) else { throw .invalidHandle }
        return Int(handle.slot)
    }

    /// After anything touched a connection: its timer, its place in the ready list, the accept queue,
    /// and freeing it once it is closed and nobody holds it.
    private func afterChange(_ slot: Int) {
        guard pool.isLive(slot) else { return }
        if pool[slot].owesHandshakeAcknowledgment, !owedAcknowledgments.contains(pool[slot].handle) {
            owedAcknowledgments.append(pool[slot].handle)
        }
        if let port = pool[slot].listenerPort, !pool[slot].awaitingAccept, pool[slot].state != .synReceived,
           pool[slot].state != .closed, listeners[port] != nil {
            pool[slot].awaitingAccept = true
            listeners[port]!.acceptQueue.append(pool[slot].handle)
            readyListeners.append(port)
        }
        if !pool[slot].ownedByApplication,
           pool[slot].state == .closed || !pool[slot].events.isDisjoint(with: [.allAcknowledged, .closed]) {
            settledOrphans.append(pool[slot].handle)
            pool[slot].events.subtract([.allAcknowledged, .closed])
        }
        if pool[slot].state == .closed && !pool[slot].ownedByApplication {
            release(slot)
            return
        }
        wheel.schedule(slot, at: pool[slot].nextDeadline)
        if !pool[slot].events.isEmpty && !isReady[slot] {
            isReady[slot] = true
            readyConnections.append(Int32(slot))
        }
    }

    /// Frees a connection's slot (`retiring`: its control block, the slot itself once the NIC releases the flow).
    private func release(_ slot: Int, retiring: Bool = false) {
        guard pool.isLive(slot) else { return }
        // A stale accept-queue entry is skipped by `accept` (its handle no longer validates).
        if let port = pool[slot].listenerPort, listeners[port] != nil { listeners[port]!.pending -= 1 }
        byEndpoints[EndpointKey(remoteAddress: pool[slot].remoteAddress, remotePort: pool[slot].remotePort,
                                localPort: pool[slot].localPort)] = nil
        wheel.schedule(slot, at: nil)
        statistics.closedLossRecovery.add(pool.inspect(slot) { $0.info })
        if retiring { _ = pool.retire(slot) } else { pool.remove(slot) }
        statistics.connectionsClosed += 1
    }

    /// Retransmission timeouts, fast recoveries, tail loss probes, lost retransmissions and reordering-window
    /// losses found, over every connection, closed and open.
    public var lossRecovery: LossRecoveryCounts {
        var counts = statistics.closedLossRecovery
        for slot in 0..<pool.slotCount where pool.isLive(slot) { counts.add(pool.inspect(slot) { $0.info }) }
        return counts
    }
}
