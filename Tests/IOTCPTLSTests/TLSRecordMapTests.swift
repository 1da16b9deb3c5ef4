import IOTCPCommon
import Testing
@testable import IOTCPTLS

@Suite("TLS record map: any stream range rebuilt by sealing its records again")
struct TLSRecordMapTests {
    /// A stream as first sent: HTTP-head records from the host, then a file cut into records of uneven
    /// sizes, each sealed once in order. Returns the map, the stream bytes and the plaintext of each source.
    static func stream(_ protection: TLSRecordProtection, seed: UInt64)
        throws -> (TLSRecordMap, [UInt8], file: [UInt8], heads: [UInt64: [UInt8]])
    {
        var generator = SeededGenerator(seed: seed)
        let file = (0..<600_000).map { _ in UInt8.random(in: 0...255, using: &generator) }
        var map = TLSRecordMap(origin: 1_000, firstNumber: 3)
        var heads: [UInt64: [UInt8]] = [:]
        var stream = [UInt8]()
        func seal(_ record: TLSRecordMap.Record, _ plaintext: [UInt8]) throws {
            var bytes = [UInt8](repeating: 0, count: record.wireLength)
            _ = try plaintext.withUnsafeBytes { input in
                try bytes.withUnsafeMutableBytes { try protection.seal(input, contentType: record.contentType, sequence: record.number, into: $0) }
            }
            stream += bytes
        }
        for response in 0..<3 {
            let head = Array("HTTP/1.1 200 OK\r\nContent-Length: \(file.count)\r\nX-Response: \(response)\r\n\r\n".utf8)
            heads[UInt64(response)] = head
            try seal(map.append(.bytes(tag: UInt64(response)), plaintextLength: head.count, protection: protection), head)
            var offset = 0
            while offset < file.count {
                let length = min(Int.random(in: 1...TLSRecordProtection.maximumPlaintext, using: &generator), file.count - offset)
                try seal(map.append(.file(id: 9, offset: UInt64(offset)), plaintextLength: length, protection: protection),
                         Array(file[offset..<offset + length]))
                offset += length
            }
        }
        return (map, stream, file, heads)
    }

    static func plaintext(file: [UInt8], heads: [UInt64: [UInt8]]) -> (TLSRecordMap.Record) -> [UInt8] {
        { record in
            switch record.source {
            case .file(_, let offset): Array(file[Int(offset)..<Int(offset) + record.plaintextLength])
            case .bytes(let tag): heads[tag]!
            }
        }
    }

    @Test("TLS 1.3 and 1.2: 400 random ranges (inside one record, across several, whole records) rebuild byte for byte")
    func randomRanges() throws {
        for version in [TLSRecordProtection.Version.tls13, .tls12] {
            let protection = try TLSRecordProtection(version: version, key: [UInt8](repeating: 1, count: 32),
                                                     iv: [UInt8](repeating: 2, count: version == .tls13 ? 12 : 4))
            let (map, stream, file, heads) = try Self.stream(protection, seed: version == .tls13 ? 7 : 8)
            #expect(map.end == 1_000 + UInt64(stream.count))
            var generator = SeededGenerator(seed: 99)
            var output = [UInt8](repeating: 0, count: stream.count)
            for _ in 0..<400 {
                let start = Int.random(in: 0..<stream.count, using: &generator)
                let length = Int.random(in: 1...min(60_000, stream.count - start), using: &generator)
                let range = UInt64(1_000 + start)..<UInt64(1_000 + start + length)
                let written = try output.withUnsafeMutableBytes {
                    try map.rebuild(range, protection: protection, into: $0, plaintext: Self.plaintext(file: file, heads: heads))
                }
                #expect(written == length)
                #expect(output[0..<length] == stream[start..<start + length], "range \(range)")
            }
        }
    }

    @Test("records covering a range: none for an empty one, the one holding a single byte, all across a span")
    func covering() throws {
        let protection = try TLSRecordProtection(version: .tls13, key: [UInt8](repeating: 1, count: 16), iv: [UInt8](repeating: 2, count: 12))
        var map = TLSRecordMap(origin: 0, firstNumber: 0)
        for index in 0..<10 { map.append(.file(id: 1, offset: UInt64(index * 100)), plaintextLength: 100, protection: protection) }
        // Each record: 5 + 100 + 1 + 16 = 122 bytes on the wire.
        #expect(map.records(covering: 50..<50).isEmpty)
        #expect(map.records(covering: 121..<122).map(\.number) == [0])
        #expect(map.records(covering: 122..<123).map(\.number) == [1])
        #expect(map.records(covering: 100..<400).map(\.number) == [0, 1, 2, 3])
        #expect(map.records(covering: 1_200..<5_000).map(\.number) == [9])
        map.acknowledge(upTo: 244)
        #expect(map.count == 8 && map.records(covering: 0..<300).map(\.number) == [2])
        var output = [UInt8](repeating: 0, count: 10)
        #expect(throws: TLSRecordError.truncated) {
            try output.withUnsafeMutableBytes { try map.rebuild(200..<210, protection: protection, into: $0) { _ in [] } }
        }
    }
}
