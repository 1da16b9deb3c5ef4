/// Batches commands into channel messages: many commands per message, built in place in the channel's
/// slot, committed when the message is full or at `flush()`.
///
/// When every slot is still unread by the peer, commands are not dropped and the caller is not blocked
/// (a blocked NIC could never read the host's next message, and the other way round): they are encoded
/// into private memory and held, in order, until slots free up. Holding allocates; it is the exception
/// (a peer that has fallen behind), not the path a command normally takes. What is held is bounded: past
/// `maximumHeldBytes`, packets (PACKET_IN, PACKET_OUT) are dropped and counted, as a full wire drops them
/// and TCP recovers; other commands are always kept (they are few, and losing one would lose state).
public final class ChannelSender {
    public let channel: any CommandChannel
    // The state below is `@exclusivity(unchecked)`, as the engine's is (`TCPEngine`): a sender belongs to
    // the one thread driving its stack, no method holds an access to one property across a call that takes
    // another, and the runtime's dynamic checks on every command appended were a sixth of the host thread's
    // exclusivity bookkeeping under short connections (`perf record`, 64 B requests with Connection: close).
    /// A message being filled in the channel's memory.
    @exclusivity(unchecked) private var current: CommandWriter?
    /// A message being filled in private memory, because earlier ones are held.
    @exclusivity(unchecked) private var staged: CommandWriter?
    private let stagingMemory: UnsafeMutableRawBufferPointer
    /// Messages waiting for a free slot: encoded commands (no header) and their count, oldest first.
    @exclusivity(unchecked) private var held: [(bytes: [UInt8], count: Int)] = []
    @exclusivity(unchecked) private var heldHead = 0
    /// Set once the channel fails; every later command is dropped (the channel cannot carry it).
    @exclusivity(unchecked) public private(set) var failure: ChannelError?
    /// Bytes of held messages past which packets are dropped rather than held.
    public var maximumHeldBytes = 16 << 20
    @exclusivity(unchecked) private var heldBytes = 0
    @exclusivity(unchecked) public private(set) var statistics = Statistics()

    public struct Statistics: Hashable, Sendable {
        public var messages = 0
        public var commands = 0
        /// Messages that had to wait in private memory for a slot.
        public var heldMessages = 0
        /// Packets dropped because the held messages were at `maximumHeldBytes` (the peer stopped reading).
        public var droppedPackets = 0
        public init() {}

        public func adding(_ other: Statistics) -> Statistics {
            var sum = self
            sum.messages += other.messages
            sum.commands += other.commands
            sum.heldMessages += other.heldMessages
            sum.droppedPackets += other.droppedPackets
            return sum
        }
    }

    public init(channel: any CommandChannel) {
        self.channel = channel
        stagingMemory = .allocate(byteCount: channel.maxMessageBytes, alignment: 64)
    }

    deinit { stagingMemory.deallocate() }

    /// The largest single command a message can carry.
    public var maxCommandBytes: Int { channel.maxMessageBytes - CommandProtocol.messageHeaderLength }

    /// Messages held back for lack of a slot.
    public var heldCount: Int { held.count - heldHead + (staged == nil ? 0 : 1) }

    /// Queues one command. It must be valid and fit a message (`encodedLength <= maxCommandBytes`).
    public func append(_ command: Command) {
        guard failure == nil else { return }
        if (command.kind == .packetIn || command.kind == .packetOut) && dropsPacket() { return }
        precondition(command.encodedLength <= maxCommandBytes, "a \(command.kind) command larger than a channel message")
        statistics.commands += 1
        if heldCount == 0 {
            if var writer = current.take() {
                if writer.append(command) { current = consume writer; return }
                commit(writer)
            }
            if var writer = reserve() {
                let fitted = writer.append(command)
                assert(fitted, "a command that fits a message fits an empty one")
                current = consume writer
                return
            }
            if failure != nil { return }
        }
        var writer = staged.take() ?? CommandWriter(buffer: stagingMemory)
        if !writer.append(command) {
            hold(writer)
            writer = CommandWriter(buffer: stagingMemory)
            writer.append(command)
        }
        staged = consume writer
    }

    /// Whether a packet is to be dropped (and counted): the peer stopped reading and what is held for it
    /// reached `maximumHeldBytes`.
    private func dropsPacket() -> Bool {
        guard heldCount > 0 && heldBytes >= maximumHeldBytes else { return false }
        statistics.droppedPackets += 1
        return true
    }

    /// Queues a PACKET_IN or PACKET_OUT whose packet `build` writes in place (in the channel's slot when
    /// one is free: the packet is built where the peer will read it).
    public func appendPacket(_ kind: CommandKind, flow: FlowID, length: Int, _ build: (UnsafeMutableRawBufferPointer) -> Void) {
        guard failure == nil else { return }
        precondition(length > 0 && length <= Int(UInt16.max) && length + CommandProtocol.commandHeaderLength <= maxCommandBytes,
                     "a packet of \(length) bytes does not fit a channel message")
        if dropsPacket() { return }
        statistics.commands += 1
        if heldCount == 0 {
            if var writer = current.take() {
                if let space = writer.appendPacket(kind, flow: flow, packetLength: length) {
                    build(space)
                    current = consume writer
                    return
                }
                commit(writer)
            }
            if var writer = reserve() {
                build(writer.appendPacket(kind, flow: flow, packetLength: length)!)
                current = consume writer
                return
            }
            if failure != nil { return }
        }
        var writer = staged.take() ?? CommandWriter(buffer: stagingMemory)
        if let space = writer.appendPacket(kind, flow: flow, packetLength: length) {
            build(space)
        } else {
            hold(writer)
            writer = CommandWriter(buffer: stagingMemory)
            build(writer.appendPacket(kind, flow: flow, packetLength: length)!)
        }
        staged = consume writer
    }

    /// Hands everything queued to the channel, as far as free slots allow; what does not fit stays held
    /// for the next flush. Call it once per turn of the event loop.
    public func flush() {
        if let writer = current.take() { commit(writer) }
        if let writer = staged.take() { hold(writer) }
        while heldHead < held.count, failure == nil {
            guard var writer = reserve() else { return }
            let fitted = held[heldHead].bytes.withUnsafeBytes { writer.appendEncoded($0, count: held[heldHead].count) }
            assert(fitted, "a held message fits a slot")
            heldBytes -= held[heldHead].bytes.count
            held[heldHead] = ([], 0)
            heldHead += 1
            commit(writer)
        }
        if heldHead == held.count {
            held.removeAll(keepingCapacity: true)
            heldHead = 0
        }
    }

    private func reserve() -> CommandWriter? {
        do throws(ChannelError) {
            return try channel.reserveMessage()
        } catch {
            failure = error
            current = nil
            staged = nil
            held.removeAll()
            heldHead = 0
            heldBytes = 0
            return nil
        }
    }

    private func commit(_ writer: consuming CommandWriter) {
        guard !writer.isEmpty else { return }
        statistics.messages += 1
        channel.commit(writer)
    }

    private func hold(_ writer: consuming CommandWriter) {
        guard !writer.isEmpty else { return }
        statistics.heldMessages += 1
        let bytes = Array(writer.encodedCommands)
        heldBytes += bytes.count
        held.append((bytes, writer.commandCount))
    }
}
