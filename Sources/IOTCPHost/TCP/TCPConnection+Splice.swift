import IOTCPCommon

/// What splicing needs from a connection: whether it is quiet enough to hand over, and where it stands.
extension TCPConnection {
    /// Why this connection cannot be spliced now, or nil. Nothing may be in flight or queued (the NIC keeps
    /// no data of ours to send again), and a backend may not have sent anything yet (the host would have
    /// bytes the client never gets). The peer must take segments as large as ours, or a segment relayed
    /// from the other side could be too long for it.
    func spliceRefusal(asBackend: Bool, configuration: TCPConfiguration) -> String? {
        guard state == .established else { return "it is \(state), not established" }
        guard sendUnacknowledged == sendMaximum, sendNext == sendMaximum, sendQueue.end == sendNext, !finRequested else {
            return "it has data queued or unacknowledged"
        }
        guard receiveBuffer.outOfOrder.isEmpty, pendingFinSequence == nil else { return "it has data received out of order" }
        if asBackend && receiveBuffer.readable > 0 { return "the backend has already sent data" }
        // The MSS advertised over this connection's family (IPv6's is 20 bytes smaller, as its header is longer).
        let advertised = configuration.maximumSegmentSize(for: remoteAddress)
        guard segmentSize + (timestampsEnabled ? 12 : 0) >= Int(advertised) else {
            return "its peer's MSS is smaller than the \(advertised) bytes advertised to the other"
        }
        return nil
    }

    /// The connection as SPLICE describes it (nothing in flight, so SND.NXT is SND.UNA).
    mutating func spliceState(now: Instant) -> SpliceConnectionState {
        SpliceConnectionState(
            remoteAddress: remoteAddress, remotePort: remotePort, localPort: localPort, sendNext: sendNext, receiveNext: receiveNext,
            timestamps: timestampsEnabled, timestampValue: timestampsEnabled ? timestampClock(now) : 0,
            timestampEcho: timestampRecent, window: windowField(), localWindowShift: receiveWindowShift,
            peerWindowShift: sendWindowShift, peerSegmentSize: UInt16(clamping: segmentSize), selectiveAcknowledgments: sackEnabled)
    }
}
