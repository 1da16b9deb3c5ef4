import IOTCPCommon

/// Connection splicing (AccelTCP): once a proxy has read a client's request and opened a backend
/// connection, the host joins the two with SPLICE and forgets both. From then each peer's segments are
/// relayed to the other here, rewritten in place (`SpliceRewrite`: addresses, ports, sequence and
/// acknowledgment numbers, SACK edges, timestamps, window scale; checksums adjusted, not recomputed): the
/// payload never crosses to the host. The two peers run TCP end to end through the relay (retransmission,
/// flow and congestion control are theirs), so what is kept here per splice is small and fixed: the
/// rewrites, where each side's FIN is, and the head.
///
/// The head is the request as the proxy wants the backend to see it: SPLICE carries it, the NIC sends it as
/// the backend connection's first bytes and sends it again until the backend acknowledges it (the only
/// data the NIC is ever responsible for here). The client's stream continues after it.
///
/// A splice ends when both FINs are acknowledged (kept `linger` more to relay a lost last ACK's
/// retransmitted FIN), when either peer resets (passed on), when nothing crosses for `idle` (both reset),
/// or when the backend never acknowledges the head (both reset); the host hears SPLICE_ENDED. Splices are
/// bounded by `Limits.maximumSplices`, heads by `Limits.maximumSpliceHeadBytes`.
///
/// Splices of either family (both connections and the local address of one family, as SPLICE6 or SPLICE
/// carries them): IPv6 peers are indexed by `EndpointKey6` beside IPv4's one-word keys, and their packets are
/// rewritten the same way (no header checksum; extension headers, addressed to us, are left out). Packets
/// the kernel left unfinished (super-segments, partial checksums) arrive over IPv4 only, so joining relayed
/// packets is IPv4's.
extension NICDataPlane {
    enum SpliceState: UInt8 {
        case free
        case relaying
        /// Both FINs acknowledged: relaying what stragglers come until the linger is over.
        case lingering
    }

    /// One peer of a splice: how to pass on what it sends, and what the relay last sent it.
    struct SplicePeer {
        var remoteAddress = IPAddress(IPv4Address(rawValue: 0))
        var remotePort: UInt16 = 0
        var localPort: UInt16 = 0
        /// For this peer's segments, toward the other.
        var rewrite = SpliceRewrite(source: IPAddress(IPv4Address(rawValue: 0)), destination: IPAddress(IPv4Address(rawValue: 0)), sourcePort: 0,
                                    destinationPort: 0, sequenceDelta: 0, acknowledgmentDelta: 0, timestampValueDelta: 0,
                                    timestampEchoDelta: 0, incomingWindowShift: 0, outgoingWindowShift: 0)
        /// Where this peer's stream stood at the splice (older bytes were the host's), and the end of the
        /// furthest segment since (where a believable RST sits).
        var receiveStart = SequenceNumber(0)
        var expectedSequence = SequenceNumber(0)
        /// Set once the stream is far (a largest window) past `receiveStart`: no resent byte from before
        /// the splice can come any more, and comparing with `receiveStart` would go wrong past 2 GiB.
        var pastStart = false
        /// This peer's FIN, as a sequence number past it in the other connection's space, once seen; and
        /// whether the other peer has acknowledged it.
        var finEnd: SequenceNumber?
        var finAcknowledged = false
        /// Payload bytes from this peer passed on.
        var bytes: UInt64 = 0
        /// What the relay last sent this peer (as the peer sees it): the next sequence number, the
        /// acknowledgment, the window field, the TSval; and the peer's latest TSval (TS.Recent).
        var sendNext = SequenceNumber(0)
        var acknowledgment = SequenceNumber(0)
        var window: UInt16 = 0
        var lastTimestamp: UInt32 = 0
        var recentTimestamp: UInt32 = 0
        /// Our TSval on this connection at the splice: segments built here count on from it.
        var timestampBase: UInt32 = 0
        var segmentSize = 536
    }

