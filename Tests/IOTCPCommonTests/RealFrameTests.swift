import Foundation
import Testing
@testable import IOTCPCommon

/// Frames captured from Linux (scripts/capture-fixtures.sh): a download across a veth pair with some
/// segments dropped, plus ARP and ping; then the same over IPv6 with Neighbor Discovery, ping -6, a UDP
/// datagram with a Destination Options header and one sent in fragments. Every frame must parse, and
/// emit back to the same bytes.
/// `IOTCP_CAPTURE` names another capture made the same way (the test command makes a fresh one).
@Suite("Real Linux frames")
struct RealFrameTests {
    let frames: [[UInt8]]

    init() throws {
        let path = ProcessInfo.processInfo.environment["IOTCP_CAPTURE"] ?? PcapFile.fixture("linux-tcp.pcap")
        frames = try PcapFile.frames(at: path)
    }

    struct Tally {
        var arp = 0, icmp = 0, tcp = 0, withData = 0, withSACK = 0, synWithAllOptions = 0, other = 0
        var v6 = Tally6()
    }

    struct Tally6 {
        var tcp = 0, withData = 0, withSACK = 0, synWithAllOptions = 0, echo = 0, solicitations = 0, advertisements = 0
        var withDestinationOptions = 0, fragments = 0, unreachable = 0, hopByHop = 0
    }

    @Test("every frame parses and emits to identical bytes, checksums included")
    func roundTrip() throws {
        var tally = Tally()
        for (index, frame) in frames.enumerated() {
            try frame.withUnsafeBytes { bytes in
                let ethernet = try EthernetFrameView(bytes)
                var header = [UInt8](repeating: 0, count: 14)
                try header.withUnsafeMutableBytes { try EthernetRepr(ethernet).emit(into: $0) }
                #expect(header == Array(frame[0..<14]), "frame \(index + 1): Ethernet header")
                switch ethernet.etherType {
                case .arp:
                    tally.arp += 1
                    let arp = try ARPRepr(parsing: ethernet.payload)
                    var out = [UInt8](repeating: 0, count: ARPRepr.length)
                    try out.withUnsafeMutableBytes { try arp.emit(into: $0) }
                    #expect(out == Array(frame[14..<(14 + ARPRepr.length)]), "frame \(index + 1): ARP")
                case .ipv4:
                    try checkIPv4(ethernet.payload, frame: index + 1, tally: &tally)
                case .ipv6:
                    try checkIPv6(ethernet.payload, frame: index + 1, ethernet: ethernet, tally: &tally.v6)
                default:
                    tally.other += 1
                }
            }
        }
        #expect(tally.arp >= 2, "the capture holds an ARP request and reply")
        #expect(tally.icmp >= 4, "the capture holds two pings and their replies")
        #expect(tally.tcp >= 80)
        #expect(tally.withData >= 40)
        #expect(tally.withSACK >= 5, "the client's ACKs after drops carry SACK blocks")
        #expect(tally.synWithAllOptions == 2, "SYN and SYN-ACK carry MSS, SACK-permitted, timestamps, window scale")
        #expect(tally.v6.tcp >= 80)
        #expect(tally.v6.withData >= 40)
        #expect(tally.v6.withSACK >= 5)
        #expect(tally.v6.synWithAllOptions == 2, "over IPv6 too, with an MSS 20 bytes smaller")
        #expect(tally.v6.echo >= 4, "two pings -6 and their replies")
        #expect(tally.v6.solicitations >= 1 && tally.v6.advertisements >= 1, "the neighbour resolved before the ping")
        #expect(tally.v6.withDestinationOptions == 1, "the datagram sent with a Destination Options header")
        #expect(tally.v6.fragments >= 2, "the large datagram went in fragments, which are refused")
        #expect(tally.v6.unreachable >= 1, "a closed port's Destination Unreachable, quoting the datagram")
    }

