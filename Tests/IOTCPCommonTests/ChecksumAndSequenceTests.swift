import Testing
@testable import IOTCPCommon

@Suite("Internet checksum")
struct ChecksumTests {
    /// The worked example of RFC 1071 §3: the sum of 0001 f203 f4f5 f6f7 is ddf2.
    @Test func rfc1071Example() {
        let bytes: [UInt8] = [0x00, 0x01, 0xF2, 0x03, 0xF4, 0xF5, 0xF6, 0xF7]
        bytes.withUnsafeBytes { buffer in
            var sum = InternetChecksum()
            sum.add(bytes: buffer)
            #expect(sum.foldedSum == 0xDDF2)
            #expect(sum.checksum == 0x220D)
        }
    }

    /// A plain reference: 16-bit big-endian words with end-around carry, one at a time.
    static func reference(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var index = 0
        while index + 1 < bytes.count {
            sum += UInt32(bytes[index]) << 8 | UInt32(bytes[index + 1])
            index += 2
        }
        if index < bytes.count { sum += UInt32(bytes[index]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
        return ~UInt16(sum)
    }

    @Test("matches the word-by-word reference for every length to 3000, in any split")
    func matchesReference() {
        var random = SeededGenerator(seed: 1)
        for length in 0...3000 {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &random) }
            let split = length == 0 ? 0 : Int.random(in: 0...length, using: &random)
            bytes.withUnsafeBytes { buffer in
                #expect(InternetChecksum.checksum(buffer) == Self.reference(bytes), "length \(length)")
                // Adding in two pieces, the first of odd length half the time, gives the same result.
                var pieces = InternetChecksum()
                pieces.add(bytes: UnsafeRawBufferPointer(rebasing: buffer[0..<split]))
                pieces.add(bytes: UnsafeRawBufferPointer(rebasing: buffer[split...]))
                #expect(pieces.checksum == Self.reference(bytes), "length \(length) split at \(split)")
            }
        }
    }

    @Test("RFC 1624 incremental update equals a full recomputation")
    func incrementalUpdate() {
        var random = SeededGenerator(seed: 2)
        for _ in 0..<2000 {
            var bytes = (0..<(2 * Int.random(in: 4...200, using: &random))).map { _ in UInt8.random(in: 0...255, using: &random) }
            let before = Self.reference(bytes)
            let at = 2 * Int.random(in: 0..<(bytes.count / 2 - 1), using: &random)
            let old16 = UInt16(bytes[at]) << 8 | UInt16(bytes[at + 1])
            let new16 = UInt16.random(in: 0...UInt16.max, using: &random)
            bytes[at] = UInt8(new16 >> 8)
            bytes[at + 1] = UInt8(new16 & 0xFF)
            let updated = InternetChecksum.update(checksum: before, old: old16, new: new16)
            // One's-complement has two zeros; both encodings verify the same.
            let full = Self.reference(bytes)
            #expect(updated == full || (updated == 0xFFFF && full == 0) || (updated == 0 && full == 0xFFFF))

            let at32 = 2 * Int.random(in: 0..<(bytes.count / 2 - 2), using: &random)
            let old32 = (at32..<(at32 + 4)).reduce(UInt32(0)) { $0 << 8 | UInt32(bytes[$1]) }
            let new32 = UInt32.random(in: 0...UInt32.max, using: &random)
            for k in 0..<4 { bytes[at32 + k] = UInt8(truncatingIfNeeded: new32 >> (24 - 8 * UInt32(k))) }
            let updated32 = InternetChecksum.update(checksum: full, old: old32, new: new32)
            let full32 = Self.reference(bytes)
            #expect(updated32 == full32 || (updated32 == 0xFFFF && full32 == 0) || (updated32 == 0 && full32 == 0xFFFF))
        }
    }

    @Test("the pseudo-header sum is what an offloading device completes")
    func pseudoHeaderCompletion() throws {
        var random = SeededGenerator(seed: 3)
        for _ in 0..<200 {
            let source = IPv4Address(rawValue: random.next32()), destination = IPv4Address(rawValue: random.next32())
            var segment = (0..<Int.random(in: 20...1500, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            segment[12] = 0x50
            segment.withUnsafeMutableBytes { buffer in
                TCPRepr.fillPseudoHeaderChecksum(segment: buffer, source: source, destination: destination)
                // The device sums the segment from the start with the pseudo sum in the field, then stores the complement.
                let completed = InternetChecksum.checksum(UnsafeRawBufferPointer(buffer))
                buffer.storeBigEndian(completed, at: 16)
                #expect(try! TCPSegmentView(UnsafeRawBufferPointer(buffer)).checksumVerifies(source: source, destination: destination))
            }
        }
    }
}

extension SeededGenerator {
    mutating func next32() -> UInt32 { UInt32(truncatingIfNeeded: next()) }
    mutating func next16() -> UInt16 { UInt16(truncatingIfNeeded: next()) }
    mutating func next8() -> UInt8 { UInt8(truncatingIfNeeded: next()) }
}

@Suite("Sequence numbers")
struct SequenceNumberTests {
    @Test("comparisons hold across the 2^32 wrap")
    func wrapAround() {
        let high = SequenceNumber(0xFFFF_FFF0)
        let low = high + 0x20
        #expect(low.rawValue == 0x10)
        #expect(high < low)
        #expect(low > high)
        #expect(low - high == 0x20)
        #expect(high - low == -0x20)
        #expect(SequenceNumber.max(high, low) == low)
        #expect(SequenceNumber.min(high, low) == high)
        #expect((high + 5).isIn(high, upTo: low))
        #expect(!(low + 1).isIn(high, upTo: low))
        #expect(high.isIn(high, upTo: low))
        #expect(!low.isIn(high, upTo: low))
    }

    @Test("distance is antisymmetric for any pair less than 2^31 apart")
    func randomPairs() {
        var random = SeededGenerator(seed: 4)
        for _ in 0..<10_000 {
            let a = SequenceNumber(random.next32())
            let gap = Int(random.next32() % 0x7FFF_FFFF) + 1
            let b = a + gap
            #expect(a < b && b > a && a <= b && !(a >= b))
            #expect(b - a == gap && a - b == -gap)
            #expect(b - gap == a)
        }
    }
}
