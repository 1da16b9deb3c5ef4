import IOTCPCommon
import Testing
@testable import IOTCPHost

/// The rings behind send queues and receive buffers start small and grow with what they hold.
@Suite("Byte rings")
struct ByteRingTests {
    func bytes(_ range: Range<Int>) -> [UInt8] { range.map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) } }

    func read(_ ring: ByteRing, at offset: Int, count: Int) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: count)
        out.withUnsafeMutableBytes { ring.read(at: offset, count: count, into: $0) }
        return out
    }

    @Test("growing keeps held bytes and bytes written ahead of them, in order, across a wrapped front")
    func growthAcrossWrap() {
        var ring = ByteRing()
        #expect(ring.allocatedBytes == 0)
        ring.reserve(3000, limit: 1 << 18)
        #expect(ring.allocatedBytes == ByteRing.initialCapacity)
        let first = bytes(0..<3000)
        first.withUnsafeBytes { ring.write($0) }
        ring.discard(2500)  // the front is now 2,500 bytes in
        let second = bytes(3000..<4500)  // wraps past the end of the 4 KiB storage
        ring.reserve(ring.count + second.count, limit: 1 << 18)
        #expect(ring.allocatedBytes == ByteRing.initialCapacity)
        second.withUnsafeBytes { ring.write($0) }
        // Out-of-order bytes 3,000 past what is held: the ring doubles to take them.
        let ahead = bytes(9000..<9500)
        ring.reserve(ring.count + 3000 + ahead.count, limit: 1 << 18)
        #expect(ring.allocatedBytes == 2 * ByteRing.initialCapacity)
        ahead.withUnsafeBytes { ring.write($0, at: ring.count + 3000) }
        #expect(read(ring, at: 0, count: ring.count) == Array(first[2500...]) + second)
        #expect(read(ring, at: ring.count + 3000, count: ahead.count) == ahead)
        let third = bytes(4500..<20000)
        ring.reserve(ring.count + third.count, limit: 1 << 18)
        #expect(ring.allocatedBytes == 8 * ByteRing.initialCapacity, "doubled until it fits")
        // The out-of-order bytes sat where `third` now goes: a receive buffer would not write over them,
        // but the ring keeps whatever was at each offset when it grows.
        #expect(read(ring, at: ring.count + 3000, count: ahead.count) == ahead)
        third.withUnsafeBytes { ring.write($0) }
        #expect(read(ring, at: 0, count: ring.count) == Array(first[2500...]) + second + third)
    }

    @Test("never past the limit, which need not be a power of two")
    func limit() {
        var ring = ByteRing()
        ring.reserve(70_000, limit: 100_000)
        #expect(ring.allocatedBytes == 100_000)
        ring.reserve(200_000, limit: 100_000)
        #expect(ring.allocatedBytes == 100_000)
        let data = bytes(0..<100_000)
        data.withUnsafeBytes { ring.write($0) }
        ring.discard(99_999)
        data.withUnsafeBytes { ring.write(UnsafeRawBufferPointer(rebasing: $0[0..<99_999])) }
        #expect(read(ring, at: 0, count: ring.count) == [data[99_999]] + data[0..<99_999])
    }

    @Test("a short request and its response head take a few KiB, not two full windows")
    func shortConnection() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script)
        _ = script.inject(sequence: 1001, acknowledgment: iss &+ 1, flags: [.ack, .psh], options: script.peerTimestamps(1500),
                          payload: Array(repeating: 0x41, count: 300))
        #expect(script.engine.readableBytes(handle) == 300)
        let head = Array(repeating: UInt8(0x42), count: 250)
        _ = try head.withUnsafeBytes { try script.engine.write(handle, $0, now: script.now, output: &script.output) }
        #expect(script.engine.bufferBytes(of: handle) == 2 * ByteRing.initialCapacity)
    }
}
