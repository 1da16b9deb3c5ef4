import IOTCPCommon
import IOTCPNICCore
import IOTCPTLS

/// The NIC's TLS record sealing: AES-GCM in place through OpenSSL's libcrypto (`TLSRecordSealer`), one
/// sealer (and key schedule) per flow given TLS_KEYS.
public struct TLSRecordSealers: RecordSealerFactory {
    public init() {}

    public func makeSealer(_ keys: TLSKeys) -> (any RecordSealing)? {
        TLSRecordSealer(version: keys.version, key: keys.key, iv: keys.iv)
    }
}

extension TLSRecordSealer: RecordSealing {}
