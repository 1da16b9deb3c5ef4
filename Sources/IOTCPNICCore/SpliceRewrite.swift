import IOTCPCommon

/// One connection of a splice as it stands when the splice starts: its endpoints, where each side's
/// sequence space has got to, its timestamps and window scales.
public struct SpliceSide: Hashable, Sendable {
    public var localAddress: IPAddress
    public var remoteAddress: IPAddress
    public var localPort: UInt16
    public var remotePort: UInt16
    /// Our SND.NXT and RCV.NXT on this connection.
    public var sendNext: SequenceNumber
    public var receiveNext: SequenceNumber
    /// Our TSval now and the peer's TS.Recent; nil when the connection has no timestamps.
    public var timestamps: (value: UInt32, recent: UInt32)?
    /// The shift the peer's window fields carry, and the one ours carry.
    public var peerWindowShift: UInt8
    public var localWindowShift: UInt8

    public init(
        localAddress: IPAddress, remoteAddress: IPAddress, localPort: UInt16, remotePort: UInt16, sendNext: SequenceNumber,
        receiveNext: SequenceNumber, timestamps: (value: UInt32, recent: UInt32)?, peerWindowShift: UInt8, localWindowShift: UInt8
    ) {
        self.localAddress = localAddress
        self.remoteAddress = remoteAddress
        self.localPort = localPort
        self.remotePort = remotePort
        self.sendNext = sendNext
        self.receiveNext = receiveNext
        self.timestamps = timestamps
        self.peerWindowShift = peerWindowShift
        self.localWindowShift = localWindowShift
    }

    public static func == (lhs: SpliceSide, rhs: SpliceSide) -> Bool {
        lhs.localAddress == rhs.localAddress && lhs.remoteAddress == rhs.remoteAddress && lhs.localPort == rhs.localPort
            && lhs.remotePort == rhs.remotePort && lhs.sendNext == rhs.sendNext && lhs.receiveNext == rhs.receiveNext
            && lhs.timestamps?.value == rhs.timestamps?.value && lhs.timestamps?.recent == rhs.timestamps?.recent
            && lhs.peerWindowShift == rhs.peerWindowShift && lhs.localWindowShift == rhs.localWindowShift
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(localPort)
        hasher.combine(remotePort)
        hasher.combine(sendNext)
        hasher.combine(receiveNext)
    }
}

/// One direction of a splice (AccelTCP's connection splicing): a segment that arrives from one
/// connection's peer leaves, rewritten in place, as a segment of the other connection to its peer. The
/// bytes the first peer sends continue the second connection's stream from where it stood, its
/// acknowledgments (and SACK blocks) acknowledge the second peer's bytes, its timestamps continue ours,
/// and its window is rescaled; both checksums are updated incrementally (RFC 1624), so a segment costs a
/// few dozen 16-bit sums whatever its length.
///
/// Pure: no state changes per segment, so the same rewrite serves every segment, retransmissions included.
/// It needs full checksums on what it is given (a partial one, as a virtio header may mark, must be
/// finished first). Over IPv6 the same, with 16-byte addresses in the pseudo-header and no header checksum;
/// both connections of a splice are of one family, so a packet keeps its size.
public struct SpliceRewrite: Hashable, Sendable {
    public var source: IPAddress
    public var destination: IPAddress
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    /// Added to SEG.SEQ, to SEG.ACK and the SACK edges, to TSval and to TSecr.
    public var sequenceDelta: UInt32
    public var acknowledgmentDelta: UInt32
    public var timestampValueDelta: UInt32
    public var timestampEchoDelta: UInt32
    /// The shift the arriving window field carries, and the one the leaving field must carry.
    public var incomingWindowShift: UInt8
    public var outgoingWindowShift: UInt8

    public init(
        source: IPAddress, destination: IPAddress, sourcePort: UInt16, destinationPort: UInt16, sequenceDelta: UInt32,
        acknowledgmentDelta: UInt32, timestampValueDelta: UInt32, timestampEchoDelta: UInt32, incomingWindowShift: UInt8,
        outgoingWindowShift: UInt8
    ) {
        self.source = source
        self.destination = destination
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.sequenceDelta = sequenceDelta
        self.acknowledgmentDelta = acknowledgmentDelta
        self.timestampValueDelta = timestampValueDelta
        self.timestampEchoDelta = timestampEchoDelta
        self.incomingWindowShift = incomingWindowShift
        self.outgoingWindowShift = outgoingWindowShift
    }

