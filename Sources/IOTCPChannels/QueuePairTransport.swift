import IOTCPCommon

/// What a channel needs from a reliable-connected queue pair: registered send and receive buffers, SEND
/// with immediate data, posted receives, a completion queue, and word of the connection's end.
///
/// RDMA verbs implement it (`IOTCPRDMA`); tests implement it in memory, with the same rules a real queue
/// pair enforces (a SEND needs a posted receive, completions come in posting order), so the channel's
/// logic is tested without a device.
public protocol QueuePairTransport: AnyObject {
    /// Buffers in each direction (receives kept posted; send buffers in use at once).
    var depth: Int { get }
    /// Bytes per buffer: the largest message.
    var bufferBytes: Int { get }
    /// The largest send the queue pair copies at posting time (inline), or 0.
    var inlineLimit: Int { get }

    /// Send buffer `index`, to build a message in.
    func sendBuffer(_ index: Int) -> UnsafeMutableRawBufferPointer
    /// Receive buffer `index`, valid once its receive completed and until it is posted again.
    func receiveBuffer(_ index: Int) -> UnsafeRawBufferPointer

    /// Posts a SEND with immediate data: `length` bytes of send buffer `buffer`, or no bytes when
    /// `buffer` is nil. Inline sends are copied before this returns.
    func postSend(buffer: Int?, length: Int, immediate: UInt32, inline: Bool) throws(ChannelError)
    /// Posts receive buffer `index`.
    func postReceive(_ index: Int) throws(ChannelError)
    /// Takes up to `completions.count` completions, oldest first.
    func poll(_ completions: UnsafeMutableBufferPointer<QueuePairCompletion>) throws(ChannelError) -> Int

    /// A descriptor that turns readable after `armNotification` once a completion arrives, or -1.
    var completionDescriptor: Int32 { get }
    /// Asks for `completionDescriptor` to turn readable at the next completion.
    func armNotification() throws(ChannelError)
    /// Clears the descriptor's readiness after a wake-up (never blocks).
    func acknowledgeNotification()

    /// A descriptor that turns readable when connection events (a disconnect) wait, or -1.
    var connectionDescriptor: Int32 { get }
    /// Whether the connection has ended (the peer disconnected, or its process died). Never blocks.
    func connectionEnded() -> Bool
    /// Ends the connection; later sends fail and posted work completes flushed.
    func disconnect()
}

/// One finished work request.
public struct QueuePairCompletion: Sendable {
    public enum Kind: Sendable { case send, receive }
    public var kind: Kind
    /// The buffer's index (-1 for a send without a buffer).
    public var buffer: Int
    /// Bytes received (receives only).
    public var byteCount: Int
    /// The immediate data (receives only; every SEND on this channel carries one).
    public var immediate: UInt32?
    /// Why the request failed, or nil. `flushed` when the queue pair had already failed or disconnected.
    public var failure: String?
    public var flushed: Bool

    public init(kind: Kind, buffer: Int, byteCount: Int = 0, immediate: UInt32? = nil, failure: String? = nil, flushed: Bool = false) {
        self.kind = kind
        self.buffer = buffer
        self.byteCount = byteCount
        self.immediate = immediate
        self.failure = failure
        self.flushed = flushed
    }
}
