internal import CIOTCPTLS
import IOTCPCommon

/// Seals records of one direction in place with AES-GCM (OpenSSL's libcrypto, AES-NI where the CPU has it):
/// the key schedule is made once, each record only sets its nonce, and the ciphertext is written over the
/// plaintext where it lies, so sealing a record allocates nothing and copies nothing. The bytes are the
/// same as `TLSRecordProtection`'s (the tests check it); that type stays as the plain reference.
///
/// Freeing the sealer erases its key schedule. Not Sendable: a flow's sealer lives on the thread that
/// sends for the flow.
public final class TLSRecordSealer {
    private let sealer: OpaquePointer
    public let version: TLSRecordVersion

    /// `key` 16 or 32 bytes; `iv` 12 bytes (TLS 1.3's write IV) or 4 (TLS 1.2's salt). Nil otherwise.
    public init?(version: TLSRecordVersion, key: UnsafeRawBufferPointer, iv: UnsafeRawBufferPointer) {
        guard let made = Self.make(version, key, iv) else { return nil }
        sealer = made
        self.version = version
    }

    public init?(_ keys: TLSWriteKeys) {
        let made = keys.key.withUnsafeBytes { key in keys.iv.withUnsafeBytes { iv in Self.make(keys.version, key, iv) } }
        guard let made else { return nil }
        sealer = made
        version = keys.version
    }

    private static func make(_ version: TLSRecordVersion, _ key: UnsafeRawBufferPointer, _ iv: UnsafeRawBufferPointer) -> OpaquePointer? {
        iotcp_tls_sealer_new(Int32(version.rawValue), key.baseAddress?.assumingMemoryBound(to: UInt8.self), key.count,
                             iv.baseAddress?.assumingMemoryBound(to: UInt8.self), iv.count)
    }

    deinit { iotcp_tls_sealer_free(sealer) }

    /// Seals record `number` that starts at `record`: the plaintext lies `version.headerLength` bytes in and
    /// `version.trailerLength` bytes after it are free. Returns the record's length (nil past 16 KiB).
    public func seal(record: UnsafeMutableRawPointer, plaintextLength: Int, number: UInt64, contentType: UInt8) -> Int? {
        let length = iotcp_tls_seal(sealer, number, contentType, record.assumingMemoryBound(to: UInt8.self), plaintextLength)
        return length < 0 ? nil : Int(length)
    }

    /// Seals `plaintext` as record `number` into a new array (the host's own small records: HTTP heads,
    /// alerts).
    public func sealed(_ plaintext: UnsafeRawBufferPointer, number: UInt64, contentType: UInt8) -> [UInt8]? {
        guard plaintext.count <= RecordSendRange.maximumRecordPlaintext else { return nil }
        var record = [UInt8](repeating: 0, count: plaintext.count + version.overhead)
        let length = record.withUnsafeMutableBytes { buffer -> Int? in
            if let source = plaintext.baseAddress, !plaintext.isEmpty {
                (buffer.baseAddress! + version.headerLength).copyMemory(from: source, byteCount: plaintext.count)
            }
            return seal(record: buffer.baseAddress!, plaintextLength: plaintext.count, number: number, contentType: contentType)
        }
        return length == nil ? nil : record
    }
}
