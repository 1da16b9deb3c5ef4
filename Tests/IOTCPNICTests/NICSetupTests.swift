import IOTCPCommon
import IOTCPHost
import IOTCPNIC
@testable import IOTCPNICCore
import Testing

/// Stateless setup on the NIC: SYNs to a LISTEN port are answered here with cookies, only a good cookie's
/// ACK reaches the host (ESTABLISHED), and nothing is kept in between.
@Suite("Connection setup on the NIC (SYN cookies)")
struct NICSetupTests {
    static let server = IPv4Address(10, 77, 0, 2)
    static let client = IPv4Address(10, 77, 0, 1)
    let listener = ListenerOptions(port: 80, maximumSegmentSize: 1460, window: 65535, windowShift: 3)
    let start = Instant(nanoseconds: 3_000 * Nanoseconds.second)

    func makePlane() -> NICDataPlane {
        let files = MemoryFiles()
        let nic = NICDataPlane(files: files, disk: MemoryDisk(files: files))
        nic.cookies = SYNCookies(key0: 42, key1: 43)
        return nic
    }

    func listen(_ nic: NICDataPlane, _ options: ListenerOptions, output: inout CollectingNICOutput) {
        nic.handle(.listen(options), received: start, now: start, output: &output)
    }

    /// A data plane whose port 80 defers accepts.
    func deferringPlane(limits: NICDataPlane.Limits = NICDataPlane.Limits(), output: inout CollectingNICOutput) -> NICDataPlane {
        let files = MemoryFiles()
        let nic = NICDataPlane(files: files, disk: MemoryDisk(files: files), limits: limits)
        nic.cookies = SYNCookies(key0: 42, key1: 43)
        var deferring = listener
        deferring.deferAccept = true
        listen(nic, deferring, output: &output)
        return nic
    }

    /// A client's SYN from `sourcePort` answered by `nic`, and the client's bare ACK of the SYN-ACK (sent
    /// `ackDelay` later unless `sendAck` is false).
    func handshake(_ nic: NICDataPlane, sourcePort: UInt16, at time: Instant, ackDelay: UInt64 = 0, sendAck: Bool = true,
                   output: inout CollectingNICOutput) throws -> (request: TCPRepr, synAck: TCPRepr, bare: TCPRepr) {
        let request = syn(sourcePort: sourcePort)
        tcpPacket(request, from: Self.client, to: Self.server).withUnsafeBytes { nic.receive(packet: $0, now: time, output: &output) }
        let answer = try #require(output.packets.last)
        let (synAck, _, _) = try #require(parseSegment(answer))
        let bare = ack(of: synAck, syn: request)
        if sendAck {
            tcpPacket(bare, from: Self.client, to: Self.server).withUnsafeBytes { nic.receive(packet: $0, now: time + ackDelay, output: &output) }
        }
        return (request, synAck, bare)
    }

    func syn(port: UInt16 = 80, sourcePort: UInt16 = 40000, sequence: UInt32 = 1_000_000, timestamps: Bool = true, shift: UInt8? = 7,
             mss: UInt16 = 1460) -> TCPRepr {
        TCPRepr(sourcePort: sourcePort, destinationPort: port, sequenceNumber: SequenceNumber(sequence), flags: .syn, window: 64240,
                options: TCPOptions(maximumSegmentSize: mss, windowScale: shift, sackPermitted: true,
                                    timestamps: timestamps ? TCPTimestamps(value: 5000, echoReply: 0) : nil))
    }

    /// What a Linux client answers to `synAck`: its ACK (with the request, if any).
    func ack(of synAck: TCPRepr, syn: TCPRepr) -> TCPRepr {
        TCPRepr(sourcePort: syn.sourcePort, destinationPort: syn.destinationPort, sequenceNumber: syn.sequenceNumber + 1,
                acknowledgmentNumber: synAck.sequenceNumber + 1, flags: .ack, window: 502,
                options: TCPOptions(timestamps: synAck.options.timestamps.map { TCPTimestamps(value: 5001, echoReply: $0.value) }))
    }

