import Atomics
import CIOTCPSystem
import Glibc
import IOTCPCommon
import IOTCPSystem

/// One end of a channel built from two slot rings: it produces into one and consumes from the other.
/// In-process and shared-memory channels are both this, over private or shared memory.
///
/// `@unchecked Sendable`: an end may move to the thread that runs its half of the stack, but must be used
/// by one thread at a time; each ring has exactly one producer and one consumer by construction.
public final class RingChannelEnd: CommandChannel, @unchecked Sendable {
    public let maxMessageBytes: Int
    public let waiting: ChannelConfiguration.Waiting

    private var outgoing: SlotRingProducer
    private var incoming: SlotRingConsumer
    /// The eventfd the peer sleeps on; written when the peer says it sleeps.
    private let peerDoorbell: Int32
    /// The eventfd this end sleeps on.
    private let ownDoorbell: Int32
    /// A socket connected to the peer's process (shared memory only): end of stream means it is gone.
    private let peerSocket: Int32
    private let region: ChannelRegion

    private var sendSequence: UInt32 = 0
    private var receiveSequence: UInt32 = 0
    private var isClosed = false
    /// Once the peer is known to be gone or the channel broken, every call reports it.
    private var failure: ChannelError?
    private var idlePolls = 0
    /// Times bytes arrived on the peer socket after setup (and were dropped).
    public private(set) var strayBytesDropped = 0
    /// Idle receives between two liveness checks of the peer's process (each costs a system call).
    private static let livenessCheckInterval = 1024

    init(
        outgoing: SlotRingControl, incoming: SlotRingControl, waiting: ChannelConfiguration.Waiting,
        peerDoorbell: Int32, ownDoorbell: Int32, peerSocket: Int32, region: ChannelRegion
    ) {
        self.maxMessageBytes = outgoing.slotBytes
        self.waiting = waiting
        self.outgoing = SlotRingProducer(control: outgoing)
        self.incoming = SlotRingConsumer(control: incoming)
        self.peerDoorbell = peerDoorbell
        self.ownDoorbell = ownDoorbell
        self.peerSocket = peerSocket
        self.region = region
    }

    deinit { close() }

    public func reserveMessage() throws(ChannelError) -> CommandWriter? {
        if isClosed { throw .closed }
        if let failure { throw failure }
        if incoming.control.producerClosed.load(ordering: .acquiring) != 0 { throw fail(.peerClosed) }
        guard let slot = outgoing.nextFreeSlot() else {
            // A full ring is also what a dead peer looks like: check before asking the caller to retry.
            try checkPeerProcess()
            return nil
        }
        return CommandWriter(buffer: slot)
    }

    public func commit(_ message: consuming CommandWriter) {
        guard !message.isEmpty, !isClosed, failure == nil else { return }
        var message = message
        _ = message.finish(sequence: sendSequence)
        sendSequence &+= 1
        outgoing.publish()
        ringPeerIfSleeping()
    }

    public var hasIncoming: Bool { incoming.available() > 0 }

    public func receive(limit: Int, _ handle: (UnsafeRawBufferPointer) -> Void) throws(ChannelError) -> Int {
        if let failure { throw failure }
        let available = incoming.available()
        guard available > 0 else {
            try checkPeerWhenIdle()
            return 0
        }
        idlePolls = 0
        let count = Swift.min(available, UInt64(Swift.max(limit, 0)))
        var corrupt: ChannelError?
        for n in 0..<count {
            let slot = incoming.message(n)
            let length = Int(UnsafeRawBufferPointer(slot).littleEndian(UInt32.self, at: 8))
            let sequence = UnsafeRawBufferPointer(slot).littleEndian(UInt32.self, at: 12)
            guard sequence == receiveSequence else {
                incoming.release(n + 1)
                throw fail(.outOfSequence(expected: receiveSequence, received: sequence))
            }
            receiveSequence &+= 1
            guard length >= CommandProtocol.messageHeaderLength, length <= slot.count else {
                corrupt = .corruptMessage(detail: "message #\(sequence) claims \(length) bytes in a \(slot.count)-byte slot")
                continue
            }
            handle(UnsafeRawBufferPointer(rebasing: slot[0..<length]))
        }
        incoming.release(count)
        if let corrupt { throw corrupt }
        return Int(count)
    }

    public func waitForIncoming(timeoutNanoseconds: Int64?) throws(ChannelError) -> Bool {
        if incoming.available() > 0 { return true }
        if let failure { throw failure }
        try checkPeer()
        let deadline = timeoutNanoseconds.map { monotonicNanoseconds() + Swift.max($0, 0) }
        switch waiting {
        case .busyPoll:
            var spins = 0
            while incoming.available() == 0 {
                spins += 1
                if spins & 0xFFF == 0 {
                    try checkPeer()
                    if let deadline, monotonicNanoseconds() >= deadline { return false }
                    sched_yield()
                }
            }
            return true
        case .doorbell:
            incoming.control.consumerWaiting.store(1, ordering: .relaxed)
            // Pairs with the fence in `ringPeerIfSleeping`: either the producer sees the flag and rings,
            // or this side sees the message it published before it looked.
            atomicMemoryFence(ordering: .sequentiallyConsistent)
            defer { incoming.control.consumerWaiting.store(0, ordering: .relaxed) }
            while incoming.available() == 0 {
                try checkPeer()
                var remaining: Int64 = -1
                if let deadline {
                    remaining = deadline - monotonicNanoseconds()
                    if remaining <= 0 { return false }
                }
                try sleepOnDoorbell(nanoseconds: remaining)
            }
            return true
        }
    }

