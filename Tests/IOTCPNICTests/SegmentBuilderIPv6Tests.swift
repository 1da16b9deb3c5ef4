import Testing
import IOTCPNICCore

/// Segments of an IPv6 flow, built as the NIC builds IPv4 ones, and read back with the parsers.
@Suite("Segments over IPv6")
struct SegmentBuilderIPv6Tests {
    static let flow = FlowEndpoints(localAddress: IPAddress("fd77::2")!, remoteAddress: IPAddress("fd77::1")!, localPort: 8080,
                                    remotePort: 41000, remoteHardwareAddress: MACAddress(rawValue: 0x0202_0000_0001), maximumSegmentSize: 1440)
    static let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(777), window: 501, lastSegmentFlags: .psh,
                                          maximumSegmentSize: 1440, timestamps: TCPTimestamps(value: 1000, echoReply: 55))

    @Test("a data segment: the IPv6 header (next header TCP, payload length), the template's fields, a checksum over IPv6's pseudo-header")
    func builtAndParsed() throws {
        let payload = (0..<1440).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        #expect(SegmentBuilder.packetLength(payloadLength: 1440, template: Self.template, networkHeaderLength: Self.flow.remoteAddress.headerLength)
                == 40 + 32 + 1440)
        var buffer = [UInt8](repeating: 0, count: 2000)
        let length = try buffer.withUnsafeMutableBytes { raw throws(WireError) in
            try SegmentBuilder.build(into: raw, flow: Self.flow, sequence: SequenceNumber(5000), payloadLength: payload.count, isLast: true,
                                     template: Self.template, nicDelayMilliseconds: 3) { $0.copyBytes(from: payload) }
        }
        #expect(length == 40 + 32 + 1440)
        try Array(buffer[0..<length]).withUnsafeBytes { raw in
            let ip = try IPv6PacketView(raw)
            #expect(ip.source == IPv6Address("fd77::2") && ip.destination == IPv6Address("fd77::1"))
            #expect(ip.upperLayerProtocol == .tcp && ip.payloadLength == 32 + 1440 && ip.hopLimit == 64 && !ip.hasExtensionHeaders)
            let view = try TCPSegmentView(ip.upperLayer)
            #expect(view.checksumVerifies(source: ip.source, destination: ip.destination))
            let tcp = try TCPRepr(view)
            #expect(tcp.sourcePort == 8080 && tcp.destinationPort == 41000 && tcp.sequenceNumber == SequenceNumber(5000))
            #expect(tcp.acknowledgmentNumber == SequenceNumber(777) && tcp.window == 501 && tcp.flags == [.ack, .psh])
            #expect(tcp.options.timestamps == TCPTimestamps(value: 1003, echoReply: 55), "TSval moved on by the NIC's 3 ms")
            #expect(Array(view.payload) == payload)
        }
    }

    @Test("headers for a payload left in place: the same header, checksum full or left to the device")
    func headersForGather() throws {
        let payload = [UInt8](repeating: 0xA5, count: 2880)
        for offloaded in [false, true] {
            var headers = [UInt8](repeating: 0, count: 128)
            let length = try headers.withUnsafeMutableBytes { raw in
                try payload.withUnsafeBytes { data in
                    try SegmentBuilder.buildHeaders(into: raw, flow: Self.flow, sequence: SequenceNumber(1), payload: data, isLast: false,
                                                    template: Self.template, nicDelayMilliseconds: 0, checksum: offloaded ? .offloaded : .full)
                }
            }
            #expect(length == 40 + 32)
            let packet = Array(headers[0..<length]) + payload
            try packet.withUnsafeBytes { raw in
                let ip = try IPv6PacketView(raw)
                let view = try TCPSegmentView(ip.upperLayer)
                if offloaded {
                    var pseudo = InternetChecksum()
                    pseudo.addPseudoHeader(source: ip.source, destination: ip.destination, nextHeader: .tcp, length: 32 + 2880)
                    #expect(raw.bigEndianUInt16(at: 40 + 16) == pseudo.foldedSum, "the pseudo-header sum, for the device")
                } else {
                    #expect(view.checksumVerifies(source: ip.source, destination: ip.destination))
                }
                #expect(ip.payloadLength == 32 + 2880 && view.flags == .ack)
            }
        }
    }

    @Test("FLOW_OPEN6 opens an IPv6 flow: its segments go up tagged with it, others untagged; FLOW_CLOSE forgets it")
    func ipv6FlowDemultiplexed() throws {
        let nic = NICDataPlane(files: MemoryFiles(), disk: MemoryDisk(files: MemoryFiles()))
        var output = CollectingNICOutput()
        nic.handle(.flowOpen(FlowID(3), Self.flow), received: .zero, now: .zero, output: &output)
        #expect(output.errors.isEmpty && nic.flowCount == 1)
        func segment(from port: UInt16) -> [UInt8] {
            let tcp = TCPRepr(sourcePort: port, destinationPort: 8080, sequenceNumber: SequenceNumber(9), acknowledgmentNumber: SequenceNumber(5),
                              flags: .ack, window: 1000)
            var packet = [UInt8](repeating: 0, count: 40 + tcp.headerLength)
            packet.withUnsafeMutableBytes { raw in
                let (source, destination) = (Self.flow.remoteAddress.bits, Self.flow.localAddress.bits)
                try! IPv6Repr(source: source, destination: destination, nextHeader: .tcp, payloadLength: tcp.headerLength).emit(into: raw)
                _ = try! tcp.emitHeader(into: UnsafeMutableRawBufferPointer(rebasing: raw[40...]))
                TCPRepr.fillChecksum(segment: UnsafeMutableRawBufferPointer(rebasing: raw[40...]), source: source, destination: destination)
            }
            return packet
        }
        for port: UInt16 in [41000, 41001] {
            segment(from: port).withUnsafeBytes { nic.receive(packet: $0, now: .zero, output: &output) }
        }
        #expect(output.packetsIn.map(\.0) == [FlowID(3), FlowID.none], "the flow's own segment tagged, the stranger's not")
        #expect(output.packetsIn.first?.1 == segment(from: 41000))
        nic.handle(.flowClose(FlowID(3), reason: 0), received: .zero, now: .zero, output: &output)
        segment(from: 41000).withUnsafeBytes { nic.receive(packet: $0, now: .zero, output: &output) }
        #expect(nic.flowCount == 0 && output.packetsIn.last?.0 == FlowID.none)
        // A Packet Too Big the link passed on goes up untagged: the host finds the connection from its quote.
        let message = ICMPv6Repr(message: .packetTooBig(mtu: 1400))
        var icmp = [UInt8](repeating: 0, count: 40 + 8 + 48)
        icmp.withUnsafeMutableBytes { raw in
            let (source, destination) = (IPv6Address("fd77::fe")!, Self.flow.localAddress.bits)
            try! IPv6Repr(source: source, destination: destination, nextHeader: .icmpv6, payloadLength: 56).emit(into: raw)
            _ = try! message.emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[40...]), data: UnsafeRawBufferPointer(start: nil, count: 0),
                                  source: source, destination: destination)
        }
        icmp.withUnsafeBytes { nic.receive(packet: $0, now: .zero, output: &output) }
        #expect(output.packetsIn.last?.0 == FlowID.none && output.packetsIn.last?.1 == icmp)
    }
}
