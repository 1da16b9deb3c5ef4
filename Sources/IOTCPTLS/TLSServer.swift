internal import CIOTCPTLS
import IOTCPCommon

/// Why a TLS server could not be set up or a session went wrong, in words for the operator.
public struct TLSFailure: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// A server's certificate and key and the TLS settings every connection shares (OpenSSL's SSL_CTX): TLS 1.2
/// and 1.3, AES-128-GCM and AES-256-GCM (the suites the NIC seals), ALPN http/1.1, SNI recorded, no session
/// tickets and no renegotiation (either would have OpenSSL write records under numbers the NIC uses).
public final class TLSServerContext: @unchecked Sendable {
    // OpenSSL's SSL_CTX is safe to share between threads once set up; nothing here changes it after init.
    let context: OpaquePointer

    /// Loads a PEM certificate chain and its PEM private key; says which file is wrong, and why, if one is.
    public init(certificatePath: String, keyPath: String) throws(TLSFailure) {
        var error = [CChar](repeating: 0, count: 512)
        guard let made = iotcp_tls_context_new(certificatePath, keyPath, &error, error.count) else {
            throw TLSFailure(cString(error))
        }
        context = made
    }

    deinit { iotcp_tls_context_free(context) }
}

/// One connection's TLS on the host, sans I/O: bytes received go in with `feed`, bytes to send come out of
/// `takeOutput`; `advance` moves the handshake on and then yields the peer's decrypted bytes.
///
/// Once the handshake is done, `transmitKeys()` gives the server's record keys and first free record
/// number, and from then on the caller (with the NIC) seals every outgoing record: OpenSSL's own writes are
/// dropped from there on (`takeOutput` returns nothing), since a record OpenSSL sealed would reuse a
/// record number, and so a nonce, that the caller's stream uses. Received records stay OpenSSL's to open.
public final class TLSServerSession {
    private let memory: MemoryTLSSession
    private var session: OpaquePointer { memory.session }
    private let context: TLSServerContext
    /// The keys went to the caller: OpenSSL writes nothing more.
    public private(set) var sealsOwnRecords = false

    public enum Progress: Equatable {
        /// The handshake needs more bytes from the peer.
        case handshaking
        /// The handshake just finished.
        case established
        /// Decrypted application bytes were read into the buffer.
        case data(Int)
        /// Nothing more to read now.
        case idle
        /// The peer sent close_notify.
        case closed
    }

    /// `maximumVersion` .tls12 stops at TLS 1.2 (for tests and old clients); nil allows TLS 1.3.
    public init?(context: TLSServerContext, maximumVersion: TLSRecordVersion? = nil) {
        guard let made = iotcp_tls_session_new(context.context, maximumVersion == .tls12 ? 0x0303 : 0) else { return nil }
        memory = MemoryTLSSession(made)
        self.context = context
    }

    public var isEstablished: Bool { memory.isEstablished }

    /// Hands OpenSSL bytes from the peer.
    public func feed(_ bytes: UnsafeRawBufferPointer) { memory.feed(bytes) }

    /// Moves the handshake on, then reads decrypted bytes into `buffer`. Throws on a failed handshake, a
    /// record that does not open, or an alert from the peer.
    public func advance(into buffer: UnsafeMutableRawBufferPointer) throws(TLSFailure) -> Progress {
        try memory.advance(into: buffer)
    }

    /// Bytes OpenSSL wrote for the peer (handshake flights, a fatal alert) since the last call.
    public func takeOutput() -> [UInt8] {
        let bytes = memory.takeOutput()
        return sealsOwnRecords ? [] : bytes  // see the type's comment
    }

    public var version: TLSRecordVersion? { TLSRecordVersion(rawValue: UInt16(truncatingIfNeeded: iotcp_tls_version(session))) }
    /// The IANA number of the negotiated cipher suite.
    public var cipherSuite: UInt16 { UInt16(truncatingIfNeeded: iotcp_tls_cipher_suite(session)) }
    public var serverName: String? { iotcp_tls_server_name(session).map { String(cString: $0) } }
    /// The most plaintext a record may carry: 16 KiB, or the client's max_fragment_length (RFC 6066).
    public var recordPlaintextLimit: Int { Int(iotcp_tls_record_plaintext_limit(session)) }

