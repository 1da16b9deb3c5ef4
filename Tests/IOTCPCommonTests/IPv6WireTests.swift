import Testing
@testable import IOTCPCommon

/// An IPv6 packet built by hand: the fixed header, then `chain` (extension headers, each given as its
/// bytes after the Next Header byte, which is filled in from the next element), then an upper layer.
private func packet(
    source: IPv6Address = IPv6Address("fd77::1")!, destination: IPv6Address = IPv6Address("fd77::2")!,
    chain: [(IPProtocol, [UInt8])], upper: IPProtocol, payload: [UInt8], hopLimit: UInt8 = 64
) -> [UInt8] {
    var body: [UInt8] = []
    for (index, (_, bytes)) in chain.enumerated() {
        let next = index + 1 < chain.count ? chain[index + 1].0 : upper
        body.append(next.rawValue)
        body.append(contentsOf: bytes)
    }
    body.append(contentsOf: payload)
    var bytes = [UInt8](repeating: 0, count: 40)
    let repr = IPv6Repr(source: source, destination: destination, nextHeader: chain.first?.0 ?? upper,
                        payloadLength: body.count, hopLimit: hopLimit, trafficClass: 0xB8, flowLabel: 0x12345)
    bytes.withUnsafeMutableBytes { try! repr.emit(into: $0) }
    return bytes + body
}

private func view(_ bytes: [UInt8]) throws(WireError) -> (protocol: IPProtocol, offset: Int, pointer: Int, upper: [UInt8]) {
    var result: Result<(IPProtocol, Int, Int, [UInt8]), WireError>!
    bytes.withUnsafeBytes { raw in
        do throws(WireError) {
            let view = try IPv6PacketView(raw)
            result = .success((view.upperLayerProtocol, view.upperLayerOffset, view.upperLayerPointer, Array(view.upperLayer)))
        } catch {
            result = .failure(error)
        }
    }
    return try result.get()
}

@Suite("IPv6 wire formats")
struct IPv6WireTests {
    @Test("addresses parse every text form of RFC 4291 and print RFC 5952's canonical one")
    func addressText() throws {
        let cases: [(String, String)] = [
            ("2001:db8:0:0:0:0:2:1", "2001:db8::2:1"),
            ("2001:DB8::0001", "2001:db8::1"),
            ("2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"),  // one zero group is not shortened
            ("2001:0:0:1:0:0:0:1", "2001:0:0:1::1"),  // the longer run
            ("2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"),  // the first of two equal runs
            ("::", "::"), ("::1", "::1"), ("1::", "1::"), ("fe80::1:2", "fe80::1:2"),
            ("::ffff:192.0.2.1", "::ffff:192.0.2.1"), ("::ffff:c000:201", "::ffff:192.0.2.1"),
            ("64:ff9b::192.0.2.33", "64:ff9b::c000:221"),
            ("1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"), ("::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"),
        ]
        for (text, canonical) in cases {
            let address = try #require(IPv6Address(text), "\(text) parses")
            #expect(address.description == canonical, "\(text)")
            #expect(IPv6Address(canonical) == address, "\(canonical) parses back")
        }
        for bad in ["", ":", ":::", "1:::2", "1::2::3", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", "12345::", "g::1", ":1::",
                    "1::2:", "1.2.3.4", "::1.2.3", "1:2:3:4:5:6:7:1.2.3.4", "1:2:3:4:5:6:7:8::", "[::1]", "fe80::1%eth0"] {
            #expect(IPv6Address(bad) == nil, "\(bad) is refused")
        }
        let address = IPv6Address("2001:db8:1:2:3:4:5:6")!
        #expect(address.high == 0x2001_0DB8_0001_0002 && address.low == 0x0003_0004_0005_0006)
        #expect((0..<8).map { address.group($0) } == [0x2001, 0xDB8, 1, 2, 3, 4, 5, 6])
        #expect(IPv6Address(groups: [0x2001, 0xDB8, 1, 2, 3, 4, 5, 6]) == address)
    }

