import Foundation
import IOTCPCommon
import Testing
@testable import IOTCPTLS

private func fixture(_ name: String) -> String {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/\(name)").path
}

/// Runs client and server over memory until both finish the handshake (at most 20 flights).
private func handshake(_ client: TLSClientSession, _ server: TLSServerSession) throws {
    var scratch = [UInt8](repeating: 0, count: 256)
    for _ in 0..<20 {
        _ = try scratch.withUnsafeMutableBytes { try client.advance(into: $0) }
        let toServer = client.takeOutput()
        toServer.withUnsafeBytes { server.feed($0) }
        _ = try scratch.withUnsafeMutableBytes { try server.advance(into: $0) }
        let toClient = server.takeOutput()
        toClient.withUnsafeBytes { client.feed($0) }
        if client.isEstablished && server.isEstablished && toServer.isEmpty && toClient.isEmpty { return }
    }
    Issue.record("the handshake did not finish")
}

/// Everything the client can read now.
private func drain(_ client: TLSClientSession) throws -> [UInt8] {
    var received: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 1 << 15)
    while true {
        let progress = try buffer.withUnsafeMutableBytes { try client.advance(into: $0) }
        switch progress {
        case .data(let count): received += buffer[0..<count]
        case .established, .handshaking: continue
        case .idle, .closed: return received
        }
    }
}

@Suite("TLS on the host: OpenSSL's handshake, the keys handed over, records sealed in place")
struct TLSHandshakeTests {
    static let certificates = [("test-cert.pem", "test-key.pem"), ("test-rsa-cert.pem", "test-rsa-key.pem")]

