/// The 16 bytes in front of every channel message: magic, version, command count, total length, and a
/// per-direction sequence number (so a channel that loses or repeats a message is caught).
public struct MessageHeader: Hashable, Sendable {
    public var version: UInt16
    public var commandCount: UInt16
    public var length: UInt32
    public var sequence: UInt32

    public init(version: UInt16 = CommandProtocol.version, commandCount: UInt16, length: UInt32, sequence: UInt32) {
        self.version = version
        self.commandCount = commandCount
        self.length = length
        self.sequence = sequence
    }

    /// Reads and checks a header: magic, version, and a length that fits both the bytes at hand and the
    /// receiver's limit.
    @inlinable
    public init(parsing bytes: UnsafeRawBufferPointer, maxMessageBytes: Int) throws(CommandDecodeError) {
        guard bytes.count >= CommandProtocol.messageHeaderLength else {
            throw .truncatedMessage(available: bytes.count)
        }
        let magic = bytes.littleEndian(UInt32.self, at: 0)
        guard magic == CommandProtocol.magic else { throw .badMagic(magic) }
        version = bytes.littleEndian(UInt16.self, at: 4)
        guard version == CommandProtocol.version else { throw .unsupportedVersion(version) }
        commandCount = bytes.littleEndian(UInt16.self, at: 6)
        length = bytes.littleEndian(UInt32.self, at: 8)
        sequence = bytes.littleEndian(UInt32.self, at: 12)
        let declared = Int(length)
        guard declared <= maxMessageBytes else { throw .oversizedMessage(length: declared, limit: maxMessageBytes) }
        guard declared >= CommandProtocol.messageHeaderLength, declared <= bytes.count else {
            throw .badMessageLength(declared: declared, available: bytes.count)
        }
    }

    @inlinable
    public func emit(into buffer: UnsafeMutableRawBufferPointer) {
        buffer.storeLittleEndian(CommandProtocol.magic, at: 0)
        buffer.storeLittleEndian(version, at: 4)
        buffer.storeLittleEndian(commandCount, at: 6)
        buffer.storeLittleEndian(length, at: 8)
        buffer.storeLittleEndian(sequence, at: 12)
    }
}