    private func checkIPv4(_ bytes: UnsafeRawBufferPointer, frame: Int, tally: inout Tally) throws {
        let packet = try IPv4PacketView(bytes)
        let ip = IPv4Repr(packet)
        var header = [UInt8](repeating: 0, count: IPv4Repr.headerLength)
        try header.withUnsafeMutableBytes { try ip.emit(into: $0) }
        #expect(header == Array(packet.bytes[0..<20]), "frame \(frame): IPv4 header")
        switch packet.protocol {
        case .icmp:
            tally.icmp += 1
            let (icmp, data) = try ICMPv4Repr.parse(packet.payload)
            var out = [UInt8](repeating: 0, count: packet.payload.count)
            try out.withUnsafeMutableBytes { _ = try icmp.emit(into: $0, data: data) }
            #expect(out == Array(packet.payload), "frame \(frame): ICMP")
        case .tcp:
            tally.tcp += 1
            let seen = try checkTCP(packet.payload, source: ip.source, destination: ip.destination, synSegmentSize: 1460, frame: frame)
            if seen.data { tally.withData += 1 }
            if seen.sack { tally.withSACK += 1 }
            if seen.fullSyn { tally.synWithAllOptions += 1 }
        default:
            break
        }
    }

    /// One TCP segment over either family: its checksum verifies over the pseudo-header, and emitting its
    /// header, placing the data after it and filling the checksum (the NIC's way of building a segment) gives
    /// back its bytes. Returns whether it carried data, SACK blocks, or was a SYN with every option Linux
    /// offers (MSS `synSegmentSize`, SACK-permitted, window scale, timestamps).
    private func checkTCP<Address: PseudoHeaderAddress>(
        _ bytes: UnsafeRawBufferPointer, source: Address, destination: Address, synSegmentSize: UInt16, frame: Int
    ) throws -> (data: Bool, sack: Bool, fullSyn: Bool) {
        let segment = try TCPSegmentView(bytes)
        #expect(segment.checksumVerifies(source: source, destination: destination), "frame \(frame): TCP checksum")
        let tcp = try TCPRepr(segment)
        #expect(tcp.options.timestamps != nil, "frame \(frame): Linux sends timestamps on every segment")
        var out = [UInt8](repeating: 0xEE, count: segment.bytes.count)
        try out.withUnsafeMutableBytes { buffer in
            let headerLength = try tcp.emitHeader(into: buffer)
            #expect(headerLength == segment.headerLength, "frame \(frame): TCP header length")
            UnsafeMutableRawBufferPointer(rebasing: buffer[headerLength...]).copyMemory(from: segment.payload)
            TCPRepr.fillChecksum(segment: buffer, source: source, destination: destination)
        }
        #expect(out == Array(segment.bytes), "frame \(frame): TCP segment")
        let fullSyn = tcp.flags.contains(.syn) && tcp.options.maximumSegmentSize == synSegmentSize && tcp.options.sackPermitted
            && tcp.options.windowScale != nil && tcp.options.timestamps != nil
        return (!segment.payload.isEmpty, !tcp.options.sackBlocks.isEmpty, fullSyn)
    }

