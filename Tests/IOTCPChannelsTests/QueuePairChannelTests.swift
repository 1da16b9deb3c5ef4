import Glibc
import IOTCPChannels
import IOTCPCommon
import Testing

typealias MemoryChannel = QueuePairChannelEnd<MemoryQueuePair>

func makeMemoryChannels(depth: Int = 8, bufferBytes: Int = 4096, inlineLimit: Int = 64, waiting: ChannelConfiguration.Waiting = .busyPoll)
    throws -> (MemoryChannel, MemoryChannel, MemoryLink)
{
    let (a, b, link) = MemoryLink.makePair(depth: depth, bufferBytes: bufferBytes, inlineLimit: inlineLimit)
    return (try MemoryChannel(transport: a, waiting: waiting), try MemoryChannel(transport: b, waiting: waiting), link)
}

@Suite("Queue-pair channel (credits, batching, closing) without a device")
struct QueuePairChannelTests {
    @Test("commands arrive in order with their content, both ways, many per SEND")
    func bothDirections() throws {
        let (host, nic, link) = try makeMemoryChannels()
        var hostNext: UInt32 = 0, nicNext: UInt32 = 5000
        var toNIC: UInt32 = 0, toHost: UInt32 = 5000
        for _ in 0..<200 {
            toNIC &+= UInt32(try sendAcknowledgments(host, first: toNIC, count: 200))
            toHost &+= UInt32(try sendAcknowledgments(nic, first: toHost, count: 3))
            _ = try receiveAcknowledgments(nic, expecting: &hostNext)
            _ = try receiveAcknowledgments(host, expecting: &nicNext)
        }
        #expect(hostNext == toNIC && toNIC == 200 * 200)
        #expect(nicNext == toHost && toHost == 5000 + 200 * 3)
        // 200 ACKDs of 20 bytes fit one 4 KiB message: one SEND each.
        #expect(host.statistics.messagesSent == 200)
        #expect(link.receiverNotReady == 0)
    }

    @Test("a sender stops at the peer's posted receives less the control reserve, and resumes on a credit report")
    func creditsStallAndResume() throws {
        let depth = 8
        let (host, nic, link) = try makeMemoryChannels(depth: depth)
        var sent: UInt32 = 0
        while try canReserve(host) { sent &+= UInt32(try sendAcknowledgments(host, first: sent, count: 1)) }
        #expect(Int(sent) == depth - CreditWindow.controlReserve)
        #expect(host.credits.credits == CreditWindow.controlReserve)
        #expect(host.statistics.creditStalls >= 1)
        // The NIC sends nothing back: only its credit report (a SEND with no bytes) can free the host.
        var next: UInt32 = 0
        _ = try receiveAcknowledgments(nic, expecting: &next)
        #expect(next == sent)
        #expect(nic.statistics.creditReports == 1)
        #expect(try canReserve(host))
        #expect(host.credits.credits == depth)
        #expect(link.receiverNotReady == 0)
    }

    @Test("two ends that fill each other at once, with messages crossing, both resume")
    func crossingFullWindows() throws {
        let (host, nic, link) = try makeMemoryChannels(depth: 4)
        link.holding = true
        var toNIC: UInt32 = 0, toHost: UInt32 = 0
        while try canReserve(host) { toNIC &+= UInt32(try sendAcknowledgments(host, first: toNIC, count: 1)) }
        while try canReserve(nic) { toHost &+= UInt32(try sendAcknowledgments(nic, first: toHost, count: 1)) }
        link.deliverAll()
        var atNIC: UInt32 = 0, atHost: UInt32 = 0
        _ = try receiveAcknowledgments(nic, expecting: &atNIC)
        _ = try receiveAcknowledgments(host, expecting: &atHost)
        link.deliverAll()
        _ = try receiveAcknowledgments(nic, expecting: &atNIC)
        _ = try receiveAcknowledgments(host, expecting: &atHost)
        #expect(atNIC == toNIC && atHost == toHost)
        #expect(try canReserve(host) && canReserve(nic))
        #expect(link.receiverNotReady == 0)
    }

