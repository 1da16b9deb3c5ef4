import Testing
@testable import IOTCPCommon

@Suite("SYN cookies (the codec both halves use)")
struct SYNCookieCodecTests {
    let cookies = SYNCookies(key0: 0x1111_2222_3333_4444, key1: 0x5555_6666_7777_8888)
    let client = IPv4Address(10, 77, 0, 1)
    let server = IPv4Address(10, 77, 0, 2)
    let listener = ListenerOptions(port: 80, maximumSegmentSize: 1460, window: 65535, windowShift: 3)

    func syn(mss: UInt16? = 1460, shift: UInt8? = 7, sack: Bool = true, timestamps: Bool = true, sequence: UInt32 = 4_000_000_000) -> TCPRepr {
        TCPRepr(sourcePort: 51000, destinationPort: 80, sequenceNumber: SequenceNumber(sequence), flags: .syn, window: 64240,
                options: TCPOptions(maximumSegmentSize: mss, windowScale: shift, sackPermitted: sack,
                                    timestamps: timestamps ? TCPTimestamps(value: 999, echoReply: 0) : nil))
    }

    func ack(of reply: TCPRepr, syn: TCPRepr) -> TCPRepr {
        TCPRepr(sourcePort: 51000, destinationPort: 80, sequenceNumber: syn.sequenceNumber + 1, acknowledgmentNumber: reply.sequenceNumber + 1,
                flags: .ack, window: 502, options: TCPOptions(timestamps: reply.options.timestamps.map { TCPTimestamps(value: 1000, echoReply: $0.value) }))
    }

    @Test("every MSS maps to the largest table entry not above it, and comes back from the ACK")
    func segmentSizeTable() throws {
        let now = Instant(nanoseconds: 5_000 * Nanoseconds.second)
        for (offered, expected): (UInt16?, Int) in [(nil, 536), (100, 216), (216, 216), (535, 216), (536, 536), (1199, 536), (1460, 1460),
                                                      (1379, 1220), (9000, 1460), (65495, 1460)] {
            let request = syn(mss: offered)
            let reply = cookies.reply(to: request, remote: client, local: server, now: now, options: listener)
            let parameters = try #require(cookies.verify(ack(of: reply, syn: request), remote: client, local: server, now: now))
            #expect(parameters.peerSegmentSize == expected, "MSS \(String(describing: offered))")
            #expect(parameters.initialSequence == reply.sequenceNumber)
        }
    }

    @Test("window scale and SACK ride in the TSval; without timestamps neither is offered; off in the listener, not offered")
    func optionsInTimestamp() throws {
        let now = Instant(nanoseconds: 7_777 * Nanoseconds.second + 12 * Nanoseconds.millisecond)
        for shift: UInt8? in [nil, 0, 7, 14] {
            for sack in [false, true] {
                let request = syn(shift: shift, sack: sack)
                let reply = cookies.reply(to: request, remote: client, local: server, now: now, options: listener)
                #expect(reply.options.windowScale == (shift == nil ? nil : 3))
                #expect(reply.options.sackPermitted == sack)
                let parameters = try #require(cookies.verify(ack(of: reply, syn: request), remote: client, local: server, now: now))
                #expect(parameters.windowShift == shift && parameters.selectiveAcknowledgments == sack)
            }
        }
        let bare = syn(timestamps: false)
        let reply = cookies.reply(to: bare, remote: client, local: server, now: now, options: listener)
        #expect(reply.options.timestamps == nil && reply.options.windowScale == nil && !reply.options.sackPermitted)
        let parameters = try #require(cookies.verify(ack(of: reply, syn: bare), remote: client, local: server, now: now))
        #expect(parameters.windowShift == nil && !parameters.selectiveAcknowledgments)
        var quiet = listener
        quiet.timestamps = false
        let untimed = cookies.reply(to: syn(), remote: client, local: server, now: now, options: quiet)
        #expect(untimed.options.timestamps == nil && untimed.options.windowScale == nil)
        var noSack = listener
        noSack.selectiveAcknowledgments = false
        #expect(!cookies.reply(to: syn(), remote: client, local: server, now: now, options: noSack).options.sackPermitted)
    }

