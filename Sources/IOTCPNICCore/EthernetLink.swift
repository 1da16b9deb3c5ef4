import IOTCPCommon

/// The link layer the NIC answers for itself: Ethernet framing, ARP (answer for our address, learn the
/// peers'), and ICMP echo; with an IPv6 address too, Neighbor Discovery and ICMPv6 (`EthernetLink+IPv6.swift`). IPv4 TCP packets go up; IPv4 packets from the stack go out in frames addressed
/// from the neighbour table. An unknown neighbour is asked for; the packet that asked is held (the latest one
/// per address, for `maximumHeld` addresses and a second at most, as Linux's unresolved queue holds a few)
/// and sent when the answer comes, so a first SYN or SYN-ACK does not wait out a retransmission timeout;
/// anything else is dropped, and TCP retransmits it.
///
/// The neighbour table is bounded and forgets: it learns only on-link addresses (inside `network`), from
/// ARP that concerns us and from IPv4 packets sent to us; an entry not heard from in
/// `neighbourLifetime` is gone; at `maximumNeighbours`, the longest silent one makes room. A flood of
/// spoofed sources costs a fixed amount of memory, and nothing once it stops.
public struct EthernetLink {
    public let hardwareAddress: MACAddress
    /// The link's IPv4 address; 0.0.0.0 for a link with IPv6 only (`ipv6`), which then ignores ARP and IPv4.
    public let address: IPv4Address
    /// Bits of `address` that name its network: only addresses inside it are learned as neighbours.
    public let prefixLength: Int
    public let maximumNeighbours: Int
    public let neighbourLifetime: UInt64
    private var neighbours: NeighbourTable<IPv4Address>
    var clock = Instant.zero
    public private(set) var arpRepliesSent = 0
    public internal(set) var echoRepliesSent = 0
    public internal(set) var framesDropped = 0
    /// Neighbours forgotten to make room (both families), and sources not learned because they are not on the link.
    public var neighboursEvicted: Int { neighbours.evicted + neighbours6.evicted }
    public internal(set) var offLinkSources = 0
    /// ARP requests not sent because the limit was reached, and packets for off-link addresses (no route:
    /// there is no gateway here) dropped without asking.
    public internal(set) var arpRequestsLimited = 0
    public internal(set) var offLinkDrops = 0
    /// At most this many ARP requests and neighbour solicitations leave per 100 ms: answering a flood of
    /// SYNs from spoofed on-link sources must not turn into a broadcast storm on the link (Linux asks at most
    /// 3 times a second per neighbour, and keeps per-neighbour state for it; a budget keeps nothing per address).
    public var arpRequests = TickBudget(perTick: 64)
    /// IPv6, when the link has an address of that family too (`EthernetLink+IPv6.swift`).
    public let ipv6: IPv6Settings?
    /// fe80::/64 with the modified EUI-64 of `hardwareAddress`: where link-local Neighbor Discovery is answered.
    public let linkLocalAddress: IPv6Address
    var neighbours6: NeighbourTable<IPv6Address>
    public internal(set) var neighborAdvertisementsSent = 0
    public internal(set) var neighborSolicitationsSent = 0
    public internal(set) var icmpv6ErrorsSent = 0
    /// ICMPv6 errors not sent because the limit was reached (RFC 4443 §2.4(f) asks for one).
    public internal(set) var icmpv6ErrorsLimited = 0
    /// IPv6 packets refused by the parser (RFC 8200's discards) or not carried yet (TCP over IPv6).
    public internal(set) var ipv6Dropped = 0
    public var icmpv6Errors = TickBudget(perTick: 10)
    /// Neighbour solicitations, and advertisements to all nodes, per 100 ms: a budget of their own, so a
    /// flood of IPv6 solicitations cannot starve ARP. Solicitations sent in the last seconds, so only the
    /// answer to one creates a neighbour (an advertisement nobody asked for only refreshes a known one).
    public var neighborDiscovery = TickBudget(perTick: 64)
    var pendingSolicitations: [(target: IPv6Address, since: Instant)] = []
    /// Packets waiting for their neighbour's address, and since when.
    private var held: [IPv4Address: (packet: [UInt8], since: Instant)] = [:]
    public let maximumHeld = 64
    public private(set) var heldPacketsSent = 0

    public init(
        hardwareAddress: MACAddress, address: IPv4Address, prefixLength: Int = 24, ipv6: IPv6Settings? = nil,
        maximumNeighbours: Int = 4096, neighbourLifetime: UInt64 = 600 * Nanoseconds.second
    ) {
        self.hardwareAddress = hardwareAddress
        self.address = address
        self.prefixLength = max(0, min(prefixLength, 32))
        self.maximumNeighbours = max(maximumNeighbours, 1)
        self.neighbourLifetime = neighbourLifetime
        self.ipv6 = ipv6
        linkLocalAddress = IPv6Address(linkLocalFor: hardwareAddress)
        neighbours = NeighbourTable(maximum: maximumNeighbours, lifetime: neighbourLifetime)
        neighbours6 = NeighbourTable(maximum: maximumNeighbours, lifetime: neighbourLifetime)
    }

