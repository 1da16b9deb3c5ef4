import IOTCPCommon
import Testing
@testable import IOTCPHost

/// Completes a passive open from a Linux-like peer with ISN 1000; returns the handle and the engine's ISN.
func establishPassive(_ script: inout Script, options: TCPOptions = Script.linuxSynOptions(), window: UInt16 = 502) throws -> (TCPHandle, UInt32) {
    _ = try? script.engine.listen(port: 80)
    let answer = script.inject(sequence: 1000, flags: .syn, options: options)
    let synAck = try #require(answer.segments.first)
    let iss = synAck.sequence.rawValue
    var ackOptions = TCPOptions()
    if options.timestamps != nil { ackOptions.timestamps = TCPTimestamps(value: 1001, echoReply: synAck.tcp.options.timestamps?.value ?? 0) }
    let after = script.inject(sequence: 1001, acknowledgment: iss &+ 1, flags: .ack, window: window, options: ackOptions)
    #expect(after.segments.isEmpty, "the handshake's last ACK needs no answer")
    let accepted = script.engine.accept(TCPListenerID(port: 80))
    let handle = try #require(accepted)
    return (handle, iss)
}

@Suite("Handshakes and options (RFC 9293 §3.5, RFC 7323, RFC 2018)")
struct HandshakeTests {
    @Test("passive open: the SYN-ACK answers every option a Linux SYN offers")
    func passiveOpen() throws {
        var script = Script()
        _ = try script.engine.listen(port: 80)
        let emitted = script.inject(sequence: 1000, flags: .syn, options: Script.linuxSynOptions())
        #expect(emitted.contains { if case .flowOpen(FlowID(1), let endpoints) = $0 { endpoints.remotePort == 40000 } else { false } })
        let synAck = try #require(emitted.segments.first)
        #expect(emitted.segments.count == 1)
        #expect(synAck.flags == [.syn, .ack])
        #expect(synAck.acknowledgment == SequenceNumber(1001))
        #expect(synAck.tcp.sourcePort == 80 && synAck.tcp.destinationPort == 40000)
        #expect(synAck.tcp.window == 65535, "a SYN-ACK's window is unscaled: min(buffer, 65535)")
        #expect(synAck.tcp.options.maximumSegmentSize == 1460)
        #expect(synAck.tcp.options.windowScale == 3, "256 KiB needs a shift of 3 to fit 16 bits")
        #expect(synAck.tcp.options.sackPermitted)
        #expect(synAck.tcp.options.timestamps?.echoReply == 1000)
        #expect(synAck.payload.isEmpty)
        #expect(synAck.ipv4?.source == Script.local && synAck.ipv4?.destination == Script.remote)
        #expect(synAck.ipv4?.timeToLive == 64 && synAck.ipv4?.dontFragment == true)

        let iss = synAck.sequence.rawValue
        let early = script.engine.accept(TCPListenerID(port: 80))
        #expect(early == nil, "not established yet")
        script.inject(sequence: 1001, acknowledgment: iss &+ 1, flags: .ack, window: 502,
                      options: TCPOptions(timestamps: TCPTimestamps(value: 1001, echoReply: synAck.tcp.options.timestamps!.value)))
        let accepted = script.engine.accept(TCPListenerID(port: 80))
        let handle = try #require(accepted)
        #expect(script.engine.state(of: handle) == .established)
    }