    private func checkIPv6(_ bytes: UnsafeRawBufferPointer, frame: Int, ethernet: EthernetFrameView, tally: inout Tally6) throws {
        let packet: IPv6PacketView
        do {
            packet = try IPv6PacketView(bytes)
        } catch .fragmented {
            tally.fragments += 1
            return
        }
        let ip = IPv6Repr(packet)
        var header = [UInt8](repeating: 0, count: IPv6Repr.headerLength)
        try header.withUnsafeMutableBytes { try ip.emit(into: $0) }
        #expect(header == Array(packet.bytes[0..<40]), "frame \(frame): IPv6 header")
        if packet.nextHeader == .hopByHopOptions { tally.hopByHop += 1 }  // MLD reports, when the links came up in time
        switch packet.upperLayerProtocol {
        case .icmpv6:
            let (icmp, data) = try ICMPv6Repr.parse(packet.upperLayer, source: ip.source, destination: ip.destination)
            var out = [UInt8](repeating: 0, count: packet.upperLayer.count)
            try out.withUnsafeMutableBytes { _ = try icmp.emit(into: $0, data: data, source: ip.source, destination: ip.destination) }
            #expect(out == Array(packet.upperLayer), "frame \(frame): ICMPv6")
            switch icmp.message {
            case .echoRequest, .echoReply: tally.echo += 1
            case .neighborSolicitation(let target), .neighborAdvertisement(_, let target):
                let options = try NeighborDiscoveryOptions(parsing: data)
                #expect(icmp.isValidNeighborDiscovery(hopLimit: packet.hopLimit, source: ip.source, destination: ip.destination, options: options),
                        "frame \(frame): Neighbor Discovery passes RFC 4861's checks")
                if case .neighborSolicitation = icmp.message {
                    tally.solicitations += 1
                    #expect(ip.destination == target.solicitedNodeMulticast, "frame \(frame): sent to the target's solicited-node group")
                    #expect(ethernet.destination == ip.destination.multicastMAC, "frame \(frame): to its Ethernet group")
                    if !ip.source.isUnspecified { #expect(options.sourceLinkLayerAddress == ethernet.source) }
                } else {
                    tally.advertisements += 1
                    #expect(options.targetLinkLayerAddress == ethernet.source, "frame \(frame): the target's address is the sender's")
                }
                if ip.source.isUnspecified {
                    // Duplicate address detection carries only a nonce (RFC 7527), which is skipped.
                    #expect(options == NeighborDiscoveryOptions() && data.first == 14, "frame \(frame): a nonce alone")
                } else {
                    var encoded = [UInt8](repeating: 0, count: options.encodedLength)
                    try encoded.withUnsafeMutableBytes { _ = try options.emit(into: $0) }
                    #expect(encoded == Array(data), "frame \(frame): options emit to the same bytes")
                }
            case .destinationUnreachable(let code):
                tally.unreachable += 1
                #expect(code == 4, "frame \(frame): port unreachable")
                #expect(icmp.isError)
                // The quote is cut to fit 1,280 bytes, so only its fixed header is read.
                #expect(data.count >= 48 && IPv6Address.load(from: data, at: 24) == ip.source, "frame \(frame): quotes the datagram")
            default: break
            }
        case .tcp:
            #expect(!packet.hasExtensionHeaders)
            tally.tcp += 1
            let seen = try checkTCP(packet.upperLayer, source: ip.source, destination: ip.destination, synSegmentSize: 1440, frame: frame)
            if seen.data { tally.withData += 1 }
            if seen.sack { tally.withSACK += 1 }
            if seen.fullSyn { tally.synWithAllOptions += 1 }
        case .udp:
            if packet.hasExtensionHeaders {
                tally.withDestinationOptions += 1
                #expect(packet.nextHeader == .destinationOptions && packet.upperLayerOffset == 48 && packet.upperLayerPointer == 40)
                #expect(Array(packet.upperLayer.suffix(7)) == Array("options".utf8))
            }
        default:
            break
        }
    }