    @Test("address classes, groups and prefixes")
    func addressKinds() {
        #expect(IPv6Address("ff02::1")!.isMulticast && !IPv6Address("fe80::1")!.isMulticast)
        #expect(IPv6Address("fe80::1")!.isLinkLocal && IPv6Address("febf::1")!.isLinkLocal && !IPv6Address("fec0::1")!.isLinkLocal)
        #expect(IPv6Address.unspecified.isUnspecified && IPv6Address.loopback.isLoopback)
        #expect(IPv6Address("::ffff:10.0.0.1")!.ipv4Mapped == IPv4Address(10, 0, 0, 1))
        #expect(IPv6Address(ipv4Mapped: IPv4Address(10, 0, 0, 1)) == IPv6Address("::ffff:10.0.0.1"))
        #expect(IPv6Address("::10.0.0.1")!.ipv4Mapped == nil)
        // RFC 4291 §2.7.1's example: the last 24 bits after ff02::1:ff00:0/104.
        #expect(IPv6Address("4037::01:800:200e:8c6c")!.solicitedNodeMulticast == IPv6Address("ff02::1:ff0e:8c6c"))
        // RFC 2464 §7: 33:33 and the last four bytes.
        #expect(IPv6Address("ff02::1:ff0e:8c6c")!.multicastMAC == MACAddress(0x33, 0x33, 0xFF, 0x0E, 0x8C, 0x6C))
        // Modified EUI-64 (RFC 4291 appendix A): 34:56:78:9a:bc:de gives 3656:78ff:fe9a:bcde.
        #expect(IPv6Address(linkLocalFor: MACAddress(0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE)) == IPv6Address("fe80::3656:78ff:fe9a:bcde"))
        let address = IPv6Address("fd77:1:2:3:4:5:6:7")!
        #expect(address.masked(prefixLength: 64) == IPv6Address("fd77:1:2:3::"))
        #expect(IPv6Address("fd77:1:2:3:ffff::1")!.masked(prefixLength: 70) == IPv6Address("fd77:1:2:3:fc00::"))
        #expect(address.masked(prefixLength: 0) == .unspecified && address.masked(prefixLength: 128) == address)
        #expect(address.sharesPrefix(with: IPv6Address("fd77:1:2:3::99")!, length: 64))
        #expect(!address.sharesPrefix(with: IPv6Address("fd77:1:2:4::99")!, length: 64))
    }

    @Test("the fixed header is read field by field and emitted back")
    func fixedHeader() throws {
        let bytes = packet(chain: [], upper: .tcp, payload: [1, 2, 3], hopLimit: 255) + [0, 0]  // Ethernet padding
        #expect(Array(bytes[0..<8]) == [0x6B, 0x81, 0x23, 0x45, 0x00, 0x03, 6, 255])
        try bytes.withUnsafeBytes { raw in
            let view = try IPv6PacketView(raw)
            #expect(view.bytes.count == 43, "padding past the payload length is not part of the packet")
            #expect(view.trafficClass == 0xB8 && view.flowLabel == 0x12345 && view.hopLimit == 255)
            #expect(view.payloadLength == 3 && view.nextHeader == .tcp && view.upperLayerProtocol == .tcp)
            #expect(view.source == IPv6Address("fd77::1") && view.destination == IPv6Address("fd77::2"))
            #expect(Array(view.upperLayer) == [1, 2, 3] && !view.hasExtensionHeaders)
            var out = [UInt8](repeating: 0, count: 40)
            try out.withUnsafeMutableBytes { try IPv6Repr(view).emit(into: $0) }
            #expect(out == Array(bytes[0..<40]))
        }
        #expect(throws: WireError.unsupportedVersion(4)) { try view([0x45] + Array(bytes[1...])) }
        #expect(throws: WireError.truncated(layer: .ipv6, needed: 40, available: 39)) { try view(Array(bytes[0..<39])) }
        #expect(throws: WireError.truncated(layer: .ipv6, needed: 43, available: 42)) { try view(Array(bytes[0..<42])) }
    }