    /// Neighbours known, both families.
    public var neighbourCount: Int { neighbours.count + neighbours6.count }

    private func isOnLink(_ other: IPv4Address) -> Bool {
        let mask: UInt32 = prefixLength == 0 ? 0 : ~UInt32(0) << UInt32(32 - prefixLength)
        return other != address && other.rawValue & mask == address.rawValue & mask && other.rawValue != 0
    }

    /// Handles a received frame at `now`: returns the IPv4 or IPv6 TCP packet inside it for the stack, or nil after
    /// answering (ARP, ping) or dropping it. Frames to send in reply go to `transmit`.
    public mutating func receive(
        frame: UnsafeRawBufferPointer, now: Instant, transmit: (UnsafeRawBufferPointer) -> Void
    ) -> UnsafeRawBufferPointer? {
        clock = now
        guard let ethernet = try? EthernetFrameView(frame) else { framesDropped += 1; return nil }
        let destination = ethernet.destination
        guard destination == hardwareAddress || destination.isBroadcast || destination.isMulticast else { return nil }
        switch ethernet.etherType {
        case .arp where address.rawValue == 0, .ipv4 where address.rawValue == 0:
            return nil  // no IPv4 address (IPv6 only): neither ARP nor IPv4 concerns this link
        case .arp:
            guard let arp = try? ARPRepr(parsing: ethernet.payload) else { framesDropped += 1; return nil }
            // Only ARP that concerns us teaches us anything: a request for our address, or a reply to us.
            guard arp.targetProtocolAddress == address else { return nil }
            heard(arp.senderProtocolAddress, at: arp.senderHardwareAddress)
            if !held.isEmpty { sendHeld(for: arp.senderProtocolAddress, transmit: transmit) }
            if arp.operation == .request {
                let reply = ARPRepr(operation: .reply, senderHardwareAddress: hardwareAddress, senderProtocolAddress: address,
                                    targetHardwareAddress: arp.senderHardwareAddress, targetProtocolAddress: arp.senderProtocolAddress)
                var bytes = [UInt8](repeating: 0, count: 14 + ARPRepr.length)
                bytes.withUnsafeMutableBytes { buffer in
                    try? EthernetRepr(destination: arp.senderHardwareAddress, source: hardwareAddress, etherType: .arp).emit(into: buffer)
                    try? reply.emit(into: UnsafeMutableRawBufferPointer(rebasing: buffer[14...]))
                    transmit(UnsafeRawBufferPointer(buffer))
                }
                arpRepliesSent += 1
            }
            return nil
        case .ipv4:
            guard let ip = try? IPv4PacketView(ethernet.payload), ip.destination == address else { return nil }
            heard(ip.source, at: ethernet.source)
            if !held.isEmpty { sendHeld(for: ip.source, transmit: transmit) }
            if ip.protocol == .tcp { return ip.bytes }
            if ip.protocol == .icmp, let (icmp, data) = try? ICMPv4Repr.parse(ip.payload),
               case .echoRequest(let identifier, let sequence) = icmp.message {
                let reply = ICMPv4Repr(message: .echoReply(identifier: identifier, sequence: sequence))
                var packet = [UInt8](repeating: 0, count: 20 + 8 + data.count)
                packet.withUnsafeMutableBytes { buffer in
                    try? IPv4Repr(source: address, destination: ip.source, protocol: .icmp, payloadLength: 8 + data.count).emit(into: buffer)
                    _ = try? reply.emit(into: UnsafeMutableRawBufferPointer(rebasing: buffer[20...]), data: data)
                }
                packet.withUnsafeBytes { send(packet: $0, transmit: transmit) }
                echoRepliesSent += 1
            }
            return nil
        case .ipv6:
            return receiveIPv6(ethernet, transmit: transmit)
        default:
            return nil
        }
    }

    /// Records that `source` is at `hardware`, if it is on the link; refreshes it if known.
    private mutating func heard(_ source: IPv4Address, at hardware: MACAddress) {
        if !neighbours.heard(source, at: hardware, now: clock, isOnLink: isOnLink) { offLinkSources += 1 }
    }

    /// The neighbour's hardware address, if known and not aged out.
    private mutating func lookUp(_ destination: IPv4Address) -> MACAddress? {
        neighbours.lookUp(destination, now: clock)
    }

