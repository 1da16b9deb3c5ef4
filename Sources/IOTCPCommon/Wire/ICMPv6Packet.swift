/// The flags of a Neighbor Advertisement (RFC 4861 §4.4), the high bits of its first word.
public struct NeighborAdvertisementFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// The sender is a router.
    public static let router = NeighborAdvertisementFlags(rawValue: 0x80)
    /// An answer to a solicitation (confirms reachability).
    public static let solicited = NeighborAdvertisementFlags(rawValue: 0x40)
    /// The link-layer address replaces a cached one.
    public static let override = NeighborAdvertisementFlags(rawValue: 0x20)
}

/// An ICMPv6 message (RFC 4443) with the Neighbor Discovery messages of RFC 4861. Its checksum covers the
/// IPv6 pseudo-header, so parsing and emitting take the packet's addresses.
///
/// Neighbor Discovery messages are recognised only with code 0 (any other code is `.other`, which a host
/// ignores, as RFC 4861 §6.1 and §7.1 ask). Reserved fields are written as zero and ignored when read.
public struct ICMPv6Repr: Hashable, Sendable {
    public enum Message: Hashable, Sendable {
        case destinationUnreachable(code: UInt8)
        /// The MTU of the next hop that could not take the packet (RFC 8201).
        case packetTooBig(mtu: UInt32)
        case timeExceeded(code: UInt8)
        /// `pointer` is the offset of the offending field from the start of the invoking packet.
        case parameterProblem(code: UInt8, pointer: UInt32)
        case echoRequest(identifier: UInt16, sequence: UInt16)
        case echoReply(identifier: UInt16, sequence: UInt16)
        case routerSolicitation
        case routerAdvertisement(
            currentHopLimit: UInt8, flags: UInt8, routerLifetime: UInt16, reachableTime: UInt32, retransmitTimer: UInt32)
        case neighborSolicitation(target: IPv6Address)
        case neighborAdvertisement(flags: NeighborAdvertisementFlags, target: IPv6Address)
        /// Any other type (or a Neighbor Discovery type with a non-zero code), the four bytes after the
        /// checksum kept as they were.
        case other(type: UInt8, code: UInt8, rest: UInt32)
    }

    public var message: Message

    public init(message: Message) { self.message = message }

    /// The type values (RFC 4443 §2.1, RFC 4861 §4).
    public static let destinationUnreachableType: UInt8 = 1, packetTooBigType: UInt8 = 2, timeExceededType: UInt8 = 3
    public static let parameterProblemType: UInt8 = 4, echoRequestType: UInt8 = 128, echoReplyType: UInt8 = 129
    public static let routerSolicitationType: UInt8 = 133, routerAdvertisementType: UInt8 = 134
    public static let neighborSolicitationType: UInt8 = 135, neighborAdvertisementType: UInt8 = 136

    /// The type, code and four bytes after the checksum that every message has.
    public static let minimumLength = 8

    /// Bytes of the message before its variable part (data, invoking packet or options).
    public var fixedLength: Int {
        switch message {
        case .routerAdvertisement: 16
        case .neighborSolicitation, .neighborAdvertisement: 24
        default: Self.minimumLength
        }
    }

    /// Whether this is an error message (types below 128), which must never be answered with another.
    public var isError: Bool {
        switch message {
        case .destinationUnreachable, .packetTooBig, .timeExceeded, .parameterProblem: true
        case .other(let type, _, _): type < 128
        default: false
        }
    }

