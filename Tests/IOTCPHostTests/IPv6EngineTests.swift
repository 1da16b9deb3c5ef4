import Testing
import IOTCPCommon
@testable import IOTCPHost

/// The engine over IPv6: the same TCP as over IPv4, from and to its IPv6 address, with IPv6's MSS and
/// pseudo-header, keyed apart from IPv4 peers.
@Suite("TCP over IPv6 in the engine")
struct IPv6EngineTests {
    @Test("passive open: FLOW_OPEN with IPv6 endpoints, a SYN-ACK over IPv6 advertising 1440, then file data in SENDs")
    func passiveOpenAndData() throws {
        var script = Script(ipv6: true)
        _ = try script.engine.listen(port: 80)
        let answer = script.inject(sequence: 1000, flags: .syn, options: TCPOptions(
            maximumSegmentSize: 1440, windowScale: 7, sackPermitted: true, timestamps: TCPTimestamps(value: 1000, echoReply: 0)))
        let opened = answer.compactMap { if case .flowOpen(let flow, let endpoints) = $0 { (flow, endpoints) } else { nil } }
        #expect(opened.count == 1)
        let endpoints = try #require(opened.first?.1)
        #expect(endpoints.localAddress == IPAddress(Script.local6) && endpoints.remoteAddress == IPAddress(Script.remote6))
        #expect(!endpoints.isIPv4 && endpoints.localPort == 80 && endpoints.remotePort == 40000)
        let synAck = try #require(answer.segments.first)
        #expect(synAck.source == IPAddress(Script.local6) && synAck.destination == IPAddress(Script.remote6))
        #expect(synAck.ipv6?.hopLimit == 64 && synAck.ipv6?.nextHeader == .tcp && synAck.ipv4 == nil)
        #expect(synAck.flags == [.syn, .ack] && synAck.acknowledgment == SequenceNumber(1001))
        #expect(synAck.tcp.options.maximumSegmentSize == 1440, "1460 less IPv6's 20 extra header bytes")
        let iss = synAck.sequence.rawValue
        script.inject(sequence: 1001, acknowledgment: iss &+ 1, flags: .ack, window: 502,
                      options: TCPOptions(timestamps: TCPTimestamps(value: 1001, echoReply: synAck.tcp.options.timestamps?.value ?? 0)))
        let handle = try #require(script.engine.accept(TCPListenerID(port: 80)))
        #expect(script.engine.state(of: handle) == .established)
        #expect(script.engine.endpoints(of: handle)?.remoteAddress.description == "fd00::2")
        _ = try script.writeFile(handle, length: 100_000)
        let emitted = script.output.take()
        let sends = emitted.sends
        #expect(!sends.isEmpty && sends.first?.1.sequence == SequenceNumber(iss &+ 1))
        #expect(sends.first?.1.template.maximumSegmentSize == 1428, "1440 less 12 bytes of timestamps")
        // The FLOW_OPEN the engine sends is encoded as FLOW_OPEN6.
        #expect(Command.flowOpen(handle.flow, endpoints).kind == .flowOpenIPv6)
    }

    @Test("a SYN to a closed port is refused with a RST over IPv6, from the engine's IPv6 address")
    func resetOverIPv6() throws {
        var script = Script(ipv6: true)
        let answer = script.inject(sequence: 5000, flags: .syn, options: Script.linuxSynOptions())
        let reset = try #require(answer.segments.first)
        #expect(reset.flags == [.rst, .ack] && reset.acknowledgment == SequenceNumber(5001))
        #expect(reset.source == IPAddress(Script.local6) && reset.destination == IPAddress(Script.remote6) && reset.ipv6 != nil)
    }

    @Test("a full backlog answers IPv6 SYNs with cookies (IPv6's MSS), and the cookie's ACK makes the connection")
    func cookiesOverIPv6() throws {
        var script = Script(ipv6: true)
        _ = try script.engine.listen(port: 80, backlog: 1)
        script.inject(sequence: 1000, flags: .syn, options: Script.linuxSynOptions(), from: 40001)
        let cookieAnswer = script.inject(sequence: 7000, flags: .syn, options: Script.linuxSynOptions(), from: 40002)
        let cookie = try #require(cookieAnswer.segments.first)
        #expect(script.engine.statistics.synCookiesSent == 1 && cookie.ipv6 != nil)
        #expect(cookie.tcp.options.maximumSegmentSize == 1440)
        let echoed = cookie.tcp.options.timestamps?.value ?? 0
        script.inject(sequence: 7001, acknowledgment: cookie.sequence.rawValue &+ 1, flags: .ack, window: 502,
                      options: TCPOptions(timestamps: TCPTimestamps(value: 1001, echoReply: echoed)), from: 40002)
        #expect(script.engine.statistics.synCookiesAccepted == 1)
        // A cookie made for one IPv6 peer is not accepted from an IPv4 one with the same ports.
        var v4 = Script()
        _ = try v4.engine.listen(port: 80, backlog: 1)
        v4.inject(sequence: 1000, flags: .syn, options: Script.linuxSynOptions(), from: 40001)
        _ = v4.inject(sequence: 7000, flags: .syn, options: Script.linuxSynOptions(), from: 40002)
        v4.inject(sequence: 7001, acknowledgment: cookie.sequence.rawValue &+ 1, flags: .ack, window: 502,
                  options: TCPOptions(timestamps: TCPTimestamps(value: 1001, echoReply: echoed)), from: 40002)
        #expect(v4.engine.statistics.synCookiesAccepted == 0)
    }

