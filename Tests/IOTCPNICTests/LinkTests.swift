import IOTCPCommon
import IOTCPNIC
import Testing

/// The NIC's own link layer under a flood: what the neighbour table learns, how much it keeps, and for
/// how long.
@Suite("Ethernet link: a bounded neighbour table")
struct LinkTests {
    static let ours = IPv4Address(10, 77, 0, 2)
    static let mac = MACAddress(0x02, 0, 0, 0x77, 0, 2)

    /// An IPv4/TCP frame from `source` (at `hardware`) to our address.
    func frame(from source: IPv4Address, hardware: MACAddress) -> [UInt8] {
        let tcp = TCPRepr(sourcePort: 1234, destinationPort: 80, sequenceNumber: SequenceNumber(1), acknowledgmentNumber: SequenceNumber(0),
                          flags: .syn, window: 100, options: TCPOptions())
        var bytes = [UInt8](repeating: 0, count: 14 + 20 + tcp.headerLength)
        bytes.withUnsafeMutableBytes { raw in
            try! EthernetRepr(destination: Self.mac, source: hardware, etherType: .ipv4).emit(into: raw)
            try! IPv4Repr(source: source, destination: Self.ours, protocol: .tcp, payloadLength: tcp.headerLength)
                .emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]))
            _ = try! tcp.emitHeader(into: UnsafeMutableRawBufferPointer(rebasing: raw[34...]))
        }
        return bytes
    }

    func arp(_ operation: ARPRepr.Operation, from source: IPv4Address, hardware: MACAddress, asking target: IPv4Address) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: 14 + ARPRepr.length)
        bytes.withUnsafeMutableBytes { raw in
            try! EthernetRepr(destination: .broadcast, source: hardware, etherType: .arp).emit(into: raw)
            try! ARPRepr(operation: operation, senderHardwareAddress: hardware, senderProtocolAddress: source,
                         targetHardwareAddress: .zero, targetProtocolAddress: target).emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[14...]))
        }
        return bytes
    }

    @Test("a flood of spoofed sources: only on-link ones are learned, and never more than the table holds")
    func spoofedFlood() {
        var link = EthernetLink(hardwareAddress: Self.mac, address: Self.ours, prefixLength: 16, maximumNeighbours: 64)
        var frames = 0
        for index in 0..<10_000 {
            let onLink = IPv4Address(10, 77, UInt8(index >> 8 & 0xFF), UInt8(index & 0xFF))
            let offLink = IPv4Address(192, 0, UInt8(index >> 8 & 0xFF), UInt8(index & 0xFF))
            for source in [onLink, offLink] {
                let bytes = frame(from: source, hardware: MACAddress(0x02, 1, 0, 0, UInt8(index >> 8 & 0xFF), UInt8(index & 0xFF)))
                if bytes.withUnsafeBytes({ link.receive(frame: $0, now: .milliseconds(UInt64(index)), transmit: { _ in }) }) != nil { frames += 1 }
            }
        }
        #expect(frames == 20_000, "every segment still goes up to the host")
        #expect(link.neighbourCount <= 64 && link.neighbourCount > 56, "full, less the batch last made room for")
        #expect(link.offLinkSources == 10_001, "every off-link source, and one claiming our own address")
        #expect(link.neighboursEvicted > 9_000)
    }

    @Test("ARP teaches only what concerns us; a neighbour not heard from ages out and is asked for again")
    func learningAndAging() throws {
        var link = EthernetLink(hardwareAddress: Self.mac, address: Self.ours, neighbourLifetime: 10 * Nanoseconds.second)
        let peer = IPv4Address(10, 77, 0, 1), peerMAC = MACAddress(0x02, 9, 9, 9, 9, 9)
        // Someone asking for another host: not learned.
        _ = arp(.request, from: peer, hardware: peerMAC, asking: IPv4Address(10, 77, 0, 3)).withUnsafeBytes {
            link.receive(frame: $0, now: .zero, transmit: { _ in })
        }
        #expect(link.neighbourCount == 0)
        var replies: [[UInt8]] = []
        _ = arp(.request, from: peer, hardware: peerMAC, asking: Self.ours).withUnsafeBytes {
            link.receive(frame: $0, now: .zero, transmit: { replies.append(Array($0)) })
        }
        #expect(link.neighbourCount == 1 && replies.count == 1)
        var header = [UInt8](repeating: 0, count: 14)
        var asked = 0
        let known = header.withUnsafeMutableBytes { link.writeHeader(into: $0, destination: peer, transmit: { _ in asked += 1 }) }
        #expect(known && asked == 0 && Array(header[0..<6]) == [0x02, 9, 9, 9, 9, 9])
        // Eleven seconds of silence (time moves with the next frame received).
        _ = frame(from: IPv4Address(10, 77, 0, 9), hardware: MACAddress(0x02, 7, 7, 7, 7, 7)).withUnsafeBytes {
            link.receive(frame: $0, now: .milliseconds(11_000), transmit: { _ in })
        }
        let stale = header.withUnsafeMutableBytes { link.writeHeader(into: $0, destination: peer, transmit: { _ in asked += 1 }) }
        #expect(!stale && asked == 1, "aged out: the packet waits for an ARP answer")
    }

    @Test("a neighbour heard on every frame stays known, ages out a lifetime after its last frame, and may change address")
    func heardOnEveryFrame() {
        var link = EthernetLink(hardwareAddress: Self.mac, address: Self.ours, neighbourLifetime: 10 * Nanoseconds.second)
        let peer = IPv4Address(10, 77, 0, 1), first = MACAddress(0x02, 9, 9, 9, 9, 9), second = MACAddress(0x02, 8, 8, 8, 8, 8)
        var asked = 0
        func hear(_ source: IPv4Address, _ hardware: MACAddress, atMilliseconds time: UInt64) {
            _ = frame(from: source, hardware: hardware).withUnsafeBytes { link.receive(frame: $0, now: .milliseconds(time), transmit: { _ in }) }
        }
        func resolve() -> [UInt8]? {
            var header = [UInt8](repeating: 0, count: 14)
            let known = header.withUnsafeMutableBytes { link.writeHeader(into: $0, destination: peer, transmit: { _ in asked += 1 }) }
            return known ? Array(header[0..<6]) : nil
        }
        // Thirty seconds of frames, ten a second, each answered: three lifetimes.
        var answered = 0
        for step in 0...300 {
            hear(peer, first, atMilliseconds: UInt64(step) * 100)
            if resolve() == [0x02, 9, 9, 9, 9, 9] { answered += 1 }
        }
        #expect(answered == 301 && asked == 0 && link.neighbourCount == 1)
        // Silence: frames from an off-link source move the clock and teach nothing.
        let stranger = IPv4Address(192, 0, 2, 1), strangerMAC = MACAddress(0x02, 7, 7, 7, 7, 7)
        hear(stranger, strangerMAC, atMilliseconds: 39_900)
        #expect(resolve() == [0x02, 9, 9, 9, 9, 9] && asked == 0, "9.9 s after its last frame: still known")
        hear(stranger, strangerMAC, atMilliseconds: 40_100)
        #expect(resolve() == nil && asked == 1, "10.1 s after its last frame: aged out, asked for")
        // Heard again, from another card: the next frame goes there, and so does the one after a change back.
        hear(peer, second, atMilliseconds: 40_200)
        #expect(resolve() == [0x02, 8, 8, 8, 8, 8])
        hear(peer, first, atMilliseconds: 40_300)
        #expect(resolve() == [0x02, 9, 9, 9, 9, 9] && asked == 1)
    }

    @Test("the packet that asked for an unknown neighbour is held and sent, framed, when the ARP reply comes; not after a second")
    func heldUntilResolved() throws {
        var link = EthernetLink(hardwareAddress: Self.mac, address: Self.ours)
        let peer = IPv4Address(10, 77, 0, 1), peerMAC = MACAddress(0x02, 9, 9, 9, 9, 9)
        // A SYN from the stack to the peer (its IPv4 header is what the link reads the destination from).
        let syn = TCPRepr(sourcePort: 33_000, destinationPort: 8080, sequenceNumber: SequenceNumber(7), flags: .syn, window: 100)
        var packet = [UInt8](repeating: 0, count: 20 + syn.headerLength)
        packet.withUnsafeMutableBytes { raw in
            try! IPv4Repr(source: Self.ours, destination: peer, protocol: .tcp, payloadLength: syn.headerLength).emit(into: raw)
            _ = try! syn.emitHeader(into: UnsafeMutableRawBufferPointer(rebasing: raw[20...]))
        }
        var wire: [[UInt8]] = []
        var header = [UInt8](repeating: 0, count: 14)
        let known = header.withUnsafeMutableBytes { link.writeHeader(into: $0, destination: peer, transmit: { wire.append(Array($0)) }) }
        #expect(!known && wire.count == 1, "an ARP request went out")
        packet.withUnsafeBytes { link.hold(header: $0, payload: UnsafeRawBufferPointer(start: nil, count: 0), now: .milliseconds(5)) }
        wire.removeAll()
        var reply = arp(.reply, from: peer, hardware: peerMAC, asking: Self.ours)
        reply.replaceSubrange(0..<6, with: [0x02, 0, 0, 0x77, 0, 2])
        _ = reply.withUnsafeBytes { link.receive(frame: $0, now: .milliseconds(7), transmit: { wire.append(Array($0)) }) }
        let sent = try #require(wire.first)
        #expect(wire.count == 1 && Array(sent[0..<6]) == [0x02, 9, 9, 9, 9, 9] && Array(sent[14...]) == packet)
        #expect(link.heldPacketsSent == 1)
        // Held too long: TCP has sent it again by then, so it is not sent.
        let other = IPv4Address(10, 77, 0, 5)
        packet.withUnsafeMutableBytes { $0.storeBigEndian(other.rawValue, at: 16) }
        packet.withUnsafeBytes { link.hold(header: $0, payload: UnsafeRawBufferPointer(start: nil, count: 0), now: .milliseconds(10)) }
        wire.removeAll()
        _ = frame(from: other, hardware: MACAddress(0x02, 5, 5, 5, 5, 5)).withUnsafeBytes {
            link.receive(frame: $0, now: .milliseconds(1_500), transmit: { wire.append(Array($0)) })
        }
        #expect(wire.isEmpty && link.heldPacketsSent == 1)
    }
}

