import Testing
@testable import IOTCPTLS

private func hex(_ text: String) -> [UInt8] {
    let digits = text.filter { !$0.isWhitespace }
    return stride(from: 0, to: digits.count, by: 2).map {
        let start = digits.index(digits.startIndex, offsetBy: $0)
        return UInt8(digits[start..<digits.index(start, offsetBy: 2)], radix: 16)!
    }
}

private func seal(_ protection: TLSRecordProtection, _ plaintext: [UInt8], type: TLSContentType = .applicationData,
                  sequence: UInt64) throws -> [UInt8] {
    var output = [UInt8](repeating: 0, count: protection.recordLength(plaintext: plaintext.count))
    let written = try plaintext.withUnsafeBytes { input in
        try output.withUnsafeMutableBytes { try protection.seal(input, contentType: type, sequence: sequence, into: $0) }
    }
    #expect(written == output.count, "recordLength is exactly what seal writes")
    return output
}

private func open(_ protection: TLSRecordProtection, _ record: [UInt8], sequence: UInt64) throws -> (TLSContentType, [UInt8]) {
    try record.withUnsafeBytes { try protection.open($0, sequence: sequence) }
}

@Suite("TLS record protection (AES-GCM, TLS 1.3 and 1.2)")
struct TLSRecordProtectionTests {
    // RFC 8448 §3, the simple 1-RTT handshake: application traffic keys and the application_data records
    // both sides send, each carrying the 50 bytes 00 01 ... 31.
    static let payload = [UInt8](0..<50)
    static let clientKey = hex("17 42 2d da 59 6e d5 d9 ac d8 90 e3 c6 3f 50 51")
    static let clientIV = hex("5b 78 92 3d ee 08 57 90 33 e5 23 d9")
    static let clientRecord = hex("""
        17 03 03 00 43 a2 3f 70 54 b6 2c 94 d0 af fa fe 82 28 ba 55 cb ef ac ea 42 f9 14 aa 66 bc ab 3f 2b 98 19
        a8 a5 b4 6b 39 5b d5 4a 9a 20 44 1e 2b 62 97 4e 1f 5a 62 92 a2 97 70 14 bd 1e 3d ea e6 3a ee bb 21 69 49 15 e4
        """)
    static let serverKey = hex("9f 02 28 3b 6c 9c 07 ef c2 6b b9 f2 ac 92 e3 56")
    static let serverIV = hex("cf 78 2b 88 dd 83 54 9a ad f1 e9 84")
    static let serverRecord = hex("""
        17 03 03 00 43 2e 93 7e 11 ef 4a c7 40 e5 38 ad 36 00 5f c4 a4 69 32 fc 32 25 d0 5f 82 aa 1b 36 e3 0e fa
        f9 7d 90 e6 df fc 60 2d cb 50 1a 59 a8 fc c4 9c 4b f2 e5 f0 a2 1c 00 47 c2 ab f3 32 54 0d d0 32 e1 67 c2 95 5d
        """)

    @Test("TLS 1.3: sealing RFC 8448's application data gives its records byte for byte")
    func rfc8448Seal() throws {
        let client = try TLSRecordProtection(version: .tls13, key: Self.clientKey, iv: Self.clientIV)
        #expect(try seal(client, Self.payload, sequence: 0) == Self.clientRecord)
        // The server's first record under these keys is its NewSessionTicket: the data is record 1.
        let server = try TLSRecordProtection(version: .tls13, key: Self.serverKey, iv: Self.serverIV)
        #expect(try seal(server, Self.payload, sequence: 1) == Self.serverRecord)
        #expect(try seal(server, Self.payload, sequence: 0) != Self.serverRecord, "the record number is in the nonce")
    }

    @Test("TLS 1.3: opening RFC 8448's records gives the type and the bytes; a wrong number or a flipped bit fails")
    func rfc8448Open() throws {
        let client = try TLSRecordProtection(version: .tls13, key: Self.clientKey, iv: Self.clientIV)
        let (type, plaintext) = try open(client, Self.clientRecord, sequence: 0)
        #expect(type == .applicationData && plaintext == Self.payload)
        #expect(throws: TLSRecordError.authenticationFailed) { try open(client, Self.clientRecord, sequence: 1) }
        for index in [0 + 1, 5, 40, Self.clientRecord.count - 1] {
            var damaged = Self.clientRecord
            damaged[index] ^= 0x01
            #expect(throws: (any Error).self, "byte \(index) flipped") { try open(client, damaged, sequence: 0) }
        }
        #expect(throws: TLSRecordError.truncated) { try open(client, Array(Self.clientRecord.dropLast()), sequence: 0) }
    }

