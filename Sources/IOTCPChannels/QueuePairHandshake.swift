import IOTCPCommon

/// What the two ends of an RDMA channel agree on before their queue pairs connect, carried in rdma_cm's
/// private data (at most 56 bytes on a reliable connection): the host proposes, the NIC side accepts the
/// same values or rejects with a reason.
///
/// Layout, little-endian: magic "IQPC" u32 @0, version u16 @4, flags u16 @6 (bit 0: busy-poll),
/// depth u32 @8, buffer bytes u32 @12, reject reason u32 @16 (0 in proposals and acceptances).
public struct QueuePairHandshake: Hashable, Sendable {
    public static let magic: UInt32 = 0x4350_5149  // "IQPC"
    public static let version: UInt16 = 1
    public static let encodedLength = 20

    public var configuration: ChannelConfiguration
    public var rejection: Rejection?

    /// Why the NIC side turned a host away.
    public enum Rejection: UInt32, Hashable, Sendable, CustomStringConvertible {
        /// Another host is attached; the NIC side serves one at a time.
        case busy = 1
        /// The proposal's depth or buffer size is outside what the NIC side accepts.
        case unusableConfiguration = 2
        /// The host speaks another version of this handshake.
        case unsupportedVersion = 3

        public var description: String {
            switch self {
            case .busy: "another host is attached to this NIC stack"
            case .unusableConfiguration: "the NIC stack does not accept the proposed queue depth or message size"
            case .unsupportedVersion: "the NIC stack speaks another version of the RDMA channel handshake"
            }
        }
    }

    public init(configuration: ChannelConfiguration, rejection: Rejection? = nil) {
        self.configuration = configuration
        self.rejection = rejection
    }

    public func encode() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.encodedLength)
        bytes.withUnsafeMutableBytes { out in
            out.storeLittleEndian(Self.magic, at: 0)
            out.storeLittleEndian(Self.version, at: 4)
            out.storeLittleEndian(UInt16(configuration.waiting == .busyPoll ? 1 : 0), at: 6)
            out.storeLittleEndian(UInt32(configuration.slotCount), at: 8)
            out.storeLittleEndian(UInt32(configuration.slotBytes), at: 12)
            out.storeLittleEndian(rejection?.rawValue ?? 0, at: 16)
        }
        return bytes
    }

    /// What a peer's private data says.
    public enum Decoded: Hashable, Sendable {
        case handshake(QueuePairHandshake)
        /// Not this protocol's private data at all (rdma_cm pads what it delivers, and a reject from
        /// the connection manager itself carries none).
        case foreign
        /// This protocol, another version.
        case otherVersion(UInt16)
        /// This protocol and version, with values no end may use.
        case malformed(String)
    }

    /// Decodes private data (which may be longer than the handshake: rdma_cm pads it).
    public static func decode(_ bytes: UnsafeRawBufferPointer) -> Decoded {
        guard bytes.count >= encodedLength, bytes.littleEndian(UInt32.self, at: 0) == magic else { return .foreign }
        let version = bytes.littleEndian(UInt16.self, at: 4)
        guard version == Self.version else { return .otherVersion(version) }
        let flags = bytes.littleEndian(UInt16.self, at: 6)
        let configuration = ChannelConfiguration(
            slotCount: Int(bytes.littleEndian(UInt32.self, at: 8)), slotBytes: Int(bytes.littleEndian(UInt32.self, at: 12)),
            waiting: flags & 1 != 0 ? .busyPoll : .doorbell)
        let reason = bytes.littleEndian(UInt32.self, at: 16)
        var rejection: Rejection?
        if reason != 0 {
            guard let known = Rejection(rawValue: reason) else { return .malformed("unknown reject reason \(reason)") }
            rejection = known
        } else if let failure = configuration.validationFailure {
            return .malformed(failure)
        } else if configuration.slotCount <= CreditWindow.controlReserve + 1 {
            return .malformed("a queue depth of \(configuration.slotCount) leaves no credit for commands")
        }
        return .handshake(QueuePairHandshake(configuration: configuration, rejection: rejection))
    }

    public static func decode(_ bytes: [UInt8]) -> Decoded {
        bytes.withUnsafeBytes { decode($0) }
    }
}

/// How a host that is connecting reacts to what the connection manager reports: keep trying while the
/// NIC side may still be starting, give up at once when retrying cannot help.
public enum QueuePairConnectPolicy {
    /// What the host saw.
    public enum Outcome: Hashable, Sendable {
        /// Address or route resolution failed (no RDMA device answers for that address yet).
        case unreachable(String)
        /// The peer's connection manager rejected the request, with this private data.
        case rejected(QueuePairHandshake.Decoded)
        /// The request went unanswered.
        case timedOut
        /// The peer accepted, with this private data.
        case accepted(QueuePairHandshake.Decoded)
    }

    public enum Decision: Hashable, Sendable {
        /// Connected with these (the NIC's) terms.
        case connected(ChannelConfiguration)
        /// Try again after a pause, until the deadline.
        case retry(String)
        /// Stop: retrying cannot help.
        case fail(String)
    }

    public static func decide(_ outcome: Outcome, proposed: ChannelConfiguration) -> Decision {
        switch outcome {
        case .unreachable(let why):
            return .retry("the NIC stack's address is not reachable over RDMA yet: \(why)")
        case .timedOut:
            return .retry("the NIC stack did not answer the connection request")
        case .rejected(.foreign):
            // The connection manager rejects for a port nobody listens on: the NIC may still be starting.
            return .retry("nothing listens at that RDMA port yet")
        case .rejected(.handshake(let answer)):
            return .fail(answer.rejection?.description ?? "the NIC stack rejected the connection without a reason")
        case .rejected(.otherVersion(let version)), .accepted(.otherVersion(let version)):
            return .fail("the NIC stack speaks RDMA channel handshake version \(version), this host \(QueuePairHandshake.version)")
        case .rejected(.malformed(let why)), .accepted(.malformed(let why)):
            return .fail("the NIC stack's handshake is malformed: \(why)")
        case .accepted(.foreign):
            return .fail("the peer accepted without this protocol's handshake: it is not an iotcp NIC stack")
        case .accepted(.handshake(let answer)):
            if let rejection = answer.rejection { return .fail(rejection.description) }
            guard answer.configuration.slotCount == proposed.slotCount, answer.configuration.slotBytes == proposed.slotBytes else {
                return .fail("the NIC stack answered with \(answer.configuration.slotCount) buffers of \(answer.configuration.slotBytes) bytes, not the \(proposed.slotCount) of \(proposed.slotBytes) proposed")
            }
            return .connected(answer.configuration)
        }
    }

    /// What the NIC side answers a proposal with: acceptance (nil) or a rejection.
    public static func answer(_ proposal: QueuePairHandshake.Decoded, busy: Bool, maximumBytes: Int) -> QueuePairHandshake.Rejection? {
        if busy { return .busy }
        switch proposal {
        case .handshake(let offer):
            if offer.rejection != nil { return .unusableConfiguration }
            return offer.configuration.slotCount * offer.configuration.slotBytes * 2 > maximumBytes ? .unusableConfiguration : nil
        case .otherVersion: return .unsupportedVersion
        case .foreign, .malformed: return .unusableConfiguration
        }
    }
}