    @Test("a SYN to a LISTEN port is answered on the NIC, field by field, and the host hears nothing")
    func synAnsweredHere() throws {
        let nic = makePlane()
        var output = CollectingNICOutput()
        listen(nic, listener, output: &output)
        #expect(nic.listenerCount == 1)
        let request = syn()
        tcpPacket(request, from: Self.client, to: Self.server).withUnsafeBytes { nic.receive(packet: $0, now: start, output: &output) }
        #expect(output.replies.isEmpty, "no PACKET_IN: the host never sees a SYN")
        #expect(output.packets.count == 1 && nic.counters.synCookiesSent == 1 && nic.flowCount == 0)
        let packet = try #require(output.packets.first)
        try packet.withUnsafeBytes { raw in
            let ip = try IPv4PacketView(raw)
            #expect(ip.source == Self.server && ip.destination == Self.client && ip.protocol == .tcp)
        }
        let (synAck, payload, checksumGood) = try #require(parseSegment(packet))
        #expect(checksumGood && payload.isEmpty)
        #expect(synAck.flags == [.syn, .ack] && synAck.sourcePort == 80 && synAck.destinationPort == 40000)
        #expect(synAck.acknowledgmentNumber == request.sequenceNumber + 1 && synAck.window == 65535)
        #expect(synAck.options.maximumSegmentSize == 1460 && synAck.options.windowScale == 3 && synAck.options.sackPermitted)
        let timestamps = try #require(synAck.options.timestamps)
        #expect(timestamps.echoReply == 5000 && timestamps.value & 0x1F == (7 << 1 | 1))
        #expect(synAck.sequenceNumber.rawValue >> 24 & 7 == 7, "the cookie names 1460 in the MSS table")
    }

    /// An IPv6 packet carrying `segment` from `source` to `destination`, its checksum over IPv6's pseudo-header.
    func tcpPacket6(_ segment: TCPRepr, from source: IPv6Address, to destination: IPv6Address) -> [UInt8] {
        var packet = [UInt8](repeating: 0, count: 40 + segment.headerLength)
        packet.withUnsafeMutableBytes { raw in
            try! IPv6Repr(source: source, destination: destination, nextHeader: .tcp, payloadLength: segment.headerLength).emit(into: raw)
            let tcp = UnsafeMutableRawBufferPointer(rebasing: raw[40...])
            _ = try! segment.emitHeader(into: tcp)
            TCPRepr.fillChecksum(segment: tcp, source: source, destination: destination)
        }
        return packet
    }

    @Test("over IPv6 too: a SYN is answered with a cookie from the IPv6 address (MSS 20 bytes smaller), its ACK goes up as ESTABLISHED")
    func cookiesOverIPv6() throws {
        let nic = makePlane()
        var output = CollectingNICOutput()
        listen(nic, listener, output: &output)
        let (server, client) = (IPv6Address("fd77::2")!, IPv6Address("fd77::1")!)
        let request = syn(mss: 1440)
        tcpPacket6(request, from: client, to: server).withUnsafeBytes { nic.receive(packet: $0, now: start, output: &output) }
        #expect(output.replies.isEmpty && output.packets.count == 1 && nic.counters.synCookiesSent == 1)
        let packet = try #require(output.packets.first)
        let synAck: TCPRepr = try packet.withUnsafeBytes { raw in
            let ip = try IPv6PacketView(raw)
            #expect(ip.source == server && ip.destination == client && ip.upperLayerProtocol == .tcp)
            let view = try TCPSegmentView(ip.upperLayer)
            #expect(view.checksumVerifies(source: server, destination: client))
            return try TCPRepr(view)
        }
        #expect(synAck.flags == [.syn, .ack] && synAck.acknowledgmentNumber == request.sequenceNumber + 1)
        #expect(synAck.options.maximumSegmentSize == 1440, "LISTEN's 1460 less IPv6's 20 extra header bytes")
        let answer = ack(of: synAck, syn: request)
        let ackPacket = tcpPacket6(answer, from: client, to: server)
        ackPacket.withUnsafeBytes { nic.receive(packet: $0, now: start, output: &output) }
        let (parameters, carried) = try #require(output.established.first)
        #expect(carried == ackPacket && parameters.localInitialSequence == synAck.sequenceNumber)
        #expect(parameters.peerSegmentSize == 1440 && parameters.peerWindowShift == 7 && parameters.selectiveAcknowledgments)
        // The same ACK from another IPv6 address carries no good cookie: it goes up as a stray.
        tcpPacket6(answer, from: IPv6Address("fd77::9")!, to: server).withUnsafeBytes { nic.receive(packet: $0, now: start, output: &output) }
        #expect(output.established.count == 1 && nic.counters.cookiesRejected == 1)
    }

