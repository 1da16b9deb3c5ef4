import IOTCPCommon

/// The receive side: data and FIN into the reassembly buffer, and the window it advertises.
extension TCPConnection {
    // MARK: - Receiving

    mutating func receiveData(_ payload: UnsafeRawBufferPointer, at sequence: SequenceNumber) {
        let wasInOrder = sequence == receiveNext
        let hadGap = !receiveBuffer.outOfOrder.isEmpty
        let advanced = receiveBuffer.store(payload, at: sequence, next: receiveNext)
        receiveNext += advanced
        if advanced > 0 { events.insert(.readable) }
        if !wasInOrder || hadGap || advanced < payload.count {
            // Out of order, a hole filled, or data that did not fit: tell the peer at once (RFC 5681 §4.2).
            ackNow = true
        } else {
            segmentsSinceAck += 1
            // RFC 9293 §3.8.6.3: an ACK for at least every second full-sized segment.
            if segmentsSinceAck >= 2 { ackNow = true }
        }
    }

    mutating func receiveFin(now: Instant, configuration: TCPConfiguration) {
        pendingFinSequence = nil
        receiveNext += 1
        readClosed = true
        events.formUnion([.readable, .readClosed])
        ackNow = true
        switch state {
        case .synReceived, .established:
            state = .closeWait
        case .finWait1:
            // Our FIN not yet acknowledged: simultaneous close.
            state = finAcknowledged ? .timeWait : .closing
            if state == .timeWait { timers[.timeWait] = now + configuration.timeWaitDuration }
        case .finWait2:
            state = .timeWait
            timers[.timeWait] = now + configuration.timeWaitDuration
        default:
            break
        }
        if state == .timeWait { cancelTimersForTimeWait() }
    }
}