    /// Parses a message, verifying its checksum against the packet's addresses unless told not to; returns
    /// the message and the bytes after its fixed part (echo data, the invoking packet, or Neighbor
    /// Discovery options).
    public static func parse(
        _ bytes: UnsafeRawBufferPointer, source: IPv6Address, destination: IPv6Address, verifyChecksum: Bool = true
    ) throws(WireError) -> (repr: ICMPv6Repr, data: UnsafeRawBufferPointer) {
        guard bytes.count >= minimumLength else {
            throw .truncated(layer: .icmpv6, needed: minimumLength, available: bytes.count)
        }
        if verifyChecksum {
            var sum = InternetChecksum()
            sum.addPseudoHeader(source: source, destination: destination, nextHeader: .icmpv6, length: bytes.count)
            sum.add(bytes: bytes)
            guard sum.verifies else { throw .badChecksum(layer: .icmpv6) }
        }
        let type = bytes[0], code = bytes[1], rest = bytes.bigEndianUInt32(at: 4)
        let first = UInt16(truncatingIfNeeded: rest >> 16), second = UInt16(truncatingIfNeeded: rest)
        var message: Message
        switch (type, code) {
        case (destinationUnreachableType, _): message = .destinationUnreachable(code: code)
        case (packetTooBigType, _): message = .packetTooBig(mtu: rest)  // the code is ignored (RFC 4443 §3.2)
        case (timeExceededType, _): message = .timeExceeded(code: code)
        case (parameterProblemType, _): message = .parameterProblem(code: code, pointer: rest)
        case (echoRequestType, 0): message = .echoRequest(identifier: first, sequence: second)
        case (echoReplyType, 0): message = .echoReply(identifier: first, sequence: second)
        case (routerSolicitationType, 0): message = .routerSolicitation
        case (routerAdvertisementType, 0) where bytes.count >= 16:
            message = .routerAdvertisement(
                currentHopLimit: bytes[4], flags: bytes[5], routerLifetime: second,
                reachableTime: bytes.bigEndianUInt32(at: 8), retransmitTimer: bytes.bigEndianUInt32(at: 12))
        case (neighborSolicitationType, 0) where bytes.count >= 24:
            message = .neighborSolicitation(target: IPv6Address.load(from: bytes, at: 8))
        case (neighborAdvertisementType, 0) where bytes.count >= 24:
            message = .neighborAdvertisement(
                flags: NeighborAdvertisementFlags(rawValue: bytes[4] & 0xE0), target: IPv6Address.load(from: bytes, at: 8))
        case (routerAdvertisementType, 0), (neighborSolicitationType, 0), (neighborAdvertisementType, 0):
            throw .truncated(layer: .icmpv6, needed: type == routerAdvertisementType ? 16 : 24, available: bytes.count)
        default: message = .other(type: type, code: code, rest: rest)
        }
        let repr = ICMPv6Repr(message: message)
        return (repr, UnsafeRawBufferPointer(rebasing: bytes[repr.fixedLength...]))
    }

    /// Writes the message followed by `data`, with the checksum over the pseudo-header and both. Returns
    /// the bytes written.
    @discardableResult
    public func emit(
        into buffer: UnsafeMutableRawBufferPointer, data: UnsafeRawBufferPointer, source: IPv6Address, destination: IPv6Address
    ) throws(WireError) -> Int {
        let fixed = fixedLength
        let length = fixed + data.count
        guard buffer.count >= length else { throw .bufferTooSmall(needed: length, available: buffer.count) }
        func put(_ type: UInt8, _ code: UInt8, _ rest: UInt32) {
            buffer[0] = type
            buffer[1] = code
            buffer.storeBigEndian(rest, at: 4)
        }
        switch message {
        case .destinationUnreachable(let code): put(Self.destinationUnreachableType, code, 0)
        case .packetTooBig(let mtu): put(Self.packetTooBigType, 0, mtu)
        case .timeExceeded(let code): put(Self.timeExceededType, code, 0)
        case .parameterProblem(let code, let pointer): put(Self.parameterProblemType, code, pointer)
        case .echoRequest(let identifier, let sequence):
            put(Self.echoRequestType, 0, UInt32(identifier) << 16 | UInt32(sequence))
        case .echoReply(let identifier, let sequence):
            put(Self.echoReplyType, 0, UInt32(identifier) << 16 | UInt32(sequence))
        case .routerSolicitation: put(Self.routerSolicitationType, 0, 0)
        case .routerAdvertisement(let hopLimit, let flags, let lifetime, let reachable, let retransmit):
            put(Self.routerAdvertisementType, 0, UInt32(hopLimit) << 24 | UInt32(flags) << 16 | UInt32(lifetime))
            buffer.storeBigEndian(reachable, at: 8)
            buffer.storeBigEndian(retransmit, at: 12)
        case .neighborSolicitation(let target):
            put(Self.neighborSolicitationType, 0, 0)
            target.store(to: buffer, at: 8)
        case .neighborAdvertisement(let flags, let target):
            put(Self.neighborAdvertisementType, 0, UInt32(flags.rawValue) << 24)
            target.store(to: buffer, at: 8)
        case .other(let type, let code, let rest): put(type, code, rest)
        }
        buffer.storeBigEndian(UInt16(0), at: 2)
        if let start = data.baseAddress, !data.isEmpty {
            (buffer.baseAddress! + fixed).copyMemory(from: start, byteCount: data.count)
        }
        var sum = InternetChecksum()
        sum.addPseudoHeader(source: source, destination: destination, nextHeader: .icmpv6, length: length)
        sum.add(bytes: UnsafeRawBufferPointer(rebasing: buffer[0..<length]))
        buffer.storeBigEndian(sum.checksum, at: 2)
        return length
    }
}
