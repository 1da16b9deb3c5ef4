import IOTCPCommon

/// The link's IPv6 address and the length of its on-link prefix.
public struct IPv6Settings: Hashable, Sendable {
    public var address: IPv6Address
    public var prefixLength: Int

    public init(address: IPv6Address, prefixLength: Int = 64) {
        self.address = address
        self.prefixLength = max(0, min(prefixLength, 128))
    }
}

/// IPv6 on the link: Neighbor Discovery (RFC 4861) for the link's global and link-local addresses (answering
/// solicitations, soliciting unknown neighbours within a budget of its own, learning as RFC 4861 says: from
/// solicitations for our addresses and from answers to our own solicitations; an unsolicited advertisement
/// only refreshes a known neighbour, and without its Override flag never changes its address), ICMPv6 echo,
/// and the ICMPv6 errors RFC 8200 and RFC 4443 ask of a host:
/// a Parameter Problem for what the parser refuses, Destination Unreachable (port) for a transport not
/// carried (UDP, and TCP to the link-local address, which the stack does not serve). TCP to the global
/// address goes to the stack. Errors are rate-limited, never sent about an error, about a packet sent
/// to a group or as a link-layer multicast or broadcast (except where an option's type asks), or to an
/// unspecified or multicast source.
extension EthernetLink {
    /// Whether `address` is one of the link's own.
    func isOurs(_ address: IPv6Address) -> Bool {
        address == linkLocalAddress || address == ipv6?.address
    }

    /// The groups the link listens to: all nodes, and the solicited-node groups of its addresses.
    func isOurGroup(_ address: IPv6Address) -> Bool {
        guard let ipv6 else { return false }
        return address == .allNodes || address == ipv6.address.solicitedNodeMulticast
            || address == linkLocalAddress.solicitedNodeMulticast
    }

    /// Link-local addresses, and those inside the configured prefix, other than our own.
    func isOnLink(_ address: IPv6Address) -> Bool {
        Self.isOnLink(address, settings: ipv6, linkLocal: linkLocalAddress)
    }

    static func isOnLink(_ address: IPv6Address, settings: IPv6Settings?, linkLocal: IPv6Address) -> Bool {
        guard let settings, !address.isMulticast, !address.isUnspecified, address != linkLocal, address != settings.address else {
            return false
        }
        return address.isLinkLocal || address.sharesPrefix(with: settings.address, length: settings.prefixLength)
    }

    /// The address to send from when talking to `peer`: link-local to link-local, the global one otherwise.
    func ourAddress(toward peer: IPv6Address) -> IPv6Address {
        peer.isLinkLocal || ipv6 == nil ? linkLocalAddress : ipv6!.address
    }

    mutating func heard(_ source: IPv6Address, at hardware: MACAddress) {
        let settings = ipv6, linkLocal = linkLocalAddress
        if !neighbours6.heard(source, at: hardware, now: clock, isOnLink: { Self.isOnLink($0, settings: settings, linkLocal: linkLocal) }) {
            offLinkSources += 1
        }
    }

    /// A neighbour known without asking: links whose peers never answer solicitations, and tests.
    public mutating func learn(neighbour address: IPv6Address, at hardwareAddress: MACAddress) {
        neighbours6.learnStatic(address, at: hardwareAddress, now: clock)
    }