    struct SpliceConnection {
        var state = SpliceState.free
        var client = SplicePeer()
        var backend = SplicePeer()
        var clientFlow = FlowID.none
        var backendFlow = FlowID.none
        var localAddress = IPAddress(IPv4Address(rawValue: 0))
        var timestamps = false
        var started = Instant.zero
        var lastActivity = Instant.zero
        var idle: UInt64 = 0
        var linger: UInt64 = 0
        var lingerUntil = Instant.zero
        /// The client's FIN was passed on before the backend's came: the backend's side of our TIME-WAIT
        /// is the host's to keep (SPLICE_ENDED says so).
        var clientClosedFirst = false
        /// The head, its first sequence number in the backend connection, and its retransmission state.
        var head: [UInt8] = []
        var headStart = SequenceNumber(0)
        var headAcknowledged = true
        var headDeadline = Instant.zero
        var timeout: UInt64 = 0
        var retransmissionsLeft = 0
        var headEnd: SequenceNumber { headStart + head.count }
    }

    /// The largest window TCP can offer (65535 << 14, rounded up): how far a peer's stream may jump at once.
    static let largestWindow = 1 << 30

    /// Splices being relayed (or lingering), for diagnostics and the report.
    public var spliceCount: Int { splicesByEndpoints.count / 2 }

    // MARK: - SPLICE

    func splice<O: NICOutput>(clientFlow: FlowID, _ parameters: SpliceParameters, head: UnsafeRawBufferPointer, now: Instant, output: inout O) {
        counters.splices += 1
        // Both flow ids are released with the splice: a host that knows it sends no FLOW_CLOSE first.
        if let index = openIndex(clientFlow) { closeFlow(index) }
        if let index = openIndex(parameters.backendFlow) { closeFlow(index) }
        let local = parameters.localAddress
        func side(_ state: SpliceConnectionState, extraSent: Int) -> SpliceSide {
            SpliceSide(
                localAddress: local, remoteAddress: state.remoteAddress, localPort: state.localPort, remotePort: state.remotePort,
                sendNext: state.sendNext + extraSent, receiveNext: state.receiveNext,
                timestamps: state.timestamps ? (state.timestampValue, state.timestampEcho) : nil,
                peerWindowShift: state.peerWindowShift, localWindowShift: state.localWindowShift)
        }
        let clientSide = side(parameters.client, extraSent: 0)
        // The head comes first in the backend's stream: the client's bytes follow it.
        let backendSide = side(parameters.backend, extraSent: head.count)
        let clientEnds = (parameters.client.remoteAddress, parameters.client.remotePort, parameters.client.localPort)
        let backendEnds = (parameters.backend.remoteAddress, parameters.backend.remotePort, parameters.backend.localPort)
        guard let towardBackend = SpliceRewrite.joining(from: clientSide, to: backendSide),
              let towardClient = SpliceRewrite.joining(from: backendSide, to: clientSide),
              clientEnds != backendEnds,
              splicesByEndpoints[clientEnds.0, clientEnds.1, clientEnds.2] == nil,
              splicesByEndpoints[backendEnds.0, backendEnds.1, backendEnds.2] == nil,
              spliceCount < limits.maximumSplices, spliceHeadBytes + head.count <= limits.maximumSpliceHeadBytes
        else {
            // Nowhere to keep it (or nothing the two could agree on): neither peer may be left waiting.
            counters.spliceRefusals += 1
            var entry = SpliceConnection()
            entry.localAddress = local
            entry.client = Self.peer(parameters.client, rewrite: nil)
            entry.backend = Self.peer(parameters.backend, rewrite: nil)
            entry.clientFlow = clientFlow
            entry.backendFlow = parameters.backendFlow
            sendSpliceReset(toward: entry.client, entry, output: &output)
            sendSpliceReset(toward: entry.backend, entry, output: &output)
            reportSpliceEnd(entry, reason: .refused, output: &output)
            return
        }
        for ends in [clientEnds, backendEnds] {
            if let ending = closingSlot(remote: ends.0, remotePort: ends.1, localPort: ends.2) { forgetClosing(ending) }
        }
        var entry = SpliceConnection()
        entry.state = .relaying
        entry.client = Self.peer(parameters.client, rewrite: towardBackend)
        entry.backend = Self.peer(parameters.backend, rewrite: towardClient)
        entry.clientFlow = clientFlow
        entry.backendFlow = parameters.backendFlow
        entry.localAddress = local
        entry.timestamps = parameters.client.timestamps
        entry.started = now
        entry.lastActivity = now
        entry.idle = UInt64(parameters.idleTimeoutMilliseconds) * Nanoseconds.millisecond
        entry.linger = UInt64(parameters.lingerMilliseconds) * Nanoseconds.millisecond
        entry.head = Array(head)
        entry.headStart = parameters.backend.sendNext
        entry.headAcknowledged = head.isEmpty
        entry.timeout = UInt64(parameters.retransmissionTimeoutMilliseconds) * Nanoseconds.millisecond
        entry.retransmissionsLeft = Int(parameters.maximumRetransmissions)
        spliceHeadBytes += head.count
        let slot = freeSplices.popLast().map(Int.init) ?? {
            splices.append(SpliceConnection())
            return splices.count - 1
        }()
        splices[slot] = entry
        splicesByEndpoints[clientEnds.0, clientEnds.1, clientEnds.2] = Int32(slot << 1)
        splicesByEndpoints[backendEnds.0, backendEnds.1, backendEnds.2] = Int32(slot << 1 | 1)
        // The client hears that everything it sent is taken before the backend gets any of it, as it would
        // from the host.
        if parameters.acknowledgeClient { sendSpliceAcknowledgment(toward: splices[slot].client, splices[slot], now: now, output: &output) }
        if !entry.headAcknowledged {
            sendHead(slot, now: now, output: &output)
            splices[slot].headDeadline = now + entry.timeout
        }
        scheduleSplice(slot)
    }