    @Test("In-place sealing gives TLSRecordProtection's bytes", arguments: [TLSRecordVersion.tls13, .tls12], [16, 32])
    func sealerMatchesReference(version: TLSRecordVersion, keyLength: Int) throws {
        var generator = SeededGenerator(seed: UInt64(version.rawValue) &* 31 &+ UInt64(keyLength))
        let key = (0..<keyLength).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let iv = (0..<(version == .tls13 ? 12 : 4)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let reference = try TLSRecordProtection(version: version == .tls13 ? .tls13 : .tls12, key: key, iv: iv)
        let sealer = try #require(TLSRecordSealer(TLSWriteKeys(version: version, key: key, iv: iv, firstRecord: 0)))
        for length in [0, 1, 17, 1448, 16_383, 16_384] {
            let plaintext = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let number = UInt64.random(in: 0...UInt64.max, using: &generator)
            var expected = [UInt8](repeating: 0, count: reference.recordLength(plaintext: length))
            _ = try plaintext.withUnsafeBytes { input in
                try expected.withUnsafeMutableBytes { try reference.seal(input, contentType: .applicationData, sequence: number, into: $0) }
            }
            let sealed = try #require(plaintext.withUnsafeBytes { sealer.sealed($0, number: number, contentType: 23) })
            #expect(sealed == expected, "\(version) \(keyLength * 8)-bit, \(length) bytes")
        }
        let tooLong = [UInt8](repeating: 0, count: 16_385)
        #expect(tooLong.withUnsafeBytes { sealer.sealed($0, number: 0, contentType: 23) } == nil)
    }

    @Test("Handshake, request in, records sealed outside OpenSSL open at the client",
          arguments: [TLSRecordVersion.tls13, .tls12], [0, 1])
    func handshakeAndHandOver(version: TLSRecordVersion, certificate: Int) throws {
        let (certificatePath, keyPath) = Self.certificates[certificate]
        let context = try TLSServerContext(certificatePath: fixture(certificatePath), keyPath: fixture(keyPath))
        let server = try #require(TLSServerSession(context: context))
        let client = try TLSClientSession(caPath: fixture(certificatePath), serverName: "iotcp.test",
                                          maximumVersion: version == .tls12 ? .tls12 : nil)
        try handshake(client, server)
        #expect(server.version == version)
        #expect(client.version == version)
        #expect(server.serverName == "iotcp.test")

        // The request comes in through OpenSSL.
        let request = Array("GET /a HTTP/1.1\r\nHost: iotcp.test\r\n\r\n".utf8)
        try request.withUnsafeBytes { try client.write($0) }
        client.takeOutput().withUnsafeBytes { server.feed($0) }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let progress = try buffer.withUnsafeMutableBytes { try server.advance(into: $0) }
        #expect(progress == .data(request.count))
        #expect(Array(buffer[0..<request.count]) == request)

        // From here the records are sealed outside OpenSSL, numbered from the first free one.
        var keys = try server.transmitKeys()
        #expect(keys.firstRecord == (version == .tls13 ? 0 : 1))
        let sealer = try #require(TLSRecordSealer(keys))
        keys.erase()
        #expect(keys.key.allSatisfy { $0 == 0 } && keys.iv.allSatisfy { $0 == 0 })
        var generator = SeededGenerator(seed: 7)
        var sent: [UInt8] = []
        var wire: [UInt8] = []
        for (index, length) in [300, 16_384, 1, 9_000].enumerated() {
            let plaintext = (0..<length).map { _ in UInt8.random(in: 0...255, using: &generator) }
            sent += plaintext
            wire += try #require(plaintext.withUnsafeBytes {
                sealer.sealed($0, number: (version == .tls13 ? 0 : 1) + UInt64(index), contentType: 23)
            })
        }
        wire.withUnsafeBytes { client.feed($0) }
        #expect(try drain(client) == sent)
        #expect(server.takeOutput().isEmpty, "OpenSSL writes nothing once the records are sealed elsewhere")
    }

    @Test("TLS 1.3 KeyUpdate: a KeyUpdate message under the old keys, then records from 0 under the next secret, open at the client")
    func keyUpdate() throws {
        let context = try TLSServerContext(certificatePath: fixture("test-cert.pem"), keyPath: fixture("test-key.pem"))
        let server = try #require(TLSServerSession(context: context))
        let client = try TLSClientSession(caPath: fixture("test-cert.pem"), serverName: "iotcp.test")
        try handshake(client, server)
        var keys = try server.transmitKeys()
        #expect(keys.trafficSecret.count == 32)
        var wire: [UInt8] = []
        var sent: [UInt8] = []
        var number = keys.firstRecord
        for round in 0..<3 {
            let sealer = try #require(TLSRecordSealer(keys))
            let plaintext = [UInt8](repeating: UInt8(65 + round), count: 5000)
            sent += plaintext
            wire += try #require(plaintext.withUnsafeBytes { sealer.sealed($0, number: number, contentType: 23) })
            let message: [UInt8] = [24, 0, 0, 1, 0]  // KeyUpdate, update_not_requested
            wire += try #require(message.withUnsafeBytes { sealer.sealed($0, number: number + 1, contentType: 22) })
            let next = try #require(keys.updated())
            #expect(next.key != keys.key && next.firstRecord == 0)
            keys.erase()
            keys = next
            number = 0
        }
        let last = try #require(TLSRecordSealer(keys))
        sent += [1, 2, 3]
        wire += try #require([UInt8]([1, 2, 3]).withUnsafeBytes { last.sealed($0, number: 0, contentType: 23) })
        wire.withUnsafeBytes { client.feed($0) }
        #expect(try drain(client) == sent, "the client followed three KeyUpdates")
        #expect(keys.updated() != nil)
        var tls12 = TLSWriteKeys(version: .tls12, key: [UInt8](repeating: 1, count: 16), iv: [1, 2, 3, 4], firstRecord: 1)
        #expect(tls12.updated() == nil, "TLS 1.2 has no KeyUpdate")
        tls12.erase()
    }

    @Test("A record sealed under a number already used is refused by the client")
    func wrongRecordNumberFails() throws {
        let context = try TLSServerContext(certificatePath: fixture("test-cert.pem"), keyPath: fixture("test-key.pem"))
        let server = try #require(TLSServerSession(context: context))
        let client = try TLSClientSession(caPath: fixture("test-cert.pem"), serverName: "iotcp.test")
        try handshake(client, server)
        let sealer = try #require(TLSRecordSealer(try server.transmitKeys()))
        let record = try #require([UInt8](repeating: 65, count: 100).withUnsafeBytes { sealer.sealed($0, number: 5, contentType: 23) })
        record.withUnsafeBytes { client.feed($0) }
        #expect(throws: TLSFailure.self) { try drain(client) }
    }

    @Test("A client speaking garbage fails the handshake with a reason")
    func garbageFailsHandshake() throws {
        let context = try TLSServerContext(certificatePath: fixture("test-cert.pem"), keyPath: fixture("test-key.pem"))
        let server = try #require(TLSServerSession(context: context))
        Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8).withUnsafeBytes { server.feed($0) }
        var buffer = [UInt8](repeating: 0, count: 64)
        do {
            _ = try buffer.withUnsafeMutableBytes { try server.advance(into: $0) }
            Issue.record("plain HTTP was taken for a ClientHello")
        } catch let error as TLSFailure {
            #expect(error.description.contains("handshake"), "\(error)")
        }
        #expect(throws: TLSFailure.self) { try server.transmitKeys() }
    }

    @Test("A client that trusts another certificate stops the handshake")
    func untrustedCertificateFails() throws {
        let context = try TLSServerContext(certificatePath: fixture("test-cert.pem"), keyPath: fixture("test-key.pem"))
        let server = try #require(TLSServerSession(context: context))
        let client = try TLSClientSession(caPath: fixture("test-rsa-cert.pem"), serverName: "iotcp.test")
        #expect(throws: TLSFailure.self) { try handshake(client, server) }
    }

    @Test("Bad certificate and key files are named in the error")
    func badFiles() throws {
        #expect {
            _ = try TLSServerContext(certificatePath: "/nonexistent/cert.pem", keyPath: fixture("test-key.pem"))
        } throws: { ($0 as? TLSFailure)?.description.contains("/nonexistent/cert.pem") == true }
        #expect {
            _ = try TLSServerContext(certificatePath: fixture("test-cert.pem"), keyPath: fixture("test-rsa-key.pem"))
        } throws: { ($0 as? TLSFailure)?.description.contains("does not match") == true }
    }

    @Test("TLS 1.2's key expansion matches the PRF's definition on a known vector")
    func tls12PRF() {
        // The P_SHA256 test vector published with RFC 5246's PRF (IETF TLS WG mailing list, 2009): secret,
        // seed and label "test label", first 100 bytes of output.
        let secret: [UInt8] = [0x9b, 0xbe, 0x43, 0x6b, 0xa9, 0x40, 0xf0, 0x17, 0xb1, 0x76, 0x52, 0x84, 0x9a, 0x71, 0xdb, 0x35]
        let seed: [UInt8] = [0xa0, 0xba, 0x9f, 0x93, 0x6c, 0xda, 0x31, 0x18, 0x27, 0xa6, 0xf7, 0x96, 0xff, 0xd5, 0x19, 0x8c]
        let output = TLSWriteKeys.prf(secret: secret, label: "test label", seed: seed, length: 16, suite: .aes128GCMSHA256)
        #expect(output == [0xe3, 0xf2, 0x29, 0xba, 0x72, 0x7b, 0xe1, 0x7b, 0x8d, 0x12, 0x26, 0x20, 0x55, 0x7c, 0xd4, 0x53])
    }
}
