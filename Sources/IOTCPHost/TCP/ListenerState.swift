import IOTCPCommon

/// A listening port's state: its backlog, the connections it spawned that are not yet accepted, and the
/// queue `accept` takes established ones from.
struct ListenerState {
    var backlog: Int
    /// Connections from this listener not yet accepted, handshaking or queued.
    var pending = 0
    /// Established connections in arrival order, from `acceptHead` on. Handles, not slots, so an entry
    /// whose connection died and whose slot was reused is recognised (it no longer validates) and skipped.
    var acceptQueue: [TCPHandle] = []
    var acceptHead = 0
    /// Cookies are only accepted while recently sent (RFC 4987 §3.6: only under pressure).
    var lastCookieSent: Instant?

    var waiting: Int { acceptQueue.count - acceptHead }

    /// The next queued handle, oldest first; the queue's storage is reused once it is drained.
    mutating func takeQueued() -> TCPHandle? {
        guard acceptHead < acceptQueue.count else { return nil }
        let handle = acceptQueue[acceptHead]
        acceptHead += 1
        if acceptHead == acceptQueue.count {
            acceptQueue.removeAll(keepingCapacity: true)
            acceptHead = 0
        }
        return handle
    }
}