    @Test("the ACK that brings a good cookie back goes to the host as ESTABLISHED with what the cookie encoded")
    func goodCookieEstablishes() throws {
        let nic = makePlane()
        var output = CollectingNICOutput()
        listen(nic, listener, output: &output)
        let request = syn(shift: 9, mss: 1400)
        tcpPacket(request, from: Self.client, to: Self.server).withUnsafeBytes { nic.receive(packet: $0, now: start, output: &output) }
        let (synAck, _, _) = try #require(parseSegment(output.packets[0]))
        let later = start + 2 * Nanoseconds.second
        let ackPacket = tcpPacket(ack(of: synAck, syn: request), from: Self.client, to: Self.server, payload: Array("GET / HTTP/1.1\r\n\r\n".utf8))
        ackPacket.withUnsafeBytes { nic.receive(packet: $0, now: later, output: &output) }
        #expect(output.replies == ["ESTABLISHED"] && nic.counters.handshakesCompleted == 1)
        let (parameters, carried) = try #require(output.established.first)
        #expect(carried == ackPacket, "the client's ACK, with its request, rides along whole")
        // The round trip: 2 s since the SYN-ACK, plus what its TSval's option bits took off the clock (under 32 ms).
        let synAckTimestamp = synAck.options.timestamps!.value
        let sinceTSval = UInt32(later.nanoseconds / Nanoseconds.millisecond) - synAckTimestamp
        #expect(sinceTSval >= 2_000 && sinceTSval < 2_032)
        #expect(parameters == HandshakeParameters(
            localInitialSequence: synAck.sequenceNumber, peerInitialSequence: request.sequenceNumber, peerSegmentSize: 1400,
            peerWindowShift: 9, selectiveAcknowledgments: true, timestamps: true, synAckTimestamp: synAckTimestamp,
            handshakeRoundTripMicroseconds: sinceTSval * 1_000))
        #expect(nic.flowCount == 0, "the flow is the host's to open")
    }

    @Test("a port deferring accepts: the handshake's bare ACK is dropped, keeping nothing, and the first data (or a FIN) brings the same cookie up with it")
    func deferredAccept() throws {
        var output = CollectingNICOutput()
        let nic = deferringPlane(output: &output)
        let (request, synAck, bare) = try handshake(nic, sourcePort: 40000, at: start, output: &output)
        #expect(output.replies.isEmpty && output.packetsIn.isEmpty, "neither ESTABLISHED nor the ACK itself reaches the host")
        #expect(nic.counters.acceptsDeferred == 1 && nic.counters.handshakesCompleted == 0 && nic.flowCount == 0)
        #expect(output.packets.count == 1, "and the client is not answered: to it the connection is open")

        // Its request: the same sequence number, the same cookie in the ACK field, now with bytes.
        let later = start + 30 * Nanoseconds.millisecond
        let requestPacket = tcpPacket(bare, from: Self.client, to: Self.server, payload: Array("GET / HTTP/1.1\r\n\r\n".utf8))
        requestPacket.withUnsafeBytes { nic.receive(packet: $0, now: later, output: &output) }
        #expect(output.replies == ["ESTABLISHED"] && nic.counters.handshakesCompleted == 1)
        let (parameters, carried) = try #require(output.established.first)
        #expect(carried == requestPacket, "the connection and its request in one command")
        #expect(parameters.localInitialSequence == synAck.sequenceNumber && parameters.peerInitialSequence == request.sequenceNumber)
        #expect(parameters.timestamps && parameters.synAckTimestamp == synAck.options.timestamps?.value)

        // A client that closes without a byte is handed over with its FIN; one that sends a forged ACK is
        // not dropped here but goes up as a stray, as on any port.
        let (second, secondSynAck, _) = try handshake(nic, sourcePort: 40001, at: later, sendAck: false, output: &output)
        var fin = ack(of: secondSynAck, syn: second)
        fin.flags = [.ack, .fin]
        tcpPacket(fin, from: Self.client, to: Self.server).withUnsafeBytes { nic.receive(packet: $0, now: later, output: &output) }
        #expect(output.established.count == 2 && nic.counters.acceptsDeferred == 1)
        var forged = ack(of: secondSynAck, syn: second)
        forged.acknowledgmentNumber = forged.acknowledgmentNumber + 7
        tcpPacket(forged, from: Self.client, to: Self.server).withUnsafeBytes { nic.receive(packet: $0, now: later, output: &output) }
        #expect(output.packetsIn.count == 1 && nic.counters.cookiesRejected == 1 && nic.counters.acceptsDeferred == 1)
    }

    @Test("a deferred handshake whose first data is lost: a later segment brings the connection up (its bare ACK rebuilt), then goes up itself")
    func deferredAcceptFirstDataLost() throws {
        var output = CollectingNICOutput()
        let nic = deferringPlane(output: &output)
        let (request, synAck, bare) = try handshake(nic, sourcePort: 40000, at: start, ackDelay: 3 * Nanoseconds.millisecond, output: &output)
        #expect(nic.deferredHandshakeCount == 1 && output.replies.isEmpty)

        // The request's second segment, 1,000 bytes on: it cannot verify by itself (the cookie hashes the ISN).
        var second = bare
        second.sequenceNumber = bare.sequenceNumber + 1000
        second.flags = [.ack, .psh]
        let secondPacket = tcpPacket(second, from: Self.client, to: Self.server, payload: Array(repeating: UInt8(ascii: "x"), count: 200))
        let later = start + 250 * Nanoseconds.millisecond
        secondPacket.withUnsafeBytes { nic.receive(packet: $0, now: later, output: &output) }
        #expect(output.replies == ["ESTABLISHED", "PACKET_IN"], "the connection first, then the segment, untagged, for the host to hold")
        #expect(nic.counters.deferredAcceptsOutOfOrder == 1 && nic.counters.cookiesRejected == 0 && nic.deferredHandshakeCount == 0)
        let (parameters, carried) = try #require(output.established.first)
        #expect(parameters.peerInitialSequence == request.sequenceNumber && parameters.localInitialSequence == synAck.sequenceNumber)
        let (rebuilt, payload, checksumGood) = try #require(parseSegment(carried))
        #expect(checksumGood && payload.isEmpty && rebuilt.flags == .ack)
        #expect(rebuilt.sequenceNumber == bare.sequenceNumber && rebuilt.acknowledgmentNumber == bare.acknowledgmentNumber)
        #expect(rebuilt.sourcePort == 40000 && rebuilt.destinationPort == 80 && rebuilt.options.timestamps == bare.options.timestamps)
        #expect(parameters.handshakeRoundTripMicroseconds < 40_000, "the round trip the bare ACK measured, not the 250 ms to the data")
        #expect(output.packetsIn.first?.1 == secondPacket)

        // A stray with a made-up ISN finds no handshake and goes up as before; so does one whose cookie
        // does not verify even with the remembered ISN (the entry stays for the real client).
        let (_, _, bare2) = try handshake(nic, sourcePort: 40001, at: later, output: &output)
        #expect(nic.deferredHandshakeCount == 1)
        var forged = bare2
        forged.sequenceNumber = bare2.sequenceNumber + 500
        forged.acknowledgmentNumber = bare2.acknowledgmentNumber + 1
        tcpPacket(forged, from: Self.client, to: Self.server, payload: [1, 2, 3]).withUnsafeBytes { nic.receive(packet: $0, now: later, output: &output) }
        #expect(output.established.count == 1 && nic.counters.cookiesRejected == 1 && nic.deferredHandshakeCount == 1)
    }

    @Test("deferred handshakes are bounded: past the table's room one is handed over at its bare ACK; an entry lasts two cookie periods")
    func deferredHandshakesBounded() throws {
        var limits = NICDataPlane.Limits()
        limits.maximumDeferredHandshakes = 1
        var output = CollectingNICOutput()
        let nic = deferringPlane(limits: limits, output: &output)
        _ = try handshake(nic, sourcePort: 40000, at: start, output: &output)
        #expect(nic.deferredHandshakeCount == 1 && output.established.isEmpty)
        _ = try handshake(nic, sourcePort: 40001, at: start, output: &output)
        #expect(nic.counters.deferralsRefused == 1 && output.established.count == 1, "no room: handed over at once, as on any port")
        _ = try handshake(nic, sourcePort: 40002, at: start + 129 * Nanoseconds.second, output: &output)
        #expect(nic.deferredHandshakeCount == 1 && nic.counters.acceptsDeferred == 2, "the first expired, making room")
    }

    @Test("timestamps off: no window scale or SACK offered, and the ESTABLISHED says so")
    func withoutTimestamps() throws {
        let nic = makePlane()
        var output = CollectingNICOutput()
        listen(nic, listener, output: &output)
        let request = syn(timestamps: false, mss: 536)
        tcpPacket(request, from: Self.client, to: Self.server).withUnsafeBytes { nic.receive(packet: $0, now: start, output: &output) }
        let (synAck, _, _) = try #require(parseSegment(output.packets[0]))
        #expect(synAck.options.timestamps == nil && synAck.options.windowScale == nil && !synAck.options.sackPermitted)
        tcpPacket(ack(of: synAck, syn: request), from: Self.client, to: Self.server).withUnsafeBytes { nic.receive(packet: $0, now: start, output: &output) }
        let (parameters, _) = try #require(output.established.first)
        #expect(parameters.peerWindowShift == nil && !parameters.selectiveAcknowledgments && !parameters.timestamps)
        #expect(parameters.peerSegmentSize == 536)
    }

    @Test("a forged or stale ACK, a SYN with a bad checksum, SYN+FIN, and ports not listening never make ESTABLISHED")
    func refusals() throws {
        let nic = makePlane()
        var output = CollectingNICOutput()
        listen(nic, listener, output: &output)
        let request = syn()
        tcpPacket(request, from: Self.client, to: Self.server).withUnsafeBytes { nic.receive(packet: $0, now: start, output: &output) }
        let (synAck, _, _) = try #require(parseSegment(output.packets[0]))
        var forged = ack(of: synAck, syn: request)
        forged.acknowledgmentNumber = forged.acknowledgmentNumber + 1
        tcpPacket(forged, from: Self.client, to: Self.server).withUnsafeBytes { nic.receive(packet: $0, now: start, output: &output) }
        #expect(output.packetsIn.count == 1 && output.packetsIn[0].0 == .none, "a forged ACK goes to the host, which resets it")
        #expect(nic.counters.cookiesRejected == 1)
        // Two periods on, the genuine ACK is stale.
        tcpPacket(ack(of: synAck, syn: request), from: Self.client, to: Self.server)
            .withUnsafeBytes { nic.receive(packet: $0, now: start + 130 * Nanoseconds.second, output: &output) }
        #expect(output.established.isEmpty && nic.counters.cookiesRejected == 2 && output.packetsIn.count == 2)
        let sent = output.packets.count
        tcpPacket(syn(sourcePort: 40001), from: Self.client, to: Self.server, corrupt: true)
            .withUnsafeBytes { nic.receive(packet: $0, now: start, output: &output) }
        var synFin = syn(sourcePort: 40002)
        synFin.flags = [.syn, .fin]
        tcpPacket(synFin, from: Self.client, to: Self.server).withUnsafeBytes { nic.receive(packet: $0, now: start, output: &output) }
        #expect(output.packets.count == sent && nic.counters.malformedIn == 2, "neither is answered")
        tcpPacket(syn(port: 81), from: Self.client, to: Self.server).withUnsafeBytes { nic.receive(packet: $0, now: start, output: &output) }
        #expect(output.packetsIn.count == 3 && output.packets.count == sent, "a port not listening: the host decides")
        // Stopping hands the port's SYNs back to the host; so does a reset (the host went away).
        listen(nic, ListenerOptions(port: 80, maximumSegmentSize: 0, window: 0, windowShift: 0, isListening: false), output: &output)
        tcpPacket(syn(sourcePort: 40003), from: Self.client, to: Self.server).withUnsafeBytes { nic.receive(packet: $0, now: start, output: &output) }
        #expect(output.packetsIn.count == 4 && nic.listenerCount == 0)
        listen(nic, listener, output: &output)
        nic.reset()
        #expect(nic.listenerCount == 0)
    }

    @Test("a flood of 20,000 SYNs from spoofed sources costs a SYN-ACK each and no state; a real client still gets in")
    func floodKeepsNoState() throws {
        let nic = makePlane()
        var output = CollectingNICOutput()
        listen(nic, listener, output: &output)
        var random = SeededGenerator(seed: 15)
        for _ in 0..<20_000 {
            let source = IPv4Address(rawValue: 0xC612_0000 | UInt32.random(in: 1...0xFFFE, using: &random))
            tcpPacket(syn(sourcePort: UInt16.random(in: 1024...65535, using: &random), sequence: UInt32(truncatingIfNeeded: random.next())), from: source, to: Self.server)
                .withUnsafeBytes { nic.receive(packet: $0, now: start, output: &output) }
            output.packets.removeAll(keepingCapacity: true)
        }
        #expect(nic.counters.synCookiesSent == 20_000 && output.replies.isEmpty)
        #expect(nic.flowCount == 0 && nic.chunksInUse == 0 && nic.listenerCount == 1)
        let request = syn(sourcePort: 55555)
        tcpPacket(request, from: Self.client, to: Self.server).withUnsafeBytes { nic.receive(packet: $0, now: start, output: &output) }
        let (synAck, _, _) = try #require(parseSegment(output.packets[0]))
        tcpPacket(ack(of: synAck, syn: request), from: Self.client, to: Self.server).withUnsafeBytes { nic.receive(packet: $0, now: start, output: &output) }
        #expect(output.replies == ["ESTABLISHED"])
    }
}

