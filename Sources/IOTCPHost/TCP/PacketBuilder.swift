import IOTCPCommon

/// Builds the IP packets the host sends itself (PACKET_OUT): the IPv4 or IPv6 header, TCP header with
/// options, the payload written in place by the caller, and the checksums.
enum PacketBuilder {
    static func emit<O: CommandOutput>(
        _ tcp: TCPRepr, from source: IPAddress, to destination: IPAddress, flow: FlowID,
        payload: (count: Int, fill: (UnsafeMutableRawBufferPointer) -> Void)? = nil, output: inout O
    ) {
        let tcpLength = tcp.headerLength + (payload?.count ?? 0)
        let networkLength = destination.headerLength
        output.emitPacket(flow: flow, length: networkLength + tcpLength) { buffer in
            // The length was computed from the same values, so no emit can fail.
            _ = try? IPAddress.emitHeader(into: buffer, source: source, destination: destination, protocol: .tcp, payloadLength: tcpLength)
            let segment = UnsafeMutableRawBufferPointer(rebasing: buffer[networkLength...])
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
