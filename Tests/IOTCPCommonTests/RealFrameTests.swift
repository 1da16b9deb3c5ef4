import Foundation
import Testing
@testable import IOTCPCommon

/// Frames captured from Linux (scripts/capture-fixtures.sh): a download across a veth pair with some
/// segments dropped, plus ARP and ping. Every frame must parse, and emit back to the same bytes.
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
            let segment = try TCPSegmentView(packet.payload)
            #expect(segment.checksumVerifies(source: ip.source, destination: ip.destination), "frame \(frame): TCP checksum")
            let tcp = try TCPRepr(segment)
            #expect(tcp.options.timestamps != nil, "frame \(frame): Linux sends timestamps on every segment")
            if !segment.payload.isEmpty { tally.withData += 1 }
            if !tcp.options.sackBlocks.isEmpty { tally.withSACK += 1 }
            if tcp.flags.contains(.syn), tcp.options.maximumSegmentSize == 1460, tcp.options.sackPermitted,
               tcp.options.windowScale != nil, tcp.options.timestamps != nil {
                tally.synWithAllOptions += 1
            }
            // Emit the header, place the data after it, fill the checksum: the NIC's way of building a segment.
            var out = [UInt8](repeating: 0xEE, count: segment.bytes.count)
            try out.withUnsafeMutableBytes { buffer in
                let headerLength = try tcp.emitHeader(into: buffer)
                #expect(headerLength == segment.headerLength, "frame \(frame): TCP header length")
                UnsafeMutableRawBufferPointer(rebasing: buffer[headerLength...]).copyMemory(from: segment.payload)
                TCPRepr.fillChecksum(segment: buffer, source: ip.source, destination: ip.destination)
            }
            #expect(out == Array(segment.bytes), "frame \(frame): TCP segment")
        default:
            break
        }
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
