/// How commands travel between the host and the NIC halves: batches of commands in messages.
///
/// One end is used by one thread at a time (each direction is single-producer, single-consumer), and
/// an end sends and receives whole messages:
///
/// ```swift
/// if var message = try channel.reserveMessage() {
///     message.append(.acknowledged(flow, through: seq))   // ... as many as fit
///     channel.commit(message)
/// }
/// _ = try channel.receive(limit: 16) { bytes in
///     var reader = try? CommandReader(message: bytes) ...
/// }
/// ```
///
/// A message is built in place in the channel's memory, and a received message is read where it lies:
/// the bytes handed to `receive`'s closure are valid only during the call.
public protocol CommandChannel: AnyObject {
    /// The largest message either side may send, header included.
    var maxMessageBytes: Int { get }

    /// A writer over the next free outgoing slot, or nil when every slot is still unread by the peer
    /// (back-pressure: receive, then try again). Reserving twice without a commit gives the same slot.
    func reserveMessage() throws(ChannelError) -> CommandWriter?

    /// Hands a message to the peer. A message without commands is dropped, not sent.
    func commit(_ message: consuming CommandWriter)

    /// Calls `handle` with each waiting message, oldest first, at most `limit` of them, and returns how
    /// many. Throws when nothing is waiting and the peer has closed or vanished.
    func receive(limit: Int, _ handle: (UnsafeRawBufferPointer) -> Void) throws(ChannelError) -> Int

    /// Whether a message is waiting.
    var hasIncoming: Bool { get }

    /// Blocks until a message waits, the peer goes away, or `timeoutNanoseconds` pass (nil: no limit).
    /// Returns whether a message waits.
    func waitForIncoming(timeoutNanoseconds: Int64?) throws(ChannelError) -> Bool

    /// For a loop that sleeps on several things at once (a wire and the channel): a descriptor that turns
    /// readable when the peer sends while this end said it sleeps, or -1 when the channel busy-polls (then
    /// do not sleep on it).
    var wakeDescriptor: Int32 { get }

    /// A descriptor that turns readable (hang-up) when the peer's process is gone, or -1.
    var peerDescriptor: Int32 { get }

    /// Says this end is about to sleep on `wakeDescriptor`; returns false, without saying so, when a
    /// message is already waiting (then do not sleep). Pair every true with `finishSleeping()`.
    func prepareToSleep() -> Bool

    /// Says the sleep is over, and clears the descriptor's count.
    func finishSleeping()

    /// Tells the peer this end is done; later reserves fail with `.closed`.
    func close()
}

/// What went wrong with a channel.
public enum ChannelError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The peer closed its end; every message it sent before has been received.
    case peerClosed
    /// The peer's process is gone without closing (it crashed or was killed).
    case peerVanished
    /// This end was closed.
    case closed
    /// A slot held something that is not a message of a sane length; it was skipped.
    case corruptMessage(detail: String)
    /// Messages arrived out of order or one was lost: the channel cannot be trusted any more.
    case outOfSequence(expected: UInt32, received: UInt32)
    /// Setting the channel up failed; the text says what and why.
    case setup(String)
    /// A system call failed.
    case system(operation: String, errno: Int32, message: String)
    /// Nobody answered in time.
    case timedOut(String)

    public var description: String {
        switch self {
        case .peerClosed: "the peer closed the channel"
        case .peerVanished: "the peer process exited without closing the channel"
        case .closed: "this end of the channel is closed"
        case .corruptMessage(let detail): "corrupt message on the channel: \(detail)"
        case .outOfSequence(let expected, let received):
            "channel message out of sequence: expected #\(expected), received #\(received)"
        case .setup(let text): "channel setup failed: \(text)"
        case .system(let operation, let errno, let message): "\(operation) failed: \(message) (errno \(errno))"
        case .timedOut(let text): "timed out: \(text)"
        }
    }
}
