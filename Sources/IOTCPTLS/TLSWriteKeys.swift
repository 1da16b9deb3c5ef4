import Crypto
import IOTCPCommon

/// One direction's record keys as the host hands them to the NIC: the version, the AES-GCM key, the IV
/// (TLS 1.2: the 4-byte salt) and the first record number still free. They are meant to live on the host
/// only between the handshake and the TLS_KEYS command (and in the connection's own sealer); `erase()`
/// overwrites them, as far as an array can be (a copy made before is not reached).
public struct TLSWriteKeys: Sendable {
    public var version: TLSRecordVersion
    public var key: [UInt8]
    public var iv: [UInt8]
    public var firstRecord: UInt64
    /// TLS 1.3: the traffic secret the key and IV come from, for the next KeyUpdate (empty for TLS 1.2).
    public var trafficSecret: [UInt8] = []
    public var suite: TLS13TrafficKeys.Suite = .aes128GCMSHA256

    public init(version: TLSRecordVersion, key: [UInt8], iv: [UInt8], firstRecord: UInt64) {
        self.version = version
        self.key = key
        self.iv = iv
        self.firstRecord = firstRecord
    }

    /// Overwrites the key, IV and traffic secret in place.
    public mutating func erase() {
        for index in key.indices { key[index] = 0 }
        for index in iv.indices { iv[index] = 0 }
        for index in trafficSecret.indices { trafficSecret[index] = 0 }
    }

    /// TLS 1.3's keys after a KeyUpdate (RFC 8446 §7.2): the next traffic secret and the key and IV from it,
    /// numbered from 0 again. Nil for TLS 1.2, which has no KeyUpdate.
    public func updated() -> TLSWriteKeys? {
        guard version == .tls13, trafficSecret.count == suite.hashLength else { return nil }
        var next = TLS13TrafficKeys.nextSecret(trafficSecret, suite: suite)
        defer { for index in next.indices { next[index] = 0 } }
        return Self.tls13(secret: next, suite: suite, firstRecord: 0)
    }

    /// TLS 1.3: the key and IV from the server's application traffic secret (RFC 8446 §7.3).
    public static func tls13(secret: [UInt8], suite: TLS13TrafficKeys.Suite, firstRecord: UInt64) -> TLSWriteKeys? {
        guard secret.count == suite.hashLength else { return nil }
        var keys = TLSWriteKeys(
            version: .tls13, key: TLS13TrafficKeys.expandLabel(secret, "key", length: suite.keyLength, suite: suite),
            iv: TLS13TrafficKeys.expandLabel(secret, "iv", length: 12, suite: suite), firstRecord: firstRecord)
        keys.trafficSecret = secret
        keys.suite = suite
        return keys
    }

    /// TLS 1.2 AES-GCM: the server's write key and salt from the master secret (RFC 5246 §6.3: key_block =
    /// PRF(master_secret, "key expansion", server_random + client_random), cut into client key, server key,
    /// client salt, server salt; AES-GCM suites have no MAC keys). The PRF's hash is the suite's.
    public static func tls12(
        masterSecret: [UInt8], clientRandom: [UInt8], serverRandom: [UInt8], suite: TLS13TrafficKeys.Suite, firstRecord: UInt64
    ) -> TLSWriteKeys? {
        guard masterSecret.count == 48, clientRandom.count == 32, serverRandom.count == 32 else { return nil }
        let keyLength = suite.keyLength
        var block = prf(secret: masterSecret, label: "key expansion", seed: serverRandom + clientRandom,
                        length: 2 * keyLength + 8, suite: suite)
        defer { for index in block.indices { block[index] = 0 } }
        var keys = TLSWriteKeys(
            version: .tls12, key: Array(block[keyLength..<(2 * keyLength)]),
            iv: Array(block[(2 * keyLength + 4)..<(2 * keyLength + 8)]), firstRecord: firstRecord)
        keys.suite = suite
        return keys
    }

    /// TLS 1.2's PRF (RFC 5246 §5): P_hash(secret, label + seed).
    static func prf(secret: [UInt8], label: String, seed: [UInt8], length: Int, suite: TLS13TrafficKeys.Suite) -> [UInt8] {
        switch suite {
        case .aes128GCMSHA256: pHash(SHA256.self, secret: secret, seed: Array(label.utf8) + seed, length: length)
        case .aes256GCMSHA384: pHash(SHA384.self, secret: secret, seed: Array(label.utf8) + seed, length: length)
        }
    }

    static func pHash<H: HashFunction>(_: H.Type, secret: [UInt8], seed: [UInt8], length: Int) -> [UInt8] {
        let key = SymmetricKey(data: secret)
        var output: [UInt8] = []
        output.reserveCapacity(length + 64)  // no reallocation leaves a copy of key material behind
        var a = Array(HMAC<H>.authenticationCode(for: seed, using: key))  // A(1)
        defer {
            for index in output.indices { output[index] = 0 }
            for index in a.indices { a[index] = 0 }
        }
        while output.count < length {
            output += Array(HMAC<H>.authenticationCode(for: a + seed, using: key))
            a = Array(HMAC<H>.authenticationCode(for: a, using: key))
        }
        return Array(output[0..<length])
    }
}