    /// A neighbour known without asking (a static ARP entry): benchmarks, and links whose peers never ARP.
    public mutating func learn(neighbour address: IPv4Address, at hardwareAddress: MACAddress) {
        neighbours.learnStatic(address, at: hardwareAddress, now: clock)
    }

    /// Frames an IPv4 packet for its destination and transmits it.
    public mutating func send(packet: UnsafeRawBufferPointer, transmit: (UnsafeRawBufferPointer) -> Void) {
        guard packet.count >= 20 else { return }
        let destination = IPv4Address(rawValue: packet.bigEndianUInt32(at: 16))
        guard let neighbour = lookUp(destination) else {
            framesDropped += 1
            askFor(destination, transmit: transmit)
            return
        }
        var frame = [UInt8](repeating: 0, count: 14 + packet.count)
        frame.withUnsafeMutableBytes { buffer in
            try? EthernetRepr(destination: neighbour, source: hardwareAddress, etherType: .ipv4).emit(into: buffer)
            UnsafeMutableRawBufferPointer(rebasing: buffer[14...]).copyMemory(from: packet)
            transmit(UnsafeRawBufferPointer(buffer))
        }
    }

    /// Writes the Ethernet header for an IPv4 packet to `destination` into `header` (14 bytes), for a
    /// frame whose packet follows from elsewhere (a gathered write). False, having asked by ARP, when the
    /// neighbour is not known yet.
    public mutating func writeHeader(
        into header: UnsafeMutableRawBufferPointer, destination: IPv4Address, transmit: (UnsafeRawBufferPointer) -> Void
    ) -> Bool {
        guard header.count >= 14, let neighbour = lookUp(destination) else {
            framesDropped += 1
            askFor(destination, transmit: transmit)
            return false
        }
        try? EthernetRepr(destination: neighbour, source: hardwareAddress, etherType: .ipv4).emit(into: header)
        return true
    }

    /// Keeps a packet whose neighbour was just asked for (after `writeHeader` returned false), replacing any
    /// older one for the same address; nothing when `maximumHeld` addresses already wait or it is off-link.
    public mutating func hold(header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, now: Instant) {
        guard header.count >= 20, header.count + payload.count <= 65_535 else { return }
        let destination = IPv4Address(rawValue: header.bigEndianUInt32(at: 16))
        if held[destination] == nil && held.count >= maximumHeld { held = held.filter { now - $0.value.since < Nanoseconds.second } }
        guard isOnLink(destination), held[destination] != nil || held.count < maximumHeld else { return }
        held[destination] = (Array(header) + Array(payload), now)
    }

    /// Sends what waited for `neighbour`, now known, unless it waited more than a second (TCP has sent it
    /// again by then).
    private mutating func sendHeld(for neighbour: IPv4Address, transmit: (UnsafeRawBufferPointer) -> Void) {
        guard let waiting = held.removeValue(forKey: neighbour) else { return }
        if held.count > maximumHeld / 2 { held = held.filter { clock - $0.value.since < Nanoseconds.second } }
        guard clock - waiting.since < Nanoseconds.second else { return }
        heldPacketsSent += 1
        waiting.packet.withUnsafeBytes { send(packet: $0, transmit: transmit) }
    }

    private mutating func askFor(_ target: IPv4Address, transmit: (UnsafeRawBufferPointer) -> Void) {
        guard isOnLink(target) else {
            offLinkDrops += 1
            return
        }
        guard takeResolutionBudget() else { return }
        let request = ARPRepr(operation: .request, senderHardwareAddress: hardwareAddress, senderProtocolAddress: address,
                              targetHardwareAddress: .zero, targetProtocolAddress: target)
        var bytes = [UInt8](repeating: 0, count: 14 + ARPRepr.length)
        bytes.withUnsafeMutableBytes { buffer in
            try? EthernetRepr(destination: .broadcast, source: hardwareAddress, etherType: .arp).emit(into: buffer)
            try? request.emit(into: UnsafeMutableRawBufferPointer(rebasing: buffer[14...]))
            transmit(UnsafeRawBufferPointer(buffer))
        }
    }

    /// Whether another ARP request may leave in this 100 ms (counted if not).
    mutating func takeResolutionBudget() -> Bool {
        if arpRequests.take(now: clock) { return true }
        arpRequestsLimited += 1
        return false
    }
}

/// How many of something the link may send per 100 ms: what a flood can make it send is bounded, and no
/// state is kept per address.
public struct TickBudget: Sendable {
    public var perTick: Int
    private var tick = Instant.zero
    private var used = 0

    public init(perTick: Int) { self.perTick = perTick }

    /// Whether one more may go at `now`; counts it if so.
    mutating func take(now: Instant) -> Bool {
        if now - tick >= 100 * Nanoseconds.millisecond {
            tick = now
            used = 0
        }
        guard used < perTick else { return false }
        used += 1
        return true
    }
}
