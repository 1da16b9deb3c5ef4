import IOTCPCommon

// MARK: - Relayed segments joined before the wire

/// A relayed packet held back in the hope that the next one of the same splice direction continues it.
///
/// A paced sender cuts its TSO frames to about a millisecond of its rate, so N flows sharing the relay hand
/// the TAP about N thousand frames a second however fast the relay is, and every frame written costs the
/// receiving kernel a pass of its stack and a wakeup of the reader. Past the relay's frame rate the senders'
/// share shrinks, their frames shrink with it, and throughput falls off a cliff. Joining in-order data of
/// one direction, within a batch of frames read, into one super-segment (as GRO does on a real NIC) writes
/// fewer, larger frames.
struct PendingRelay {
    var active = false
    /// The splice's slot and direction (`slot << 1 | fromBackend`).
    var flow = 0
    /// Bytes held (IPv4 and TCP headers, then payload), and where the payload starts.
    var length = 0
    var headerLength = 0
    var ipHeaderLength = 0
    /// The sequence number just past the held payload (in the receiver's space), and the receiver's MSS.
    var nextSequence = SequenceNumber(0)
    var segmentSize = 0
    var source = IPv4Address(rawValue: 0)
    var destination = IPv4Address(rawValue: 0)
}

extension NICDataPlane {
    /// Packets at most this long are held for joining; longer ones are worth their write alone.
    static let coalescingThreshold = 16 * 1024
    /// Flows with a packet held at once (each holds up to 64 KiB).
    static let coalescingFlows = 32
    static let coalescingBytes = 1 << 16

    /// Holds, joins onto the flow's held packet, or leaves `packet` (rewritten, its checksum for the wire to
    /// finish) for the caller to send after the flow's held packet, which goes first. True when the packet
    /// was held or joined (it then counts as sent).
    func coalesceRelayed<O: NICOutput>(
        _ packet: UnsafeRawBufferPointer, slot: Int, fromBackend: Bool, headerLength: Int, ipHeaderLength: Int, payload: Int,
        flags: TCPFlags, segmentSize: Int, source: IPv4Address, destination: IPv4Address, output: inout O
    ) -> Bool {
        let flow = slot << 1 | (fromBackend ? 1 : 0)
        let sequence = SequenceNumber(packet.bigEndianUInt32(at: ipHeaderLength + 4))
        let joinable = payload > 0 && (flags == .ack || flags == [.ack, .psh])
        // A pure ACK with nothing but timestamps: a later one in the same batch makes it redundant (the sender
        // learns the same, later). Duplicates, SACKs and window-only updates are never thinned.
        let plainAcknowledgment = payload == 0 && flags == .ack
            && (headerLength == ipHeaderLength + 20 || Self.hasLinuxTimestamps(packet, tcp: ipHeaderLength, headerLength: headerLength)
                && headerLength == ipHeaderLength + 32)
        if let index = pendingRelayIndex(flow) {
            let held = pendingRelays[index]
            if plainAcknowledgment && held.length == held.headerLength && held.headerLength == headerLength {
                let buffer = pendingRelayBuffer(index)
                let heldAcknowledgment = SequenceNumber(UnsafeRawBufferPointer(buffer).bigEndianUInt32(at: ipHeaderLength + 8))
                let acknowledgment = SequenceNumber(packet.bigEndianUInt32(at: ipHeaderLength + 8))
                if acknowledgment > heldAcknowledgment && sameHeaders(packet, as: index, headerLength: headerLength, ipHeaderLength: ipHeaderLength) {
                    UnsafeMutableRawBufferPointer(rebasing: buffer[0..<packet.count]).copyMemory(from: packet)
                    counters.acknowledgmentsThinned += 1
                    return true
                }
            }
            if joinable && held.nextSequence == sequence && held.headerLength == headerLength && held.ipHeaderLength == ipHeaderLength
                && held.length + payload <= Int(UInt16.max) && sameHeaders(packet, as: index, headerLength: headerLength, ipHeaderLength: ipHeaderLength) {
                let buffer = pendingRelayBuffer(index)
                UnsafeMutableRawBufferPointer(rebasing: buffer[held.length..<(held.length + payload)])
                    .copyMemory(from: UnsafeRawBufferPointer(rebasing: packet[headerLength...]))
                pendingRelays[index].length += payload
                pendingRelays[index].nextSequence = sequence + payload
                // The latest acknowledgment, window and timestamps speak for the whole (a later TSval only
                // makes PAWS happier, and shortens an RTT sample by at most a batch); PSH if any had it.
                let tcp = ipHeaderLength
                func takeLatest(_ range: Range<Int>) {
                    UnsafeMutableRawBufferPointer(rebasing: buffer[range]).copyMemory(from: UnsafeRawBufferPointer(rebasing: packet[range]))
                }
                takeLatest((tcp + 8)..<(tcp + 12))  // acknowledgment
                takeLatest((tcp + 14)..<(tcp + 16))  // window
                if Self.hasLinuxTimestamps(packet, tcp: tcp, headerLength: headerLength) { takeLatest((tcp + 24)..<(tcp + 32)) }
                buffer[tcp + 13] |= flags.rawValue
                counters.relayedSegmentsJoined += 1
                return true
            }
            flushRelayed(index, output: &output)
        }
        guard plainAcknowledgment || joinable && packet.count <= Self.coalescingThreshold else { return false }
        let index: Int
        if pendingRelayCount < Self.coalescingFlows {
            index = pendingRelays.firstIndex { !$0.active }!
        } else {
            // Every place taken: the next in turn goes to the wire to make room.
            index = pendingRelayVictim
            pendingRelayVictim = (pendingRelayVictim + 1) % Self.coalescingFlows
            flushRelayed(index, output: &output)
        }
        UnsafeMutableRawBufferPointer(rebasing: pendingRelayBuffer(index)[0..<packet.count]).copyMemory(from: packet)
        pendingRelays[index] = PendingRelay(active: true, flow: flow, length: packet.count, headerLength: headerLength,
                                            ipHeaderLength: ipHeaderLength, nextSequence: sequence + payload, segmentSize: segmentSize,
                                            source: source, destination: destination)
        pendingRelayCount += 1
        return true
    }