    /// Handles an IPv6 frame: returns a TCP packet to the global address for the stack, or nil after
    /// answering or dropping it.
    mutating func receiveIPv6(_ ethernet: EthernetFrameView, transmit: (UnsafeRawBufferPointer) -> Void) -> UnsafeRawBufferPointer? {
        guard let settings = ipv6 else { return nil }
        let bytes = ethernet.payload
        let unicastFrame = ethernet.destination == hardwareAddress
        let packet: IPv6PacketView
        do throws(WireError) {
            packet = try IPv6PacketView(bytes)
        } catch {
            ipv6Dropped += 1
            // The fixed header was readable if the error names a place in the packet.
            if let problem = error.ipv6ParameterProblem, bytes.count >= IPv6PacketView.headerLength {
                let destination = IPv6Address.load(from: bytes, at: 24)
                let total = min(bytes.count, IPv6PacketView.headerLength + Int(bytes.bigEndianUInt16(at: 4)))
                if isOurs(destination) && unicastFrame || problem.evenToMulticast && (isOurs(destination) || isOurGroup(destination)) {
                    sendError(.parameterProblem(code: problem.code, pointer: UInt32(problem.pointer)),
                              about: UnsafeRawBufferPointer(rebasing: bytes[0..<total]), transmit: transmit)
                }
            }
            return nil
        }
        let source = packet.source, destination = packet.destination
        let unicast = isOurs(destination)
        guard unicast || isOurGroup(destination) else { return nil }
        // Errors only about what was sent to us alone (RFC 4443 §2.4 e.3-e.5).
        let answersWithErrors = unicast && unicastFrame
        switch packet.upperLayerProtocol {
        case .icmpv6:
            guard let (icmp, data) = try? ICMPv6Repr.parse(packet.upperLayer, source: source, destination: destination) else {
                ipv6Dropped += 1
                return nil
            }
            switch icmp.message {
            case .neighborSolicitation(let target):
                guard isOurs(target), let options = try? NeighborDiscoveryOptions(parsing: data),
                      icmp.isValidNeighborDiscovery(hopLimit: packet.hopLimit, source: source, destination: destination, options: options)
                else { return nil }
                // RFC 4861 §7.2.3: the solicitor's link-layer address is recorded, then answered. A solicitation
                // from the unspecified address is another node's duplicate address detection: the answer, that
                // the address is taken, goes to all nodes and is not marked solicited.
                if let hardware = options.sourceLinkLayerAddress { heard(source, at: hardware) }
                guard takeNeighborDiscoveryBudget() else { return nil }
                let answer = ICMPv6Repr(message: .neighborAdvertisement(
                    flags: source.isUnspecified ? [.override] : [.solicited, .override], target: target))
                sendNeighborDiscovery(answer, options: NeighborDiscoveryOptions(targetLinkLayerAddress: hardwareAddress),
                                      from: target, to: source.isUnspecified ? .allNodes : source, transmit: transmit)
                neighborAdvertisementsSent += 1
            case .neighborAdvertisement(let flags, let target):
                guard let options = try? NeighborDiscoveryOptions(parsing: data),
                      icmp.isValidNeighborDiscovery(hopLimit: packet.hopLimit, source: source, destination: destination, options: options),
                      let hardware = options.targetLinkLayerAddress
                else { return nil }
                // An answer to our own solicitation is learned; anything else only updates a neighbour already
                // known, and only with Override or no change of address (RFC 4861 §7.2.5), so advertisements
                // can neither fill the table nor move a neighbour without saying so.
                if let asked = pendingSolicitations.firstIndex(where: { $0.target == target }) {
                    pendingSolicitations.remove(at: asked)
                    heard(target, at: hardware)
                } else if let known = neighbours6.lookUp(target, now: clock), known == hardware || flags.contains(.override) {
                    heard(target, at: hardware)
                }
            case .packetTooBig where destination == settings.address && unicastFrame:
                // About a segment the stack sent (RFC 8201): the host lowers that connection's segment size.
                return packet.bytes
            case .echoRequest(let identifier, let sequence) where unicast:
                let reply = ICMPv6Repr(message: .echoReply(identifier: identifier, sequence: sequence))
                var out = [UInt8](repeating: 0, count: IPv6PacketView.headerLength + reply.fixedLength + data.count)
                out.withUnsafeMutableBytes { buffer in
                    try? IPv6Repr(source: destination, destination: source, nextHeader: .icmpv6, payloadLength: buffer.count - 40)
                        .emit(into: buffer)
                    _ = try? reply.emit(into: UnsafeMutableRawBufferPointer(rebasing: buffer[40...]), data: data,
                                        source: destination, destination: source)
                }
                out.withUnsafeBytes { send(ipv6Packet: $0, transmit: transmit) }
                echoRepliesSent += 1
            default:
                return nil
            }
        case .tcp where destination == settings.address && unicastFrame && !source.isMulticast && !source.isUnspecified:
            return packet.bytes
        case .noNextHeader:
            return nil
        case .tcp, .udp:
            // No UDP port is open, nor TCP on the link-local address: the sender learns so at once (RFC 4443
            // §3.1, code 4).
            ipv6Dropped += 1
            if answersWithErrors { sendError(.destinationUnreachable(code: 4), about: packet.bytes, transmit: transmit) }
        default:
            // A Next Header value the stack does not know (RFC 8200 §4): Parameter Problem, code 1.
            ipv6Dropped += 1
            if answersWithErrors {
                sendError(.parameterProblem(code: 1, pointer: UInt32(packet.upperLayerPointer)), about: packet.bytes, transmit: transmit)
            }
        }
        return nil
    }