    @Test("a peer without options gets none back, and its MSS defaults to 536 (RFC 9293 §3.7.1)")
    func noOptions() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script, options: TCPOptions(), window: 8192)
        _ = iss
        var bytes = [UInt8](repeating: 7, count: 2000)
        let written = try bytes.withUnsafeMutableBytes { try script.engine.write(handle, UnsafeRawBufferPointer($0), now: script.now, output: &script.output) }
        #expect(written == 2000)
        let segments = script.output.take().segments
        #expect(segments.map(\.payload.count) == [536, 536, 536, 392])
        for segment in segments {
            #expect(segment.tcp.options.timestamps == nil && segment.tcp.options.sackBlocks.isEmpty)
            #expect(segment.tcp.window == UInt16(min(256 * 1024, 65535)), "no scaling: the window field is the byte count, capped")
        }
    }

    @Test("active open: SYN, then SYN-ACK, then ACK; timestamps take 12 bytes of each segment")
    func activeOpen() throws {
        var configuration = TCPConfiguration()
        configuration.acknowledgeConnectWithData = false
        var script = Script(configuration: configuration)
        let handle = try script.engine.connect(to: Script.remote, port: 8080, now: script.now, output: &script.output)
        let synSegments = script.output.takeSegments()
        let syn = try #require(synSegments.first)
        #expect(syn.flags == .syn)
        #expect(syn.acknowledgment == SequenceNumber(0))
        #expect(syn.tcp.destinationPort == 8080 && syn.tcp.sourcePort >= 32768)
        #expect(syn.tcp.options.maximumSegmentSize == 1460 && syn.tcp.options.windowScale == 3)
        #expect(syn.tcp.options.sackPermitted && syn.tcp.options.timestamps?.echoReply == 0)
        #expect(!script.engine.isWritable(handle), "writable only once connected, as a non-blocking connect")
        script.remotePort = 8080
        script.localPort = syn.tcp.sourcePort
        let reply = script.inject(sequence: 5000, acknowledgment: syn.sequence.rawValue &+ 1, flags: [.syn, .ack],
                                  options: Script.linuxSynOptions(timestamp: 77))
        let ack = try #require(reply.segments.first)
        #expect(ack.flags == .ack)
        #expect(ack.sequence == syn.sequence + 1)
        #expect(ack.acknowledgment == SequenceNumber(5001))
        #expect(ack.tcp.options.timestamps?.echoReply == 77)
        #expect(script.engine.state(of: handle) == .established && script.engine.isWritable(handle))
        var events: TCPEvents = []
        script.engine.drainEvents { _, new in events.formUnion(new) }
        #expect(events.contains(.connected))
    }

    /// Connects and answers the SYN: the connection is established and its ACK owed (nothing emitted yet).
    func connectOwingAcknowledgment(_ script: inout Script) throws -> (TCPHandle, syn: Segment) {
        let handle = try script.engine.connect(to: Script.remote, port: 8080, now: script.now, output: &script.output)
        let syn = try #require(script.output.takeSegments().first)
        script.remotePort = 8080
        script.localPort = syn.tcp.sourcePort
        let reply = script.inject(sequence: 5000, acknowledgment: syn.sequence.rawValue &+ 1, flags: [.syn, .ack],
                                  options: Script.linuxSynOptions(timestamp: 77))
        #expect(reply.segments.isEmpty, "the ACK waits for the application's turn")
        #expect(script.engine.state(of: handle) == .established && script.engine.isWritable(handle))
        #expect(script.engine.owesAcknowledgments)
        return (handle, syn)
    }

    @Test("active open's last ACK waits for the application's turn: sent by sendOwedAcknowledgments, carried by a write, or sent a tick later")
    func activeOpenAcknowledgmentWaits() throws {
        // Nothing written in the turn: the engine sends it when asked, once.
        var script = Script()
        var (_, syn) = try connectOwingAcknowledgment(&script)
        script.engine.sendOwedAcknowledgments(now: script.now, output: &script.output)
        let owed = script.output.takeSegments()
        #expect(owed.count == 1)
        let ack = try #require(owed.first)
        #expect(ack.flags == .ack && ack.payload.isEmpty)
        #expect(ack.sequence == syn.sequence + 1 && ack.acknowledgment == SequenceNumber(5001))
        #expect(ack.tcp.options.timestamps?.echoReply == 77)
        #expect(!script.engine.owesAcknowledgments)
        script.engine.sendOwedAcknowledgments(now: script.now, output: &script.output)
        #expect(script.output.takeSegments().isEmpty, "owed once")
        #expect(script.advance(milliseconds: 50).segments.isEmpty, "and not sent again by the timer")

        // A request written in the turn carries it: one segment, no pure ACK before or after.
        script = Script()
        let handle: TCPHandle
        (handle, syn) = try connectOwingAcknowledgment(&script)
        let request = Array("GET / HTTP/1.1\r\n\r\n".utf8)
        _ = try request.withUnsafeBytes { try script.engine.write(handle, $0, now: script.now, output: &script.output) }
        script.engine.sendOwedAcknowledgments(now: script.now, output: &script.output)
        let carried = script.output.takeSegments()
        #expect(carried.count == 1)
        #expect(carried.first.map { $0.flags.contains(.ack) && $0.payload == request } == true)
        #expect(carried.first?.acknowledgment == SequenceNumber(5001) && carried.first?.sequence == syn.sequence + 1)
        #expect(script.advance(milliseconds: 50).segments.allSatisfy { !$0.payload.isEmpty }, "no pure ACK follows")

        // A file written in the turn leaves only after the NIC's read: the ACK goes first, on its own.
        script = Script()
        let fileHandle: TCPHandle
        (fileHandle, syn) = try connectOwingAcknowledgment(&script)
        _ = try script.engine.writeFile(fileHandle, file: OffloadedFileID(slot: 1, generation: 1), offset: 0, length: 3000,
                                        now: script.now, output: &script.output)
        let issued = script.output.take()
        let firstSegment = issued.firstIndex { if case .segment = $0 { true } else { false } }
        let firstSend = issued.firstIndex { if case .send = $0 { true } else { false } }
        #expect(firstSegment != nil && firstSend != nil && firstSegment! < firstSend!)
        #expect(issued.segments.count == 1 && issued.segments.first?.flags == .ack && issued.segments.first?.payload.isEmpty == true)
        #expect(issued.segments.first?.acknowledgment == SequenceNumber(5001) && !script.engine.owesAcknowledgments)

        // An engine driven without sendOwedAcknowledgments: the timer sends it a tick later, not a delayed
        // ACK's 40 ms (the peer samples its RTT from this ACK).
        script = Script()
        _ = try connectOwingAcknowledgment(&script)
        let late = script.advance(milliseconds: 2).segments
        #expect(late.count == 1 && late.first?.flags == .ack && late.first?.acknowledgment == SequenceNumber(5001))

        // The peer may send at once into the window our SYN offered, before it hears our ACK.
        script = Script()
        let early: TCPHandle
        (early, syn) = try connectOwingAcknowledgment(&script)
        script.inject(sequence: 5001, acknowledgment: syn.sequence.rawValue &+ 1, flags: [.ack, .psh],
                      options: TCPOptions(timestamps: TCPTimestamps(value: 78, echoReply: 0)), payload: Array("hello".utf8))
        #expect(script.engine.readableBytes(early) == 5)
    }

    @Test("simultaneous open (RFC 9293 §3.5 figure 7) ends established")
    func simultaneousOpen() throws {
        var script = Script()
        let handle = try script.engine.connect(to: Script.remote, port: 8080, localPort: 5555, now: script.now, output: &script.output)
        let synSegments = script.output.takeSegments()
        let syn = try #require(synSegments.first)
        script.remotePort = 8080
        script.localPort = 5555
        let synAckEmitted = script.inject(sequence: 9000, flags: .syn, options: Script.linuxSynOptions())
        let synAck = try #require(synAckEmitted.segments.first)
        #expect(synAck.flags == [.syn, .ack])
        #expect(synAck.sequence == syn.sequence)
        #expect(synAck.acknowledgment == SequenceNumber(9001))
        #expect(script.engine.state(of: handle) == .synReceived)
        script.inject(sequence: 9001, acknowledgment: syn.sequence.rawValue &+ 1, flags: .ack,
                      options: TCPOptions(timestamps: TCPTimestamps(value: 1001, echoReply: 0)))
        #expect(script.engine.state(of: handle) == .established)
    }

    @Test("a refused connection (RST+ACK to the SYN) reports connectionRefused")
    func refused() throws {
        var script = Script()
        let handle = try script.engine.connect(to: Script.remote, port: 9, localPort: 6000, now: script.now, output: &script.output)
        let synSegments = script.output.takeSegments()
        let syn = try #require(synSegments.first)
        script.remotePort = 9
        script.localPort = 6000
        script.inject(sequence: 0, acknowledgment: syn.sequence.rawValue &+ 1, flags: [.rst, .ack])
        #expect(script.engine.state(of: handle) == .closed)
        #expect(script.engine.error(of: handle) == .connectionRefused)
    }

    @Test("an unanswered SYN is retransmitted with backoff, then the connect fails")
    func synRetransmission() throws {
        var configuration = TCPConfiguration()
        configuration.maximumSynRetransmissions = 3
        var script = Script(configuration: configuration)
        let handle = try script.engine.connect(to: Script.remote, port: 80, now: script.now, output: &script.output)
        let firstSegments = script.output.takeSegments()
        let first = try #require(firstSegments.first)
        var gaps: [UInt64] = []
        var last: UInt64 = 0
        for elapsed in stride(from: UInt64(100), through: 20_000, by: 100) {
            let emitted = script.advance(milliseconds: 100)
            if let retry = emitted.segments.first {
                #expect(retry.flags == .syn && retry.sequence == first.sequence)
                gaps.append(elapsed - last)
                last = elapsed
            }
            if script.engine.state(of: handle) == .closed { break }
        }
        #expect(gaps == [1000, 2000, 4000], "RFC 6298 §5.5: the timeout doubles after each expiry")
        #expect(script.engine.error(of: handle) == .connectionRefused)
    }

    @Test("a segment for no connection is answered with a RST the sender accepts (RFC 9293 §3.10.7.1)")
    func strayGetsReset() throws {
        var script = Script()
        let withAckEmitted = script.inject(sequence: 10, acknowledgment: 777, flags: .ack, payload: [1, 2, 3])
        let withAck = try #require(withAckEmitted.segments.first)
        #expect(withAck.flags == .rst && withAck.sequence == SequenceNumber(777))
        let withoutAckEmitted = script.inject(sequence: 10, flags: .syn)
        let withoutAck = try #require(withoutAckEmitted.segments.first)
        #expect(withoutAck.flags == [.rst, .ack] && withoutAck.sequence == SequenceNumber(0))
        #expect(withoutAck.acknowledgment == SequenceNumber(11), "SEG.SEQ + SEG.LEN, the SYN counting one")
        #expect(script.inject(sequence: 10, flags: .rst).isEmpty, "a RST is never answered")
    }

    @Test("ISNs differ between connections and are not the clock alone (RFC 6528)")
    func initialSequenceNumbers() throws {
        var script = Script()
        var seen: Set<UInt32> = []
        for port in UInt16(7000)..<7050 {
            _ = try script.engine.connect(to: Script.remote, port: 80, localPort: port, now: script.now, output: &script.output)
            let segments = script.output.takeSegments()
            seen.insert(try #require(segments.first).sequence.rawValue)
        }
        #expect(seen.count == 50)
    }
}
