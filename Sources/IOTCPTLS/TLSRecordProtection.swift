import Crypto

/// TLS record protection with AES-GCM, for one direction of one connection: TLS 1.3 (RFC 8446 §5.2-5.3) and
/// TLS 1.2 (RFC 5246 §6.2.3.3 with RFC 5288's nonce). Sans-I/O and deterministic: the same key, record
/// number, content type and plaintext always give the same bytes, which is what lets the NIC seal a file
/// range as it sends it and seal it again for a retransmission instead of keeping the ciphertext.
///
/// The host stays the sequencer of the TLS stream: it chooses where records start, what they carry and
/// their numbers, so it knows each record's length on the wire (`recordLength`) before any byte is sealed.
///
/// Not Sendable: swift-crypto's `SymmetricKey` is not, and a connection's keys stay on the thread that
/// seals for it.
public struct TLSRecordProtection {
    public enum Version: Sendable, Equatable {
        case tls12, tls13
    }

    public let version: Version
    private let key: SymmetricKey
    /// TLS 1.3: the 12-byte write_iv. TLS 1.2: the 4-byte implicit salt (client/server_write_IV).
    private let iv: [UInt8]

    /// `key` is 16 bytes (AES-128-GCM) or 32 (AES-256-GCM); `iv` 12 bytes for TLS 1.3, 4 for TLS 1.2.
    public init(version: Version, key: [UInt8], iv: [UInt8]) throws(TLSRecordError) {
        guard key.count == 16 || key.count == 32 else { throw .badKeyLength(key.count) }
        guard iv.count == (version == .tls13 ? 12 : 4) else { throw .badIVLength(iv.count) }
        self.version = version
        self.key = SymmetricKey(data: key)
        self.iv = iv
    }

    public static let headerLength = 5
    public static let tagLength = 16
    /// The most plaintext one record carries (RFC 8446 §5.1, RFC 5246 §6.2.1).
    public static let maximumPlaintext = 1 << 14

    /// What a record carrying `plaintext` bytes occupies on the wire, header and tag included.
    public func recordLength(plaintext: Int) -> Int {
        switch version {
        case .tls13: Self.headerLength + plaintext + 1 + Self.tagLength  // the inner content type byte
        case .tls12: Self.headerLength + 8 + plaintext + Self.tagLength  // the explicit nonce
        }
    }

    /// Seals one record numbered `sequence` into `output` (at least `recordLength(plaintext:)` bytes) and
    /// returns its length. TLS 1.3 records go out as application_data with the real type inside, unpadded.
    public func seal(
        _ plaintext: UnsafeRawBufferPointer, contentType: TLSContentType, sequence: UInt64,
        into output: UnsafeMutableRawBufferPointer
    ) throws(TLSRecordError) -> Int {
        guard plaintext.count <= Self.maximumPlaintext else { throw .recordTooLong(plaintext.count) }
        let length = recordLength(plaintext: plaintext.count)
        guard output.count >= length else { throw .outputTooShort(needed: length, given: output.count) }
        let fragment = length - Self.headerLength
        let outerType = version == .tls13 ? TLSContentType.applicationData : contentType
        let header: [UInt8] = [outerType.rawValue, 0x03, 0x03, UInt8(fragment >> 8), UInt8(fragment & 0xff)]
        let box: AES.GCM.SealedBox
        do {
            switch version {
            case .tls13:
                var inner = [UInt8](plaintext)
                inner.append(contentType.rawValue)
                box = try AES.GCM.seal(inner, using: key, nonce: try nonce13(sequence), authenticating: header)
            case .tls12:
                box = try AES.GCM.seal(Array(plaintext), using: key, nonce: try nonce12(sequence),
                                       authenticating: additionalData12(sequence, contentType, plaintext.count))
            }
        } catch {
            throw .crypto("\(error)")
        }
        var offset = 0
        func put<C: Collection<UInt8>>(_ bytes: C) {
            UnsafeMutableRawBufferPointer(rebasing: output[offset...]).copyBytes(from: bytes)
            offset += bytes.count
        }
        put(header)
        if version == .tls12 { put(sequence.bigEndianBytes) }
        put(box.ciphertext)
        put(box.tag)
        return offset
    }