@Suite("Connection setup on the NIC, through the host stack")
struct NICSetupStackTests {
    @Test("the host never sees a SYN; the request sent with the handshake's ACK is readable at the accept; data flows both ways")
    func eagerAcceptAndReceive() throws {
        let root = try ExportRoot()
        let harness = try StackHarness(root: root.path)
        let listener = try harness.stack.listen(port: 80)
        try harness.stack.register(listener, interests: .acceptable, token: 7)
        try harness.step()
        try harness.step()
        #expect(harness.nic.listenerCount == 1, "listen told the NIC")
        var output = harness.clientOutput
        let client = try harness.client.connect(to: StackHarness.serverAddress, port: 80, now: harness.time, output: &output)
        // The client's request leaves in the same turn as its handshake ACK, before the host opened the flow.
        var requestSent = false
        try harness.run {
            if !requestSent && harness.client.state(of: client) == .established {
                try? harness.clientWrite(client, "GET /sub/data.bin HTTP/1.1\r\n\r\n")
                requestSent = true
            }
            return harness.events.contains { if case .socket(listener, let kinds, 7) = $0 { kinds.contains(.acceptable) } else { false } }
        }
        let socket = try #require(try harness.stack.accept(listener))
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = try buffer.withUnsafeMutableBytes { try harness.stack.read(socket, into: $0) }
        #expect(String(decoding: buffer[0..<count], as: UTF8.self) == "GET /sub/data.bin HTTP/1.1\r\n\r\n",
                "the request came with the accept (eager receive)")
        let statistics = harness.stack.engine.statistics
        #expect(statistics.handshakesFromNIC == 1 && statistics.synCookiesSent == 0 && statistics.refusedHandshakes == 0)
        #expect(harness.nic.counters.synCookiesSent == 1 && harness.nic.counters.handshakesCompleted >= 1)
        // Data both ways: the client's TSval check (PAWS) takes every segment the host sends after the NIC's SYN-ACK.
        let reply = Array(repeating: UInt8(ascii: "x"), count: 20_000)
        var written = 0
        var received: [UInt8] = []
        try harness.run {
            if written < reply.count {
                written += (try? reply[written...].withUnsafeBytes { try harness.stack.write(socket, $0) }) ?? 0
            }
            received += harness.clientRead(client)
            return received.count == reply.count
        }
        let same = received == reply
        #expect(same, "\(received.count) of \(reply.count) bytes")
        #expect(harness.client.info(of: client)?.timeouts == 0)
        try harness.stack.close(listener)
        try harness.step()
        try harness.step()
        #expect(harness.nic.listenerCount == 0, "closing the listener tells the NIC")
    }

    @Test("with handshakesOnNIC off the host answers SYNs itself, as before")
    func hostHandshakes() throws {
        let root = try ExportRoot()
        var configuration = TCPConfiguration()
        configuration.handshakesOnNIC = false
        let harness = try StackHarness(root: root.path, configuration: configuration)
        _ = try harness.stack.listen(port: 80)
        let client = try harness.connectClient(port: 80)
        #expect(harness.client.state(of: client) == .established)
        #expect(harness.nic.listenerCount == 0 && harness.nic.counters.synCookiesSent == 0)
        #expect(harness.stack.engine.statistics.handshakesFromNIC == 0)
    }
}