    @Test("seeded random load with held deliveries never finds a peer without a posted receive", arguments: [1, 2, 3, 4, 5] as [UInt64])
    func randomLoad(seed: UInt64) throws {
        var random = SeededGenerator(seed: seed)
        let depth = [4, 5, 8, 16][Int(seed % 4)]
        let (host, nic, link) = try makeMemoryChannels(depth: depth, bufferBytes: 1024, inlineLimit: 128)
        var toNIC: UInt32 = 0, toHost: UInt32 = 0, atNIC: UInt32 = 0, atHost: UInt32 = 0
        // Each side now and then stops receiving for a while (a busy loop elsewhere), so windows fill.
        var nicPaused = false, hostPaused = false
        for _ in 0..<5000 {
            link.holding = Bool.random(using: &random)
            if Int.random(in: 0..<40, using: &random) == 0 { nicPaused.toggle() }
            if Int.random(in: 0..<40, using: &random) == 0 { hostPaused.toggle() }
            switch Int.random(in: 0..<6, using: &random) {
            case 0: toNIC &+= UInt32(try sendAcknowledgments(host, first: toNIC, count: Int.random(in: 1...60, using: &random)))
            case 1: toHost &+= UInt32(try sendAcknowledgments(nic, first: toHost, count: Int.random(in: 1...60, using: &random)))
            case 2 where !nicPaused: _ = try receiveAcknowledgments(nic, expecting: &atNIC)
            case 3 where !hostPaused: _ = try receiveAcknowledgments(host, expecting: &atHost)
            default: link.deliverAll()
            }
        }
        link.holding = false
        link.deliverAll()
        for _ in 0..<4 {
            _ = try receiveAcknowledgments(nic, expecting: &atNIC)
            _ = try receiveAcknowledgments(host, expecting: &atHost)
        }
        #expect(atNIC == toNIC && atHost == toHost)
        #expect(toNIC > 5_000 && toHost > 5_000)
        #expect(link.receiverNotReady == 0)
        // The load really ran into the window, and credit reports really freed it.
        #expect(host.statistics.creditStalls + nic.statistics.creditStalls > 0)
        #expect(host.statistics.creditReports + nic.statistics.creditReports > 0)
    }

    @Test("small messages go inline, large ones from the registered buffer, both byte for byte")
    func inlineAndBuffered() throws {
        let (host, nic, link) = try makeMemoryChannels(inlineLimit: 64)
        link.holding = true  // a buffered SEND is read at delivery: a buffer reused too early would show
        var sent: UInt32 = 0
        sent &+= UInt32(try sendAcknowledgments(host, first: sent, count: 1))    // 16 + 20 bytes: inline
        sent &+= UInt32(try sendAcknowledgments(host, first: sent, count: 100))  // 2 KiB: from the buffer
        sent &+= UInt32(try sendAcknowledgments(host, first: sent, count: 2))    // 56 bytes: inline
        link.deliverAll()
        var next: UInt32 = 0
        _ = try receiveAcknowledgments(nic, expecting: &next)
        #expect(next == sent && sent == 103)
        #expect(host.statistics.messagesSent == 3 && host.statistics.inlineSends == 2)
    }

    @Test("a close is seen after every message sent before it")
    func closeAfterMessages() throws {
        let (host, nic, _) = try makeMemoryChannels()
        let sent = try sendAcknowledgments(host, first: 0, count: 50)
        host.close()
        var next: UInt32 = 0
        _ = try receiveAcknowledgments(nic, expecting: &next)
        #expect(Int(next) == sent)
        #expect(throws: ChannelError.peerClosed) { _ = try nic.receive(limit: 8) { _ in } }
        #expect(throws: ChannelError.peerClosed) { _ = try nic.reserveMessage() }
        #expect(throws: ChannelError.closed) { _ = try host.reserveMessage() }
    }

    @Test("a peer gone without closing is reported as vanished, after what it sent")
    func vanishedPeer() throws {
        let (host, nic, link) = try makeMemoryChannels()
        let sent = try sendAcknowledgments(host, first: 0, count: 10)
        link.end()  // the host's process died: the connection ends with no close notice
        var next: UInt32 = 0
        _ = try receiveAcknowledgments(nic, expecting: &next)
        #expect(Int(next) == sent)
        #expect(throws: ChannelError.peerVanished) { _ = try nic.receive(limit: 8) { _ in } }
        #expect(throws: ChannelError.peerVanished) { _ = try nic.reserveMessage() }
    }

