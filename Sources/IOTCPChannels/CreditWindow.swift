/// Credit-based flow control for a channel over a reliable-connected queue pair.
///
/// Each end keeps `depth` receive buffers posted. A SEND that arrives when the peer has none posted is a
/// receiver-not-ready error, so a sender may only send what the peer is known to have room for. Every
/// SEND carries, in its immediate data, how many messages its sender has consumed (and re-posted the
/// buffer for) so far: a running count, so a lost or repeated report cannot skew the window.
///
/// Commands use all but `controlReserve` credits. The reserve is for control messages (a credit report
/// with no commands, and the close notice), so two ends that both filled each other's buffers can still
/// tell each other they have room. A credit report is sent only once at least half a window is
/// unreported: each one frees far more than the one buffer it takes, so reports cannot ping-pong.
///
/// Counts run modulo 2^31: the immediate's top bit is the close flag.
public struct CreditWindow: Hashable, Sendable {
    /// Receive buffers the peer keeps posted (and this end too: both ends use the same depth).
    public let depth: Int
    /// Messages this end has sent, control messages included.
    public private(set) var sent: UInt32 = 0
    /// The latest count of this end's messages the peer said it consumed.
    public private(set) var peerConsumed: UInt32 = 0
    /// Messages this end has consumed and re-posted the buffer for.
    public private(set) var consumed: UInt32 = 0
    /// The consumed count this end last sent to the peer.
    public private(set) var reported: UInt32 = 0

    /// Credits kept back from commands for control messages.
    public static let controlReserve = 2
    /// The immediate's bit that says the sender is closing its end.
    public static let closeFlag: UInt32 = 1 << 31
    static let countMask: UInt32 = closeFlag - 1

    /// `depth` must leave room for commands beyond the control reserve.
    public init(depth: Int) {
        precondition(depth > Self.controlReserve + 1 && depth <= 1 << 20, "a credit window of \(depth) buffers")
        self.depth = depth
    }

    /// Messages this end may still send before the peer reports more consumed.
    public var credits: Int { depth - Int((sent &- peerConsumed) & Self.countMask) }

    /// Whether a message of commands may be sent now.
    public var canSendCommands: Bool { credits > Self.controlReserve }

    /// Whether a control message (a credit report, the close notice) may be sent now.
    public var canSendControl: Bool { credits > 0 }

    /// Messages consumed here that the peer has not been told of.
    public var unreported: Int { Int((consumed &- reported) & Self.countMask) }

    /// Whether a message with no commands should go to the peer just to report credits: half a window
    /// waits to be reported and there is a credit to carry it.
    public var shouldReportCredits: Bool { unreported >= Swift.max(1, depth / 2) && canSendControl }

    /// Records a message sent and returns its immediate data: the consumed count, and the close flag.
    /// The caller checked `canSendCommands` or `canSendControl`.
    public mutating func recordSend(closing: Bool = false) -> UInt32 {
        precondition(credits > 0, "a send without credit would find the peer not ready")
        sent = (sent &+ 1) & Self.countMask
        reported = consumed
        return consumed | (closing ? Self.closeFlag : 0)
    }

    /// Records a message consumed here whose buffer has been posted again.
    public mutating func recordConsumed() {
        consumed = (consumed &+ 1) & Self.countMask
    }

    /// What a received immediate said.
    public enum Report: Hashable, Sendable {
        /// Credits were updated; `closing` when the peer is closing its end.
        case accepted(closing: Bool)
        /// The peer claims to have consumed messages this end never sent: a broken peer.
        case impossible(claimed: UInt32, sent: UInt32)
    }

    /// Takes the peer's report from a received message's immediate data.
    public mutating func receive(immediate: UInt32) -> Report {
        let claimed = immediate & Self.countMask
        // The claim must lie between what the peer last reported and what this end sent (modulo 2^31).
        let advance = (claimed &- peerConsumed) & Self.countMask
        let outstanding = (sent &- peerConsumed) & Self.countMask
        guard advance <= outstanding else { return .impossible(claimed: claimed, sent: sent) }
        peerConsumed = claimed
        return .accepted(closing: immediate & Self.closeFlag != 0)
    }
}