    static func peer(_ state: SpliceConnectionState, rewrite: SpliceRewrite?) -> SplicePeer {
        var peer = SplicePeer()
        peer.remoteAddress = state.remoteAddress
        peer.remotePort = state.remotePort
        peer.localPort = state.localPort
        if let rewrite { peer.rewrite = rewrite }
        peer.receiveStart = state.receiveNext
        peer.expectedSequence = state.receiveNext
        peer.sendNext = state.sendNext
        peer.acknowledgment = state.receiveNext
        peer.window = state.window
        peer.timestampBase = state.timestampValue
        peer.lastTimestamp = state.timestampValue
        peer.recentTimestamp = state.timestampEcho
        peer.segmentSize = max(Int(state.peerSegmentSize), 64)
        return peer
    }

    // MARK: - Relaying

    /// A segment from a spliced peer: passed on, rewritten, to the other. True when it was a splice's
    /// (consumed here); false for a SYN that starts a new connection on a lingering splice's client port.
    ///
    /// With `offload`, the packet is as the kernel built it (see `receive(packet:offload:)`), and `ip` lies in
    /// memory the relay may rewrite in place; it leaves as it came, a super-segment with its checksum for the
    /// wire to finish.
    func relaySpliced<O: NICOutput>(
        ip: IPv4PacketView, segment view: TCPSegmentView, found: Int32, offload: ReceivedOffload? = nil, output: inout O
    ) -> Bool {
        relaySpliced(packet: ip.bytes, source: IPAddress(ip.source), destination: IPAddress(ip.destination), segment: view, found: found,
                     offload: offload, output: &output)
    }