    @Test("extension headers are walked to the upper layer, and the pointer names its Next Header field")
    func extensionChain() throws {
        let hopByHop: [UInt8] = [0, 5, 2, 0, 0, 1, 0]  // Router Alert (MLD), then PadN of none
        // Two Pad1, a PadN of two, an unknown option whose type bits (00) say skip it, two Pad1: 16 bytes.
        let destination: [UInt8] = [1, 0, 0, 1, 2, 0, 0, 0x3F, 4, 0xAA, 0xBB, 0xCC, 0xDD, 0, 0]
        let routing: [UInt8] = [0, 4, 0, 0, 0, 0, 0]  // type 4 with no segments left: ignored
        let fragment: [UInt8] = [0, 0, 0, 0, 0, 0, 7]  // offset 0, no more fragments: atomic
        let bytes = packet(chain: [(.hopByHopOptions, hopByHop), (.destinationOptions, destination),
                                   (.routing, routing), (.fragment, fragment)],
                           upper: .icmpv6, payload: [9, 9])
        let result = try view(bytes)
        #expect(result.protocol == .icmpv6 && result.offset == 40 + 8 + 16 + 8 + 8)
        #expect(result.pointer == 40 + 8 + 16 + 8, "the fragment header's Next Header field")
        #expect(result.upper == [9, 9])
        // An upper layer the stack does not speak ends the walk; the caller answers with Parameter Problem 1.
        let unknown = try view(packet(chain: [(.destinationOptions, [0, 1, 4, 0, 0, 0, 0])], upper: IPProtocol(rawValue: 253), payload: []))
        #expect(unknown.protocol.rawValue == 253 && unknown.pointer == 40)
    }

