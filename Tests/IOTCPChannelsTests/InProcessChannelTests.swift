import Foundation
import IOTCPChannels
import IOTCPCommon
import Testing

/// Sends `count` ACKDs, numbered from `first`, in as many messages as that takes; returns how many went.
func sendAcknowledgments(_ channel: some CommandChannel, first: UInt32, count: Int) throws -> Int {
    guard var writer = try channel.reserveMessage() else { return 0 }
    var sent = 0
    while sent < count, writer.append(.acknowledged(FlowID(1), through: SequenceNumber(first &+ UInt32(sent)))) { sent += 1 }
    channel.commit(writer)
    return sent
}

/// Receives what is waiting and checks every ACKD is the next number expected.
func receiveAcknowledgments(_ channel: some CommandChannel, expecting next: inout UInt32) throws -> Int {
    var received = 0
    var mismatch: String?
    _ = try channel.receive(limit: 64) { message in
        guard var reader = try? CommandReader(message: message) else { mismatch = "undecodable message"; return }
        while let command = try? reader.next() {
            guard case .acknowledged(FlowID(1), let through) = command, through == SequenceNumber(next) else {
                mismatch = "expected ACKD \(next), got \(command)"
                return
            }
            next &+= 1
            received += 1
        }
    }
    if let mismatch { Issue.record(Comment(rawValue: mismatch)) }
    return received
}

/// Whether a message can be reserved now (the reservation is dropped unused).
func canReserve(_ channel: some CommandChannel) throws -> Bool {
    switch try channel.reserveMessage() {
    case .some: return true
    case .none: return false
    }
}

@Suite("In-process channel")
struct InProcessChannelTests {
    @Test("messages arrive in order with their content, in both directions")
    func bothDirections() throws {
        let (host, nic) = try InProcessChannel.makePair(configuration: .init(slotCount: 4, slotBytes: 4096))
        var hostNext: UInt32 = 0, nicNext: UInt32 = 1000
        var toNIC: UInt32 = 0, toHost: UInt32 = 1000
        for _ in 0..<50 {
            toNIC &+= UInt32(try sendAcknowledgments(host, first: toNIC, count: 300))
            toHost &+= UInt32(try sendAcknowledgments(nic, first: toHost, count: 17))
            _ = try receiveAcknowledgments(nic, expecting: &hostNext)
            _ = try receiveAcknowledgments(host, expecting: &nicNext)
        }
        #expect(hostNext == toNIC && toNIC > 10_000)
        #expect(nicNext == toHost && toHost == 1000 + 50 * 17)
    }

    @Test("a full ring refuses a reservation until the receiver frees a slot")
    func backPressure() throws {
        let (host, nic) = try InProcessChannel.makePair(configuration: .init(slotCount: 4, slotBytes: 1024))
        for n in 0..<4 { #expect(try sendAcknowledgments(host, first: UInt32(n), count: 1) == 1) }
        #expect(try !canReserve(host))
        var next: UInt32 = 0
        let firstTwo = try nic.receive(limit: 2) { _ in }
        #expect(firstTwo == 2)
        next = 2
        #expect(try sendAcknowledgments(host, first: 4, count: 1) == 1)
        #expect(try receiveAcknowledgments(nic, expecting: &next) == 3)
        #expect(next == 5)
    }

    @Test("an empty message is not sent")
    func emptyMessage() throws {
        let (host, nic) = try InProcessChannel.makePair()
        guard let writer = try host.reserveMessage() else {
            Issue.record("a new channel has free slots")
            return
        }
        host.commit(writer)
        #expect(!nic.hasIncoming)
    }

    @Test("a closed peer is reported once its messages are drained, and a closed end refuses to send")
    func closing() throws {
        let (host, nic) = try InProcessChannel.makePair()
        _ = try sendAcknowledgments(host, first: 0, count: 5)
        host.close()
        #expect(throws: ChannelError.closed) { try canReserve(host) }
        var next: UInt32 = 0
        #expect(try receiveAcknowledgments(nic, expecting: &next) == 5)
        #expect(throws: ChannelError.peerClosed) { try nic.receive(limit: 1) { _ in } }
        #expect(throws: ChannelError.peerClosed) { try canReserve(nic) }
        #expect(throws: ChannelError.peerClosed) { try nic.waitForIncoming(timeoutNanoseconds: 1_000_000) }
    }

    @Test("a waiting receiver times out when nothing comes")
    func waitTimesOut() throws {
        for waiting in [ChannelConfiguration.Waiting.doorbell, .busyPoll] {
            let (host, nic) = try InProcessChannel.makePair(configuration: .init(waiting: waiting))
            let start = DispatchTime.now().uptimeNanoseconds
            #expect(try host.waitForIncoming(timeoutNanoseconds: 20_000_000) == false)
            #expect(DispatchTime.now().uptimeNanoseconds - start >= 20_000_000)
            // Dropping the other end closes it, which the waiting end must then report.
            withExtendedLifetime(nic) {}
        }
    }

    @Test("invalid ring shapes are refused with a reason")
    func badConfiguration() {
        #expect(throws: ChannelError.setup("slot count 3 must be a power of two from 2 to 65536")) {
            try InProcessChannel.makePair(configuration: .init(slotCount: 3))
        }
        #expect(throws: ChannelError.setup("slot size 100 must be a multiple of 64 from 256 bytes to 16 MiB")) {
            try InProcessChannel.makePair(configuration: .init(slotBytes: 100))
        }
    }

    /// Two threads, one per half, the receiver sleeping on its doorbell: every command arrives, in order.
    @Test("two threads exchange 500,000 commands through doorbells", arguments: [ChannelConfiguration.Waiting.doorbell, .busyPoll])
    func twoThreads(waiting: ChannelConfiguration.Waiting) throws {
        let (host, nic) = try InProcessChannel.makePair(configuration: .init(slotCount: 8, slotBytes: 4096, waiting: waiting))
        let total = 500_000
        let producer = Thread {
            var sent = 0
            while sent < total {
                let n = (try? sendAcknowledgments(host, first: UInt32(sent), count: min(100, total - sent))) ?? 0
                if n == 0 { sched_yield() }
                sent += n
            }
            host.close()
        }
        producer.start()
        var next: UInt32 = 0
        var finished = false
        while !finished {
            do {
                if try nic.waitForIncoming(timeoutNanoseconds: 5_000_000_000) {
                    _ = try receiveAcknowledgments(nic, expecting: &next)
                } else {
                    Issue.record("no message for 5 s")
                    break
                }
            } catch ChannelError.peerClosed {
                finished = true
            }
        }
        #expect(Int(next) == total)
    }
}