    @Test("the TSval is never ahead of the clock, whatever the option bits (the peer's PAWS would drop later segments)")
    func timestampNotInFuture() {
        for millisecond in UInt64(100_000)..<100_064 {
            let now = Instant(nanoseconds: millisecond * Nanoseconds.millisecond)
            let reply = cookies.reply(to: syn(shift: 14, sack: true), remote: client, local: server, now: now, options: listener)
            let value = reply.options.timestamps!.value
            #expect(value <= UInt32(millisecond) && UInt32(millisecond) - value < 64, "at \(millisecond) ms: \(value)")
            #expect(value & 0x1F == (14 << 1 | 1))
        }
    }

    @Test("the ACK's echo of the cookie's TSval gives the handshake's round trip, never short and at most 31 ms long; none without timestamps")
    func handshakeRoundTrip() throws {
        for millisecond in UInt64(100_000)..<100_064 {
            let sent = Instant(nanoseconds: millisecond * Nanoseconds.millisecond)
            let request = syn(shift: UInt8(millisecond % 15), sack: millisecond % 2 == 0)
            let reply = cookies.reply(to: request, remote: client, local: server, now: sent, options: listener)
            let parameters = try #require(cookies.verify(ack(of: reply, syn: request), remote: client, local: server,
                                                         now: sent + 7 * Nanoseconds.millisecond))
            let roundTrip = try #require(parameters.handshakeRoundTrip)
            #expect(roundTrip >= 7 * Nanoseconds.millisecond && roundTrip <= 38 * Nanoseconds.millisecond, "sent at \(millisecond) ms: \(roundTrip)")
        }
        let request = syn(timestamps: false)
        let reply = cookies.reply(to: request, remote: client, local: server, now: .milliseconds(5_000), options: listener)
        #expect(cookies.verify(ack(of: reply, syn: request), remote: client, local: server, now: .milliseconds(5_010))?.handshakeRoundTrip == nil)
    }

    @Test("refused: a tampered cookie, another client or port, another peer ISN, and a cookie two periods old")
    func refusals() {
        let now = Instant(nanoseconds: 64 * 1000 * Nanoseconds.second + 5 * Nanoseconds.second)
        let request = syn()
        let reply = cookies.reply(to: request, remote: client, local: server, now: now, options: listener)
        let good = ack(of: reply, syn: request)
        #expect(cookies.verify(good, remote: client, local: server, now: now + 63 * Nanoseconds.second) != nil, "the next period still takes it")
        #expect(cookies.verify(good, remote: client, local: server, now: now + 128 * Nanoseconds.second) == nil)
        var tampered = good
        tampered.acknowledgmentNumber = tampered.acknowledgmentNumber + 1
        #expect(cookies.verify(tampered, remote: client, local: server, now: now) == nil)
        var otherSize = good
        otherSize.acknowledgmentNumber = SequenceNumber((reply.sequenceNumber.rawValue ^ 1 << 24) &+ 1)
        #expect(cookies.verify(otherSize, remote: client, local: server, now: now) == nil, "the MSS bits are under the hash")
        #expect(cookies.verify(good, remote: IPv4Address(10, 77, 0, 9), local: server, now: now) == nil)
        var otherPort = good
        otherPort.sourcePort = 51001
        #expect(cookies.verify(otherPort, remote: client, local: server, now: now) == nil)
        var otherSequence = good
        otherSequence.sequenceNumber = otherSequence.sequenceNumber + 1
        #expect(cookies.verify(otherSequence, remote: client, local: server, now: now) == nil)
        let otherKeys = SYNCookies(key0: 1, key1: 2)
        #expect(otherKeys.verify(good, remote: client, local: server, now: now) == nil)
    }
}