    /// Opens one whole record numbered `sequence`: its content type and plaintext, or an error for a record
    /// that is malformed or was not sealed with this key and number (RFC 8446's bad_record_mac).
    public func open(_ record: UnsafeRawBufferPointer, sequence: UInt64) throws(TLSRecordError) -> (TLSContentType, [UInt8]) {
        guard record.count >= Self.headerLength else { throw .truncated }
        let declared = Int(record[3]) << 8 | Int(record[4])
        guard record.count == Self.headerLength + declared else { throw .truncated }
        let overhead = version == .tls13 ? Self.tagLength + 1 : 8 + Self.tagLength
        guard declared >= overhead, declared - overhead <= Self.maximumPlaintext else { throw .badLength(declared) }
        let header = Array(record[0..<Self.headerLength])
        let body = record[Self.headerLength...]
        do {
            switch version {
            case .tls13:
                guard record[0] == TLSContentType.applicationData.rawValue else { throw TLSRecordError.unexpectedType(record[0]) }
                let box = try AES.GCM.SealedBox(nonce: try nonce13(sequence), ciphertext: Array(body.dropLast(Self.tagLength)),
                                                tag: Array(body.suffix(Self.tagLength)))
                var inner = Array(try AES.GCM.open(box, using: key, authenticating: header))
                // The real type is the last non-zero byte (RFC 8446 §5.4: zeros after it are padding).
                while let last = inner.last, last == 0 { inner.removeLast() }
                guard let typeByte = inner.popLast(), let type = TLSContentType(rawValue: typeByte) else {
                    throw TLSRecordError.unexpectedType(0)
                }
                return (type, inner)
            case .tls12:
                guard let type = TLSContentType(rawValue: record[0]) else { throw TLSRecordError.unexpectedType(record[0]) }
                let explicit = body.prefix(8)
                guard explicit.elementsEqual(sequence.bigEndianBytes) else { throw TLSRecordError.authenticationFailed }
                let sealed = body.dropFirst(8)
                let box = try AES.GCM.SealedBox(nonce: try nonce12(sequence), ciphertext: Array(sealed.dropLast(Self.tagLength)),
                                                tag: Array(sealed.suffix(Self.tagLength)))
                let plaintextLength = sealed.count - Self.tagLength
                let plaintext = try AES.GCM.open(box, using: key,
                                                 authenticating: additionalData12(sequence, type, plaintextLength))
                return (type, Array(plaintext))
            }
        } catch let error as TLSRecordError {
            throw error
        } catch {
            throw .authenticationFailed
        }
    }

    /// TLS 1.3: the record number, left-padded to 12 bytes, XORed with write_iv.
    private func nonce13(_ sequence: UInt64) throws -> AES.GCM.Nonce {
        var nonce = iv
        for (index, byte) in sequence.bigEndianBytes.enumerated() { nonce[4 + index] ^= byte }
        return try AES.GCM.Nonce(data: nonce)
    }

    /// TLS 1.2 (RFC 5288 §3): the implicit salt, then the explicit part, which is the record number here.
    private func nonce12(_ sequence: UInt64) throws -> AES.GCM.Nonce {
        try AES.GCM.Nonce(data: iv + sequence.bigEndianBytes)
    }

    /// TLS 1.2's additional data: seq_num, type, version, the plaintext's length (RFC 5246 §6.2.3.3).
    private func additionalData12(_ sequence: UInt64, _ type: TLSContentType, _ length: Int) -> [UInt8] {
        sequence.bigEndianBytes + [type.rawValue, 0x03, 0x03, UInt8(length >> 8), UInt8(length & 0xff)]
    }
}

/// TLS content types (RFC 8446 §5.1).
public enum TLSContentType: UInt8, Sendable {
    case changeCipherSpec = 20, alert = 21, handshake = 22, applicationData = 23
}

public enum TLSRecordError: Error, Equatable, Sendable {
    case badKeyLength(Int), badIVLength(Int)
    case recordTooLong(Int)
    case outputTooShort(needed: Int, given: Int)
    case truncated, badLength(Int), unexpectedType(UInt8)
    /// The tag did not verify: a forged or damaged record, or the wrong key or record number.
    case authenticationFailed
    case crypto(String)
}

extension UInt64 {
    var bigEndianBytes: [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: self >> (56 - 8 * $0)) } }
}
