import IOTCPCommon
import IOTCPNIC

extension IOTCPBench {
    /// Building the segments of one 64 KiB SEND: headers from the template, payload copied in, checksums
    /// computed; and the same as super-segments whose TCP checksum the wire finishes.
    func segmentFigures() -> [Figure] {
        let sendBytes = 64 << 10
        var random = SystemRandomNumberGenerator()
        let source = UnsafeMutableRawBufferPointer.allocate(byteCount: sendBytes, alignment: 64)
        let packet = UnsafeMutableRawBufferPointer.allocate(byteCount: 65536, alignment: 64)
        defer { source.deallocate(); packet.deallocate() }
        for index in 0..<sendBytes { source[index] = UInt8.random(in: 0...255, using: &random) }
        let flow = FlowEndpoints(localAddress: IPv4Address(10, 77, 0, 2), remoteAddress: IPv4Address(10, 77, 0, 1), localPort: 80,
                                 remotePort: 40000, remoteHardwareAddress: .zero, maximumSegmentSize: 1448)
        let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(1), window: 65535, lastSegmentFlags: .psh,
                                       maximumSegmentSize: 1448, timestamps: TCPTimestamps(value: 1, echoReply: 2))
        func build(piece: Int, offload: Bool) {
            let bytes = opaque(source)
            var done = 0
            while done < sendBytes {
                let length = min(piece, sendBytes - done)
                _ = try? SegmentBuilder.build(
                    into: packet, flow: flow, sequence: SequenceNumber(1000) + done, payloadLength: length,
                    isLast: done + length == sendBytes, template: template, nicDelayMilliseconds: 0, checksumOffload: offload && length > 1448
                ) { payload in payload.copyMemory(from: UnsafeRawBufferPointer(rebasing: bytes[done..<(done + length)])) }
                done += length
            }
            consume(packet[20 + 16])
        }
        let superPiece = SegmentBuilder.superSegmentPayload(packetLimit: 65535, template: template)
        let segments = rate(seconds: seconds, unitsPerCall: 1) { build(piece: 1448, offload: false) }
        let supers = rate(seconds: seconds, unitsPerCall: 1) { build(piece: superPiece, offload: true) }
        return [
            Figure(name: "segment building, 64 KiB SEND, 46 segments with checksums", value: 1e6 / segments, unit: "us", target: nil),
            Figure(name: "segment building, 64 KiB SEND, as super-segments (checksum by the wire)", value: 1e6 / supers, unit: "us", target: nil),
        ]
    }
}