    /// The same for a packet of either family: `packet` is the whole IP packet, `view` its TCP segment.
    func relaySpliced<O: NICOutput>(
        packet ipBytes: UnsafeRawBufferPointer, source: IPAddress, destination: IPAddress, segment view: TCPSegmentView, found: Int32,
        offload: ReceivedOffload? = nil, output: inout O
    ) -> Bool {
        let slot = Int(found >> 1)
        let fromBackend = found & 1 == 1
        let now = clock
        // The relay believes what a segment says (FINs, RSTs, acknowledgments), so it checks the sum first;
        // frames read from the wire are whole and summed (no receive offload is asked for).
        guard offload?.checksumTrusted == true || view.checksumVerifies(source: source, destination: destination) else {
            counters.malformedIn += 1
            return true
        }
        var entry = splices[slot]
        let flags = view.flags
        if flags.contains(.syn) {
            if entry.state == .lingering && !fromBackend && !flags.contains(.ack) {  // ECE and CWR may ride a SYN
                // The client's port starts anew, as after TIME-WAIT: the old splice is done.
                endSplice(slot, reason: .reused, output: &output)
                return false
            }
            // The backend sending its SYN-ACK again has not had the head, whose ACK completes its handshake
            // (the host leaves that ACK to the head): the head again answers it, at once.
            if fromBackend && flags.contains(.ack) && !entry.headAcknowledged && entry.state == .relaying {
                counters.spliceHeadResends += 1
                sendHead(slot, now: clock, output: &output)
                return true
            }
            counters.spliceDrops += 1
            return true
        }
        entry.lastActivity = now
        var from = fromBackend ? entry.backend : entry.client
        var to = fromBackend ? entry.client : entry.backend
        let payload = view.payload.count
        let sequence = view.sequenceNumber
        // Data read deep into a standing queue is dropped, as a short queue would have dropped it, so that
        // its sender slows down before the queue's delay makes every sender's frames small (see
        // `StandingQueueControl`). Segments that open, acknowledge only, or end are always relayed.
        if payload > 0 && !flags.contains(.fin) && !flags.contains(.rst) && standingQueue.dropsRelayedData {
            counters.spliceQueueDrops += 1
            splices[slot] = entry
            return true
        }
        if !fromBackend && payload > 0 && !from.pastStart && sequence < from.receiveStart {
            // The client sending again what the host had received (our ACK of it was lost): it must not
            // reach the backend, whose stream has the head there. Acknowledge it again instead.
            counters.spliceDrops += 1
            splices[slot] = entry
            sendSpliceAcknowledgment(toward: entry.client, entry, now: now, output: &output)
            return true
        }
        // Read before the rewrite, which may work in the very bytes `view` looks at.
        let arrivedAcknowledgment = view.acknowledgmentNumber
        let arrivedTimestamp = entry.timestamps ? TCPOptions(leniently: view.optionBytes).timestamps?.value : nil
        let tcpHeaderLength = view.headerLength
        var acknowledgment = arrivedAcknowledgment
        var headJustAcknowledged = false
        if fromBackend && !entry.headAcknowledged && flags.contains(.ack) {
            if acknowledgment >= entry.headEnd && acknowledgment <= from.sendNext {
                headJustAcknowledged = true  // once the segment is known to be well formed
            } else if payload == 0 && !flags.contains(.fin) && !flags.contains(.rst) {
                // Part of the head acknowledged: nothing the client needs to hear.
                splices[slot] = entry
                return true
            } else {
                acknowledgment = entry.headEnd  // the client hears nothing of the head (see below)
            }
        }
        if let arrivedTimestamp, Int32(bitPattern: arrivedTimestamp &- from.recentTimestamp) > 0 {
            from.recentTimestamp = arrivedTimestamp
        }
        // A RST is passed on whatever it is (the other peer checks it against its own window); it is
        // believed here only where the peer's stream stands (RFC 5961 §3), so a forged one cannot end the splice.
        let endsSplice = flags.contains(.rst) && sequence == from.expectedSequence
        let end = sequence + payload + (flags.contains(.fin) ? 1 : 0)
        // Only as far as a largest window (2^30) at a time: a wild sequence number must not move it.
        if end > from.expectedSequence && end - from.expectedSequence <= Self.largestWindow && !flags.contains(.rst) {
            from.expectedSequence = end
            if !from.pastStart && from.expectedSequence - from.receiveStart > Self.largestWindow { from.pastStart = true }
        }
        // The rewrite works in place: in the wire's buffer when the caller lends it, else in a copy. TCP
        // starts after IPv4's header with its options, or after IPv6's fixed header.
        var length = ipBytes.count
        let packet: UnsafeMutableRawBufferPointer
        let tcp: Int
        let arrivedAt = view.bytes.baseAddress! - ipBytes.baseAddress!
        if !source.isIPv4 && arrivedAt > IPv6PacketView.headerLength {
            // IPv6 extension headers (walked and checked on receipt) were the sender's words to us, not to
            // the other peer: the relayed packet is the fixed header and the segment, as we would send it.
            tcp = IPv6PacketView.headerLength
            length = tcp + view.bytes.count
            packet = UnsafeMutableRawBufferPointer(rebasing: spliceScratch[0..<length])
            packet.copyMemory(from: UnsafeRawBufferPointer(rebasing: ipBytes[0..<tcp]))
            UnsafeMutableRawBufferPointer(rebasing: packet[tcp...]).copyMemory(from: view.bytes)
            packet.storeBigEndian(UInt16(view.bytes.count), at: 4)
            packet[6] = IPProtocol.tcp.rawValue
        } else {
            if offload != nil {
                packet = UnsafeMutableRawBufferPointer(mutating: ipBytes)
            } else {
                packet = UnsafeMutableRawBufferPointer(rebasing: spliceScratch[0..<length])
                packet.copyMemory(from: ipBytes)
            }
            tcp = source.isIPv4 ? Int(packet[0] & 0x0F) * 4 : IPv6PacketView.headerLength
        }
        if acknowledgment != arrivedAcknowledgment {
            var checksum = UnsafeRawBufferPointer(packet).bigEndianUInt16(at: tcp + 16)
            SpliceRewrite.replace32(packet, at: tcp + 8, with: acknowledgment.rawValue, checksum: &checksum)
            packet.storeBigEndian(checksum, at: tcp + 16)
        }
        guard from.rewrite.apply(to: packet) else {
            counters.malformedIn += 1  // and the splice stays as it was
            return true
        }
        if headJustAcknowledged {
            entry.headAcknowledged = true
            spliceHeadBytes -= entry.head.count
            entry.head = []
        }
        // What the other peer now has from us.
        let rewritten = UnsafeRawBufferPointer(packet)
        let outSequence = SequenceNumber(rewritten.bigEndianUInt32(at: tcp + 4))
        let outEnd = outSequence + payload + (flags.contains(.fin) ? 1 : 0)
        if outEnd > to.sendNext { to.sendNext = outEnd }
        // What the relay says itself to `to` (a head's ACK, a keep-alive answer) must not go back on what
        // `from` said: an older, reordered segment leaves both as they are.
        let outAcknowledgment = SequenceNumber(rewritten.bigEndianUInt32(at: tcp + 8))
        if flags.contains(.ack) && outAcknowledgment >= to.acknowledgment {
            to.acknowledgment = outAcknowledgment
            to.window = rewritten.bigEndianUInt16(at: tcp + 14)
        }
        if let arrivedTimestamp {
            let moved = arrivedTimestamp &+ from.rewrite.timestampValueDelta
            if Int32(bitPattern: moved &- to.lastTimestamp) > 0 { to.lastTimestamp = moved }
        }
        if flags.contains(.fin) && from.finEnd == nil {
            from.finEnd = outEnd
            if !fromBackend && to.finEnd == nil { entry.clientClosedFirst = true }
        }
        // Their ACK, in our sending space on their connection, may cover the other's FIN.
        if flags.contains(.ack), let finEnd = to.finEnd, arrivedAcknowledgment >= finEnd, arrivedAcknowledgment <= from.sendNext {
            to.finAcknowledged = true
        }
        from.bytes += UInt64(payload)
        if fromBackend { entry.backend = from; entry.client = to } else { entry.client = from; entry.backend = to }
        if entry.state == .relaying && entry.client.finAcknowledged && entry.backend.finAcknowledged {
            entry.state = .lingering
            entry.lingerUntil = now + entry.linger
            splices[slot] = entry
            scheduleSplice(slot)
        } else {
            splices[slot] = entry
        }
        // A packet the kernel left unsummed leaves the same way: its field gets the new pseudo-header sum (the
        // incremental updates above do not apply to it), and a super-segment is cut by the far wire at the
        // smaller of the sender's MSS and the receiver's.
        var wireOffload: PacketOffload?
        if let offload, offload.checksumPartial, let source4 = from.rewrite.source.ipv4, let destination4 = from.rewrite.destination.ipv4 {
            // Cut where the sender meant to, and never past what the receiver takes.
            let segmentSize = offload.segmentSize > 0 ? min(Int(offload.segmentSize), to.segmentSize) : to.segmentSize
            if coalesceRelayed(UnsafeRawBufferPointer(packet), slot: slot, fromBackend: fromBackend, headerLength: tcp + tcpHeaderLength,
                               ipHeaderLength: tcp, payload: payload, flags: flags, segmentSize: segmentSize,
                               source: source4, destination: destination4, output: &output) {
                counters.splicedSegments += 1
                counters.splicedBytes += payload
                return true  // held, or joined onto the held one (never a RST: `endsSplice` is false)
            }
            wireOffload = finishUnsummed(packet, ipHeaderLength: tcp, headerLength: tcp + tcpHeaderLength, segmentSize: segmentSize,
                                         source: source4, destination: destination4)
        }
        flushRelayed(slot: slot, fromBackend: fromBackend, output: &output)  // what this direction holds goes first
        if output.transmit(headers: UnsafeRawBufferPointer(packet), payload: UnsafeRawBufferPointer(start: nil, count: 0), offload: wireOffload) == .sent {
            counters.packetsOut += 1
            counters.bytesOut += length
            counters.splicedSegments += 1
            counters.splicedBytes += payload
        } else {
            counters.wireRefusals += 1  // the peer sends it again
        }
        if endsSplice { endSplice(slot, reason: .reset, output: &output) }
        return true
    }