    /// The server's record keys after the handshake; from this call on OpenSSL writes no more records.
    public func transmitKeys() throws(TLSFailure) -> TLSWriteKeys {
        guard isEstablished, let version else { throw TLSFailure("the handshake has not finished") }
        let suite: TLS13TrafficKeys.Suite
        switch cipherSuite {
        case 0x1301, 0xC02B, 0xC02F: suite = .aes128GCMSHA256
        case 0x1302, 0xC02C, 0xC030: suite = .aes256GCMSHA384
        default: throw TLSFailure("cipher suite 0x\(String(cipherSuite, radix: 16)) is not one the NIC seals")
        }
        var secret = [UInt8](repeating: 0, count: 64)
        let length = secret.withUnsafeMutableBytes { iotcp_tls_server_secret(session, $0.baseAddress!.assumingMemoryBound(to: UInt8.self), 64) }
        defer { for index in secret.indices { secret[index] = 0 } }
        let first = iotcp_tls_write_sequence(session)
        let keys: TLSWriteKeys?
        switch version {
        case .tls13:
            keys = TLSWriteKeys.tls13(secret: Array(secret[0..<length]), suite: suite, firstRecord: first)
        case .tls12:
            var client = [UInt8](repeating: 0, count: 32), server = [UInt8](repeating: 0, count: 32)
            client.withUnsafeMutableBytes { client in
                server.withUnsafeMutableBytes { server in
                    iotcp_tls_randoms(session, client.baseAddress!.assumingMemoryBound(to: UInt8.self),
                                      server.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            }
            var master = Array(secret[0..<length])
            defer { for index in master.indices { master[index] = 0 } }
            keys = TLSWriteKeys.tls12(masterSecret: master, clientRandom: client, serverRandom: server, suite: suite, firstRecord: first)
        }
        guard let keys else { throw TLSFailure("the \(version) secrets were not available") }
        sealsOwnRecords = true
        return keys
    }
}

/// A TLS client over memory, for tests and tools: it checks the server's certificate against a CA file and
/// its name, and opens every record the server (or its NIC) sealed, so a wrong key or record number fails.
public final class TLSClientSession {
    private let context: OpaquePointer
    private let memory: MemoryTLSSession

    public init(caPath: String, serverName: String, maximumVersion: TLSRecordVersion? = nil) throws(TLSFailure) {
        var error = [CChar](repeating: 0, count: 512)
        guard let context = iotcp_tls_client_context_new(caPath, maximumVersion == .tls12 ? 0x0303 : 0, &error, error.count) else {
            throw TLSFailure(cString(error))
        }
        guard let session = iotcp_tls_client_session_new(context, serverName) else {
            iotcp_tls_context_free(context)
            throw TLSFailure("cannot create a client session")
        }
        self.context = context
        memory = MemoryTLSSession(session)
    }

    deinit {
        // The session goes first (MemoryTLSSession's deinit), then its context.
        memory.free()
        iotcp_tls_context_free(context)
    }

    public var isEstablished: Bool { memory.isEstablished }
    public func feed(_ bytes: UnsafeRawBufferPointer) { memory.feed(bytes) }

    /// As `TLSServerSession.advance`.
    public func advance(into buffer: UnsafeMutableRawBufferPointer) throws(TLSFailure) -> TLSServerSession.Progress {
        try memory.advance(into: buffer)
    }

    public func write(_ bytes: UnsafeRawBufferPointer) throws(TLSFailure) {
        guard let base = bytes.baseAddress else { return }
        if iotcp_tls_write(memory.session, base, bytes.count) < 0 { throw TLSFailure(memory.lastError) }
    }

    public func takeOutput() -> [UInt8] { memory.takeOutput() }

    public var version: TLSRecordVersion? { memory.version }
}

/// One OpenSSL session over memory BIOs, the part server and client share: bytes in, handshake, decrypted
/// bytes out, bytes to send.
final class MemoryTLSSession {
    let session: OpaquePointer
    private(set) var isEstablished = false
    private var freed = false

    init(_ session: OpaquePointer) { self.session = session }

    deinit { free() }

    /// Frees the session (once) and erases what it captured.
    func free() {
        guard !freed else { return }
        freed = true
        iotcp_tls_session_free(session)
    }

    func feed(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress else { return }
        var offset = 0
        while offset < bytes.count {
            let taken = iotcp_tls_feed(session, base + offset, bytes.count - offset)
            if taken <= 0 { return }
            offset += taken
        }
    }

    func advance(into buffer: UnsafeMutableRawBufferPointer) throws(TLSFailure) -> TLSServerSession.Progress {
        if !isEstablished {
            switch iotcp_tls_handshake(session) {
            case 1:
                isEstablished = true
                return .established
            case 0:
                return .handshaking
            default:
                throw TLSFailure(lastError)
            }
        }
        guard let base = buffer.baseAddress, !buffer.isEmpty else { return .idle }
        let read = iotcp_tls_read(session, base, buffer.count)
        switch read {
        case 1...: return .data(Int(read))
        case 0: return .idle
        case -1: return .closed
        default: throw TLSFailure(lastError)
        }
    }

    func takeOutput() -> [UInt8] {
        let pending = iotcp_tls_pending_output(session)
        guard pending > 0 else { return [] }
        var bytes = [UInt8](repeating: 0, count: pending)
        let taken = bytes.withUnsafeMutableBytes { iotcp_tls_take_output(session, $0.baseAddress!, pending) }
        return Array(bytes[0..<max(0, taken)])
    }

    var lastError: String {
        var text = [CChar](repeating: 0, count: 256)
        iotcp_tls_error(session, &text, text.count)
        return cString(text)
    }

    var version: TLSRecordVersion? { TLSRecordVersion(rawValue: UInt16(truncatingIfNeeded: iotcp_tls_version(session))) }
}

/// The text of a NUL-terminated C buffer.
func cString(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