    public var wakeDescriptor: Int32 { waiting == .doorbell ? ownDoorbell : -1 }
    public var peerDescriptor: Int32 { peerSocket }

    public func prepareToSleep() -> Bool {
        guard waiting == .doorbell else { return false }
        incoming.control.consumerWaiting.store(1, ordering: .relaxed)
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if incoming.available() > 0 || incoming.control.producerClosed.load(ordering: .acquiring) != 0 {
            incoming.control.consumerWaiting.store(0, ordering: .relaxed)
            return false
        }
        return true
    }

    public func finishSleeping() {
        incoming.control.consumerWaiting.store(0, ordering: .relaxed)
        var counter: UInt64 = 0
        _ = withUnsafeMutableBytes(of: &counter) { Glibc.read(ownDoorbell, $0.baseAddress, 8) }
    }

    public func close() {
        guard !isClosed else { return }
        isClosed = true
        outgoing.control.producerClosed.store(1, ordering: .releasing)
        // Wake a sleeping peer so it sees the close now rather than at its next timeout.
        if waiting == .doorbell { writeDoorbell(peerDoorbell) }
    }

    // MARK: - Doorbells and liveness

    @inline(__always)
    private func ringPeerIfSleeping() {
        guard waiting == .doorbell else { return }
        atomicMemoryFence(ordering: .sequentiallyConsistent)
        if outgoing.control.consumerWaiting.load(ordering: .relaxed) != 0 { writeDoorbell(peerDoorbell) }
    }

    private func writeDoorbell(_ descriptor: Int32) {
        guard descriptor >= 0 else { return }
        var one: UInt64 = 1
        // EAGAIN means the counter is already non-zero: the peer will wake anyway.
        _ = withUnsafeBytes(of: &one) { Glibc.write(descriptor, $0.baseAddress, 8) }
    }

    private func sleepOnDoorbell(nanoseconds: Int64) throws(ChannelError) {
        var descriptors = [
            pollfd(fd: ownDoorbell, events: Int16(POLLIN), revents: 0),
            // Only the peer's hang-up: nothing is sent on this socket after setup, and watching for input
            // would turn stray bytes in it into a sleep that returns at once, forever.
            pollfd(fd: peerSocket, events: Int16(IOTCP_POLLRDHUP), revents: 0),
        ]
        let count = UInt(peerSocket >= 0 ? 2 : 1)
        let ready = try systemCall("ppoll on the channel doorbell") {
            iotcp_poll_nanoseconds(&descriptors, count, nanoseconds)
        }
        if ready > 0, descriptors[0].revents & Int16(POLLIN) != 0 {
            var counter: UInt64 = 0
            _ = withUnsafeMutableBytes(of: &counter) { Glibc.read(ownDoorbell, $0.baseAddress, 8) }
        }
    }

    /// Checks, at a bounded rate, whether the peer closed or its process went away.
    private func checkPeerWhenIdle() throws(ChannelError) {
        if incoming.control.producerClosed.load(ordering: .acquiring) != 0 { throw fail(.peerClosed) }
        idlePolls += 1
        if idlePolls >= Self.livenessCheckInterval {
            idlePolls = 0
            try checkPeerProcess()
        }
    }

    private func checkPeer() throws(ChannelError) {
        if incoming.control.producerClosed.load(ordering: .acquiring) != 0 { throw fail(.peerClosed) }
        try checkPeerProcess()
    }

    /// The connection socket reads end-of-stream (or errors) once the peer's process has exited: the
    /// kernel closes its descriptors whatever way it died.
    private func checkPeerProcess() throws(ChannelError) {
        guard peerSocket >= 0 else { return }
        var descriptor = pollfd(fd: peerSocket, events: Int16(POLLIN) | Int16(IOTCP_POLLRDHUP), revents: 0)
        let ready = poll(&descriptor, 1, 0)
        guard ready > 0 else { return }
        let gone = Int16(POLLHUP) | Int16(IOTCP_POLLRDHUP) | Int16(POLLERR)
        if descriptor.revents & Int16(POLLIN) != 0 && descriptor.revents & gone == 0 {
            // Bytes nobody should have sent: read and drop them, so the socket stops polling readable.
            var scratch = [UInt8](repeating: 0, count: 4096)
            _ = scratch.withUnsafeMutableBytes { recv(peerSocket, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
            strayBytesDropped += 1
        }
        if descriptor.revents & gone != 0 {
            // Messages the peer sent before dying are still delivered first.
            if incoming.available() > 0 { return }
            if incoming.control.producerClosed.load(ordering: .acquiring) != 0 { throw fail(.peerClosed) }
            throw fail(.peerVanished)
        }
    }

    private func fail(_ error: ChannelError) -> ChannelError {
        failure = error
        return error
    }
}
