import Foundation
import IOTCPCommon
import IOTCPNIC
import Testing

@Suite("Fault-injecting wire and pcap writer")
struct WireToolsTests {
    func run(_ settings: FaultSettings, seed: UInt64, frames: Int = 1000) -> (delivered: [[UInt8]], wire: FaultyWire) {
        var wire = FaultyWire(settings: settings, seed: seed)
        var delivered: [[UInt8]] = []
        var now = Instant.milliseconds(1)
        for index in 0..<frames {
            let frame = [UInt8](repeating: UInt8(truncatingIfNeeded: index), count: 60)
            frame.withUnsafeBytes { wire.send($0, now: now) { delivered.append(Array($0)) } }
            now = now + 10_000
            wire.releaseDue(now: now) { delivered.append(Array($0)) }
        }
        wire.releaseDue(now: now + 10 * Nanoseconds.second) { delivered.append(Array($0)) }
        return (delivered, wire)
    }

    @Test("faults follow their probabilities and replay exactly from the seed")
    func faults() {
        let settings = FaultSettings(loss: 0.1, duplication: 0.05, reordering: 0.05, corruption: 0.02)
        let (first, wire) = run(settings, seed: 42)
        let (again, _) = run(settings, seed: 42)
        let (other, _) = run(settings, seed: 43)
        #expect(first == again, "the same seed gives the same run")
        #expect(first != other)
        #expect((60...140).contains(wire.dropped), "about 10% of 1,000 lost: \(wire.dropped)")
        #expect(first.count == 1000 - wire.dropped + wire.duplicated)
        #expect(wire.reordered > 20 && wire.corrupted > 5)
        let inOrder = first.map { $0[0] }
        #expect(inOrder != inOrder.sorted(), "held-back frames arrive out of order")
        #expect(run(FaultSettings(), seed: 1).delivered.count == 1000, "no faults: every frame, at once")
        #expect(FaultSettings(loss: 1.5).validationFailure != nil)
    }

    @Test("the pcap writer's file has the classic header and one record per frame")
    func pcap() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("iotcp-\(getpid()).pcap").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        do {
            let writer = try PcapWriter(path: path)
            for length in [60, 1514, 42] {
                [UInt8](repeating: 7, count: length).withUnsafeBytes { writer.write($0) }
            }
        }
        let bytes = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
        #expect(bytes.count == 24 + 3 * 16 + 60 + 1514 + 42)
        bytes.withUnsafeBytes { raw in
            #expect(raw.littleEndian(UInt32.self, at: 0) == 0xA1B2_C3D4)
            #expect(raw.littleEndian(UInt32.self, at: 20) == 1, "Ethernet")
            #expect(raw.littleEndian(UInt32.self, at: 24 + 8) == 60)
            #expect(raw.littleEndian(UInt32.self, at: 24 + 16 + 60 + 8) == 1514)
        }
    }
}
