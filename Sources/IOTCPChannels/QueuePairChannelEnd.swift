import Glibc
import IOTCPCommon
import IOTCPSystem

/// One end of a command channel over a reliable-connected queue pair (RDMA verbs, or a test's
/// in-memory pair): each message is one SEND, built in place in a registered send buffer and read where
/// the peer's receive buffer holds it.
///
/// Flow control is by credits (`CreditWindow`), so a SEND never finds the peer without a posted receive:
/// the queue pair is set up to fail rather than retry if one ever did. Messages up to the queue pair's
/// inline limit are copied at posting time. The immediate data of every SEND reports how many messages
/// its sender consumed; a SEND with no bytes is a control message (a credit report, or the close notice).
///
/// `@unchecked Sendable`: like every channel end, it may move to the thread that runs its half of the
/// stack, but is used by one thread at a time.
public final class QueuePairChannelEnd<Transport: QueuePairTransport>: CommandChannel, @unchecked Sendable {
    public let transport: Transport
    public let maxMessageBytes: Int
    public let waiting: ChannelConfiguration.Waiting

    private var window: CreditWindow
    private let depth: Int
    /// Sends that may be posted and not yet completed (commands and control messages).
    private let sendQueueDepth: Int

    /// Command messages posted, and of those completed: send buffers are used in turn, and a send queue
    /// completes in posting order, so the two counts say which buffers are free.
    private var sendsPosted = 0
    private var sendsCompleted = 0
    /// Every send posted and not yet completed, control messages included.
    private var sendsOutstanding = 0

    /// Received messages not yet handed to `receive`: buffer index and length, in arrival order.
    private var arrivedBuffers: [Int]
    private var arrivedLengths: [Int]
    private var arrivedHead = 0
    private var arrivedCount = 0

    private let completions: UnsafeMutableBufferPointer<QueuePairCompletion>
    private var sendSequence: UInt32 = 0
    private var receiveSequence: UInt32 = 0
    private var isClosed = false
    /// The peer's close notice arrived: once what it sent before is received, the channel reports it.
    private var peerClosing = false
    /// Set when the connection failed; reported once every message that arrived before is received.
    private var failure: ChannelError?
    private var idlePolls = 0
    private static var connectionCheckInterval: Int { 1024 }

    /// Counters for benchmarks and tests.
    public private(set) var statistics = Statistics()

    public struct Statistics: Hashable, Sendable {
        /// Messages of commands sent, and of those sent inline.
        public var messagesSent = 0
        public var inlineSends = 0
        /// Control messages sent that only reported credits.
        public var creditReports = 0
        /// Times a reserve found no credit (the peer had not yet reported room).
        public var creditStalls = 0
        public var messagesReceived = 0
    }

    /// Posts every receive buffer and returns the end. The transport's queue pair is connected, or is
    /// about to be: receives must be posted before the peer can send.
    public init(transport: Transport, waiting: ChannelConfiguration.Waiting) throws(ChannelError) {
        self.transport = transport
        self.maxMessageBytes = transport.bufferBytes
        self.waiting = waiting
        self.depth = transport.depth
        self.window = CreditWindow(depth: transport.depth)
        self.sendQueueDepth = 2 * transport.depth
        self.arrivedBuffers = [Int](repeating: 0, count: transport.depth)
        self.arrivedLengths = [Int](repeating: 0, count: transport.depth)
        self.completions = .allocate(capacity: 32)
        completions.initialize(repeating: QueuePairCompletion(kind: .send, buffer: -1))
        for index in 0..<transport.depth { try transport.postReceive(index) }
    }

    deinit {
        close()
        _ = completions.deinitialize()
        completions.deallocate()
    }

    /// The credit window as it stands (for tests and diagnostics).
    public var credits: CreditWindow { window }

    // MARK: - Sending

    public func reserveMessage() throws(ChannelError) -> CommandWriter? {
        if isClosed { throw .closed }
        if let failure { throw failure }
        if !canSendCommandMessage { harvest() }
        if let failure { throw failure }
        if peerClosing { throw fail(.peerClosed) }
        guard canSendCommandMessage else {
            if !window.canSendCommands { statistics.creditStalls += 1 }
            // No room is also what a vanished peer looks like: check before asking the caller to retry.
            if transport.connectionEnded() { throw fail(.peerVanished) }
            return nil
        }
        return CommandWriter(buffer: transport.sendBuffer(sendsPosted % depth))
    }

