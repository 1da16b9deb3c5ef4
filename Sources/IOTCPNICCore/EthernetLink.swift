import IOTCPCommon

/// The link layer the NIC answers for itself: Ethernet framing, ARP (answer for our address, learn the
/// peers'), and ICMP echo. IPv4 TCP packets go up; IPv4 packets from the stack go out in frames addressed
/// from the ARP cache (an unknown neighbour is asked for, and the packet dropped: TCP retransmits).
public struct EthernetLink {
    public let hardwareAddress: MACAddress
    public let address: IPv4Address
    private var neighbours: [IPv4Address: MACAddress] = [:]
    public private(set) var arpRepliesSent = 0
    public private(set) var echoRepliesSent = 0
    public private(set) var framesDropped = 0

    public init(hardwareAddress: MACAddress, address: IPv4Address) {
        self.hardwareAddress = hardwareAddress
        self.address = address
    }

    /// Handles a received frame: returns the IPv4 TCP packet inside it for the stack, or nil after
    /// answering (ARP, ping) or dropping it. Frames to send in reply go to `transmit`.
    public mutating func receive(
        frame: UnsafeRawBufferPointer, transmit: (UnsafeRawBufferPointer) -> Void
    ) -> UnsafeRawBufferPointer? {
        guard let ethernet = try? EthernetFrameView(frame) else { framesDropped += 1; return nil }
        let destination = ethernet.destination
        guard destination == hardwareAddress || destination.isBroadcast || destination.isMulticast else { return nil }
        switch ethernet.etherType {
        case .arp:
            guard let arp = try? ARPRepr(parsing: ethernet.payload) else { framesDropped += 1; return nil }
            neighbours[arp.senderProtocolAddress] = arp.senderHardwareAddress
            if arp.operation == .request && arp.targetProtocolAddress == address {
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
            neighbours[ip.source] = ethernet.source
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
        default:
            return nil
        }
    }

    /// A neighbour known without asking (a static ARP entry): benchmarks, and links whose peers never ARP.
    public mutating func learn(neighbour address: IPv4Address, at hardwareAddress: MACAddress) {
        neighbours[address] = hardwareAddress
    }

    /// Frames an IPv4 packet for its destination and transmits it.
    public mutating func send(packet: UnsafeRawBufferPointer, transmit: (UnsafeRawBufferPointer) -> Void) {
        guard packet.count >= 20 else { return }
        let destination = IPv4Address(rawValue: packet.bigEndianUInt32(at: 16))
        guard let neighbour = neighbours[destination] else {
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

    /// Writes the Ethernet header in front of the IPv4 packet that already fills `frame` from byte 14, so
    /// a packet built in the frame buffer goes out without a copy. Returns false (having asked for the
    /// neighbour by ARP through `transmit`) when the destination's hardware address is not known yet.
    public mutating func addressFrame(
        _ frame: UnsafeMutableRawBufferPointer, transmit: (UnsafeRawBufferPointer) -> Void
    ) -> Bool {
        guard frame.count >= 14 + 20 else { return false }
        let destination = IPv4Address(rawValue: UnsafeRawBufferPointer(frame).bigEndianUInt32(at: 14 + 16))
        guard let neighbour = neighbours[destination] else {
            framesDropped += 1
            askFor(destination, transmit: transmit)
            return false
        }
        try? EthernetRepr(destination: neighbour, source: hardwareAddress, etherType: .ipv4).emit(into: frame)
        return true
    }

    /// Writes the Ethernet header for an IPv4 packet to `destination` into `header` (14 bytes), for a
    /// frame whose packet follows from elsewhere (a gathered write). False, having asked by ARP, when the
    /// neighbour is not known yet.
    public mutating func writeHeader(
        into header: UnsafeMutableRawBufferPointer, destination: IPv4Address, transmit: (UnsafeRawBufferPointer) -> Void
    ) -> Bool {
        guard header.count >= 14, let neighbour = neighbours[destination] else {
            framesDropped += 1
            askFor(destination, transmit: transmit)
            return false
        }
        try? EthernetRepr(destination: neighbour, source: hardwareAddress, etherType: .ipv4).emit(into: header)
        return true
    }

    private func askFor(_ target: IPv4Address, transmit: (UnsafeRawBufferPointer) -> Void) {
        let request = ARPRepr(operation: .request, senderHardwareAddress: hardwareAddress, senderProtocolAddress: address,
                              targetHardwareAddress: .zero, targetProtocolAddress: target)
        var bytes = [UInt8](repeating: 0, count: 14 + ARPRepr.length)
        bytes.withUnsafeMutableBytes { buffer in
            try? EthernetRepr(destination: .broadcast, source: hardwareAddress, etherType: .arp).emit(into: buffer)
            try? request.emit(into: UnsafeMutableRawBufferPointer(rebasing: buffer[14...]))
            transmit(UnsafeRawBufferPointer(buffer))
        }
    }
}
