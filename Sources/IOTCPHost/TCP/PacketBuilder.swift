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