    @Test("a credit report for messages never sent breaks the channel with a clear error")
    func impossibleReport() throws {
        let (host, nic, _) = try makeMemoryChannels()
        // A broken peer: claims 5 of our messages consumed when we sent none.
        try nic.transport.postSend(buffer: nil, length: 0, immediate: 5, inline: true)
        #expect(throws: ChannelError.corruptMessage(detail: "the peer reports 5 messages consumed of 0 sent")) {
            _ = try host.receive(limit: 8) { _ in }
        }
    }

    @Test("a message whose header disagrees with what arrived is reported, and the next one still arrives")
    func corruptLength() throws {
        let (host, nic, _) = try makeMemoryChannels()
        guard var writer = try host.reserveMessage() else { Issue.record("no message"); return }
        writer.append(.acknowledged(FlowID(1), through: SequenceNumber(0)))
        host.commit(writer)
        // Rewrite the committed message's length field in the send buffer before it is delivered: the
        // memory link is not holding, so instead post a second SEND by hand with a bad length.
        let buffer = nic.transport.sendBuffer(0)
        MessageHeader(commandCount: 1, length: 999, sequence: 0).emit(into: buffer)
        try nic.transport.postSend(buffer: 0, length: 40, immediate: 0, inline: false)
        #expect(throws: ChannelError.corruptMessage(detail: "message #0 claims 999 bytes and 40 arrived")) {
            _ = try host.receive(limit: 8) { _ in }
        }
        var next: UInt32 = 0
        _ = try receiveAcknowledgments(nic, expecting: &next)
        #expect(next == 1)
    }

    @Test("sleeping: the completion descriptor wakes a sleeper, and no sleep starts with a message waiting")
    func sleeping() throws {
        let (host, nic, link) = try makeMemoryChannels(waiting: .doorbell)
        #expect(nic.wakeDescriptor >= 0)
        #expect(try nic.waitForIncoming(timeoutNanoseconds: 1_000_000) == false)
        #expect(nic.prepareToSleep())
        link.holding = true
        _ = try sendAcknowledgments(host, first: 0, count: 1)
        link.deliverAll()
        var descriptor = pollfd(fd: nic.wakeDescriptor, events: Int16(POLLIN), revents: 0)
        #expect(poll(&descriptor, 1, 0) == 1)
        nic.finishSleeping()
        #expect(nic.prepareToSleep() == false)  // the message is already there
        #expect(try nic.waitForIncoming(timeoutNanoseconds: 0))
        var next: UInt32 = 0
        _ = try receiveAcknowledgments(nic, expecting: &next)
        #expect(next == 1)
    }
}

@Suite("Credit window")
struct CreditWindowTests {
    @Test("credits, reports and the close flag, across the 2^31 wrap")
    func wrap() {
        var window = CreditWindow(depth: 8)
        for _ in 0..<5 { _ = window.recordSend() }
        for _ in 0..<5 { window.recordConsumed() }
        #expect(window.credits == 3)
        #expect(window.receive(immediate: 5) == .accepted(closing: false))
        #expect(window.credits == 8)
        #expect(window.unreported == 5)
        #expect(window.shouldReportCredits)
        #expect(window.recordSend(closing: true) == 5 | CreditWindow.closeFlag)
        #expect(window.unreported == 0)
        #expect(window.receive(immediate: 7) == .impossible(claimed: 7, sent: 6))
        #expect(window.receive(immediate: 6 | CreditWindow.closeFlag) == .accepted(closing: true))
    }

    @Test("counts wrap at 2^31 without losing credits")
    func countsWrap() {
        var window = CreditWindow(depth: 4)
        var peerCount: UInt32 = 0
        for _ in 0..<(1 << 12) {
            _ = window.recordSend()
            peerCount = (peerCount &+ 1) & (CreditWindow.closeFlag - 1)
            #expect(window.receive(immediate: peerCount) == .accepted(closing: false))
        }
        #expect(window.credits == 4)
        // Near the wrap: a fresh window cannot be started there, but the arithmetic is modular.
        let claimed = (CreditWindow.closeFlag - 1)
        #expect(window.receive(immediate: claimed) == .impossible(claimed: claimed, sent: 1 << 12))
    }
}

