import IOTCPCommon

/// Stateless connection setup (AccelTCP): SYNs to the ports the host named with LISTEN are answered here
/// with SYN cookies, and only an ACK that brings a good cookie back reaches the host, as one ESTABLISHED
/// command carrying what the cookie encoded. Nothing is kept between the SYN and the ACK, so a flood of
/// spoofed SYNs costs a SYN-ACK each and no memory, here or on the host.
extension NICDataPlane {
    /// Answers `segment` if it is part of a handshake to a LISTEN port: true when it was consumed (a SYN
    /// answered or dropped, a good cookie passed on), false when it should go to the host as it is.
    func answerSetup<O: NICOutput>(
        ip: IPv4PacketView, segment view: TCPSegmentView, listener: ListenerOptions, output: inout O
    ) -> Bool {
        answerSetup(source: IPAddress(ip.source), destination: IPAddress(ip.destination), packet: ip.bytes, segment: view,
                    listener: listener, output: &output)
    }

    /// The same for a segment of either family: `packet` is its whole IP packet (ESTABLISHED carries it).
    func answerSetup<O: NICOutput>(
        source: IPAddress, destination: IPAddress, packet: UnsafeRawBufferPointer, segment view: TCPSegmentView,
        listener: ListenerOptions, output: inout O
    ) -> Bool {
        let flags = view.flags
        if flags.contains(.syn) && !flags.contains(.ack) {
            // A SYN with RST or FIN set is nonsense (RFC 9293 §3.10.7.2 answers only plain SYNs): dropped.
            guard !flags.contains(.rst), !flags.contains(.fin),
                  view.checksumVerifies(source: source, destination: destination),
                  let syn = try? TCPRepr(view)
            else {
                counters.malformedIn += 1
                return true
            }
            sendCookie(answering: syn, from: destination, to: source, listener: listener, output: &output)
            return true
        }
        guard flags.contains(.ack), !flags.contains(.syn), !flags.contains(.rst), var ack = try? TCPRepr(view) else {
            if flags.contains(.ack) && !flags.contains(.rst) { counters.cookiesRejected += 1 }
            return false
        }
        let bare = view.payload.isEmpty && !flags.contains(.fin)
        let key = DeferredHandshakes.Key(remote: source, remotePort: ack.sourcePort, localPort: ack.destinationPort)
        // A deferring port's data segment may belong to a handshake whose bare ACK was dropped here.
        let remembered = listener.deferAccept && !bare ? deferredHandshakes.entry(for: key, now: clock) : nil
        var cookie = cookies.verify(ack, remote: source, local: destination, now: clock)
        // That handshake's later segment, its first data lost or overtaken: it verifies with the ISN the
        // bare ACK brought. The host gets the connection from that ACK, rebuilt, and this segment after it
        // (held out of order there, so the client sends the missing bytes again).
        var outOfOrder = false
        if cookie == nil, let remembered {
            var first = ack
            first.sequenceNumber = remembered.peerInitialSequence + 1
            cookie = cookies.verify(first, remote: source, local: destination, now: clock)
            outOfOrder = cookie != nil
        }
        guard let cookie else {
            counters.cookiesRejected += 1
            return false
        }
        guard view.checksumVerifies(source: source, destination: destination) else {
            counters.malformedIn += 1
            return true
        }
        // A deferred accept waits for the client's first data (or FIN): that segment has the bare ACK's
        // sequence number and brings the cookie back again, so dropping the bare ACK loses nothing.
        if listener.deferAccept && bare {
            if deferredHandshakes.remember(key, peerInitialSequence: ack.sequenceNumber - 1, roundTrip: cookie.handshakeRoundTrip, now: clock) {
                counters.acceptsDeferred += 1
                return true
            }
            counters.deferralsRefused += 1
        }
        // The round trip: the bare ACK's when it was deferred (the first data follows the client's own
        // delay); none from a deferring port's data segment whose bare ACK never came. A reused port's older
        // entry (another ISN) is not this handshake's.
        var roundTrip = cookie.handshakeRoundTrip
        if listener.deferAccept && !bare {
            let own = outOfOrder || remembered?.peerInitialSequence == ack.sequenceNumber - 1
            roundTrip = own ? remembered?.roundTrip : nil
            if remembered != nil { deferredHandshakes.forget(key) }
        }
        counters.handshakesCompleted += 1
        let timestamps = listener.timestamps ? ack.options.timestamps : nil
        let parameters = HandshakeParameters(
            localInitialSequence: cookie.initialSequence,
            peerInitialSequence: (outOfOrder ? remembered?.peerInitialSequence : nil) ?? ack.sequenceNumber - 1,
            peerSegmentSize: UInt16(cookie.peerSegmentSize), peerWindowShift: cookie.windowShift,
            selectiveAcknowledgments: cookie.selectiveAcknowledgments, timestamps: timestamps != nil,
            synAckTimestamp: timestamps?.echoReply ?? 0,
            handshakeRoundTripMicroseconds: timestamps == nil ? 0 : roundTrip.map { UInt32(clamping: max($0 / 1_000, 1)) } ?? 0)
        guard outOfOrder else {
            output.reply(.established(parameters, packet: packet))
            return true
        }
        counters.deferredAcceptsOutOfOrder += 1
        ack.sequenceNumber = parameters.peerInitialSequence + 1
        ack.flags = .ack
        ack.options.sackBlocks = SACKBlockList()
        guard let rebuilt = buildControl(ack, from: source, to: destination) else { return true }
        output.reply(.established(parameters, packet: rebuilt))
        return false  // the segment itself goes up after it
    }