    // MARK: - Built here

    /// The head's segments, from its start, each at most the backend's MSS.
    func sendHead<O: NICOutput>(_ slot: Int, now: Instant, output: inout O) {
        let entry = splices[slot]
        var offset = 0
        while offset < entry.head.count {
            let length = min(entry.head.count - offset, entry.backend.segmentSize)
            let last = offset + length == entry.head.count
            entry.head.withUnsafeBytes { head in
                transmitSpliceSegment(
                    toward: entry.backend, entry, sequence: entry.headStart + offset, flags: last ? [.ack, .psh] : .ack,
                    payload: UnsafeRawBufferPointer(rebasing: head[offset..<(offset + length)]), now: now, output: &output)
            }
            offset += length
        }
        if entry.headEnd > splices[slot].backend.sendNext { splices[slot].backend.sendNext = entry.headEnd }
    }

    func sendSpliceAcknowledgment<O: NICOutput>(toward peer: SplicePeer, _ entry: SpliceConnection, now: Instant, output: inout O) {
        transmitSpliceSegment(toward: peer, entry, sequence: peer.sendNext, flags: .ack,
                              payload: UnsafeRawBufferPointer(start: nil, count: 0), now: now, output: &output)
    }

    func sendSpliceReset<O: NICOutput>(toward peer: SplicePeer, _ entry: SpliceConnection, output: inout O) {
        // A refused splice across families (never encoded by a host, but a command can be made by hand) has
        // one peer no header from our address can reach.
        guard peer.remoteAddress.isIPv4 == entry.localAddress.isIPv4 else { return }
        let segment = TCPRepr(sourcePort: peer.localPort, destinationPort: peer.remotePort, sequenceNumber: peer.sendNext,
                              acknowledgmentNumber: peer.acknowledgment, flags: [.rst, .ack], window: 0)
        flushRelayed(output: &output)
        _ = transmitControl(segment, from: entry.localAddress, to: peer.remoteAddress, output: &output)
    }