@Suite("RDMA channel handshake, addresses and connect rules")
struct QueuePairHandshakeTests {
    @Test("the handshake encodes field by field and decodes back")
    func codec() {
        let configuration = ChannelConfiguration(slotCount: 64, slotBytes: 65536, waiting: .busyPoll)
        let bytes = QueuePairHandshake(configuration: configuration).encode()
        #expect(bytes == [0x49, 0x51, 0x50, 0x43, 1, 0, 1, 0, 64, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0])
        #expect(QueuePairHandshake.decode(bytes + [UInt8](repeating: 0, count: 36)) == .handshake(QueuePairHandshake(configuration: configuration)))
        let busy = QueuePairHandshake(configuration: ChannelConfiguration(), rejection: .busy).encode()
        #expect(busy[16] == 1)
        #expect(QueuePairHandshake.decode(busy) == .handshake(QueuePairHandshake(configuration: ChannelConfiguration(), rejection: .busy)))
    }

    @Test("foreign, other-version and malformed private data are told apart")
    func decodeProblems() {
        #expect(QueuePairHandshake.decode([UInt8](repeating: 0, count: 56)) == .foreign)
        #expect(QueuePairHandshake.decode([0x49, 0x51, 0x50]) == .foreign)
        var other = QueuePairHandshake(configuration: ChannelConfiguration()).encode()
        other[4] = 9
        #expect(QueuePairHandshake.decode(other) == .otherVersion(9))
        var oddDepth = QueuePairHandshake(configuration: ChannelConfiguration()).encode()
        oddDepth[8] = 3
        #expect(QueuePairHandshake.decode(oddDepth) == .malformed("slot count 3 must be a power of two from 2 to 65536"))
        var shallow = QueuePairHandshake(configuration: ChannelConfiguration()).encode()
        shallow[8] = 2
        #expect(QueuePairHandshake.decode(shallow) == .malformed("a queue depth of 2 leaves no credit for commands"))
        var reason = QueuePairHandshake(configuration: ChannelConfiguration()).encode()
        reason[16] = 77
        #expect(QueuePairHandshake.decode(reason) == .malformed("unknown reject reason 77"))
    }

