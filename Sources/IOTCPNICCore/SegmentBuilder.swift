@_exported import IOTCPCommon

/// Turns a SEND or RETRANSMIT into segments: the host's template supplies every header field, the NIC
/// supplies the payload (read from disk straight into the packet) and the checksums.
///
/// IO-TCP's timestamp rule: the NIC adds the time the data waited on it to TSval, so the peer echoes the
/// time the segment really left, and the host's RTT never includes the NIC's queueing or disk time.
public enum SegmentBuilder {
    /// Bytes of one segment's IP packet carrying `payloadLength` bytes under `template` (IPv4 unless
    /// `networkHeaderLength` says otherwise: `IPAddress.headerLength`).
    @inlinable
    public static func packetLength(payloadLength: Int, template: SegmentTemplate, networkHeaderLength: Int = IPv4Repr.headerLength) -> Int {
        networkHeaderLength + TCPSegmentView.minimumHeaderLength + (template.timestamps == nil ? 0 : 12) + payloadLength
    }

    /// Writes the flow's IPv4 or IPv6 header for a TCP segment of `segmentLength` bytes; returns its length.
    @inlinable
    static func emitNetworkHeader(into buffer: UnsafeMutableRawBufferPointer, flow: FlowEndpoints, segmentLength: Int) throws(WireError) -> Int {
        try IPAddress.emitHeader(into: buffer, source: flow.localAddress, destination: flow.remoteAddress, protocol: .tcp,
                                 payloadLength: segmentLength)
    }

    /// Calls `body` with the sequence number, length and last-ness of each segment of `[sequence,
    /// sequence + length)` cut at the template's MSS, or of each piece of `pieceLength` bytes (super-segments,
    /// a whole number of MSS each, for a wire that cuts them).
    @inlinable
    public static func forEachSegment(
        sequence: SequenceNumber, length: Int, template: SegmentTemplate, pieceLength: Int? = nil,
        _ body: (_ sequence: SequenceNumber, _ offset: Int, _ length: Int, _ isLast: Bool) -> Void
    ) {
        let size = max(pieceLength ?? Int(template.maximumSegmentSize), 1)
        var offset = 0
        while offset < length {
            let chunk = min(size, length - offset)
            body(sequence + offset, offset, chunk, offset + chunk == length)
            offset += chunk
        }
    }

    /// Payload bytes of the largest super-segment that fits an IP packet of `packetLimit` bytes: a
    /// whole number of MSS-sized segments (so the wire's cuts fall where this builder's would), or 0 when
    /// not even two fit.
    @inlinable
    public static func superSegmentPayload(packetLimit: Int, template: SegmentTemplate, networkHeaderLength: Int = IPv4Repr.headerLength) -> Int {
        let size = max(Int(template.maximumSegmentSize), 1)
        let overhead = packetLength(payloadLength: 0, template: template, networkHeaderLength: networkHeaderLength)
        let segments = (min(packetLimit, Int(UInt16.max)) - overhead) / size
        return segments >= 2 ? segments * size : 0
    }

    /// A data segment's TCP header from the host's template: the flags it asks for on the last piece (ACK
    /// always), and its TSval moved on by the time the data spent on the NIC (IO-TCP's rule).
    @inlinable
    static func header(
        flow: FlowEndpoints, sequence: SequenceNumber, isLast: Bool, template: SegmentTemplate, nicDelayMilliseconds: UInt32
    ) -> TCPRepr {
        var options = TCPOptions()
        if let timestamps = template.timestamps {
            options.timestamps = TCPTimestamps(value: timestamps.value &+ nicDelayMilliseconds, echoReply: timestamps.echoReply)
        }
        return TCPRepr(
            sourcePort: flow.localPort, destinationPort: flow.remotePort, sequenceNumber: sequence,
            acknowledgmentNumber: template.acknowledgmentNumber,
            flags: isLast ? template.lastSegmentFlags.union(.ack) : .ack, window: template.window, options: options)
    }