    private func sendCookie<O: NICOutput>(
        answering syn: TCPRepr, from local: IPAddress, to remote: IPAddress, listener: ListenerOptions, output: inout O
    ) {
        var options = listener
        // LISTEN's MSS is IPv4's (the MTU less 40 bytes), as the host's configuration is.
        options.maximumSegmentSize = remote.segmentSize(matchingIPv4: listener.maximumSegmentSize)
        let reply = cookies.reply(to: syn, remote: remote, local: local, now: clock, options: options)
        if transmitControl(reply, from: local, to: remote, output: &output) { counters.synCookiesSent += 1 }
    }

    /// A segment without payload, of either family, from `source` to `destination`, built in the scratch area
    /// (valid until the next one); nil if it could not be (unreachable: the scratch holds any of them).
    func buildControl(_ segment: TCPRepr, from source: IPAddress, to destination: IPAddress) -> UnsafeRawBufferPointer? {
        let packetLength = destination.headerLength + segment.headerLength
        let packet = UnsafeMutableRawBufferPointer(rebasing: setupScratch[0..<packetLength])
        do throws(WireError) {
            let network = try IPAddress.emitHeader(into: packet, source: source, destination: destination, protocol: .tcp,
                                                   payloadLength: segment.headerLength)
            let tcp = UnsafeMutableRawBufferPointer(rebasing: packet[network...])
            _ = try segment.emitHeader(into: tcp)
            TCPRepr.fillChecksum(segment: tcp, source: source, destination: destination)
        } catch {
            return nil
        }
        return UnsafeRawBufferPointer(packet)
    }

    /// Builds a segment without payload (a SYN-ACK, a FIN, an ACK, a RST) of either family in the scratch
    /// area and puts it on the wire; false when the wire refused it (counted).
    func transmitControl<O: NICOutput>(_ segment: TCPRepr, from local: IPAddress, to remote: IPAddress, output: inout O) -> Bool {
        guard let packet = buildControl(segment, from: local, to: remote) else { return false }
        guard output.transmit(headers: packet, payload: UnsafeRawBufferPointer(start: nil, count: 0), offload: nil) == .sent else {
            counters.wireRefusals += 1
            return false
        }
        counters.packetsOut += 1
        counters.bytesOut += packet.count
        return true
    }
}
