/// Stateless connection setup (RFC 4987 §3.6): the SYN-ACK's sequence number carries what the SYN asked for,
/// so nothing is kept until the client's ACK returns it. Pure: endpoints and time in, segments and parameters
/// out. The host uses it when its backlog is full; the NIC half uses it for every SYN to a port the host
/// asked it to answer (LISTEN), so a SYN flood reaches neither the host nor the NIC's memory.
///
/// The layout follows Linux's: the cookie is 5 bits of a 64-second counter, 3 bits naming the peer's MSS in
/// a table, and 24 bits of keyed hash; when the SYN carried timestamps, the low 5 bits of our TSval hold the
/// peer's window shift (4 bits, 15 for none) and SACK-permitted (1 bit), and the ACK's TSecr brings them back.
/// Without timestamps there is nowhere to keep them, so neither is offered.
public struct SYNCookies: Sendable {
    public let key0: UInt64
    public let key1: UInt64

    public init(key0: UInt64, key1: UInt64) {
        self.key0 = key0
        self.key1 = key1
    }

    /// A jar with fresh random keys.
    public static func random() -> SYNCookies {
        var generator = SystemRandomNumberGenerator()
        return SYNCookies(key0: generator.next(), key1: generator.next())
    }

    /// MSS values a cookie can name in three bits (Linux's IPv4 table, plus 216 for tiny links).
    public static let segmentSizes: [UInt16] = [216, 536, 1200, 1220, 1380, 1400, 1440, 1460]
    /// A cookie's counter advances every 64 seconds; one from the current or the previous period is accepted.
    public static let period = 64 * Nanoseconds.second

    /// What a valid cookie gives back: the connection's ISN and the options its SYN asked for.
    public struct Parameters: Hashable, Sendable {
        public var initialSequence: SequenceNumber
        public var peerSegmentSize: Int
        /// The peer's window shift, nil when it did not offer window scaling (or sent no timestamps).
        public var windowShift: UInt8?
        public var selectiveAcknowledgments: Bool
        /// The handshake's round trip in nanoseconds, from the SYN-ACK's TSval the ACK echoes (nil without
        /// timestamps): at most 31 ms long, as the TSval's low five bits hold the options, not time.
        public var handshakeRoundTrip: UInt64?

        public init(
            initialSequence: SequenceNumber, peerSegmentSize: Int, windowShift: UInt8?, selectiveAcknowledgments: Bool,
            handshakeRoundTrip: UInt64? = nil
        ) {
            self.initialSequence = initialSequence
            self.peerSegmentSize = peerSegmentSize
            self.windowShift = windowShift
            self.selectiveAcknowledgments = selectiveAcknowledgments
            self.handshakeRoundTrip = handshakeRoundTrip
        }
    }

    /// The stateless SYN-ACK answering `syn`, sent from `local` to `remote` by a listener with `options`.
    public func reply(to syn: TCPRepr, remote: IPv4Address, local: IPv4Address, now: Instant, options listener: ListenerOptions) -> TCPRepr {
        reply(to: syn, remote: IPAddress(remote), local: IPAddress(local), now: now, options: listener)
    }

    /// The same for endpoints of either family (both of one).
    public func reply(to syn: TCPRepr, remote: IPAddress, local: IPAddress, now: Instant, options listener: ListenerOptions) -> TCPRepr {
        let peerMSS = syn.options.maximumSegmentSize ?? 536
        let index = Self.segmentSizes.lastIndex { $0 <= peerMSS } ?? 0
        let counter = Self.counter(now)
        let cookie = (counter & 31) << 27 | UInt32(index) << 24
            | hash(remote: remote, local: local, remotePort: syn.sourcePort, localPort: syn.destinationPort,
                   peerSequence: syn.sequenceNumber, counter: counter, segmentSizeIndex: UInt8(index))
        var options = TCPOptions(maximumSegmentSize: listener.maximumSegmentSize)
        if let timestamps = syn.options.timestamps, listener.timestamps {
            let shift: UInt32 = syn.options.windowScale.map { UInt32(min($0, 14)) } ?? 15
            let sack: UInt32 = syn.options.sackPermitted && listener.selectiveAcknowledgments ? 1 : 0
            let bits = shift << 1 | sack
            let clock = UInt32(truncatingIfNeeded: now.nanoseconds / Nanoseconds.millisecond)
            // The low bits are the options, not time: never let them put the TSval ahead of the clock, or the
            // connection's later TSvals (from the clock) would look older than this one to the peer's PAWS.
            var value = (clock & ~0x1F) | bits
            if bits > clock & 0x1F { value &-= 32 }
            options.timestamps = TCPTimestamps(value: value, echoReply: timestamps.value)
            if shift != 15 { options.windowScale = listener.windowShift }
            options.sackPermitted = sack == 1
        }
        return TCPRepr(
            sourcePort: syn.destinationPort, destinationPort: syn.sourcePort, sequenceNumber: SequenceNumber(cookie),
            acknowledgmentNumber: syn.sequenceNumber + 1, flags: [.syn, .ack], window: listener.window, options: options)
    }