    /// A segment the relay itself sends `peer` (the head, an ACK): our latest acknowledgment and window for
    /// it, and a TSval that counts on from the splice and is never behind one passed on.
    func transmitSpliceSegment<O: NICOutput>(
        toward peer: SplicePeer, _ entry: SpliceConnection, sequence: SequenceNumber, flags: TCPFlags,
        payload: UnsafeRawBufferPointer, now: Instant, output: inout O
    ) {
        var options = TCPOptions()
        if entry.timestamps {
            let elapsed = UInt32(truncatingIfNeeded: (now - entry.started) / Nanoseconds.millisecond)
            var value = peer.timestampBase &+ elapsed
            if Int32(bitPattern: peer.lastTimestamp &- value) > 0 { value = peer.lastTimestamp }
            options.timestamps = TCPTimestamps(value: value, echoReply: peer.recentTimestamp)
        }
        let segment = TCPRepr(sourcePort: peer.localPort, destinationPort: peer.remotePort, sequenceNumber: sequence,
                              acknowledgmentNumber: peer.acknowledgment, flags: flags, window: peer.window, options: options)
        let remote = peer.remoteAddress
        flushRelayed(output: &output)  // relayed bytes held for joining go before what the relay says itself
        let length = remote.headerLength + segment.headerLength + payload.count
        let packet = UnsafeMutableRawBufferPointer(rebasing: spliceScratch[0..<length])
        do throws(WireError) {
            let network = try IPAddress.emitHeader(into: packet, source: entry.localAddress, destination: remote, protocol: .tcp,
                                                   payloadLength: segment.headerLength + payload.count)
            let tcp = UnsafeMutableRawBufferPointer(rebasing: packet[network...])
            let header = try segment.emitHeader(into: tcp)
            if !payload.isEmpty { UnsafeMutableRawBufferPointer(rebasing: tcp[header...]).copyMemory(from: payload) }
            TCPRepr.fillChecksum(segment: tcp, source: entry.localAddress, destination: remote)
        } catch {
            return  // the scratch holds any packet; unreachable
        }
        if output.transmit(headers: UnsafeRawBufferPointer(packet), payload: UnsafeRawBufferPointer(start: nil, count: 0), offload: nil) == .sent {
            counters.packetsOut += 1
            counters.bytesOut += length
        } else {
            counters.wireRefusals += 1
        }
    }