/// The deferred handshakes' table itself: what it keeps and for how long, and that its bookkeeping stays
/// bounded when handshakes come and go much faster than they expire.
@Suite("Deferred handshakes (the NIC's table between a bare ACK and the first data)")
struct DeferredHandshakesTests {
    let start = Instant(nanoseconds: 10 * Nanoseconds.second)

    func key(_ port: UInt16) -> DeferredHandshakes.Key {
        DeferredHandshakes.Key(remote: IPAddress(IPv4Address(10, 77, 0, 1)), remotePort: port, localPort: 80)
    }

    @Test("an entry is found until forgotten or two cookie periods old; a full table refuses, a renewed key does not count twice")
    func keepsAndExpires() {
        var table = DeferredHandshakes(capacity: 2)
        let first = table.remember(key(1), peerInitialSequence: SequenceNumber(100), roundTrip: 500_000, now: start)
        let renewed = table.remember(key(1), peerInitialSequence: SequenceNumber(100), roundTrip: 400_000, now: start)
        let found = table.entry(for: key(1), now: start)
        #expect(first && renewed && table.count == 1 && found?.roundTrip == 400_000)
        let second = table.remember(key(2), peerInitialSequence: SequenceNumber(200), roundTrip: nil, now: start)
        let third = table.remember(key(3), peerInitialSequence: SequenceNumber(300), roundTrip: nil, now: start)
        #expect(second && !third, "full")
        table.forget(key(1))
        let forgotten = table.entry(for: key(1), now: start)
        #expect(forgotten == nil && table.count == 1)
        let almost = table.entry(for: key(2), now: start + (DeferredHandshakes.lifetime - 1))
        #expect(almost?.peerInitialSequence == SequenceNumber(200))
        let expired = table.entry(for: key(2), now: start + DeferredHandshakes.lifetime)
        #expect(expired == nil && table.count == 0)
    }

    @Test("200,000 handshakes, most forgotten with their data: the order queue never passes twice the capacity")
    func boundedUnderChurn() {
        var table = DeferredHandshakes(capacity: 64)
        var most = 0
        for index in 0..<200_000 {
            let now = start + UInt64(index) * 1_000  // a microsecond apart: none expires in this run
            let port = UInt16(truncatingIfNeeded: index)
            let kept = table.remember(key(port), peerInitialSequence: SequenceNumber(UInt32(index)), roundTrip: nil, now: now)
            if !kept { Issue.record("refused with \(table.count) entries") }
            if index % 3 != 0 { table.forget(key(port)) }  // a third stay (until pushed out by a reused port)
            if table.count >= 60 { for stale in 0..<UInt16(64) { table.forget(key(port &- stale)) } }
            most = max(most, table.queuedCount)
        }
        #expect(most <= 2 * 64 + 1)
    }
}
