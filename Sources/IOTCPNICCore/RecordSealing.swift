import IOTCPCommon

/// Seals one flow's outgoing TLS records in place with the keys of its TLS_KEYS. The NIC's platform provides
/// it (AES-GCM from the platform's crypto library); the core only says where the record lies and which
/// number and type it has. Dropping the sealer erases its keys.
public protocol RecordSealing: AnyObject {
    var version: TLSRecordVersion { get }
    /// Seals the record that starts at `record`, whose plaintext is the `plaintextLength` bytes from
    /// `record + version.headerLength`, with `version.trailerLength` free bytes after them. Returns the
    /// record's length, or nil if it could not be sealed.
    func seal(record: UnsafeMutableRawPointer, plaintextLength: Int, number: UInt64, contentType: UInt8) -> Int?
}

/// Makes a flow's `RecordSealing` from the keys of a TLS_KEYS command (nil for keys it cannot use).
public protocol RecordSealerFactory {
    func makeSealer(_ keys: TLSKeys) -> (any RecordSealing)?
}

/// TLS content types the NIC seals (RFC 8446 §5.1).
public enum TLSContentTypeCode {
    public static let applicationData: UInt8 = 23
}
