import IOTCPCommon

/// The numbers a TCP host derives from its secret, so that an off-path attacker cannot guess them: initial
/// sequence numbers (RFC 6528), per-connection timestamp offsets, and SYN cookies (RFC 4987 §3.6). Pure:
/// the endpoints and the time come in, numbers go out; the engine decides when to use them.
struct ConnectionSecrets {
    let key0: UInt64
    let key1: UInt64
    let localAddress: IPv4Address

    // MARK: - ISNs and timestamp offsets

    /// RFC 6528: a 4-microsecond clock plus a keyed hash of the connection's endpoints.
    func initialSequence(remote: IPv4Address, remotePort: UInt16, localPort: UInt16, now: Instant) -> SequenceNumber {
        var hasher = SipHasher24(key0: key0, key1: key1)
        hasher.combine(localAddress.rawValue)
        hasher.combine(localPort)
        hasher.combine(remote.rawValue)
        hasher.combine(remotePort)
        return SequenceNumber(UInt32(truncatingIfNeeded: now.nanoseconds / 4000) &+ UInt32(truncatingIfNeeded: hasher.finalize()))
    }

    /// A random-looking offset for the connection's TSval, so timestamps reveal neither uptime nor other flows.
    func timestampOffset(remote: IPv4Address, remotePort: UInt16, localPort: UInt16) -> UInt32 {
        var hasher = SipHasher24(key0: key1, key1: key0 ^ 0x7473)
        hasher.combine(remote.rawValue)
        hasher.combine(remotePort)
        hasher.combine(localPort)
        return UInt32(truncatingIfNeeded: hasher.finalize())
    }

    // MARK: - SYN cookies

    /// MSS values a cookie can name in three bits.
    static let cookieSegmentSizes: [UInt16] = [216, 536, 1200, 1220, 1380, 1400, 1440, 1460]
    /// A cookie's counter advances every 64 seconds; one from the current or the previous period is accepted.
    static let cookiePeriod = 64 * Nanoseconds.second

    /// What a valid cookie gives back: the connection's ISN and the options its SYN asked for.
    struct CookieParameters: Equatable {
        var initialSequence: SequenceNumber
        var peerSegmentSize: Int
        /// The peer's window shift, nil when it did not offer window scaling.
        var windowShift: UInt8?
        var selectiveAcknowledgments: Bool
    }

    /// The stateless SYN-ACK answering `syn`: its sequence number is the cookie (5 bits of counter, 3 of MSS,
    /// 24 of keyed hash); window scale and SACK-permitted ride in the low bits of our timestamp (as Linux
    /// does) when the peer sent timestamps, and are not offered otherwise.
    func cookieReply(to syn: TCPRepr, remote: IPv4Address, now: Instant, configuration: TCPConfiguration) -> TCPRepr {
        let peerMSS = syn.options.maximumSegmentSize ?? 536
        let index = Self.cookieSegmentSizes.lastIndex { $0 <= peerMSS } ?? 0
        let counter = cookieCounter(now)
        let cookie = (counter & 31) << 27 | UInt32(index) << 24
            | cookieHash(remote: remote, remotePort: syn.sourcePort, localPort: syn.destinationPort,
                         peerSequence: syn.sequenceNumber, counter: counter)
        var options = TCPOptions(maximumSegmentSize: configuration.maximumSegmentSize)
        if let timestamps = syn.options.timestamps, configuration.timestamps {
            // 4 bits of shift (15: none), 1 bit of SACK.
            let shift: UInt32 = syn.options.windowScale.map { UInt32(min($0, 14)) } ?? 15
            let sack: UInt32 = syn.options.sackPermitted && configuration.selectiveAcknowledgments ? 1 : 0
            let clock = UInt32(truncatingIfNeeded: now.nanoseconds / Nanoseconds.millisecond)
            options.timestamps = TCPTimestamps(value: (clock & ~0x1F) | shift << 1 | sack, echoReply: timestamps.value)
            if shift != 15 { options.windowScale = configuration.receiveWindowShift }
            options.sackPermitted = sack == 1
        }
        return TCPRepr(
            sourcePort: syn.destinationPort, destinationPort: syn.sourcePort, sequenceNumber: SequenceNumber(cookie),
            acknowledgmentNumber: syn.sequenceNumber + 1, flags: [.syn, .ack],
            window: UInt16(min(configuration.receiveBufferBytes, 65535)), options: options)
    }

    /// Checks the cookie an ACK returns (its acknowledgment number less one) against this period's and the
    /// previous one's; nil when it is not one of ours.
    func verifyCookie(in ack: TCPRepr, remote: IPv4Address, now: Instant) -> CookieParameters? {
        let cookie = ack.acknowledgmentNumber.rawValue &- 1
        let peerSequence = ack.sequenceNumber - 1
        let current = cookieCounter(now)
        let valid = [current, current &- 1].contains { counter in
            cookie >> 27 == counter & 31
                && cookie & 0x00FF_FFFF == cookieHash(remote: remote, remotePort: ack.sourcePort, localPort: ack.destinationPort,
                                                      peerSequence: peerSequence, counter: counter)
        }
        guard valid else { return nil }
        var parameters = CookieParameters(
            initialSequence: SequenceNumber(cookie), peerSegmentSize: Int(Self.cookieSegmentSizes[Int(cookie >> 24 & 7)]),
            windowShift: nil, selectiveAcknowledgments: false)
        if let echoed = ack.options.timestamps?.echoReply {
            let encodedShift = UInt8(echoed >> 1 & 0xF)
            parameters.windowShift = encodedShift == 15 ? nil : encodedShift
            parameters.selectiveAcknowledgments = echoed & 1 == 1
        }
        return parameters
    }

    private func cookieCounter(_ now: Instant) -> UInt32 { UInt32(truncatingIfNeeded: now.nanoseconds / Self.cookiePeriod) }

    private func cookieHash(remote: IPv4Address, remotePort: UInt16, localPort: UInt16, peerSequence: SequenceNumber, counter: UInt32) -> UInt32 {
        var hasher = SipHasher24(key0: key0, key1: key1 ^ 0xC00C1E)
        hasher.combine(remote.rawValue)
        hasher.combine(localAddress.rawValue)
        hasher.combine(remotePort)
        hasher.combine(localPort)
        hasher.combine(peerSequence.rawValue)
        hasher.combine(counter)
        return UInt32(truncatingIfNeeded: hasher.finalize()) & 0x00FF_FFFF
    }
}