    /// Writes the Ethernet header for an IPv6 packet to `destination` into `header` (14 bytes), for a frame
    /// whose packet follows from elsewhere. False, having solicited it, when the neighbour is not known yet
    /// (the packet is lost, as on a wire; TCP sends it again).
    public mutating func writeHeader(
        into header: UnsafeMutableRawBufferPointer, destination: IPv6Address, transmit: (UnsafeRawBufferPointer) -> Void
    ) -> Bool {
        let hardware: MACAddress
        if destination.isMulticast {
            hardware = destination.multicastMAC
        } else if header.count >= EthernetFrameView.headerLength, let known = neighbours6.lookUp(destination, now: clock) {
            hardware = known
        } else {
            framesDropped += 1
            solicit(destination, transmit: transmit)
            return false
        }
        try? EthernetRepr(destination: hardware, source: hardwareAddress, etherType: .ipv6).emit(into: header)
        return true
    }

    /// Frames an IPv6 packet for its destination (a group's Ethernet address, or the neighbour's) and
    /// transmits it; an unknown neighbour is solicited and the packet dropped.
    public mutating func send(ipv6Packet packet: UnsafeRawBufferPointer, transmit: (UnsafeRawBufferPointer) -> Void) {
        guard packet.count >= IPv6PacketView.headerLength else { return }
        let destination = IPv6Address.load(from: packet, at: 24)
        let hardware: MACAddress
        if destination.isMulticast {
            hardware = destination.multicastMAC
        } else if let known = neighbours6.lookUp(destination, now: clock) {
            hardware = known
        } else {
            framesDropped += 1
            solicit(destination, transmit: transmit)
            return
        }
        var frame = [UInt8](repeating: 0, count: EthernetFrameView.headerLength + packet.count)
        frame.withUnsafeMutableBytes { buffer in
            try? EthernetRepr(destination: hardware, source: hardwareAddress, etherType: .ipv6).emit(into: buffer)
            UnsafeMutableRawBufferPointer(rebasing: buffer[EthernetFrameView.headerLength...]).copyMemory(from: packet)
            transmit(UnsafeRawBufferPointer(buffer))
        }
    }

    /// Asks for an on-link neighbour's link-layer address: a solicitation to its solicited-node group.
    mutating func solicit(_ target: IPv6Address, transmit: (UnsafeRawBufferPointer) -> Void) {
        guard isOnLink(target) else {
            offLinkDrops += 1
            return
        }
        guard takeNeighborDiscoveryBudget() else { return }
        // Remembered for three seconds (Linux's three tries a second), sixty-four at most: the oldest goes.
        pendingSolicitations.removeAll { clock - $0.since >= 3 * Nanoseconds.second || $0.target == target }
        if pendingSolicitations.count >= 64 { pendingSolicitations.removeFirst() }
        pendingSolicitations.append((target, clock))
        sendNeighborDiscovery(ICMPv6Repr(message: .neighborSolicitation(target: target)),
                              options: NeighborDiscoveryOptions(sourceLinkLayerAddress: hardwareAddress),
                              from: ourAddress(toward: target), to: target.solicitedNodeMulticast, transmit: transmit)
        neighborSolicitationsSent += 1
    }