    @Test("the IPv6 SYN is read field by field")
    func synFieldsIPv6() throws {
        let syn = try #require(frames.first { frame in
            frame.count > 87 && frame[12] == 0x86 && frame[13] == 0xDD && frame[20] == 6 && frame[67] == 0x02
        })
        try syn.withUnsafeBytes { bytes in
            let ip = try IPv6PacketView(try EthernetFrameView(bytes).payload)
            #expect(ip.source == IPv6Address("fd78::2"))
            #expect(ip.destination == IPv6Address("fd78::1"))
            #expect(ip.hopLimit == 64)
            #expect(ip.upperLayerProtocol == .tcp && !ip.hasExtensionHeaders && ip.upperLayerPointer == 6)
            let segment = try TCPSegmentView(ip.upperLayer)
            let tcp = try TCPRepr(segment)
            #expect(tcp.destinationPort == 8080)
            #expect(tcp.flags == .syn)
            #expect(tcp.options.maximumSegmentSize == 1440)
            #expect(tcp.options.sackPermitted && tcp.options.windowScale != nil)
            #expect(tcp.options.timestamps?.echoReply == 0)
            #expect(ip.payloadLength == segment.bytes.count)
        }
    }

    @Test("a flipped bit in an IPv6 TCP frame's addresses, lengths or segment is caught")
    func corruptionDetectedIPv6() throws {
        var caught = 0, tried = 0
        for frame in frames where frame.count > 74 && frame[12] == 0x86 && frame[13] == 0xDD && frame[20] == 6 {
            // Traffic class, flow label and hop limit are covered by no checksum in IPv6: start at the payload
            // length and skip the hop limit.
            for bit in stride(from: 18 * 8, to: frame.count * 8, by: 97) where bit / 8 != 21 {
                var mutated = frame
                mutated[bit / 8] ^= 1 << UInt8(bit % 8)
                tried += 1
                mutated.withUnsafeBytes { bytes in
                    guard let ethernet = try? EthernetFrameView(bytes),
                          let ip = try? IPv6PacketView(ethernet.payload), ip.upperLayerProtocol == .tcp,
                          let segment = try? TCPSegmentView(ip.upperLayer),
                          segment.checksumVerifies(source: ip.source, destination: ip.destination)
                    else { caught += 1; return }
                }
            }
        }
        #expect(tried > 100)
        #expect(caught == tried, "the pseudo-header carries addresses, length and next header into the TCP checksum")
    }

    @Test("the SYN is read field by field")
    func synFields() throws {
        let syn = try #require(frames.first { frame in
            frame.count > 47 && frame[12] == 0x08 && frame[13] == 0x00 && frame[23] == 6 && frame[47] == 0x02
        })
        try syn.withUnsafeBytes { bytes in
            let ip = try IPv4PacketView(try EthernetFrameView(bytes).payload)
            #expect(ip.source == IPv4Address(10, 78, 0, 2))
            #expect(ip.destination == IPv4Address(10, 78, 0, 1))
            #expect(ip.timeToLive == 64)
            #expect(ip.dontFragment)
            let segment = try TCPSegmentView(ip.payload)
            let tcp = try TCPRepr(segment)
            #expect(tcp.destinationPort == 8080)
            #expect(tcp.flags == .syn)
            #expect(tcp.acknowledgmentNumber == SequenceNumber(0))
            #expect(segment.headerLength == 40)
            #expect(segment.payload.isEmpty)
            #expect(segment.sequenceLength == 1)
            #expect(tcp.options.maximumSegmentSize == 1460)
            #expect(tcp.options.sackPermitted)
            #expect(tcp.options.windowScale != nil)
            #expect(tcp.options.timestamps?.echoReply == 0)
            #expect(tcp.options.sackBlocks.isEmpty)
        }
    }

    @Test("a flipped bit anywhere in a checksummed header is caught")
    func corruptionDetected() throws {
        var caught = 0, tried = 0
        for frame in frames where frame.count > 54 && frame[12] == 0x08 && frame[13] == 0x00 && frame[23] == 6 {
            for bit in stride(from: 14 * 8, to: frame.count * 8, by: 97) {
                var mutated = frame
                mutated[bit / 8] ^= 1 << UInt8(bit % 8)
                tried += 1
                mutated.withUnsafeBytes { bytes in
                    guard let ethernet = try? EthernetFrameView(bytes),
                          let ip = try? IPv4PacketView(ethernet.payload),
                          let segment = try? TCPSegmentView(ip.payload),
                          segment.checksumVerifies(source: ip.source, destination: ip.destination)
                    else { caught += 1; return }
                }
            }
        }
        #expect(tried > 100)
        #expect(caught == tried, "a single-bit error always breaks the IPv4 or TCP checksum or a length check")
    }
}