    /// Writes one segment's IP packet into `buffer` and returns its length. `fillPayload` writes the
    /// payload where it belongs; the checksums are computed after it. With `checksumOffload` the TCP
    /// checksum field gets only the pseudo-header sum, for the device to finish (a super-segment: one
    /// header for many MSS-sized segments, cut by the device, which also clears FIN and PSH on all but the
    /// last piece, as the template asks).
    @inlinable
    public static func build(
        into buffer: UnsafeMutableRawBufferPointer, flow: FlowEndpoints, sequence: SequenceNumber, payloadLength: Int,
        isLast: Bool, template: SegmentTemplate, nicDelayMilliseconds: UInt32, checksumOffload: Bool = false,
        fillPayload: (UnsafeMutableRawBufferPointer) -> Void
    ) throws(WireError) -> Int {
        let tcp = header(flow: flow, sequence: sequence, isLast: isLast, template: template, nicDelayMilliseconds: nicDelayMilliseconds)
        let tcpLength = tcp.headerLength + payloadLength
        let total = flow.remoteAddress.headerLength + tcpLength
        guard buffer.count >= total else { throw .bufferTooSmall(needed: total, available: buffer.count) }
        let networkLength = try emitNetworkHeader(into: buffer, flow: flow, segmentLength: tcpLength)
        let segment = UnsafeMutableRawBufferPointer(rebasing: buffer[networkLength..<total])
        let headerLength = try tcp.emitHeader(into: segment)
        fillPayload(UnsafeMutableRawBufferPointer(rebasing: segment[headerLength...]))
        if checksumOffload {
            TCPRepr.fillPseudoHeaderChecksum(segment: segment, source: flow.localAddress, destination: flow.remoteAddress)
        } else {
            TCPRepr.fillChecksum(segment: segment, source: flow.localAddress, destination: flow.remoteAddress)
        }
        return total
    }

    /// How a segment's TCP checksum is finished.
    public enum Checksum: Sendable {
        /// Computed here, over the headers and the payload where it lies.
        case full
        /// Only the pseudo-header sum, for the wire to finish (checksum offload, super-segments).
        case offloaded
    }

    /// Writes the IP and TCP headers of one segment (or super-segment) into `headers`, for a payload
    /// that stays where it is (the wire gathers headers and payload): the NIC never copies file bytes into a
    /// frame. Returns the headers' length. The payload is read only for a `.full` checksum. `prefixLength`
    /// bytes the caller placed right after the headers (a SEND's head) are the payload's first bytes.
    @inlinable
    public static func buildHeaders(
        into headers: UnsafeMutableRawBufferPointer, flow: FlowEndpoints, sequence: SequenceNumber, prefixLength: Int = 0,
        payload: UnsafeRawBufferPointer, isLast: Bool, template: SegmentTemplate, nicDelayMilliseconds: UInt32,
        checksum: Checksum
    ) throws(WireError) -> Int {
        let tcp = header(flow: flow, sequence: sequence, isLast: isLast, template: template, nicDelayMilliseconds: nicDelayMilliseconds)
        let networkLength = flow.remoteAddress.headerLength
        let headerLength = networkLength + tcp.headerLength
        guard headers.count >= headerLength + prefixLength else {
            throw .bufferTooSmall(needed: headerLength + prefixLength, available: headers.count)
        }
        let tcpLength = tcp.headerLength + prefixLength + payload.count
        _ = try emitNetworkHeader(into: headers, flow: flow, segmentLength: tcpLength)
        let segment = UnsafeMutableRawBufferPointer(rebasing: headers[networkLength..<headerLength])
        _ = try tcp.emitHeader(into: segment)
        segment.storeBigEndian(UInt16(0), at: 16)
        var sum = InternetChecksum()
        IPAddress.addPseudoHeader(to: &sum, source: flow.localAddress, destination: flow.remoteAddress, protocol: .tcp, length: tcpLength)
        switch checksum {
        case .full:
            // The header is a whole number of 32-bit words, so the payload's sum simply follows it.
            sum.add(bytes: UnsafeRawBufferPointer(segment))
            if prefixLength > 0 { sum.add(bytes: UnsafeRawBufferPointer(rebasing: headers[headerLength..<(headerLength + prefixLength)])) }
            sum.add(bytes: payload)
            segment.storeBigEndian(sum.checksum, at: 16)
        case .offloaded:
            segment.storeBigEndian(sum.foldedSum, at: 16)
        }
        return headerLength
    }
}
