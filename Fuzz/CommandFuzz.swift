// libFuzzer target for the command decoder, compiled with IOTCPCommon's sources by scripts/fuzz.sh.
// Oracle: the commands a message yields re-encode to a message that decodes to the same bytes again
// (decode ∘ encode is the identity on what the decoder accepts).

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCommands(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    let first = reencode(input, limit: 1 << 16)
    guard let first else { return 0 }
    let second = first.withUnsafeBytes { reencode($0, limit: 1 << 17) }
    precondition(second == first, "re-encoding what the decoder accepted is not stable")
    return 0
}

/// Decodes every command the reader accepts and encodes them into a fresh message; nil if the message
/// itself is rejected.
func reencode(_ message: UnsafeRawBufferPointer, limit: Int) -> [UInt8]? {
    guard var reader = try? CommandReader(message: message, maxMessageBytes: limit) else { return nil }
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 17, alignment: 8)
    defer { buffer.deallocate() }
    var writer = CommandWriter(buffer: buffer)
    while true {
        do {
            guard let command = try reader.next() else { break }
            precondition(command.validationFailure == nil, "the decoder returned a command it should reject")
            precondition(writer.append(command), "a decoded command does not fit in twice the space")
        } catch {
            if !error.isRecoverable { break }
        }
    }
    return Array(writer.finish(sequence: reader.header.sequence))
}