    // MARK: - Timers and endings

    /// The splice's next deadline: the head's retransmission, the linger's end, or the idle check.
    func scheduleSplice(_ slot: Int) {
        let entry = splices[slot]
        var deadline = entry.state == .lingering ? entry.lingerUntil : entry.lastActivity + entry.idle
        if !entry.headAcknowledged && entry.headDeadline < deadline { deadline = entry.headDeadline }
        spliceWheel.schedule(slot, at: deadline)
    }

    func expireSplices<O: NICOutput>(now: Instant, output: inout O) {
        guard spliceWheel.scheduledCount > 0 else { return }
        spliceDue.removeAll(keepingCapacity: true)
        spliceWheel.popExpired(now: now, into: &spliceDue)
        for slot in spliceDue where splices[slot].state != .free {
            let entry = splices[slot]
            if entry.state == .lingering && now >= entry.lingerUntil {
                endSplice(slot, reason: .finished, output: &output)
                continue
            }
            // A lingering splice ends with its linger, however short the idle timeout.
            if entry.state == .relaying && now - entry.lastActivity >= entry.idle {
                counters.spliceIdleResets += 1
                sendSpliceReset(toward: entry.client, entry, output: &output)
                sendSpliceReset(toward: entry.backend, entry, output: &output)
                endSplice(slot, reason: .idle, output: &output)
                continue
            }
            if !entry.headAcknowledged && now >= entry.headDeadline {
                guard entry.retransmissionsLeft > 0 else {
                    sendSpliceReset(toward: entry.client, entry, output: &output)
                    sendSpliceReset(toward: entry.backend, entry, output: &output)
                    endSplice(slot, reason: .headLost, output: &output)
                    continue
                }
                splices[slot].retransmissionsLeft -= 1
                splices[slot].timeout = min(entry.timeout * 2, 60 * Nanoseconds.second)
                splices[slot].headDeadline = now + splices[slot].timeout
                counters.spliceHeadResends += 1
                sendHead(slot, now: now, output: &output)
            }
            scheduleSplice(slot)
        }
    }

    func endSplice<O: NICOutput>(_ slot: Int, reason: SpliceEndReason, output: inout O) {
        let entry = splices[slot]
        guard entry.state != .free else { return }
        forgetSplice(slot)
        switch reason {
        case .finished: counters.splicesFinished += 1
        case .reset: counters.splicesReset += 1
        default: break
        }
        reportSpliceEnd(entry, reason: reason, output: &output)
    }

    func reportSpliceEnd<O: NICOutput>(_ entry: SpliceConnection, reason: SpliceEndReason, output: inout O) {
        output.reply(.spliceEnded(entry.clientFlow, SpliceReport(
            backendFlow: entry.backendFlow, reason: reason, clientBytes: entry.client.bytes, backendBytes: entry.backend.bytes,
            backendAddress: entry.backend.remoteAddress, backendPort: entry.backend.remotePort,
            backendLocalPort: entry.backend.localPort,
            clientClosedFirst: entry.clientClosedFirst && (reason == .finished || reason == .reused))))
    }

    func forgetSplice(_ slot: Int) {
        guard splices[slot].state != .free else { return }
        let client = splices[slot].client, backend = splices[slot].backend
        splicesByEndpoints.remove(remote: client.remoteAddress, remotePort: client.remotePort, localPort: client.localPort,
                                  ifStill: Int32(slot << 1))
        splicesByEndpoints.remove(remote: backend.remoteAddress, remotePort: backend.remotePort, localPort: backend.localPort,
                                  ifStill: Int32(slot << 1 | 1))
        spliceHeadBytes -= splices[slot].head.count
        spliceWheel.schedule(slot, at: nil)
        splices[slot] = SpliceConnection()
        freeSplices.append(Int32(slot))
    }

    /// Forgets every splice (the host that made them is gone; their peers time out).
    func forgetAllSplices() {
        dropRelayed()
        for slot in splices.indices where splices[slot].state != .free { forgetSplice(slot) }
    }
}