    @Test("what RFC 8200 says to discard is refused with the offset a Parameter Problem reports")
    func refusals() {
        func refusal(_ bytes: [UInt8]) -> WireError? {
            do { _ = try view(bytes); return nil } catch { return error }
        }
        // Unknown options: 01 discards silently, 10 always answers, 11 answers unless sent to a group.
        for (type, answer) in [(UInt8(0x47), nil), (0x87, (UInt8(2), 42, true)), (0xC7, (UInt8(2), 42, false))] as [(UInt8, (UInt8, Int, Bool)?)] {
            let error = refusal(packet(chain: [(.destinationOptions, [0, type, 4, 0, 0, 0, 0])], upper: .tcp, payload: []))
            #expect(error == .unrecognizedIPv6Option(type: type, pointer: 42))
            let problem = error?.ipv6ParameterProblem
            #expect(problem?.code == answer?.0 && problem?.pointer == answer?.1 && problem?.evenToMulticast == answer?.2)
        }
        // Hop-by-Hop anywhere but first: an unrecognized Next Header, pointing at the field that names it.
        let late = refusal(packet(chain: [(.destinationOptions, [0, 1, 4, 0, 0, 0, 0]), (.hopByHopOptions, [0, 1, 4, 0, 0, 0, 0])],
                                  upper: .tcp, payload: []))
        #expect(late == .unrecognizedNextHeader(0, pointer: 40))
        #expect(late?.ipv6ParameterProblem?.code == 1 && late?.ipv6ParameterProblem?.pointer == 40)
        // A Routing header with segments left: the stack routes nothing; code 0 at the Routing Type.
        let routed = refusal(packet(chain: [(.routing, [0, 4, 1, 0, 0, 0, 0])], upper: .tcp, payload: []))
        #expect(routed == .unsupportedRoutingHeader(type: 4, pointer: 42) && routed?.ipv6ParameterProblem?.code == 0)
        // Fragments that are not atomic; the stack does not reassemble.
        #expect(refusal(packet(chain: [(.fragment, [0, 0, 1, 0, 0, 0, 7])], upper: .tcp, payload: [])) == .fragmented)
        #expect(refusal(packet(chain: [(.fragment, [0, 0, 8, 0, 0, 0, 7])], upper: .tcp, payload: [])) == .fragmented)
        // An option running past its header; a header running past the packet.
        #expect(refusal(packet(chain: [(.destinationOptions, [0, 1, 9, 0, 0, 0, 0])], upper: .tcp, payload: [])) == .badExtensionHeader(pointer: 42))
        #expect(refusal(packet(chain: [(.destinationOptions, [0, 0xC7])], upper: .tcp, payload: []))
                == .truncated(layer: .ipv6, needed: 48, available: 43))
        #expect(refusal(packet(chain: [(.fragment, [0, 0])], upper: .tcp, payload: [])) == .truncated(layer: .ipv6, needed: 48, available: 43))
    }

    @Test("the TCP checksum over IPv6 uses RFC 8200's pseudo-header")
    func pseudoHeader() {
        let source = IPv6Address("fd77::1")!, destination = IPv6Address("fd77::2")!
        var segment = [UInt8](repeating: 0, count: 24)
        segment[12] = 5 << 4
        segment[20] = 0xAB
        segment.withUnsafeMutableBytes { TCPRepr.fillChecksum(segment: $0, source: source, destination: destination) }
        // By hand: the addresses' words, the 32-bit length and the next header, then the segment's words.
        var words: [UInt32] = [0xFD77, 0, 0, 0, 0, 0, 0, 1, 0xFD77, 0, 0, 0, 0, 0, 0, 2, 0, 24, 6]
        words += stride(from: 0, to: 24, by: 2).map { index in index == 16 ? 0 : UInt32(segment[index]) << 8 | UInt32(segment[index + 1]) }
        var sum = words.reduce(0, +)
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        #expect(UInt16(segment[16]) << 8 | UInt16(segment[17]) == ~UInt16(sum))
        segment.withUnsafeBytes { raw in
            let view = try! TCPSegmentView(raw)
            #expect(view.checksumVerifies(source: source, destination: destination))
            #expect(!view.checksumVerifies(source: source, destination: IPv6Address("fd77::3")!))
            #expect(!view.checksumVerifies(source: IPv4Address(253, 119, 0, 0), destination: IPv4Address(0, 0, 0, 1)))
        }
        // The partial sum a checksum-offloading device finishes.
        var partial = segment
        partial.withUnsafeMutableBytes { buffer in
            TCPRepr.fillPseudoHeaderChecksum(segment: buffer, source: source, destination: destination)
            var rest = InternetChecksum()
            rest.add(bytes: UnsafeRawBufferPointer(buffer))
            #expect(rest.checksum == UInt16(segment[16]) << 8 | UInt16(segment[17]))
        }
    }

    @Test("ICMPv6 messages round-trip through emit and parse, the checksum tied to the addresses")
    func icmpRoundTrip() throws {
        let source = IPv6Address("fe80::1")!, destination = IPv6Address("ff02::1:ff00:2")!
        let messages: [ICMPv6Repr.Message] = [
            .echoRequest(identifier: 7, sequence: 9), .echoReply(identifier: 0xFFFF, sequence: 0),
            .destinationUnreachable(code: 4), .packetTooBig(mtu: 1280), .timeExceeded(code: 0),
            .parameterProblem(code: 1, pointer: 40), .routerSolicitation,
            .routerAdvertisement(currentHopLimit: 64, flags: 0xC0, routerLifetime: 1800, reachableTime: 30000, retransmitTimer: 1000),
            .neighborSolicitation(target: IPv6Address("fd77::2")!),
            .neighborAdvertisement(flags: [.solicited, .override], target: IPv6Address("fd77::2")!),
            .other(type: 143, code: 0, rest: 1),
        ]
        for message in messages {
            let repr = ICMPv6Repr(message: message)
            let data: [UInt8] = [1, 2, 3, 4, 5]
            var buffer = [UInt8](repeating: 0, count: 64)
            let length = try buffer.withUnsafeMutableBytes { out in
                try data.withUnsafeBytes { try repr.emit(into: out, data: $0, source: source, destination: destination) }
            }
            #expect(length == repr.fixedLength + 5)
            try buffer.withUnsafeBytes { raw in
                let bytes = UnsafeRawBufferPointer(rebasing: raw[0..<length])
                let (parsed, rest) = try ICMPv6Repr.parse(bytes, source: source, destination: destination)
                #expect(parsed == repr, "\(message)")
                #expect(Array(rest) == data)
                #expect(throws: WireError.badChecksum(layer: .icmpv6)) {
                    try ICMPv6Repr.parse(bytes, source: source, destination: IPv6Address("ff02::1")!)
                }
            }
        }
        #expect(ICMPv6Repr(message: .packetTooBig(mtu: 1280)).isError && !ICMPv6Repr(message: .echoReply(identifier: 0, sequence: 0)).isError)
        // Neighbor Discovery with a non-zero code is not Neighbor Discovery; a short one is truncated.
        var solicitation = [UInt8](repeating: 0, count: 24)
        solicitation[0] = 135
        solicitation[1] = 1
        solicitation.withUnsafeBytes { raw in
            #expect((try? ICMPv6Repr.parse(raw, source: source, destination: destination, verifyChecksum: false))?.repr.message
                    == .other(type: 135, code: 1, rest: 0))
            #expect(throws: WireError.truncated(layer: .icmpv6, needed: 24, available: 20)) {
                var copy = Array(raw[0..<20])
                copy[1] = 0
                try copy.withUnsafeBytes { _ = try ICMPv6Repr.parse($0, source: source, destination: destination, verifyChecksum: false) }
            }
        }
    }

    @Test("Neighbor Discovery options and RFC 4861's validity checks")
    func neighborDiscovery() throws {
        let mac = MACAddress(0x02, 0, 0, 0, 0, 7)
        let options = NeighborDiscoveryOptions(sourceLinkLayerAddress: mac, targetLinkLayerAddress: mac, mtu: 1500)
        var bytes = [UInt8](repeating: 0, count: options.encodedLength)
        _ = try bytes.withUnsafeMutableBytes { try options.emit(into: $0) }
        #expect(bytes == [1, 1, 2, 0, 0, 0, 0, 7, 2, 1, 2, 0, 0, 0, 0, 7, 5, 1, 0, 0, 0, 0, 0x05, 0xDC])
        #expect(try bytes.withUnsafeBytes { try NeighborDiscoveryOptions(parsing: $0) } == options)
        // An unknown option is skipped; one of length zero invalidates the message; one past the end is cut.
        let skipped: [UInt8] = [14, 1, 1, 2, 3, 4, 5, 6] + Array(bytes[0..<8])
        #expect(try skipped.withUnsafeBytes { try NeighborDiscoveryOptions(parsing: $0) } == NeighborDiscoveryOptions(sourceLinkLayerAddress: mac))
        #expect(throws: WireError.badNeighborDiscoveryOption(type: 1)) {
            try [UInt8]([1, 0, 0, 0, 0, 0, 0, 0]).withUnsafeBytes { _ = try NeighborDiscoveryOptions(parsing: $0) }
        }
        #expect(throws: WireError.truncated(layer: .icmpv6, needed: 16, available: 8)) {
            try [UInt8]([1, 2, 0, 0, 0, 0, 0, 0]).withUnsafeBytes { _ = try NeighborDiscoveryOptions(parsing: $0) }
        }

        let target = IPv6Address("fd77::2")!, peer = IPv6Address("fd77::1")!
        let solicit = ICMPv6Repr(message: .neighborSolicitation(target: target))
        let withSource = NeighborDiscoveryOptions(sourceLinkLayerAddress: mac)
        #expect(solicit.isValidNeighborDiscovery(hopLimit: 255, source: peer, destination: target.solicitedNodeMulticast, options: withSource))
        #expect(!solicit.isValidNeighborDiscovery(hopLimit: 254, source: peer, destination: target.solicitedNodeMulticast, options: withSource),
                "a hop limit below 255 means it crossed a router")
        #expect(solicit.isValidNeighborDiscovery(hopLimit: 255, source: .unspecified, destination: target.solicitedNodeMulticast, options: .init()),
                "duplicate address detection")
        #expect(!solicit.isValidNeighborDiscovery(hopLimit: 255, source: .unspecified, destination: target.solicitedNodeMulticast, options: withSource))
        #expect(!solicit.isValidNeighborDiscovery(hopLimit: 255, source: .unspecified, destination: target, options: .init()))
        #expect(!ICMPv6Repr(message: .neighborSolicitation(target: .allNodes))
            .isValidNeighborDiscovery(hopLimit: 255, source: peer, destination: target, options: .init()))
        let advertise = ICMPv6Repr(message: .neighborAdvertisement(flags: [.solicited], target: target))
        #expect(advertise.isValidNeighborDiscovery(hopLimit: 255, source: target, destination: peer, options: .init()))
        #expect(!advertise.isValidNeighborDiscovery(hopLimit: 255, source: target, destination: .allNodes, options: .init()),
                "a solicited advertisement is never sent to a group")
        #expect(ICMPv6Repr(message: .neighborAdvertisement(flags: [.override], target: target))
            .isValidNeighborDiscovery(hopLimit: 255, source: target, destination: .allNodes, options: .init()))
        #expect(!ICMPv6Repr(message: .echoRequest(identifier: 0, sequence: 0))
            .isValidNeighborDiscovery(hopLimit: 255, source: peer, destination: target, options: .init()))
    }
}