    /// Checks the cookie an ACK returns (its acknowledgment number less one) against this period's and the
    /// previous one's; nil when it is not one of ours.
    public func verify(_ ack: TCPRepr, remote: IPv4Address, local: IPv4Address, now: Instant) -> Parameters? {
        verify(ack, remote: IPAddress(remote), local: IPAddress(local), now: now)
    }

    /// The same for endpoints of either family (both of one).
    public func verify(_ ack: TCPRepr, remote: IPAddress, local: IPAddress, now: Instant) -> Parameters? {
        let cookie = ack.acknowledgmentNumber.rawValue &- 1
        let peerSequence = ack.sequenceNumber - 1
        let current = Self.counter(now)
        var valid = false
        for counter in [current, current &- 1] where cookie >> 27 == counter & 31 {
            valid = valid || cookie & 0x00FF_FFFF == hash(remote: remote, local: local, remotePort: ack.sourcePort,
                                                          localPort: ack.destinationPort, peerSequence: peerSequence, counter: counter,
                                                          segmentSizeIndex: UInt8(cookie >> 24 & 7))
        }
        guard valid else { return nil }
        var parameters = Parameters(
            initialSequence: SequenceNumber(cookie), peerSegmentSize: Int(Self.segmentSizes[Int(cookie >> 24 & 7)]),
            windowShift: nil, selectiveAcknowledgments: false)
        if let echoed = ack.options.timestamps?.echoReply {
            let encodedShift = UInt8(echoed >> 1 & 0xF)
            parameters.windowShift = encodedShift == 15 ? nil : min(encodedShift, 14)
            parameters.selectiveAcknowledgments = echoed & 1 == 1
            // Our TSval was the clock in milliseconds, never ahead of it (`reply`): the time since is the round
            // trip, up to 31 ms over. A connection without it starts with the 1 s RTO of RFC 6298 §2.1.
            let elapsed = Int32(bitPattern: UInt32(truncatingIfNeeded: now.nanoseconds / Nanoseconds.millisecond) &- echoed)
            if elapsed >= 0 && elapsed < 60_000 { parameters.handshakeRoundTrip = UInt64(elapsed) * Nanoseconds.millisecond }
        }
        return parameters
    }

    static func counter(_ now: Instant) -> UInt32 { UInt32(truncatingIfNeeded: now.nanoseconds / period) }

    /// The MSS index is hashed too, so a forged cookie cannot pick its MSS: only the whole 27 bits verify.
    func hash(
        remote: IPAddress, local: IPAddress, remotePort: UInt16, localPort: UInt16, peerSequence: SequenceNumber, counter: UInt32,
        segmentSizeIndex: UInt8
    ) -> UInt32 {
        var hasher = SipHasher24(key0: key0, key1: key1 ^ 0xC00C1E)
        hasher.combine(remote)
        hasher.combine(local)
        hasher.combine(remotePort)
        hasher.combine(localPort)
        hasher.combine(peerSequence.rawValue)
        hasher.combine(counter)
        hasher.combine(segmentSizeIndex)
        return UInt32(truncatingIfNeeded: hasher.finalize()) & 0x00FF_FFFF
    }
}

/// RFC 6191 (and RFC 1122 §4.2.2.13) as Linux applies it: may a SYN (or the ACK of a handshake the NIC made,
/// by its ISN) for endpoints in TIME-WAIT start a new connection? Not if its timestamp is older than the
/// last one seen (PAWS); yes if it is newer, or if its sequence number is past the old connection's. A
/// client reusing a port within the same millisecond sends an equal TSval and a larger ISN: that is a new
/// connection too. Both halves use this one rule (the host's TIME-WAIT, the NIC's for connections it ends).
public enum TimeWaitReuse {
    public static func accepts(
        timestamp: UInt32?, initialSequence: SequenceNumber, recentTimestamp: UInt32?, receiveNext: SequenceNumber
    ) -> Bool {
        if let timestamp, let recentTimestamp {
            let newer = Int32(bitPattern: timestamp &- recentTimestamp)
            if newer < 0 { return false }
            if newer > 0 { return true }
        }
        return initialSequence > receiveNext
    }
}