@Suite("FIFO")
struct FIFOTests {
    @Test("it behaves as an array with a moving front, through compactions, against a model")
    func againstAModel() {
        var fifo = FIFO<Int>()
        var model: [Int] = []
        var random = SeededGenerator(seed: 12)
        for step in 0..<20_000 {
            switch Int.random(in: 0..<10, using: &random) {
            case 0...3:
                fifo.append(step); model.append(step)
            case 4...6:
                #expect(fifo.popFirst() == (model.isEmpty ? nil : model.removeFirst()))
            case 7:
                fifo.prepend(-step); model.insert(-step, at: 0)
            case 8 where !model.isEmpty:
                let position = Int.random(in: 0...model.count, using: &random)
                fifo.insert(step, at: position); model.insert(step, at: position)
            default:
                if !model.isEmpty {
                    let position = Int.random(in: 0..<model.count, using: &random)
                    fifo[position] = step * 3; model[position] = step * 3
                }
            }
            if step % 997 == 0 { #expect(Array(fifo) == model) }
        }
        #expect(Array(fifo) == model && fifo.count == model.count && fifo.first == model.first)
        fifo.removeAll(keepingCapacity: true)
        #expect(fifo.isEmpty && fifo.popFirst() == nil)
    }
}

@Suite("NIC data plane: what it does not forward")
struct ReceiveFilterTests {
    @Test("an IPv4 fragment is dropped and counted as one, not forwarded; a whole segment goes to the host")
    func fragmentsAreCountedAndDropped() throws {
        let files = MemoryFiles()
        let nic = NICDataPlane(files: files, disk: MemoryDisk(files: files))
        var output = CollectingNICOutput()
        let tcp = TCPRepr(sourcePort: 1, destinationPort: 80, sequenceNumber: SequenceNumber(1), acknowledgmentNumber: SequenceNumber(0),
                          flags: .syn, window: 1, options: TCPOptions())
        var packet = [UInt8](repeating: 0, count: 40)
        try packet.withUnsafeMutableBytes { raw in
            try IPv4Repr(source: IPv4Address(10, 0, 0, 1), destination: IPv4Address(10, 0, 0, 2), protocol: .tcp, payloadLength: 20).emit(into: raw)
            _ = try tcp.emitHeader(into: UnsafeMutableRawBufferPointer(rebasing: raw[20...]))
        }
        packet.withUnsafeBytes { nic.receive(packet: $0, output: &output) }
        #expect(output.replies == ["PACKET_IN"])
        // More fragments follow: set MF, fix the header checksum.
        packet[6] = 0x20
        packet[10] = 0; packet[11] = 0
        let checksum = packet.withUnsafeBytes { InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<20])) }
        packet[10] = UInt8(checksum >> 8); packet[11] = UInt8(checksum & 0xFF)
        packet.withUnsafeBytes { nic.receive(packet: $0, output: &output) }
        #expect(output.replies == ["PACKET_IN"], "nothing more forwarded")
        #expect(nic.counters.fragmentsIn == 1 && nic.counters.malformedIn == 0)
    }
}