    @Test("an IPv4 and an IPv6 peer on the same ports are two connections")
    func familiesKeyedApart() throws {
        var v6 = Script(ipv6: true)
        let (first, _) = try establishPassive(&v6)
        // The same engine hears the IPv4 peer 10.0.0.2:40000 too.
        var v4 = Script()
        v4.engine = v6.engine
        v4.now = v6.now
        let (second, _) = try establishPassive(&v4)
        #expect(first != second)
        #expect(v6.engine.endpoints(of: first)?.remoteAddress == IPAddress(Script.remote6))
        #expect(v6.engine.endpoints(of: second)?.remoteAddress == IPAddress(Script.remote))
    }

    @Test("packets the engine must not take: from a mapped, multicast or unspecified source, to another address, or to an engine without IPv6")
    func refusedPackets() throws {
        let script = Script(ipv6: true)
        _ = try script.engine.listen(port: 80)
        func inject(from source: IPv6Address, to destination: IPv6Address, engine: TCPEngine) -> [Emitted] {
            let tcp = TCPRepr(sourcePort: 40000, destinationPort: 80, sequenceNumber: SequenceNumber(1), flags: .syn, window: 1000)
            var packet = [UInt8](repeating: 0, count: 40 + tcp.headerLength)
            packet.withUnsafeMutableBytes { buffer in
                try! IPv6Repr(source: source, destination: destination, nextHeader: .tcp, payloadLength: tcp.headerLength).emit(into: buffer)
                let segment = UnsafeMutableRawBufferPointer(rebasing: buffer[40...])
                _ = try! tcp.emitHeader(into: segment)
                TCPRepr.fillChecksum(segment: segment, source: source, destination: destination)
            }
            var output = RecordingOutput()
            packet.withUnsafeBytes { engine.handlePacket($0, now: script.now, output: &output) }
            return output.take()
        }
        let sources = [IPv6Address(ipv4Mapped: Script.remote), IPv6Address("ff02::1")!, IPv6Address.unspecified]
        for source in sources {
            #expect(inject(from: source, to: Script.local6, engine: script.engine).isEmpty, "\(source)")
        }
        #expect(inject(from: Script.remote6, to: IPv6Address("fd00::9")!, engine: script.engine).isEmpty)
        let v4Only = TCPEngine(localAddress: Script.local, secret: (1, 2), now: script.now)
        _ = try v4Only.listen(port: 80)
        #expect(inject(from: Script.remote6, to: Script.local6, engine: v4Only).isEmpty)
        #expect(script.engine.statistics.malformedPackets == 4 && v4Only.statistics.malformedPackets == 1)
        #expect(inject(from: Script.remote6, to: Script.local6, engine: script.engine).segments.first?.flags == [.syn, .ack])
    }

    @Test("an active open to an IPv6 peer; refused with no IPv6 address of its own")
    func activeOpen() throws {
        var script = Script(ipv6: true)
        let handle = try script.engine.connect(to: IPAddress(Script.remote6), port: 443, now: script.now, output: &script.output)
        let emitted = script.output.take()
        let syn = try #require(emitted.segments.first)
        #expect(syn.flags == .syn && syn.ipv6 != nil && syn.destination == IPAddress(Script.remote6) && syn.tcp.destinationPort == 443)
        #expect(syn.tcp.options.maximumSegmentSize == 1440)
        #expect(script.engine.endpoints(of: handle)?.localAddress == IPAddress(Script.local6))
        let v4Only = TCPEngine(localAddress: Script.local, secret: (1, 2), now: script.now)
        var output = RecordingOutput()
        #expect(throws: TCPError.self) { try v4Only.connect(to: IPAddress(Script.remote6), port: 443, now: script.now, output: &output) }
    }

