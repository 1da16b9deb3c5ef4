import IOTCPCommon

/// A listening port's state: its backlog, the connections it spawned that are not yet accepted, and the
/// queue `accept` takes established ones from.
struct ListenerState {
    var backlog: Int
    /// Connections from this listener not yet accepted, handshaking or queued.
    var pending = 0
    /// Established connections in arrival order. Handles, not slots, so an entry whose connection died and
    /// whose slot was reused is recognised (it no longer validates) and skipped.
    var acceptQueue = FIFO<TCPHandle>()
    /// Cookies are only accepted while recently sent (RFC 4987 §3.6: only under pressure).
    var lastCookieSent: Instant?

    var waiting: Int { acceptQueue.count }
}
