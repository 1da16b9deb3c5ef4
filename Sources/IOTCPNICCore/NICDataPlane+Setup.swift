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
        guard flags.contains(.ack), !flags.contains(.syn), !flags.contains(.rst), let ack = try? TCPRepr(view),
              let cookie = cookies.verify(ack, remote: source, local: destination, now: clock)
        else {
            if flags.contains(.ack) && !flags.contains(.rst) { counters.cookiesRejected += 1 }
            return false
        }
        guard view.checksumVerifies(source: source, destination: destination) else {
            counters.malformedIn += 1
            return true
        }
        // A deferred accept waits for the client's first data (or FIN): its ACK field brings the cookie back
        // again, so dropping the bare ACK keeps nothing.
        if listener.deferAccept && view.payload.isEmpty && !flags.contains(.fin) {
            counters.acceptsDeferred += 1
            return true
        }
        counters.handshakesCompleted += 1
        let timestamps = listener.timestamps ? ack.options.timestamps : nil
        output.reply(.established(HandshakeParameters(
            localInitialSequence: cookie.initialSequence, peerInitialSequence: ack.sequenceNumber - 1,
            peerSegmentSize: UInt16(cookie.peerSegmentSize), peerWindowShift: cookie.windowShift,
            selectiveAcknowledgments: cookie.selectiveAcknowledgments, timestamps: timestamps != nil,
            synAckTimestamp: timestamps?.echoReply ?? 0,
            handshakeRoundTripMicroseconds: timestamps == nil ? 0
                : cookie.handshakeRoundTrip.map { UInt32(clamping: max($0 / 1_000, 1)) } ?? 0), packet: packet))
        return true
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

    /// Builds a segment without payload (a SYN-ACK, a FIN, an ACK, a RST) of either family in the scratch
    /// area and puts it on the wire; false when the wire refused it (counted).
    func transmitControl<O: NICOutput>(_ segment: TCPRepr, from local: IPAddress, to remote: IPAddress, output: inout O) -> Bool {
        let packetLength = remote.headerLength + segment.headerLength
        let packet = UnsafeMutableRawBufferPointer(rebasing: setupScratch[0..<packetLength])
        do throws(WireError) {
            let network = try IPAddress.emitHeader(into: packet, source: local, destination: remote, protocol: .tcp,
                                                   payloadLength: segment.headerLength)
            let tcp = UnsafeMutableRawBufferPointer(rebasing: packet[network...])
            _ = try segment.emitHeader(into: tcp)
            TCPRepr.fillChecksum(segment: tcp, source: local, destination: remote)
        } catch {
            return false  // the scratch holds any header-only segment; unreachable
        }
        guard output.transmit(headers: UnsafeRawBufferPointer(packet), payload: UnsafeRawBufferPointer(start: nil, count: 0), offload: nil) == .sent
        else {
            counters.wireRefusals += 1
            return false
        }
        counters.packetsOut += 1
        counters.bytesOut += packetLength
        return true
    }
}
