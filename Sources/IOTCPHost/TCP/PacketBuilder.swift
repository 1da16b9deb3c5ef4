import IOTCPCommon

/// Builds the IPv4 packets the host sends itself (PACKET_OUT): header, TCP header with options, the
/// payload written in place by the caller, and both checksums.
enum PacketBuilder {
    static func emit<O: CommandOutput>(
        _ tcp: TCPRepr, from source: IPv4Address, to destination: IPv4Address, flow: FlowID,
        payload: (count: Int, fill: (UnsafeMutableRawBufferPointer) -> Void)? = nil, output: inout O
    ) {
        let tcpLength = tcp.headerLength + (payload?.count ?? 0)
        let ip = IPv4Repr(source: source, destination: destination, protocol: .tcp, payloadLength: tcpLength)
        output.emitPacket(flow: flow, length: IPv4Repr.headerLength + tcpLength) { buffer in
            // The length was computed from the same values, so neither emit can fail.
            try? ip.emit(into: buffer)
            let segment = UnsafeMutableRawBufferPointer(rebasing: buffer[IPv4Repr.headerLength...])
            let headerLength = (try? tcp.emitHeader(into: segment)) ?? tcp.headerLength
            if let payload { payload.fill(UnsafeMutableRawBufferPointer(rebasing: segment[headerLength...])) }
            TCPRepr.fillChecksum(segment: segment, source: source, destination: destination)
        }
    }
}

extension TCPRepr {
    /// RFC 9293 §3.10.7.1: the RST answering a segment that belongs to no connection, one its sender will
    /// accept: at its acknowledgment number if it had one, else acknowledging everything it carried.
    static func reset(answering segment: TCPRepr, payloadLength: Int) -> TCPRepr {
        if segment.flags.contains(.ack) {
            return TCPRepr(sourcePort: segment.destinationPort, destinationPort: segment.sourcePort,
                           sequenceNumber: segment.acknowledgmentNumber, flags: .rst, window: 0)
        }
        let length = payloadLength + (segment.flags.contains(.syn) ? 1 : 0) + (segment.flags.contains(.fin) ? 1 : 0)
        return TCPRepr(sourcePort: segment.destinationPort, destinationPort: segment.sourcePort,
                       sequenceNumber: SequenceNumber(0), acknowledgmentNumber: segment.sequenceNumber + length,
                       flags: [.rst, .ack], window: 0)
    }
}
