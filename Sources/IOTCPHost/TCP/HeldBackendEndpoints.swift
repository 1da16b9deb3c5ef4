import IOTCPCommon

/// Backends' 4-tuples in a TIME-WAIT the host keeps for them: a splice whose client closed first left the
/// backend believing our side closed first, so our side owes the backend the 2 MSL wait before the 4-tuple
/// carries a new connection (RFC 9293 §3.6); the NIC's relay held it only for the linger. `connect` does not
/// pick a held 4-tuple.
///
/// Every hold lasts the same time (the engine's `timeWaitDuration`) and starts at a later instant than the
/// one before, so the holds end in the order they began: expiry is a walk from the front of `order`, and
/// nothing is kept past its end for longer than the next `hold` or `expire` call.
struct HeldBackendEndpoints {
    private var until: [TCPEngine.EndpointKey: Instant] = [:]
    private var order: [(key: TCPEngine.EndpointKey, until: Instant)] = []
    private var first = 0

    /// 4-tuples held now (some may have ended since the last `expire`).
    var count: Int { until.count }

    func holds(_ key: TCPEngine.EndpointKey, now: Instant) -> Bool {
        guard let deadline = until[key] else { return false }
        return now < deadline
    }

    mutating func hold(_ key: TCPEngine.EndpointKey, until deadline: Instant, now: Instant) {
        expire(now: now)
        until[key] = deadline  // a later hold of the same 4-tuple replaces the earlier one
        order.append((key, deadline))
    }

    mutating func expire(now: Instant) {
        while first < order.count && order[first].until <= now {
            let ended = order[first]
            if until[ended.key] == ended.until { until[ended.key] = nil }
            first += 1
        }
        // The ended front is dropped once it is most of the array, so each entry is moved at most once more.
        if first >= 64 && first * 2 >= order.count {
            order.removeFirst(first)
            first = 0
        }
    }
}