    private var canSendCommandMessage: Bool {
        window.canSendCommands && sendsPosted - sendsCompleted < depth && sendsOutstanding < sendQueueDepth
    }

    public func commit(_ message: consuming CommandWriter) {
        guard !message.isEmpty, !isClosed, failure == nil else { return }
        var message = message
        let length = message.finish(sequence: sendSequence).count
        sendSequence &+= 1
        let inline = length <= transport.inlineLimit
        let immediate = window.recordSend()
        do {
            try transport.postSend(buffer: sendsPosted % depth, length: length, immediate: immediate, inline: inline)
        } catch {
            failure = error
            return
        }
        sendsPosted += 1
        sendsOutstanding += 1
        statistics.messagesSent += 1
        if inline { statistics.inlineSends += 1 }
    }

    /// Sends a message with no commands: a credit report, or the close notice.
    private func sendControl(closing: Bool) {
        guard failure == nil, window.canSendControl, sendsOutstanding < sendQueueDepth else { return }
        let immediate = window.recordSend(closing: closing)
        do {
            try transport.postSend(buffer: nil, length: 0, immediate: immediate, inline: true)
            sendsOutstanding += 1
            if !closing { statistics.creditReports += 1 }
        } catch {
            failure = error
        }
    }

    // MARK: - Receiving

    public var hasIncoming: Bool {
        if arrivedCount == 0 { harvest() }
        return arrivedCount > 0
    }

    public func receive(limit: Int, _ handle: (UnsafeRawBufferPointer) -> Void) throws(ChannelError) -> Int {
        harvest()
        guard arrivedCount > 0 else {
            try checkWhenIdle()
            return 0
        }
        idlePolls = 0
        var delivered = 0
        var corrupt: ChannelError?
        while delivered < limit, arrivedCount > 0 {
            let buffer = arrivedBuffers[arrivedHead], length = arrivedLengths[arrivedHead]
            arrivedHead = (arrivedHead + 1) % depth
            arrivedCount -= 1
            delivered += 1
            let bytes = UnsafeRawBufferPointer(rebasing: transport.receiveBuffer(buffer)[0..<length])
            if length < CommandProtocol.messageHeaderLength {
                corrupt = .corruptMessage(detail: "a \(length)-byte message is shorter than its header")
            } else {
                let claimed = Int(bytes.littleEndian(UInt32.self, at: 8))
                let sequence = bytes.littleEndian(UInt32.self, at: 12)
                if sequence != receiveSequence {
                    let error = ChannelError.outOfSequence(expected: receiveSequence, received: sequence)
                    failure = error
                    throw error
                }
                receiveSequence &+= 1
                if claimed != length {
                    corrupt = .corruptMessage(detail: "message #\(sequence) claims \(claimed) bytes and \(length) arrived")
                } else {
                    statistics.messagesReceived += 1
                    handle(bytes)
                }
            }
            // The buffer goes back before the peer is told it was consumed: then a report never
            // promises room that is not there yet.
            do { try transport.postReceive(buffer) } catch {
                failure = error
                throw error
            }
            window.recordConsumed()
        }
        if window.shouldReportCredits { sendControl(closing: false) }
        if let corrupt { throw corrupt }
        return delivered
    }

    /// Takes every waiting completion: frees send buffers, updates credits, queues arrived messages.
    private func harvest() {
        while true {
            let count: Int
            do { count = try transport.poll(completions) } catch {
                if failure == nil { failure = error }
                return
            }
            for index in 0..<count { take(completions[index]) }
            if count < completions.count { return }
        }
    }

    private func take(_ completion: QueuePairCompletion) {
        if let problem = completion.failure {
            if failure == nil {
                failure = completion.flushed || transport.connectionEnded()
                    ? (peerClosing ? .peerClosed : .peerVanished)
                    : .system(operation: "an RDMA \(completion.kind == .send ? "send" : "receive")", errno: 0, message: problem)
            }
            if completion.kind == .send { sendsOutstanding -= 1 }
            return
        }
        switch completion.kind {
        case .send:
            sendsOutstanding -= 1
            if completion.buffer >= 0 { sendsCompleted += 1 }
        case .receive:
            guard let immediate = completion.immediate else {
                failure = failure ?? .corruptMessage(detail: "a message arrived without its credit report")
                return
            }
            if case .impossible(let claimed, let sent) = window.receive(immediate: immediate) {
                failure = failure ?? .corruptMessage(detail: "the peer reports \(claimed) messages consumed of \(sent) sent")
                return
            }
            if immediate & CreditWindow.closeFlag != 0 { peerClosing = true }
            if completion.byteCount == 0 {
                // A control message: nothing to deliver, the buffer goes straight back.
                do { try transport.postReceive(completion.buffer) } catch {
                    failure = failure ?? error
                    return
                }
                window.recordConsumed()
            } else {
                arrivedBuffers[(arrivedHead + arrivedCount) % depth] = completion.buffer
                arrivedLengths[(arrivedHead + arrivedCount) % depth] = completion.byteCount
                arrivedCount += 1
            }
        }
    }