    private func pendingRelayIndex(_ flow: Int) -> Int? {
        guard pendingRelayCount > 0 else { return nil }
        for index in pendingRelays.indices where pendingRelays[index].active && pendingRelays[index].flow == flow { return index }
        return nil
    }

    private func pendingRelayBuffer(_ index: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(rebasing: relayCoalescing[(index * Self.coalescingBytes)..<((index + 1) * Self.coalescingBytes)])
    }

    /// Whether the TCP options are Linux's usual NOP, NOP, timestamps first (TSval and TSecr at 24-31).
    static func hasLinuxTimestamps(_ packet: UnsafeRawBufferPointer, tcp: Int, headerLength: Int) -> Bool {
        headerLength >= tcp + 32 && packet[tcp + 20] == 1 && packet[tcp + 21] == 1 && packet[tcp + 22] == 8 && packet[tcp + 23] == 10
    }

    /// Whether `packet`'s headers are the held packet's but for what joining changes or takes from the
    /// latest: the IPv4 length, ID and checksum; the TCP sequence, acknowledgment, flags, window, checksum,
    /// and timestamps where they sit as Linux puts them.
    private func sameHeaders(_ packet: UnsafeRawBufferPointer, as index: Int, headerLength: Int, ipHeaderLength: Int) -> Bool {
        let held = UnsafeRawBufferPointer(pendingRelayBuffer(index))
        let tcp = ipHeaderLength
        let timestamps = Self.hasLinuxTimestamps(packet, tcp: tcp, headerLength: headerLength)
            && Self.hasLinuxTimestamps(held, tcp: tcp, headerLength: headerLength)
        for offset in 0..<headerLength {
            switch offset {
            case 2, 3, 4, 5, 10, 11: continue
            case (tcp + 4)...(tcp + 11), tcp + 13, tcp + 14, tcp + 15, tcp + 16, tcp + 17: continue
            case (tcp + 24)...(tcp + 31) where timestamps: continue
            default: if held[offset] != packet[offset] { return false }
            }
        }
        return true
    }

    /// Sends every held packet (the end of a batch of frames, a timer, a segment of the relay's own).
    public func flushRelayed<O: NICOutput>(output: inout O) {
        guard pendingRelayCount > 0 else { return }
        for index in pendingRelays.indices where pendingRelays[index].active { flushRelayed(index, output: &output) }
    }

    /// Sends the held packet of one splice direction, if any, before one of its own goes out unheld.
    func flushRelayed<O: NICOutput>(slot: Int, fromBackend: Bool, output: inout O) {
        if let index = pendingRelayIndex(slot << 1 | (fromBackend ? 1 : 0)) { flushRelayed(index, output: &output) }
    }

    /// Lets go of what is held, unsent (every splice forgotten at once).
    func dropRelayed() {
        for index in pendingRelays.indices { pendingRelays[index].active = false }
        pendingRelayCount = 0
    }

    /// Sends one held packet: lengths and IPv4 checksum set, the TCP field the pseudo-header sum, cut at the
    /// receiver's MSS by the wire.
    private func flushRelayed<O: NICOutput>(_ index: Int, output: inout O) {
        let held = pendingRelays[index]
        guard held.active else { return }
        pendingRelays[index].active = false
        pendingRelayCount -= 1
        let packet = UnsafeMutableRawBufferPointer(rebasing: pendingRelayBuffer(index)[0..<held.length])
        packet.storeBigEndian(UInt16(held.length), at: 2)
        IPv4Repr.fillChecksum(header: UnsafeMutableRawBufferPointer(rebasing: packet[0..<held.ipHeaderLength]))
        let offload = finishUnsummed(packet, ipHeaderLength: held.ipHeaderLength, headerLength: held.headerLength,
                                     segmentSize: held.segmentSize, source: held.source, destination: held.destination)
        if output.transmit(headers: UnsafeRawBufferPointer(packet), payload: UnsafeRawBufferPointer(start: nil, count: 0), offload: offload) == .sent {
            counters.packetsOut += 1
            counters.bytesOut += held.length
        } else {
            counters.wireRefusals += 1  // the peer sends it again
        }
    }

    /// Readies a relayed packet whose TCP checksum the wire finishes: the field gets the pseudo-header sum of
    /// its new addresses and length (incremental updates do not apply to a partial sum), and a payload
    /// longer than `segmentSize` is cut there by the wire.
    func finishUnsummed(
        _ packet: UnsafeMutableRawBufferPointer, ipHeaderLength: Int, headerLength: Int, segmentSize: Int,
        source: IPv4Address, destination: IPv4Address
    ) -> PacketOffload {
        TCPRepr.fillPseudoHeaderChecksum(segment: UnsafeMutableRawBufferPointer(rebasing: packet[ipHeaderLength...]),
                                          source: source, destination: destination)
        let cut = packet.count - headerLength > segmentSize ? segmentSize : 0
        if cut > 0 { counters.superSegmentsRelayed += 1 }
        return PacketOffload(segmentSize: UInt16(cut), headerLength: UInt16(headerLength), transportStart: UInt16(ipHeaderLength))
    }
}
