import IOTCPCommon

/// One connection as an operator lists it (`ss -tn` style): who it is with, its state and its queues.
public struct ConnectionEntry: Hashable, Sendable {
    public var handle: TCPHandle
    public var endpoints: FlowEndpoints
    public var info: TCPConnectionInfo
    /// Bytes received and not yet read by the application (ss's Recv-Q).
    public var unreadBytes: Int

    /// Bytes written by the application and not yet acknowledged (ss's Send-Q): queued, in flight, and file
    /// ranges the NIC sends.
    public var unacknowledgedBytes: Int { info.queuedBytes + (info.sendMaximum - info.sendUnacknowledged) }

    /// The column heads of `line`.
    public static let header = "State        Recv-Q    Send-Q  Local Address:Port    Peer Address:Port     cwnd  srtt(us)  rto(ms) retrans"

    /// One line under `header`.
    public var line: String {
        func pad(_ text: String, _ width: Int, left: Bool = false) -> String {
            let gap = String(repeating: " ", count: max(0, width - text.count))
            return left ? text + gap : gap + text
        }
        let local = "\(endpoints.localAddress.urlHost):\(endpoints.localPort)"
        let peer = "\(endpoints.remoteAddress.urlHost):\(endpoints.remotePort)"
        return pad("\(info.state)", 11, left: true) + pad("\(unreadBytes)", 8) + pad("\(unacknowledgedBytes)", 10) + "  "
            + pad(local, 21, left: true) + " " + pad(peer, 21, left: true) + pad("\(info.congestionWindow)", 8)
            + pad("\(info.smoothedRTT / 1000)", 10) + pad("\(info.retransmissionTimeout / 1_000_000)", 9)
            + pad("\(info.fastRecoveries + info.timeouts)", 8)
    }
}

extension TCPEngine {
    /// Every connection with its endpoints and state, in slot order: diagnostics, not a hot path.
    public var connections: [ConnectionEntry] {
        handles.compactMap { handle in
            guard let endpoints = endpoints(of: handle), let info = info(of: handle) else { return nil }
            return ConnectionEntry(handle: handle, endpoints: endpoints, info: info, unreadBytes: readableBytes(handle))
        }
    }

    /// How many connections are in each state.
    public var connectionsByState: [TCPState: Int] {
        var counts: [TCPState: Int] = [:]
        for handle in handles { if let state = state(of: handle) { counts[state, default: 0] += 1 } }
        return counts
    }

    /// The listing `ss -tn` would print: a header and a line per connection.
    public var connectionListing: String {
        ([ConnectionEntry.header] + connections.map(\.line)).joined(separator: "\n")
    }
}