    /// The rewrite for segments from `from`'s peer leaving toward `to`'s peer; nil when the two connections
    /// cannot be joined (one has timestamps and the other not: there would be nothing to echo, or no place
    /// to put our clock; or they are of two families: a header would change size).
    public static func joining(from: SpliceSide, to: SpliceSide) -> SpliceRewrite? {
        guard (from.timestamps == nil) == (to.timestamps == nil), from.remoteAddress.isIPv4 == to.remoteAddress.isIPv4,
              from.localAddress.isIPv4 == from.remoteAddress.isIPv4, to.localAddress.isIPv4 == to.remoteAddress.isIPv4
        else { return nil }
        return SpliceRewrite(
            source: to.localAddress, destination: to.remoteAddress, sourcePort: to.localPort, destinationPort: to.remotePort,
            // The next byte from `from`'s peer is the next byte we owe `to`'s peer.
            sequenceDelta: UInt32(bitPattern: Int32(truncatingIfNeeded: to.sendNext - from.receiveNext)),
            // Their acknowledgment of what we sent them is our acknowledgment of what `to`'s peer sent.
            acknowledgmentDelta: UInt32(bitPattern: Int32(truncatingIfNeeded: to.receiveNext - from.sendNext)),
            // Their clock continues ours on `to`; their echo of our clock becomes an echo of `to`'s peer's.
            timestampValueDelta: (to.timestamps?.value ?? 0) &- (from.timestamps?.recent ?? 0),
            timestampEchoDelta: (to.timestamps?.recent ?? 0) &- (from.timestamps?.value ?? 0),
            incomingWindowShift: from.peerWindowShift, outgoingWindowShift: to.localWindowShift)
    }

    /// Rewrites an IPv4 or IPv6 packet (of the rewrite's family) holding a TCP segment, in place. False,
    /// leaving it untouched, when it is not one (too short, another protocol, fragmented, IPv6 extension
    /// headers, malformed options).
    public func apply(to packet: UnsafeMutableRawBufferPointer) -> Bool {
        let bytes = UnsafeRawBufferPointer(packet)
        let ipv6 = !source.isIPv4
        let ipHeader: Int, total: Int
        if ipv6 {
            // TCP straight after the fixed header: the relay leaves extension headers out before it gets here.
            guard bytes.count >= 60, bytes[0] >> 4 == 6, bytes[6] == 6 else { return false }
            ipHeader = IPv6PacketView.headerLength
            total = ipHeader + Int(bytes.bigEndianUInt16(at: 4))
            guard total <= bytes.count, total >= ipHeader + 20 else { return false }
        } else {
            guard bytes.count >= 40, bytes[0] >> 4 == 4 else { return false }
            ipHeader = Int(bytes[0] & 0x0F) * 4
            total = Int(bytes.bigEndianUInt16(at: 2))
            guard ipHeader >= 20, total <= bytes.count, total >= ipHeader + 20, bytes[9] == 6,
                  bytes.bigEndianUInt16(at: 6) & 0x3FFF == 0 else { return false }
        }
        let tcp = ipHeader
        let tcpHeader = Int(bytes[tcp + 12] >> 4) * 4
        guard tcpHeader >= 20, tcp + tcpHeader <= total else { return false }
        // Find the option fields first, so a malformed list leaves the packet as it was.
        var timestampAt: Int?
        var sackBlocks: (at: Int, count: Int)?
        var option = tcp + 20
        while option < tcp + tcpHeader {
            let kind = bytes[option]
            if kind == 0 { break }
            if kind == 1 { option += 1; continue }
            guard option + 1 < tcp + tcpHeader else { return false }
            let length = Int(bytes[option + 1])
            guard length >= 2, option + length <= tcp + tcpHeader else { return false }
            if kind == 8 && length == 10 { timestampAt = option + 2 }
            if kind == 5 && (length - 2) % 8 == 0 { sackBlocks = (option + 2, (length - 2) / 8) }
            option += length
        }
        var checksum = bytes.bigEndianUInt16(at: tcp + 16)
        // The pseudo-header's addresses and the ports.
        if ipv6 {
            Self.replace128(packet, at: 8, with: source.bits, checksum: &checksum)
            Self.replace128(packet, at: 24, with: destination.bits, checksum: &checksum)
        } else {
            Self.replace32(packet, at: 12, with: UInt32(truncatingIfNeeded: source.bits.low), checksum: &checksum)
            Self.replace32(packet, at: 16, with: UInt32(truncatingIfNeeded: destination.bits.low), checksum: &checksum)
        }
        Self.replace16(packet, at: tcp, with: sourcePort, checksum: &checksum)
        Self.replace16(packet, at: tcp + 2, with: destinationPort, checksum: &checksum)
        Self.replace32(packet, at: tcp + 4, with: bytes.bigEndianUInt32(at: tcp + 4) &+ sequenceDelta, checksum: &checksum)
        if bytes[tcp + 13] & 0x10 != 0 {
            Self.replace32(packet, at: tcp + 8, with: bytes.bigEndianUInt32(at: tcp + 8) &+ acknowledgmentDelta, checksum: &checksum)
        }
        let window = UInt64(bytes.bigEndianUInt16(at: tcp + 14)) << UInt64(incomingWindowShift)
        Self.replace16(packet, at: tcp + 14, with: UInt16(min(window >> UInt64(outgoingWindowShift), 65535)), checksum: &checksum)
        if let at = timestampAt {
            Self.replace32(packet, at: at, with: bytes.bigEndianUInt32(at: at) &+ timestampValueDelta, checksum: &checksum)
            let echo = bytes.bigEndianUInt32(at: at + 4)
            // A zero echo means "none" (RFC 7323 §3.2): it stays zero.
            if echo != 0 { Self.replace32(packet, at: at + 4, with: echo &+ timestampEchoDelta, checksum: &checksum) }
        }
        if let (at, count) = sackBlocks {
            for edge in 0..<(count * 2) {
                let place = at + edge * 4
                Self.replace32(packet, at: place, with: bytes.bigEndianUInt32(at: place) &+ acknowledgmentDelta, checksum: &checksum)
            }
        }
        packet.storeBigEndian(checksum, at: tcp + 16)
        // The IPv4 header: twenty-odd bytes, summed again whole (IPv6's has no checksum).
        if !ipv6 { IPv4Repr.fillChecksum(header: UnsafeMutableRawBufferPointer(rebasing: packet[0..<ipHeader])) }
        return true
    }

