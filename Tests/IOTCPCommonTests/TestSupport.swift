import Foundation

/// Frames of a classic pcap file (microsecond or nanosecond, either byte order, Ethernet link type).
enum PcapFile {
    struct Failure: Error, CustomStringConvertible { let description: String }

    static func frames(at path: String) throws -> [[UInt8]] {
        let data = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        guard data.count >= 24 else { throw Failure(description: "\(path): shorter than a pcap header") }
        let magic = data.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 0, as: UInt32.self) }
        let swapped: Bool
        switch magic {
        case 0xA1B2_C3D4, 0xA1B2_3C4D: swapped = false
        case 0xD4C3_B2A1, 0x4D3C_B2A1: swapped = true
        default: throw Failure(description: "\(path): not a pcap file (magic \(String(magic, radix: 16)))")
        }
        func u32(_ offset: Int) -> UInt32 {
            let raw = data.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self) }
            return swapped ? raw.byteSwapped : raw
        }
        guard u32(20) == 1 else { throw Failure(description: "\(path): link type \(u32(20)) is not Ethernet") }
        var frames: [[UInt8]] = []
        var offset = 24
        while offset + 16 <= data.count {
            let captured = Int(u32(offset + 8)), original = Int(u32(offset + 12))
            guard captured == original else { throw Failure(description: "\(path): frame cut by the snap length") }
            guard offset + 16 + captured <= data.count else { throw Failure(description: "\(path): truncated record") }
            frames.append(Array(data[(offset + 16)..<(offset + 16 + captured)]))
            offset += 16 + captured
        }
        return frames
    }

    static func fixture(_ name: String) -> String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures/\(name)").path
    }
}