    /// A Packet Too Big from a router on the path (fd00::fe), quoting the start of our segment at `sequence`.
    func packetTooBig(_ script: inout Script, mtu: UInt32, quoting sequence: UInt32) -> [Emitted] {
        let quotedTCP = TCPRepr(sourcePort: 80, destinationPort: 40000, sequenceNumber: SequenceNumber(sequence), flags: .ack, window: 500)
        var quote = [UInt8](repeating: 0, count: 40 + quotedTCP.headerLength)
        quote.withUnsafeMutableBytes { raw in
            try! IPv6Repr(source: Script.local6, destination: Script.remote6, nextHeader: .tcp, payloadLength: 1400).emit(into: raw)
            _ = try! quotedTCP.emitHeader(into: UnsafeMutableRawBufferPointer(rebasing: raw[40...]))
        }
        let router = IPv6Address("fd00::fe")!
        let message = ICMPv6Repr(message: .packetTooBig(mtu: mtu))
        var packet = [UInt8](repeating: 0, count: 40 + 8 + quote.count)
        packet.withUnsafeMutableBytes { raw in
            try! IPv6Repr(source: router, destination: Script.local6, nextHeader: .icmpv6, payloadLength: 8 + quote.count).emit(into: raw)
            _ = quote.withUnsafeBytes { try! message.emit(into: UnsafeMutableRawBufferPointer(rebasing: raw[40...]), data: $0,
                                                           source: router, destination: Script.local6) }
        }
        packet.withUnsafeBytes { script.engine.handlePacket($0, now: script.now, output: &script.output) }
        return script.output.take()
    }

    @Test("Packet Too Big about a segment in flight shrinks the connection's segments and sends them again (RFC 8201)")
    func pathMTU() throws {
        var script = Script(ipv6: true)
        let (handle, iss) = try establishPassive(&script)
        _ = try script.writeFile(handle, length: 100_000)
        for (_, range) in script.output.take().sends {
            script.engine.handleEcho(flow: handle.flow, sequenceEnd: range.sequence + Int(range.length), nicDelayNanoseconds: 0,
                                     now: script.now, output: &script.output)
        }
        _ = script.output.take()
        #expect(script.engine.info(of: handle)?.segmentSize == 1428)
        // Quoting a sequence number not in flight: a blind guess, ignored.
        #expect(packetTooBig(&script, mtu: 1400, quoting: iss &+ 1 &+ 900_000).isEmpty)
        #expect(script.engine.statistics.packetTooBigIgnored == 1 && script.engine.info(of: handle)?.segmentSize == 1428)
        // A router with a 1,400-byte link: segments of 1400 - 40 - 20 - 12 bytes, resent at once from SND.UNA.
        let lowered = packetTooBig(&script, mtu: 1400, quoting: iss &+ 1 &+ 1428)
        let again = lowered.compactMap { if case .retransmit(_, let sequence, _, let template) = $0 { (sequence, template) } else { nil } }
        #expect(again.first?.0 == SequenceNumber(iss &+ 1) && again.first?.1.maximumSegmentSize == 1328)
        #expect(script.engine.info(of: handle)?.segmentSize == 1328 && script.engine.statistics.pathMTUDecreases == 1)
        // The same MTU again changes nothing; one under IPv6's minimum is taken as 1,280.
        #expect(packetTooBig(&script, mtu: 1400, quoting: iss &+ 1).isEmpty)
        _ = packetTooBig(&script, mtu: 600, quoting: iss &+ 1)
        #expect(script.engine.info(of: handle)?.segmentSize == 1280 - 72 && script.engine.statistics.pathMTUDecreases == 2)
    }

    @Test("with endings on the NIC, an IPv6 connection is handed over as an IPv4 one is: TEARDOWN, its block freed, a late segment given back")
    func endingHandedOver() throws {
        var script = Script(ipv6: true)
        script.engine.endingsOnNIC = true
        let (handle, iss) = try establishPassive(&script)
        _ = try script.writeFile(handle, length: 1000)
        for (_, range) in script.output.take().sends {
            script.engine.handleEcho(flow: handle.flow, sequenceEnd: range.sequence + Int(range.length), nicDelayNanoseconds: 0,
                                     now: script.now, output: &script.output)
        }
        try script.engine.close(handle, now: script.now, output: &script.output)
        let closing = script.output.take()
        let afterAck = script.inject(sequence: 1001, acknowledgment: iss &+ 1 &+ 1000 &+ 1, flags: .ack, options: script.peerTimestamps(2000))
        func count(_ kind: String, in emitted: [Emitted]) -> Int {
            emitted.filter { if case .other(let name) = $0 { name.uppercased() == kind } else { false } }.count
        }
        #expect(closing.segments.filter { $0.flags.contains(.fin) }.count == 1, "the host sends the FIN itself")
        #expect(count("TEARDOWN", in: closing + afterAck) == 1, "the FIN acknowledged: the ending goes to the NIC")
        #expect(script.engine.state(of: handle) == nil && script.engine.connectionCount == 0)
        #expect(script.engine.statistics.endingsHandedOver == 1)
        // The peer's FIN, a moment later, reached the host anyway: it goes back to the NIC, not answered here.
        let late = script.inject(sequence: 1001, acknowledgment: iss &+ 1 &+ 1000 &+ 1, flags: [.fin, .ack], options: script.peerTimestamps(2001))
        #expect(count("REDELIVER", in: late) == 1 && late.segments.isEmpty && script.engine.statistics.segmentsAfterHandOver == 1)
    }
}
