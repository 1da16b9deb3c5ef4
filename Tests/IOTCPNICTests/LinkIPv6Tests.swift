import IOTCPCommon
import IOTCPNIC
import Testing

/// The NIC's link layer over IPv6: Neighbor Discovery both ways, echo, and the ICMPv6 errors a host owes.
@Suite("Ethernet link: IPv6 neighbour discovery and ICMPv6")
struct LinkIPv6Tests {
    static let mac = MACAddress(0x02, 0, 0, 0x77, 0, 2)
    static let ours = IPv6Address("fd77::2")!
    static let peer = IPv6Address("fd77::1")!
    static let peerMAC = MACAddress(0x02, 9, 9, 9, 9, 9)

    func makeLink() -> EthernetLink {
        EthernetLink(hardwareAddress: Self.mac, address: IPv4Address(10, 77, 0, 2), ipv6: IPv6Settings(address: Self.ours, prefixLength: 64))
    }

    /// A frame carrying an IPv6 packet: `upper` is the bytes after the fixed header.
    func frame(from source: IPv6Address, to destination: IPv6Address, next: IPProtocol, upper: [UInt8], hopLimit: UInt8 = 64,
               hardware: MACAddress = peerMAC, to link: MACAddress = mac) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 14 + 40 + upper.count)
        bytes.withUnsafeMutableBytes { raw in
            try! EthernetRepr(destination: link, source: hardware, etherType: .ipv6).emit(into: raw)
            try! IPv6Repr(source: source, destination: destination, nextHeader: next, payloadLength: upper.count, hopLimit: hopLimit)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]))
            upper.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: raw[54...]).copyMemory(from: $0) }
        }
        return bytes
    }

    func icmp(_ message: ICMPv6Repr.Message, data: [UInt8] = [], from source: IPv6Address, to destination: IPv6Address) -> [UInt8] {
        let repr = ICMPv6Repr(message: message)
        var bytes = [UInt8](repeating: 0, count: repr.fixedLength + data.count)
        _ = bytes.withUnsafeMutableBytes { out in
            data.withUnsafeBytes { try! repr.emit(into: out, data: $0, source: source, destination: destination) }
        }
        return bytes
    }

    func options(_ options: NeighborDiscoveryOptions) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: options.encodedLength)
        _ = bytes.withUnsafeMutableBytes { try! options.emit(into: $0) }
        return bytes
    }

    /// What the link sent: the Ethernet destination, the IPv6 header, and the ICMPv6 message with the
    /// bytes after its fixed part (its checksum verified).
    struct Sent {
        var ethernetDestination: MACAddress
        var ip: IPv6Repr
        var icmp: ICMPv6Repr
        var data: [UInt8]
    }

    func read(_ frame: [UInt8]) throws -> Sent {
        try frame.withUnsafeBytes { raw in
            let ethernet = try EthernetFrameView(raw)
            #expect(ethernet.etherType == .ipv6 && ethernet.source == Self.mac)
            let packet = try IPv6PacketView(ethernet.payload)
            #expect(packet.upperLayerProtocol == .icmpv6)
            let (icmp, data) = try ICMPv6Repr.parse(packet.upperLayer, source: packet.source, destination: packet.destination)
            return Sent(ethernetDestination: ethernet.destination, ip: IPv6Repr(packet), icmp: icmp, data: Array(data))
        }
    }

    func deliver(_ frame: [UInt8], to link: inout EthernetLink, at now: Instant = .zero) -> [[UInt8]] {
        var sent: [[UInt8]] = []
        let up = frame.withUnsafeBytes { link.receive(frame: $0, now: now, transmit: { sent.append(Array($0)) }) }
        #expect(up == nil, "none of these goes up to the stack")
        return sent
    }

    @Test("a solicitation for our address is answered, solicited and overriding, with our link-layer address; the solicitor is learned")
    func answersSolicitation() throws {
        var link = makeLink()
        let solicitation = icmp(.neighborSolicitation(target: Self.ours),
                                data: options(NeighborDiscoveryOptions(sourceLinkLayerAddress: Self.peerMAC)),
                                from: Self.peer, to: Self.ours.solicitedNodeMulticast)
        let sent = deliver(frame(from: Self.peer, to: Self.ours.solicitedNodeMulticast, next: .icmpv6, upper: solicitation, hopLimit: 255,
                                 to: Self.ours.solicitedNodeMulticast.multicastMAC), to: &link)
        #expect(sent.count == 1)
        let answer = try read(try #require(sent.first))
        #expect(answer.ethernetDestination == Self.peerMAC)
        #expect(answer.ip.source == Self.ours && answer.ip.destination == Self.peer && answer.ip.hopLimit == 255)
        #expect(answer.icmp.message == .neighborAdvertisement(flags: [.solicited, .override], target: Self.ours))
        #expect(answer.data == options(NeighborDiscoveryOptions(targetLinkLayerAddress: Self.mac)))
        #expect(link.neighbourCount == 1 && link.neighborAdvertisementsSent == 1)

        // Our link-local address is answered from itself.
        let linkLocal = IPv6Address(linkLocalFor: Self.mac), peerLinkLocal = IPv6Address(linkLocalFor: Self.peerMAC)
        #expect(link.linkLocalAddress == linkLocal)
        let forLinkLocal = icmp(.neighborSolicitation(target: linkLocal),
                                data: options(NeighborDiscoveryOptions(sourceLinkLayerAddress: Self.peerMAC)),
                                from: peerLinkLocal, to: linkLocal.solicitedNodeMulticast)
        let second = deliver(frame(from: peerLinkLocal, to: linkLocal.solicitedNodeMulticast, next: .icmpv6, upper: forLinkLocal, hopLimit: 255,
                                   to: linkLocal.solicitedNodeMulticast.multicastMAC), to: &link)
        let linkLocalAnswer = try read(try #require(second.first))
        #expect(linkLocalAnswer.ip.source == linkLocal && linkLocalAnswer.ip.destination == peerLinkLocal)
    }

    @Test("solicitations that are not for us, crossed a router, or break RFC 4861's rules go unanswered; DAD is answered to all nodes")
    func solicitationRules() throws {
        var link = makeLink()
        let withSource = options(NeighborDiscoveryOptions(sourceLinkLayerAddress: Self.peerMAC))
        let other = IPv6Address("fd77::3")!
        let notOurs = icmp(.neighborSolicitation(target: other), data: withSource, from: Self.peer, to: other.solicitedNodeMulticast)
        #expect(deliver(frame(from: Self.peer, to: other.solicitedNodeMulticast, next: .icmpv6, upper: notOurs, hopLimit: 255), to: &link).isEmpty)
        let ours = icmp(.neighborSolicitation(target: Self.ours), data: withSource, from: Self.peer, to: Self.ours.solicitedNodeMulticast)
        #expect(deliver(frame(from: Self.peer, to: Self.ours.solicitedNodeMulticast, next: .icmpv6, upper: ours, hopLimit: 64), to: &link).isEmpty,
                "hop limit 64: it came through a router")
        let zeroLength: [UInt8] = [1, 0, 0, 0, 0, 0, 0, 0]
        let badOption = icmp(.neighborSolicitation(target: Self.ours), data: zeroLength, from: Self.peer, to: Self.ours.solicitedNodeMulticast)
        #expect(deliver(frame(from: Self.peer, to: Self.ours.solicitedNodeMulticast, next: .icmpv6, upper: badOption, hopLimit: 255), to: &link).isEmpty)
        #expect(link.neighbourCount == 0 && link.neighborAdvertisementsSent == 0)

        // Duplicate address detection by another node for our address: the answer says it is taken.
        let detection = icmp(.neighborSolicitation(target: Self.ours), from: .unspecified, to: Self.ours.solicitedNodeMulticast)
        let sent = deliver(frame(from: .unspecified, to: Self.ours.solicitedNodeMulticast, next: .icmpv6, upper: detection, hopLimit: 255), to: &link)
        let answer = try read(try #require(sent.first))
        #expect(answer.ip.destination == .allNodes && answer.ethernetDestination == MACAddress(0x33, 0x33, 0, 0, 0, 1))
        #expect(answer.icmp.message == .neighborAdvertisement(flags: [.override], target: Self.ours))
        #expect(link.neighbourCount == 0, "the unspecified address is never learned")
    }

    @Test("an unknown neighbour is solicited; its answer is learned and the next packet framed for it; unsolicited advertisements create nothing")
    func resolvesNeighbours() throws {
        var link = makeLink()
        let echo = icmp(.echoRequest(identifier: 1, sequence: 1), from: Self.ours, to: Self.peer)
        var packet = [UInt8](repeating: 0, count: 40 + echo.count)
        packet.withUnsafeMutableBytes { raw in
            try! IPv6Repr(source: Self.ours, destination: Self.peer, nextHeader: .icmpv6, payloadLength: echo.count).emit(into: raw)
            echo.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: raw[40...]).copyMemory(from: $0) }
        }
        var sent: [[UInt8]] = []
        packet.withUnsafeBytes { link.send(ipv6Packet: $0, transmit: { sent.append(Array($0)) }) }
        let solicitation = try read(try #require(sent.first))
        #expect(sent.count == 1 && link.neighborSolicitationsSent == 1)
        #expect(solicitation.ethernetDestination == Self.peer.solicitedNodeMulticast.multicastMAC)
        #expect(solicitation.ip.destination == Self.peer.solicitedNodeMulticast && solicitation.ip.source == Self.ours && solicitation.ip.hopLimit == 255)
        #expect(solicitation.icmp.message == .neighborSolicitation(target: Self.peer))
        #expect(solicitation.data == options(NeighborDiscoveryOptions(sourceLinkLayerAddress: Self.mac)))

        // An unsolicited advertisement for someone we never asked about: not learned.
        let stranger = IPv6Address("fd77::9")!
        let unsolicited = icmp(.neighborAdvertisement(flags: [.override], target: stranger),
                               data: options(NeighborDiscoveryOptions(targetLinkLayerAddress: MACAddress(2, 8, 8, 8, 8, 8))),
                               from: stranger, to: .allNodes)
        _ = deliver(frame(from: stranger, to: .allNodes, next: .icmpv6, upper: unsolicited, hopLimit: 255, to: MACAddress(0x33, 0x33, 0, 0, 0, 1)),
                    to: &link)
        #expect(link.neighbourCount == 0)
        // Nor one that claims to answer a solicitation we never sent.
        let claimed = icmp(.neighborAdvertisement(flags: [.solicited, .override], target: stranger),
                           data: options(NeighborDiscoveryOptions(targetLinkLayerAddress: MACAddress(2, 8, 8, 8, 8, 8))),
                           from: stranger, to: Self.ours)
        _ = deliver(frame(from: stranger, to: Self.ours, next: .icmpv6, upper: claimed, hopLimit: 255), to: &link)
        #expect(link.neighbourCount == 0, "an answer to nothing we asked")

        let answer = icmp(.neighborAdvertisement(flags: [.solicited, .override], target: Self.peer),
                          data: options(NeighborDiscoveryOptions(targetLinkLayerAddress: Self.peerMAC)), from: Self.peer, to: Self.ours)
        _ = deliver(frame(from: Self.peer, to: Self.ours, next: .icmpv6, upper: answer, hopLimit: 255), to: &link)
        #expect(link.neighbourCount == 1)
        sent.removeAll()
        packet.withUnsafeBytes { link.send(ipv6Packet: $0, transmit: { sent.append(Array($0)) }) }
        let framed = try #require(sent.first)
        #expect(sent.count == 1 && Array(framed[0..<6]) == [0x02, 9, 9, 9, 9, 9] && Array(framed[14...]) == packet)
        // An unsolicited advertisement without Override does not move a known neighbour; with it, it does.
        for (flags, expected) in [(NeighborAdvertisementFlags(), [UInt8]([0x02, 9, 9, 9, 9, 9])), ([.override], [0x02, 6, 6, 6, 6, 6])] {
            let moved = icmp(.neighborAdvertisement(flags: flags, target: Self.peer),
                             data: options(NeighborDiscoveryOptions(targetLinkLayerAddress: MACAddress(2, 6, 6, 6, 6, 6))),
                             from: Self.peer, to: .allNodes)
            _ = deliver(frame(from: Self.peer, to: .allNodes, next: .icmpv6, upper: moved, hopLimit: 255, to: MACAddress(0x33, 0x33, 0, 0, 0, 1)),
                        to: &link)
            sent.removeAll()
            packet.withUnsafeBytes { link.send(ipv6Packet: $0, transmit: { sent.append(Array($0)) }) }
            #expect(sent.first.map { Array($0[0..<6]) } == expected, "flags \(flags.rawValue)")
        }

        // Off the link (not in fd77::/64, not link-local): never solicited, never learned.
        packet.withUnsafeMutableBytes { IPv6Address("2001:db8::1")!.store(to: $0, at: 24) }
        sent.removeAll()
        packet.withUnsafeBytes { link.send(ipv6Packet: $0, transmit: { sent.append(Array($0)) }) }
        #expect(sent.isEmpty && link.offLinkDrops == 1)
    }

    @Test("ping -6 is answered with the same data, to the address it came from")
    func echo() throws {
        var link = makeLink()
        let data = Array(0..<UInt8(56))
        let request = icmp(.echoRequest(identifier: 0x1234, sequence: 7), data: data, from: Self.peer, to: Self.ours)
        // From a peer not yet known (a data packet teaches nothing, RFC 4861): it is solicited, the reply waits.
        let first = deliver(frame(from: Self.peer, to: Self.ours, next: .icmpv6, upper: request), to: &link)
        #expect(try first.map { try read($0).icmp.message } == [.neighborSolicitation(target: Self.peer)])
        // As a real peer does, it solicited us first: learned from its solicitation, then answered.
        let solicitation = icmp(.neighborSolicitation(target: Self.ours),
                                data: options(NeighborDiscoveryOptions(sourceLinkLayerAddress: Self.peerMAC)),
                                from: Self.peer, to: Self.ours.solicitedNodeMulticast)
        _ = deliver(frame(from: Self.peer, to: Self.ours.solicitedNodeMulticast, next: .icmpv6, upper: solicitation, hopLimit: 255,
                          to: Self.ours.solicitedNodeMulticast.multicastMAC), to: &link)
        let sent = deliver(frame(from: Self.peer, to: Self.ours, next: .icmpv6, upper: request), to: &link)
        let reply = try read(try #require(sent.first))
        #expect(reply.ethernetDestination == Self.peerMAC, "the sender was learned from its solicitation")
        #expect(reply.ip.source == Self.ours && reply.ip.destination == Self.peer)
        #expect(reply.icmp.message == .echoReply(identifier: 0x1234, sequence: 7) && reply.data == data)
        #expect(link.echoRepliesSent == 2, "the first reply was built, and dropped while its neighbour was asked for")
        // A corrupted one (checksum) is dropped unanswered.
        var corrupted = request
        corrupted[9] ^= 1
        #expect(deliver(frame(from: Self.peer, to: Self.ours, next: .icmpv6, upper: corrupted), to: &link).isEmpty)
    }

    @Test("transports not carried, unknown next headers and options get the ICMPv6 errors RFC 8200 and RFC 4443 ask for, rate-limited")
    func errors() throws {
        var link = makeLink()
        link.learn(neighbour: Self.peer, at: Self.peerMAC)
        // A SYN to our address goes up to the stack, the link answering nothing.
        let syn = TCPRepr(sourcePort: 40_000, destinationPort: 8080, sequenceNumber: SequenceNumber(1), flags: .syn, window: 1000)
        var segment = [UInt8](repeating: 0, count: syn.headerLength)
        _ = segment.withUnsafeMutableBytes { try! syn.emitHeader(into: $0) }
        let synFrame = frame(from: Self.peer, to: Self.ours, next: .tcp, upper: segment)
        var sentForSyn: [[UInt8]] = []
        let up = synFrame.withUnsafeBytes { link.receive(frame: $0, now: .zero, transmit: { sentForSyn.append(Array($0)) }).map { Array($0) } }
        #expect(up == Array(synFrame[14...]) && sentForSyn.isEmpty)
        // To the link-local address, which the stack does not serve: refused at once (port unreachable, quoting it).
        let linkLocalSyn = frame(from: Self.peer, to: link.linkLocalAddress, next: .tcp, upper: segment)
        let refused = try read(try #require(deliver(linkLocalSyn, to: &link).first))
        #expect(refused.icmp.message == .destinationUnreachable(code: 4))
        #expect(refused.data == Array(linkLocalSyn[14...]) && refused.ip.destination == Self.peer)
        // UDP likewise; sent as a link-layer broadcast, no error (RFC 4443 §2.4 e.4).
        let udpFrame = frame(from: Self.peer, to: Self.ours, next: .udp, upper: [0x9C, 0x40, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00])
        #expect(try read(try #require(deliver(udpFrame, to: &link).first)).icmp.message == .destinationUnreachable(code: 4))
        #expect(deliver(frame(from: Self.peer, to: Self.ours, next: .udp, upper: [0x9C, 0x40, 0x00, 0x35, 0x00, 0x08, 0x00, 0x00],
                              to: .broadcast), to: &link).isEmpty)
        // An unknown upper layer: Parameter Problem code 1 at the Next Header field (offset 6).
        let unknown = try read(try #require(deliver(frame(from: Self.peer, to: Self.ours, next: IPProtocol(rawValue: 253), upper: [0]), to: &link).first))
        #expect(unknown.icmp.message == .parameterProblem(code: 1, pointer: 6))
        // Unknown options: 10xxxxxx is reported even to a group, 11xxxxxx only to unicast, 01xxxxxx never.
        func withOption(_ type: UInt8, to destination: IPv6Address) -> [UInt8] {
            frame(from: Self.peer, to: destination, next: .destinationOptions, upper: [IPProtocol.tcp.rawValue, 0, type, 4, 0, 0, 0, 0],
                  to: destination.isMulticast ? destination.multicastMAC : Self.mac)
        }
        let toGroup = try read(try #require(deliver(withOption(0x87, to: .allNodes), to: &link).first))
        #expect(toGroup.icmp.message == .parameterProblem(code: 2, pointer: 42) && toGroup.ip.source == Self.ours)
        #expect(deliver(withOption(0xC7, to: .allNodes), to: &link).isEmpty)
        #expect(try read(try #require(deliver(withOption(0xC7, to: Self.ours), to: &link).first)).icmp.message
                == .parameterProblem(code: 2, pointer: 42))
        #expect(deliver(withOption(0x47, to: Self.ours), to: &link).isEmpty)
        // An ICMPv6 error to us is taken in silence; so is anything from a group address.
        let error = icmp(.destinationUnreachable(code: 1), data: [UInt8](repeating: 0, count: 48), from: Self.peer, to: Self.ours)
        #expect(deliver(frame(from: Self.peer, to: Self.ours, next: .icmpv6, upper: error), to: &link).isEmpty)
        #expect(deliver(frame(from: .allNodes, to: Self.ours, next: .tcp, upper: segment), to: &link).isEmpty)
        #expect(link.icmpv6ErrorsSent == 5)
        // A burst: ten errors per 100 ms, the rest counted.
        var answered = 0
        for _ in 0..<25 { answered += deliver(udpFrame, to: &link, at: .milliseconds(500)).count }
        #expect(answered == 10 && link.icmpv6ErrorsLimited == 15)
        #expect(deliver(udpFrame, to: &link, at: .milliseconds(650)).count == 1, "the next tick allows more")
    }

    @Test("a Packet Too Big to our address goes up to the stack (RFC 8201); one to the link-local address does not")
    func packetTooBigGoesUp() throws {
        var link = makeLink()
        let quote = [UInt8](repeating: 0x60, count: 48)
        let tooBig = icmp(.packetTooBig(mtu: 1400), data: quote, from: Self.peer, to: Self.ours)
        let tooBigFrame = frame(from: Self.peer, to: Self.ours, next: .icmpv6, upper: tooBig)
        var sent: [[UInt8]] = []
        let up = tooBigFrame.withUnsafeBytes { link.receive(frame: $0, now: .zero, transmit: { sent.append(Array($0)) }).map { Array($0) } }
        #expect(up == Array(tooBigFrame[14...]) && sent.isEmpty)
        let toLinkLocal = icmp(.packetTooBig(mtu: 1400), data: quote, from: Self.peer, to: link.linkLocalAddress)
        #expect(deliver(frame(from: Self.peer, to: link.linkLocalAddress, next: .icmpv6, upper: toLinkLocal), to: &link).isEmpty)
    }

    @Test("without an IPv6 address the link ignores IPv6")
    func withoutIPv6() {
        var link = EthernetLink(hardwareAddress: Self.mac, address: IPv4Address(10, 77, 0, 2))
        let request = icmp(.echoRequest(identifier: 1, sequence: 1), from: Self.peer, to: Self.ours)
        #expect(deliver(frame(from: Self.peer, to: Self.ours, next: .icmpv6, upper: request), to: &link).isEmpty)
        #expect(link.neighbourCount == 0 && link.echoRepliesSent == 0)
    }
}