    /// RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m'), for one 16-bit field changing from m to m'.
    @inline(__always)
    static func adjust(_ checksum: inout UInt16, old: UInt16, new: UInt16) {
        var sum = UInt32(~checksum) + UInt32(~old) + UInt32(new)
        sum = (sum & 0xFFFF) + (sum >> 16)
        sum = (sum & 0xFFFF) + (sum >> 16)
        checksum = ~UInt16(truncatingIfNeeded: sum)
    }

    /// `offset` counts from the packet's start; the TCP header starts at a multiple of four, so an odd offset
    /// is a field straddling two of the checksum's 16-bit words (an option after a single NOP). Its bytes
    /// count there swapped, and the one's complement sum commutes with swapping bytes: adjust by the swapped
    /// values.
    @inline(__always)
    static func replace16(_ packet: UnsafeMutableRawBufferPointer, at offset: Int, with value: UInt16, checksum: inout UInt16) {
        let old = UnsafeRawBufferPointer(packet).bigEndianUInt16(at: offset)
        guard old != value else { return }
        if offset & 1 == 0 {
            adjust(&checksum, old: old, new: value)
        } else {
            adjust(&checksum, old: old.byteSwapped, new: value.byteSwapped)
        }
        packet.storeBigEndian(value, at: offset)
    }

    @inline(__always)
    static func replace128(_ packet: UnsafeMutableRawBufferPointer, at offset: Int, with address: IPv6Address, checksum: inout UInt16) {
        for word in 0..<4 {
            let half = word < 2 ? address.high : address.low
            let value = UInt32(truncatingIfNeeded: word & 1 == 0 ? half >> 32 : half)
            replace32(packet, at: offset + word * 4, with: value, checksum: &checksum)
        }
    }

    @inline(__always)
    static func replace32(_ packet: UnsafeMutableRawBufferPointer, at offset: Int, with value: UInt32, checksum: inout UInt16) {
        replace16(packet, at: offset, with: UInt16(truncatingIfNeeded: value >> 16), checksum: &checksum)
        replace16(packet, at: offset + 2, with: UInt16(truncatingIfNeeded: value), checksum: &checksum)
    }
}