    /// With nothing to receive: reports a closed or failed channel, and looks for a vanished peer at a
    /// bounded rate (each look costs a system call).
    private func checkWhenIdle() throws(ChannelError) {
        if let failure { throw failure }
        if peerClosing { throw fail(.peerClosed) }
        idlePolls += 1
        if idlePolls >= Self.connectionCheckInterval {
            idlePolls = 0
            try checkConnection()
        }
    }

    private func checkConnection() throws(ChannelError) {
        if let failure { throw failure }
        if peerClosing { throw fail(.peerClosed) }
        if transport.connectionEnded() {
            harvest()  // what arrived before the end is still delivered first
            if arrivedCount > 0 { return }
            throw fail(peerClosing ? .peerClosed : .peerVanished)
        }
    }

    // MARK: - Waiting

    public func waitForIncoming(timeoutNanoseconds: Int64?) throws(ChannelError) -> Bool {
        if hasIncoming { return true }
        try checkConnection()
        let deadline = timeoutNanoseconds.map { monotonicNanoseconds() + Swift.max($0, 0) }
        var spins = 0
        while true {
            if waiting == .doorbell { try arm() }
            harvest()
            if arrivedCount > 0 { return true }
            try checkConnection()
            var remaining: Int64 = -1
            if let deadline {
                remaining = deadline - monotonicNanoseconds()
                if remaining <= 0 { return false }
            }
            switch waiting {
            case .busyPoll:
                spins += 1
                if spins & 0xFFF == 0 { sched_yield() }
            case .doorbell:
                var milliseconds: Int32 = -1
                if remaining >= 0 { milliseconds = Int32(clamping: (remaining + 999_999) / 1_000_000) }
                try withUnsafeTemporaryAllocation(of: pollfd.self, capacity: 2) { descriptors throws(ChannelError) in
                    descriptors[0] = pollfd(fd: transport.completionDescriptor, events: Int16(POLLIN), revents: 0)
                    descriptors[1] = pollfd(fd: transport.connectionDescriptor, events: Int16(POLLIN), revents: 0)
                    _ = try systemCall("poll on the queue pair's completions") { poll(descriptors.baseAddress, 2, milliseconds) }
                }
                transport.acknowledgeNotification()
            }
        }
    }

    private func arm() throws(ChannelError) {
        do { try transport.armNotification() } catch {
            failure = failure ?? error
            throw error
        }
    }

    public var wakeDescriptor: Int32 { waiting == .doorbell ? transport.completionDescriptor : -1 }
    public var peerDescriptor: Int32 { transport.connectionDescriptor }

    public func prepareToSleep() -> Bool {
        guard waiting == .doorbell, failure == nil, !peerClosing else { return false }
        guard (try? transport.armNotification()) != nil else { return false }
        // A completion that came before the arm does not wake the descriptor: look once more.
        harvest()
        return arrivedCount == 0 && failure == nil && !peerClosing
    }

    public func finishSleeping() {
        transport.acknowledgeNotification()
    }

    // MARK: - Closing

    /// Sends the close notice, waits (briefly) until the peer's side has taken it, and disconnects.
    public func close() {
        guard !isClosed else { return }
        isClosed = true
        if failure == nil, !transport.connectionEnded() {
            sendControl(closing: true)
            let deadline = monotonicNanoseconds() + 1_000_000_000
            while sendsOutstanding > 0, failure == nil, monotonicNanoseconds() < deadline {
                harvest()
                if sendsOutstanding > 0 { sched_yield() }
            }
        }
        transport.disconnect()
    }

    private func fail(_ error: ChannelError) -> ChannelError {
        failure = error
        return error
    }
}
