/// The options of a Neighbor Discovery message (RFC 4861 §4.6) that a host on an Ethernet link uses: the
/// sender's or target's link-layer address and the link MTU. Other options are skipped.
public struct NeighborDiscoveryOptions: Hashable, Sendable {
    public var sourceLinkLayerAddress: MACAddress?
    public var targetLinkLayerAddress: MACAddress?
    public var mtu: UInt32?

    public init(sourceLinkLayerAddress: MACAddress? = nil, targetLinkLayerAddress: MACAddress? = nil, mtu: UInt32? = nil) {
        self.sourceLinkLayerAddress = sourceLinkLayerAddress
        self.targetLinkLayerAddress = targetLinkLayerAddress
        self.mtu = mtu
    }

    public static let sourceLinkLayerType: UInt8 = 1, targetLinkLayerType: UInt8 = 2, mtuType: UInt8 = 5

    /// Reads the options after a message's fixed part. An option of length zero makes the whole message
    /// invalid (§4.6); one that runs past the end is truncated. A link-layer address option of another
    /// length than Ethernet's (8 bytes) is skipped: it belongs to another kind of link.
    public init(parsing bytes: UnsafeRawBufferPointer) throws(WireError) {
        self.init()
        var index = 0
        while index < bytes.count {
            guard index + 2 <= bytes.count else { throw .truncated(layer: .icmpv6, needed: index + 2, available: bytes.count) }
            let type = bytes[index], length = Int(bytes[index + 1]) * 8
            guard length > 0 else { throw .badNeighborDiscoveryOption(type: type) }
            guard index + length <= bytes.count else {
                throw .truncated(layer: .icmpv6, needed: index + length, available: bytes.count)
            }
            switch type {
            case Self.sourceLinkLayerType where length == 8:
                sourceLinkLayerAddress = MACAddress.load(from: bytes, at: index + 2)
            case Self.targetLinkLayerType where length == 8:
                targetLinkLayerAddress = MACAddress.load(from: bytes, at: index + 2)
            case Self.mtuType where length == 8:
                mtu = bytes.bigEndianUInt32(at: index + 4)
            default: break
            }
            index += length
        }
    }

    /// Bytes `emit` writes: eight for each option present.
    public var encodedLength: Int {
        (sourceLinkLayerAddress == nil ? 0 : 8) + (targetLinkLayerAddress == nil ? 0 : 8) + (mtu == nil ? 0 : 8)
    }

    /// Writes the options present, source address first, then target address, then MTU; returns the bytes written.
    @discardableResult
    public func emit(into buffer: UnsafeMutableRawBufferPointer) throws(WireError) -> Int {
        guard buffer.count >= encodedLength else { throw .bufferTooSmall(needed: encodedLength, available: buffer.count) }
        var index = 0
        func put(_ type: UInt8, _ address: MACAddress?) {
            guard let address else { return }
            buffer[index] = type
            buffer[index + 1] = 1
            address.store(to: buffer, at: index + 2)
            index += 8
        }
        put(Self.sourceLinkLayerType, sourceLinkLayerAddress)
        put(Self.targetLinkLayerType, targetLinkLayerAddress)
        if let mtu {
            buffer[index] = Self.mtuType
            buffer[index + 1] = 1
            buffer.storeBigEndian(UInt16(0), at: index + 2)
            buffer.storeBigEndian(mtu, at: index + 4)
            index += 8
        }
        return index
    }
}

extension ICMPv6Repr {
    /// Whether a Neighbor Solicitation or Advertisement passes the validity checks of RFC 4861 §7.1.1 and
    /// §7.1.2 that its fields and its IPv6 header allow (code 0 and lengths are checked by `parse`): hop
    /// limit 255, so it cannot have come from off the link; a unicast target; a solicitation from the
    /// unspecified address (duplicate address detection) only to a solicited-node address and without a
    /// source link-layer option; an advertisement to a multicast address not marked solicited.
    /// Other messages are not Neighbor Discovery and return false.
    public func isValidNeighborDiscovery(
        hopLimit: UInt8, source: IPv6Address, destination: IPv6Address, options: NeighborDiscoveryOptions
    ) -> Bool {
        guard hopLimit == 255 else { return false }
        switch message {
        case .neighborSolicitation(let target):
            guard !target.isMulticast else { return false }
            if source.isUnspecified {
                return destination.high == 0xFF02 << 48 && destination.low >> 24 == 0x1FF && options.sourceLinkLayerAddress == nil
            }
            return true
        case .neighborAdvertisement(let flags, let target):
            guard !target.isMulticast else { return false }
            return !(destination.isMulticast && flags.contains(.solicited))
        default:
            return false
        }
    }
}
