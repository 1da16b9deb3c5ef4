// Shared by the fuzz targets that read their input as a script of steps (Engine, NIC).

/// Reads the fuzzer's bytes as a script.
struct FuzzInput {
    let bytes: UnsafeRawBufferPointer
    var position = 0
    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }
    mutating func byte() -> UInt8? {
        guard position < bytes.count else { return nil }
        defer { position += 1 }
        return bytes[position]
    }
    mutating func word() -> UInt32 {
        var value: UInt32 = 0
        for _ in 0..<4 { value = value << 8 | UInt32(byte() ?? 0) }
        return value
    }
}
