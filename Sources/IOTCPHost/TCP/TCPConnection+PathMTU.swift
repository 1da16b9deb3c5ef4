import IOTCPCommon

/// Path MTU discovery over IPv6 (RFC 8201): routers do not fragment IPv6, so one that cannot forward a
/// segment drops it and says Packet Too Big with its next hop's MTU. The connection's segments shrink to
/// fit and what was in flight goes again at the new size.
extension TCPConnection {
    /// IPv6's minimum link MTU (RFC 8200 §5): no Packet Too Big lowers a path below it (RFC 8201 §4).
    static let minimumIPv6MTU = 1280

    /// A Packet Too Big quoting our segment that started at `quotedSequence`; true when it lowered the
    /// segment size. Believed only for a sequence number in flight (RFC 5927 §4.1's check: a blind attacker
    /// cannot shrink a connection's segments), and only downwards.
    mutating func packetTooBig<O: CommandOutput>(
        mtu: Int, quotedSequence: SequenceNumber, now: Instant, configuration: TCPConfiguration, output: inout O
    ) -> Bool {
        guard !remoteAddress.isIPv4, state.isSynchronized, sendUnacknowledged <= quotedSequence, quotedSequence < sendMaximum else {
            return false
        }
        let headers = IPv6Repr.headerLength + TCPSegmentView.minimumHeaderLength + (timestampsEnabled ? 12 : 0)
        let fitting = max(mtu, Self.minimumIPv6MTU) - headers
        guard fitting < segmentSize else { return false }
        segmentSize = fitting
        congestion.resize(segmentSize: fitting)
        // The router dropped the segment, and the ones after it were no smaller: send again from the first
        // unacknowledged, now, at the new size (no timeout's backoff or window cut: nothing was congested),
        // and take no RTT sample from the resent bytes (Karn).
        sendNext = sendUnacknowledged
        timedSequence = nil
        timedAwaitsEcho = false
        // A loss probe's timer would send a third copy of the last segment once the resend has caught up.
        if retransmitTimerKind == .probe { armRetransmit(at: now + rtt.timeout) }
        flush(now: now, configuration: configuration, output: &output)
        return true
    }
}
