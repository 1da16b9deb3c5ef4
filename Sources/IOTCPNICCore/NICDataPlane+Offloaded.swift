import IOTCPCommon

// MARK: - Frames the wire left unfinished

extension NICDataPlane {
    /// A packet as the kernel built it (`ReceivedOffload`): a splice's is relayed as it is, one super-segment
    /// and one rewrite for up to 64 KiB, its checksum left for the wire on the other side; anything else is
    /// finished first (checksum summed, a super-segment cut at the sender's MSS) and received as usual, so
    /// the host and the NIC's own paths only ever see ordinary, checksummed segments.
    public func receive<O: NICOutput>(
        packet: UnsafeMutableRawBufferPointer, offload: ReceivedOffload, now: Instant? = nil, output: inout O
    ) {
        if let now { clock = now }
        if packet.count > 0 && packet[0] >> 4 == 6 {
            // IPv6: the kernel cuts no IPv6 super-segments for us (only TSO4 is offered), but may leave the
            // checksum to finish, over the TCP segment after any extension headers.
            if offload.checksumPartial, let ip = try? IPv6PacketView(UnsafeRawBufferPointer(packet)), ip.upperLayerProtocol == .tcp,
               ip.upperLayer.count >= TCPSegmentView.minimumHeaderLength {
                let transport = UnsafeMutableRawBufferPointer(rebasing: packet[ip.upperLayerOffset..<ip.bytes.count])
                TCPRepr.fillChecksum(segment: transport, source: ip.source, destination: ip.destination)
            }
            receiveIPv6(packet: UnsafeRawBufferPointer(packet), output: &output)
            return
        }
        guard let ip = try? IPv4PacketView(UnsafeRawBufferPointer(packet)), ip.protocol == .tcp,
              let segment = try? TCPSegmentView(ip.payload)
        else {
            receive(packet: UnsafeRawBufferPointer(packet), output: &output)  // counted as malformed there
            return
        }
        if !splicesByEndpoints.ipv4.isEmpty,
           let spliced = splicesByEndpoints.ipv4[EndpointKey(remoteAddress: ip.source.rawValue, remotePort: segment.sourcePort,
                                                        localPort: segment.destinationPort)] {
            if relaySpliced(ip: ip, segment: segment, found: spliced, offload: offload, output: &output) {
                counters.packetsIn += 1
                return
            }
            // A new connection on a lingering splice's port: received below like any other SYN.
        }
        let ipLength = ip.headerLength, length = ip.totalLength
        let transport = UnsafeMutableRawBufferPointer(rebasing: packet[ipLength..<length])
        if offload.checksumPartial {
            TCPRepr.fillChecksum(segment: transport, source: ip.source, destination: ip.destination)
        }
        let headerLength = ipLength + segment.headerLength
        let payload = length - headerLength
        let cut = Int(offload.segmentSize)
        guard cut > 0 && payload > cut else {
            receive(packet: UnsafeRawBufferPointer(rebasing: packet[0..<length]), output: &output)
            return
        }
        counters.superSegmentsCut += 1
        // Cut as the sender's TSO would have: headers repeated, sequence numbers advanced, IP IDs counted up,
        // FIN and PSH on the last piece only, CWR on the first only.
        let flags = segment.flags
        let identification = ip.identification
        let sequence = segment.sequenceNumber
        var offset = 0, index = 0
        while offset < payload {
            let piece = min(cut, payload - offset)
            let total = headerLength + piece
            let out = UnsafeMutableRawBufferPointer(rebasing: segmentScratch[0..<total])
            out.copyMemory(from: UnsafeRawBufferPointer(rebasing: packet[0..<headerLength]))
            UnsafeMutableRawBufferPointer(rebasing: out[headerLength...])
                .copyMemory(from: UnsafeRawBufferPointer(rebasing: packet[(headerLength + offset)..<(headerLength + offset + piece)]))
            out.storeBigEndian(UInt16(total), at: 2)
            out.storeBigEndian(identification &+ UInt16(truncatingIfNeeded: index), at: 4)
            IPv4Repr.fillChecksum(header: UnsafeMutableRawBufferPointer(rebasing: out[0..<ipLength]))
            out.storeBigEndian((sequence + offset).rawValue, at: ipLength + 4)
            var pieceFlags = flags
            if offset + piece < payload { pieceFlags.remove([.fin, .psh]) }
            if offset > 0 { pieceFlags.remove(.cwr) }
            out[ipLength + 13] = pieceFlags.rawValue
            TCPRepr.fillChecksum(segment: UnsafeMutableRawBufferPointer(rebasing: out[ipLength...]), source: ip.source, destination: ip.destination)
            receive(packet: UnsafeRawBufferPointer(out), output: &output)
            offset += piece
            index += 1
        }
    }
}
