import Glibc
import IOTCPChannels
import IOTCPCommon

/// Two queue pairs joined in memory, keeping the rules a reliable connection on a device keeps: a SEND
/// lands in the oldest posted receive (and with none posted, it fails the way a queue pair with no
/// receiver-not-ready retries does, and the link counts it); completions come in posting order; a
/// non-inline SEND's bytes are read from the send buffer when it is delivered, so a buffer reused too
/// early delivers the wrong bytes; a disconnect flushes posted work. Delivery is immediate unless the
/// link holds it, so tests can let messages cross.
final class MemoryLink {
    var holding = false
    private(set) var receiverNotReady = 0
    private var inFlight: [(from: MemoryQueuePair, buffer: Int?, bytes: [UInt8]?, length: Int, immediate: UInt32)] = []
    private(set) var ended = false
    weak var a: MemoryQueuePair?
    weak var b: MemoryQueuePair?

    static func makePair(depth: Int, bufferBytes: Int, inlineLimit: Int = 64) -> (MemoryQueuePair, MemoryQueuePair, MemoryLink) {
        let link = MemoryLink()
        let a = MemoryQueuePair(link: link, depth: depth, bufferBytes: bufferBytes, inlineLimit: inlineLimit)
        let b = MemoryQueuePair(link: link, depth: depth, bufferBytes: bufferBytes, inlineLimit: inlineLimit)
        link.a = a
        link.b = b
        return (a, b, link)
    }

    func peer(of end: MemoryQueuePair) -> MemoryQueuePair? { end === a ? b : a }

    func post(from end: MemoryQueuePair, buffer: Int?, length: Int, immediate: UInt32, inline: Bool) {
        let copy = inline || buffer == nil ? Array(end.sendBuffer(buffer ?? 0).prefix(length)) : nil
        inFlight.append((end, buffer, copy, length, immediate))
        if !holding { deliverAll() }
    }

    /// Delivers every send in flight, in order.
    func deliverAll() {
        let sends = inFlight
        inFlight.removeAll()
        for send in sends {
            guard !ended, let receiver = peer(of: send.from) else {
                send.from.complete(.init(kind: .send, buffer: send.buffer ?? -1, failure: "flushed", flushed: true))
                continue
            }
            guard let target = receiver.takePostedReceive() else {
                receiverNotReady += 1
                send.from.complete(.init(kind: .send, buffer: send.buffer ?? -1, failure: "receiver not ready"))
                continue
            }
            let bytes = send.bytes ?? Array(send.from.sendBuffer(send.buffer!).prefix(send.length))
            receiver.store(bytes, in: target)
            receiver.complete(.init(kind: .receive, buffer: target, byteCount: bytes.count, immediate: send.immediate))
            send.from.complete(.init(kind: .send, buffer: send.buffer ?? -1))
        }
    }

    /// The connection ends (a disconnect, or a process gone): posted work on both ends is flushed.
    func end() {
        guard !ended else { return }
        deliverAll()
        ended = true
        a?.flushPosted()
        b?.flushPosted()
    }
}

final class MemoryQueuePair: QueuePairTransport {
    let depth: Int
    let bufferBytes: Int
    let inlineLimit: Int
    private let link: MemoryLink  // the link holds its ends weakly
    private let memory: UnsafeMutableRawBufferPointer
    private var posted: [Int] = []
    private var queue: [QueuePairCompletion] = []
    private var armed = false
    /// Pipes standing in for the completion channel and the connection's event channel: [read, write].
    private var completionPipe: [Int32] = [-1, -1]
    private var connectionPipe: [Int32] = [-1, -1]
    var completionDescriptor: Int32 { completionPipe[0] }
    var connectionDescriptor: Int32 { connectionPipe[0] }
    private(set) var sends = 0
    private(set) var inlineSends = 0

    init(link: MemoryLink, depth: Int, bufferBytes: Int, inlineLimit: Int) {
        self.link = link
        self.depth = depth
        self.bufferBytes = bufferBytes
        self.inlineLimit = inlineLimit
        memory = .allocate(byteCount: 2 * depth * bufferBytes, alignment: 64)
        memory.initializeMemory(as: UInt8.self, repeating: 0)
        _ = pipe(&completionPipe)
        _ = pipe(&connectionPipe)
        for descriptor in completionPipe + connectionPipe { _ = fcntl(descriptor, F_SETFL, O_NONBLOCK) }
    }

    deinit {
        memory.deallocate()
        for descriptor in completionPipe + connectionPipe { Glibc.close(descriptor) }
    }

    func sendBuffer(_ index: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: memory[(index * bufferBytes)..<((index + 1) * bufferBytes)])
    }

    func receiveBuffer(_ index: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(rebasing: memory[((depth + index) * bufferBytes)..<((depth + index + 1) * bufferBytes)])
    }

    func postSend(buffer: Int?, length: Int, immediate: UInt32, inline: Bool) throws(ChannelError) {
        precondition(length <= bufferBytes && (!inline || length <= inlineLimit || length == 0))
        sends += 1
        if inline && length > 0 { inlineSends += 1 }
        guard !link.ended else {
            complete(.init(kind: .send, buffer: buffer ?? -1, failure: "flushed", flushed: true))
            return
        }
        link.post(from: self, buffer: buffer, length: length, immediate: immediate, inline: inline)
    }

    func postReceive(_ index: Int) throws(ChannelError) {
        precondition(!posted.contains(index), "receive buffer \(index) posted twice")
        guard !link.ended else {
            complete(.init(kind: .receive, buffer: index, failure: "flushed", flushed: true))
            return
        }
        posted.append(index)
    }

    func poll(_ completions: UnsafeMutableBufferPointer<QueuePairCompletion>) throws(ChannelError) -> Int {
        let count = min(completions.count, queue.count)
        for index in 0..<count { completions[index] = queue[index] }
        queue.removeFirst(count)
        return count
    }

    func armNotification() throws(ChannelError) { armed = true }

    func acknowledgeNotification() {
        var drained = [UInt8](repeating: 0, count: 64)
        while read(completionPipe[0], &drained, 64) > 0 {}
    }

    func connectionEnded() -> Bool { link.ended }

    func disconnect() { link.end() }

    // MARK: - The link's side

    var postedReceives: Int { posted.count }

    func takePostedReceive() -> Int? { posted.isEmpty ? nil : posted.removeFirst() }

    func store(_ bytes: [UInt8], in index: Int) {
        let target = UnsafeMutableRawBufferPointer(mutating: receiveBuffer(index))
        bytes.withUnsafeBytes { target.copyMemory(from: $0) }
    }

    func complete(_ completion: QueuePairCompletion) {
        queue.append(completion)
        if armed {
            armed = false
            var one: UInt8 = 1
            _ = write(completionPipe[1], &one, 1)
        }
    }

    func flushPosted() {
        for index in posted { queue.append(.init(kind: .receive, buffer: index, failure: "flushed", flushed: true)) }
        posted.removeAll()
        var one: UInt8 = 1
        _ = write(connectionPipe[1], &one, 1)
    }
}
