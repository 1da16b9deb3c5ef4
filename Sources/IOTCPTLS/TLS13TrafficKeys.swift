import Crypto

/// TLS 1.3's traffic keys from a traffic secret (RFC 8446 §7.3): key = HKDF-Expand-Label(secret, "key", "",
/// key length), iv = HKDF-Expand-Label(secret, "iv", "", 12). The host derives them from the secrets its
/// handshake produced and hands the sending direction's to the NIC; a KeyUpdate (§7.2) derives the next
/// secret with `nextSecret`.
public enum TLS13TrafficKeys {
    /// The cipher suites whose records `TLSRecordProtection` seals.
    public enum Suite: Sendable {
        case aes128GCMSHA256, aes256GCMSHA384

        public var keyLength: Int { self == .aes128GCMSHA256 ? 16 : 32 }
        public var hashLength: Int { self == .aes128GCMSHA256 ? 32 : 48 }
    }

    /// The record protection for one direction, from its traffic secret.
    public static func protection(secret: [UInt8], suite: Suite) throws(TLSRecordError) -> TLSRecordProtection {
        guard secret.count == suite.hashLength else { throw .badKeyLength(secret.count) }
        return try TLSRecordProtection(
            version: .tls13, key: expandLabel(secret, "key", length: suite.keyLength, suite: suite),
            iv: expandLabel(secret, "iv", length: 12, suite: suite))
    }

    /// application_traffic_secret_N+1 from _N (RFC 8446 §7.2).
    public static func nextSecret(_ secret: [UInt8], suite: Suite) -> [UInt8] {
        expandLabel(secret, "traffic upd", length: suite.hashLength, suite: suite)
    }

    /// HKDF-Expand-Label(secret, label, "", length): the HkdfLabel is length u16, "tls13 " + label with a
    /// one-byte length, and an empty context with a one-byte length.
    static func expandLabel(_ secret: [UInt8], _ label: String, length: Int, suite: Suite) -> [UInt8] {
        let fullLabel = Array("tls13 \(label)".utf8)
        let info = [UInt8(length >> 8), UInt8(length & 0xff), UInt8(fullLabel.count)] + fullLabel + [0]
        let key = SymmetricKey(data: secret)
        switch suite {
        case .aes128GCMSHA256:
            return HKDF<SHA256>.expand(pseudoRandomKey: key, info: info, outputByteCount: length).withUnsafeBytes { Array($0) }
        case .aes256GCMSHA384:
            return HKDF<SHA384>.expand(pseudoRandomKey: key, info: info, outputByteCount: length).withUnsafeBytes { Array($0) }
        }
    }
}