    @Test("TLS 1.3: RFC 8448's application traffic secrets give its keys, and their records")
    func trafficKeysFromSecrets() throws {
        let serverSecret = hex("a1 1a f9 f0 55 31 f8 56 ad 47 11 6b 45 a9 50 32 82 04 b4 f4 4b fb 6b 3a 4b 4f 1f 3f cb 63 16 43")
        let clientSecret = hex("9e 40 64 6c e7 9a 7f 9d c0 5a f8 88 9b ce 65 52 87 5a fa 0b 06 df 00 87 f7 92 eb b7 c1 75 04 a5")
        #expect(TLS13TrafficKeys.expandLabel(serverSecret, "key", length: 16, suite: .aes128GCMSHA256) == Self.serverKey)
        #expect(TLS13TrafficKeys.expandLabel(serverSecret, "iv", length: 12, suite: .aes128GCMSHA256) == Self.serverIV)
        let server = try TLS13TrafficKeys.protection(secret: serverSecret, suite: .aes128GCMSHA256)
        #expect(try seal(server, Self.payload, sequence: 1) == Self.serverRecord)
        let client = try TLS13TrafficKeys.protection(secret: clientSecret, suite: .aes128GCMSHA256)
        #expect(try open(client, Self.clientRecord, sequence: 0).1 == Self.payload)
        #expect(throws: TLSRecordError.badKeyLength(32)) { try TLS13TrafficKeys.protection(secret: serverSecret, suite: .aes256GCMSHA384) }
        // KeyUpdate's next secret, as another implementation derives it (scripts/tls-vectors.py).
        #expect(TLS13TrafficKeys.nextSecret(serverSecret, suite: .aes128GCMSHA256)
                == hex("51921b8aa3001976eb401d0a4319a8516416a6c56001a357e5d162031e84f916"))
    }

    @Test("TLS 1.3: the inner type is sealed too (a handshake message travels as application_data)")
    func innerType() throws {
        let server = try TLSRecordProtection(version: .tls13, key: Self.serverKey, iv: Self.serverIV)
        let record = try seal(server, [1, 2, 3], type: .handshake, sequence: 7)
        #expect(record[0] == TLSContentType.applicationData.rawValue && record.count == 5 + 3 + 1 + 16)
        let (type, plaintext) = try open(server, record, sequence: 7)
        #expect(type == .handshake && plaintext == [1, 2, 3])
    }

    @Test("TLS 1.2 AES-256-GCM: the record another implementation makes from RFC 5246 and RFC 5288 (scripts/tls-vectors.py)")
    func tls12Vector() throws {
        let protection = try TLSRecordProtection(version: .tls12, key: [UInt8](0..<32), iv: [0xa0, 0xa1, 0xa2, 0xa3])
        let plaintext = Array("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello".utf8)
        let expected = hex("""
            17030300430000000000000005d19dbc5817e6520e96b7aeda28410cb3a282703ce3cb19fd12657309616e6f2e7e10110ee6
            395897a6b43ad189eb5b6ba8dfcc0ae6f0d0fd45e579
            """)
        #expect(try seal(protection, plaintext, sequence: 5) == expected)
        let (type, opened) = try open(protection, expected, sequence: 5)
        #expect(type == .applicationData && opened == plaintext)
        #expect(throws: TLSRecordError.authenticationFailed) { try open(protection, expected, sequence: 6) }
    }

    @Test("sealing again gives the same bytes, so any slice of a record can be resent from a fresh seal")
    func deterministicReseal() throws {
        for version in [TLSRecordProtection.Version.tls13, .tls12] {
            let protection = try TLSRecordProtection(version: version, key: [UInt8](repeating: 7, count: 16),
                                                     iv: [UInt8](repeating: 9, count: version == .tls13 ? 12 : 4))
            var generator = SystemRandomNumberGenerator()
            let plaintext = (0..<TLSRecordProtection.maximumPlaintext).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let first = try seal(protection, plaintext, sequence: 123_456)
            let again = try seal(protection, plaintext, sequence: 123_456)
            #expect(first == again)
            #expect(first.count == protection.recordLength(plaintext: plaintext.count))
            #expect(try open(protection, first, sequence: 123_456).1 == plaintext)
        }
    }

    @Test("bad keys, ivs, lengths and short buffers are refused with a reason")
    func refusals() throws {
        #expect(throws: TLSRecordError.badKeyLength(15)) { try TLSRecordProtection(version: .tls13, key: [UInt8](repeating: 0, count: 15), iv: [UInt8](repeating: 0, count: 12)) }
        #expect(throws: TLSRecordError.badIVLength(12)) { try TLSRecordProtection(version: .tls12, key: [UInt8](repeating: 0, count: 16), iv: [UInt8](repeating: 0, count: 12)) }
        let protection = try TLSRecordProtection(version: .tls13, key: Self.clientKey, iv: Self.clientIV)
        let tooLong = [UInt8](repeating: 0, count: TLSRecordProtection.maximumPlaintext + 1)
        #expect(throws: TLSRecordError.recordTooLong(tooLong.count)) { _ = try seal(protection, tooLong, sequence: 0) }
        var small = [UInt8](repeating: 0, count: 10)
        #expect(throws: TLSRecordError.outputTooShort(needed: 23, given: 10)) {
            try [UInt8]([0]).withUnsafeBytes { input in
                try small.withUnsafeMutableBytes { try protection.seal(input, contentType: .applicationData, sequence: 0, into: $0) }
            }
        }
        #expect(throws: TLSRecordError.truncated) { try open(protection, [23, 3, 3], sequence: 0) }
        #expect(throws: TLSRecordError.badLength(3)) { try open(protection, [23, 3, 3, 0, 3, 1, 2, 3], sequence: 0) }
    }
}
