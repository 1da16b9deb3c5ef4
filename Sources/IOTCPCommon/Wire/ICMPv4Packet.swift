/// An ICMPv4 message (RFC 792). The NIC answers echo requests; other types are parsed so they can be
/// counted and passed on, not interpreted.
public struct ICMPv4Repr: Hashable, Sendable {
    public static let headerLength = 8

    public enum Message: Hashable, Sendable {
        case echoRequest(identifier: UInt16, sequence: UInt16)
        case echoReply(identifier: UInt16, sequence: UInt16)
        case destinationUnreachable(code: UInt8)
        /// Any other type, with the four bytes after the checksum kept as they were.
        case other(type: UInt8, code: UInt8, rest: UInt32)
    }

    public var message: Message

    public init(message: Message) { self.message = message }

    /// Parses an ICMP message and verifies its checksum; returns the message and the bytes after its
    /// 8-byte header (the echo data, or the quoted datagram).
    public static func parse(
        _ bytes: UnsafeRawBufferPointer
    ) throws(WireError) -> (repr: ICMPv4Repr, data: UnsafeRawBufferPointer) {
        guard bytes.count >= headerLength else {
            throw .truncated(layer: .icmp, needed: headerLength, available: bytes.count)
        }
        var sum = InternetChecksum()
        sum.add(bytes: bytes)
        guard sum.verifies else { throw .badChecksum(layer: .icmp) }
        let type = bytes[0], code = bytes[1]
        let identifier = bytes.bigEndianUInt16(at: 4), sequence = bytes.bigEndianUInt16(at: 6)
        let message: Message
        switch (type, code) {
        case (8, 0): message = .echoRequest(identifier: identifier, sequence: sequence)
        case (0, 0): message = .echoReply(identifier: identifier, sequence: sequence)
        case (3, _): message = .destinationUnreachable(code: code)
        default: message = .other(type: type, code: code, rest: bytes.bigEndianUInt32(at: 4))
        }
        return (ICMPv4Repr(message: message), UnsafeRawBufferPointer(rebasing: bytes[headerLength...]))
    }

    /// Writes the header followed by `data`, with the checksum over both. Returns the bytes written.
    @discardableResult
    public func emit(into buffer: UnsafeMutableRawBufferPointer, data: UnsafeRawBufferPointer) throws(WireError) -> Int {
        let length = Self.headerLength + data.count
        guard buffer.count >= length else { throw .bufferTooSmall(needed: length, available: buffer.count) }
        switch message {
        case .echoRequest(let identifier, let sequence), .echoReply(let identifier, let sequence):
            if case .echoRequest = message { buffer[0] = 8 } else { buffer[0] = 0 }
            buffer[1] = 0
            buffer.storeBigEndian(identifier, at: 4)
            buffer.storeBigEndian(sequence, at: 6)
        case .destinationUnreachable(let code):
            buffer[0] = 3
            buffer[1] = code
            buffer.storeBigEndian(UInt32(0), at: 4)
        case .other(let type, let code, let rest):
            buffer[0] = type
            buffer[1] = code
            buffer.storeBigEndian(rest, at: 4)
        }
        buffer.storeBigEndian(UInt16(0), at: 2)
        if let source = data.baseAddress, !data.isEmpty {
            (buffer.baseAddress! + Self.headerLength).copyMemory(from: source, byteCount: data.count)
        }
        let checksum = InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: buffer[0..<length]))
        buffer.storeBigEndian(checksum, at: 2)
        return length
    }
}