    @Test("a host retries while the NIC may be starting and stops when retrying cannot help")
    func connectPolicy() {
        let proposed = ChannelConfiguration(slotCount: 64, slotBytes: 65536)
        func decide(_ outcome: QueuePairConnectPolicy.Outcome) -> QueuePairConnectPolicy.Decision {
            QueuePairConnectPolicy.decide(outcome, proposed: proposed)
        }
        func isRetry(_ decision: QueuePairConnectPolicy.Decision) -> Bool { if case .retry = decision { true } else { false } }
        #expect(isRetry(decide(.unreachable("RDMA_CM_EVENT_ADDR_ERROR"))))
        #expect(isRetry(decide(.timedOut)))
        #expect(isRetry(decide(.rejected(.foreign))))  // nothing listens at the port yet
        #expect(decide(.rejected(.handshake(.init(configuration: proposed, rejection: .busy))))
            == .fail("another host is attached to this NIC stack"))
        #expect(decide(.rejected(.otherVersion(2))) == .fail("the NIC stack speaks RDMA channel handshake version 2, this host 1"))
        #expect(decide(.accepted(.foreign)) == .fail("the peer accepted without this protocol's handshake: it is not an iotcp NIC stack"))
        #expect(decide(.accepted(.handshake(.init(configuration: proposed)))) == .connected(proposed))
        let smaller = ChannelConfiguration(slotCount: 32, slotBytes: 65536)
        #expect(decide(.accepted(.handshake(.init(configuration: smaller))))
            == .fail("the NIC stack answered with 32 buffers of 65536 bytes, not the 64 of 65536 proposed"))
    }

    @Test("the NIC side accepts one host, turns away a second, and refuses what it cannot hold")
    func nicAnswers() {
        let offer = QueuePairHandshake.Decoded.handshake(.init(configuration: ChannelConfiguration(slotCount: 64, slotBytes: 65536)))
        #expect(QueuePairConnectPolicy.answer(offer, busy: false, maximumBytes: 256 << 20) == nil)
        #expect(QueuePairConnectPolicy.answer(offer, busy: true, maximumBytes: 256 << 20) == .busy)
        #expect(QueuePairConnectPolicy.answer(offer, busy: false, maximumBytes: 1 << 20) == .unusableConfiguration)
        #expect(QueuePairConnectPolicy.answer(.otherVersion(2), busy: false, maximumBytes: 256 << 20) == .unsupportedVersion)
        #expect(QueuePairConnectPolicy.answer(.foreign, busy: false, maximumBytes: 256 << 20) == .unusableConfiguration)
    }

    @Test("rdma:// addresses parse, and bad ones say what is wrong")
    func endpoints() throws {
        let endpoint = try RDMAEndpoint(parsing: "rdma://10.99.0.1:7471")
        #expect(endpoint.addressBits == 0x0A63_0001 && endpoint.port == 7471)
        #expect(endpoint.description == "rdma://10.99.0.1:7471")
        let v6 = try RDMAEndpoint(parsing: "rdma://[fd99::1]:7471")
        #expect(v6.address == IPAddress("fd99::1") && v6.port == 7471 && v6.description == "rdma://[fd99::1]:7471")
        // The socket address the connection manager is given: AF_INET6, the port and address in network order.
        let bytes = RDMASocketAddress(v6).withSocketAddress { pointer, length in
            Array(UnsafeRawBufferPointer(start: UnsafeRawPointer(pointer), count: Int(length)))
        }
        #expect(bytes.count == 28 && bytes[0] == UInt8(AF_INET6) && bytes[1] == 0 && bytes[2] == 0x1D && bytes[3] == 0x2F)
        #expect(Array(bytes[8..<24]) == [0xFD, 0x99] + [UInt8](repeating: 0, count: 13) + [1])
        let v4bytes = RDMASocketAddress(endpoint).withSocketAddress { pointer, length in
            Array(UnsafeRawBufferPointer(start: UnsafeRawPointer(pointer), count: Int(length)))
        }
        #expect(v4bytes.count == 16 && v4bytes[0] == UInt8(AF_INET) && Array(v4bytes[2..<8]) == [0x1D, 0x2F, 10, 99, 0, 1])
        for (text, problem) in [
            ("shm:/tmp/x", "shm:/tmp/x does not start with rdma://"),
            ("rdma://10.0.0.1", "rdma://10.0.0.1 has no :PORT"),
            ("rdma://10.0.0.1:0", "rdma://10.0.0.1:0: port 0 is not 1 to 65535"),
            ("rdma://10.0.0.1:70000", "rdma://10.0.0.1:70000: port 70000 is not 1 to 65535"),
            ("rdma://10.0.0:7471", "rdma://10.0.0:7471: 10.0.0 is not an IPv4 address (A.B.C.D) nor an IPv6 one in brackets ([fd00::1])"),
            ("rdma://10.0.0.256:7471", "rdma://10.0.0.256:7471: 10.0.0.256 is not an IPv4 address (A.B.C.D) nor an IPv6 one in brackets ([fd00::1])"),
            ("rdma://10.0.01.1:7471", "rdma://10.0.01.1:7471: 10.0.01.1 is not an IPv4 address (A.B.C.D) nor an IPv6 one in brackets ([fd00::1])"),
            ("rdma://fd99::1:7471", "rdma://fd99::1:7471: fd99::1 is not an IPv4 address (A.B.C.D) nor an IPv6 one in brackets ([fd00::1])"),
            ("rdma://[fd99::zz]:7471", "rdma://[fd99::zz]:7471: [fd99::zz] is not an IPv6 address in brackets ([fd00::1])"),
            ("rdma://[::ffff:10.0.0.1]:7471", "rdma://[::ffff:10.0.0.1]:7471: [::ffff:10.0.0.1] is not an IPv6 address in brackets ([fd00::1])"),
        ] {
            #expect(throws: RDMAEndpointError.self) { _ = try RDMAEndpoint(parsing: text) }
            do { _ = try RDMAEndpoint(parsing: text) } catch { #expect(error.description == problem) }
        }
    }
}