    /// Whether another solicitation or advertisement to all nodes may leave in this 100 ms (counted if not).
    mutating func takeNeighborDiscoveryBudget() -> Bool {
        if neighborDiscovery.take(now: clock) { return true }
        arpRequestsLimited += 1
        return false
    }

    /// Sends a Neighbor Discovery message with hop limit 255, which receivers require (RFC 4861 §7.1).
    private mutating func sendNeighborDiscovery(
        _ message: ICMPv6Repr, options: NeighborDiscoveryOptions, from source: IPv6Address, to destination: IPv6Address,
        transmit: (UnsafeRawBufferPointer) -> Void
    ) {
        var optionBytes = [UInt8](repeating: 0, count: options.encodedLength)
        _ = optionBytes.withUnsafeMutableBytes { try? options.emit(into: $0) }
        let length = message.fixedLength + optionBytes.count
        var out = [UInt8](repeating: 0, count: IPv6PacketView.headerLength + length)
        out.withUnsafeMutableBytes { buffer in
            try? IPv6Repr(source: source, destination: destination, nextHeader: .icmpv6, payloadLength: length, hopLimit: 255)
                .emit(into: buffer)
            optionBytes.withUnsafeBytes { data in
                _ = try? message.emit(into: UnsafeMutableRawBufferPointer(rebasing: buffer[40...]), data: data,
                                      source: source, destination: destination)
            }
        }
        out.withUnsafeBytes { send(ipv6Packet: $0, transmit: transmit) }
    }

    /// Sends an ICMPv6 error about `invoking` (an IPv6 packet) to its source, quoting as much of it as fits
    /// in the minimum MTU, unless RFC 4443 §2.4(e) forbids it or the rate limit is reached.
    mutating func sendError(_ message: ICMPv6Repr.Message, about invoking: UnsafeRawBufferPointer, transmit: (UnsafeRawBufferPointer) -> Void) {
        let error = ICMPv6Repr(message: message)
        let source = IPv6Address.load(from: invoking, at: 8), destination = IPv6Address.load(from: invoking, at: 24)
        guard !source.isUnspecified, !source.isMulticast else { return }
        // About an ICMPv6 error: never (its type is right after a header without extension headers; with
        // them, the upper layer was not reached and the packet is not an error we can recognise).
        if invoking[6] == IPProtocol.icmpv6.rawValue, invoking.count > 40, invoking[40] < 128 { return }
        guard icmpv6Errors.take(now: clock) else {
            icmpv6ErrorsLimited += 1
            return
        }
        let from = isOurs(destination) ? destination : ourAddress(toward: source)
        let quoted = UnsafeRawBufferPointer(rebasing: invoking[0..<min(invoking.count, 1280 - 40 - error.fixedLength)])
        var out = [UInt8](repeating: 0, count: IPv6PacketView.headerLength + error.fixedLength + quoted.count)
        out.withUnsafeMutableBytes { buffer in
            try? IPv6Repr(source: from, destination: source, nextHeader: .icmpv6, payloadLength: buffer.count - 40, hopLimit: 64)
                .emit(into: buffer)
            _ = try? error.emit(into: UnsafeMutableRawBufferPointer(rebasing: buffer[40...]), data: quoted, source: from, destination: source)
        }
        out.withUnsafeBytes { send(ipv6Packet: $0, transmit: transmit) }
        icmpv6ErrorsSent += 1
    }
}
