import Foundation
import IOTCPCommon
import IOTCPNIC
import Testing

/// An export root with files, a subdirectory, and symlinks pointing inside and outside it.
final class ExportRoot {
    let path: String
    let outside: String
    let content: [UInt8]

    init() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("iotcp-files-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        path = base.appendingPathComponent("root").path
        outside = base.appendingPathComponent("secret.txt").path
        try FileManager.default.createDirectory(atPath: path + "/sub", withIntermediateDirectories: true)
        var random = SeededGenerator(seed: 5)
        content = (0..<100_000).map { _ in UInt8.random(in: 0...255, using: &random) }
        try Data(content).write(to: URL(fileURLWithPath: path + "/sub/data.bin"))
        try Data("secret".utf8).write(to: URL(fileURLWithPath: outside))
        try Data("%2e".utf8).write(to: URL(fileURLWithPath: path + "/%2e%2e"))
        try FileManager.default.createSymbolicLink(atPath: path + "/escape", withDestinationPath: outside)
        try FileManager.default.createSymbolicLink(atPath: path + "/escape-relative", withDestinationPath: "../secret.txt")
        try FileManager.default.createSymbolicLink(atPath: path + "/inside", withDestinationPath: "sub/data.bin")
    }

    deinit { try? FileManager.default.removeItem(atPath: (path as NSString).deletingLastPathComponent) }
}

@Suite("Offloaded file table")
struct FileTableTests {
    @Test("paths that leave the root are refused by path resolution itself")
    func confinement() throws {
        let root = try ExportRoot()
        let table = try FileTable(root: root.path)
        let outsideName = (root.outside as NSString).lastPathComponent
        for path in ["../\(outsideName)", "sub/../../\(outsideName)", "escape", "escape-relative", "sub/../escape"] {
            #expect(throws: FileTable.Failure.outsideRoot(path)) { try table.open(path: path) }
        }
        // A leading slash means the export root, as in a URL path: never the machine's root.
        #expect(throws: FileTable.Failure.notFound("/etc/passwd")) { try table.open(path: "/etc/passwd") }
        // Percent-encoding is the HTTP layer's business: here "%2e%2e" is just a file name.
        let (_, status) = try table.open(path: "%2e%2e")
        #expect(status.size == 3)
        #expect(throws: FileTable.Failure.notARegularFile("sub")) { try table.open(path: "sub") }
        #expect(throws: FileTable.Failure.invalidPath("/")) { try table.open(path: "/") }
        #expect(throws: FileTable.Failure.invalidPath("a\u{0}b")) { try table.open(path: "a\u{0}b") }
        #expect(throws: FileTable.Failure.notFound("missing")) { try table.open(path: "missing") }
        #expect(table.openCount == 1)
    }

    @Test("a symlink that stays inside the root is followed, and reads return the file's bytes exactly")
    func readsThroughInsideLink() throws {
        let root = try ExportRoot()
        let table = try FileTable(root: root.path)
        let (id, status) = try table.open(path: "/inside")
        #expect(status.size == 100_000)
        var buffer = [UInt8](repeating: 0, count: 1448)
        for offset in stride(from: 0, to: 100_000 - 1448, by: 9999) {
            try buffer.withUnsafeMutableBytes { try table.read(id, offset: UInt64(offset), into: $0) }
            let same = buffer == Array(root.content[offset..<(offset + 1448)])
            #expect(same, "bytes at \(offset)")
        }
    }

    @Test("a closed id is refused, and a reused slot does not answer to the old id")
    func staleIdentifiers() throws {
        let root = try ExportRoot()
        let table = try FileTable(root: root.path)
        let (first, _) = try table.open(path: "sub/data.bin")
        try table.close(first)
        #expect(throws: FileTable.Failure.unknownFile(first)) { try table.status(first) }
        let (second, _) = try table.open(path: "sub/data.bin")
        #expect(second.slot == first.slot && second.generation != first.generation)
        #expect(throws: FileTable.Failure.unknownFile(first)) { try table.close(first) }
        #expect(try table.status(second).size == 100_000)
    }

    /// The file table's two ways of reading, for tests run once with each.
    enum Reader: String, Sendable, CaseIterable, CustomStringConvertible {
        case pread, ioUring
        func make() throws -> any FileReader { self == .pread ? PreadReader() : try URingReader() }
        var description: String { rawValue }
    }

    @Test("a file that shrinks under a read is reported, not padded", arguments: Reader.allCases)
    func shrinkingFile(reader: Reader) throws {
        let root = try ExportRoot()
        let table = try FileTable(root: root.path)
        table.reader = try reader.make()
        let (id, _) = try table.open(path: "sub/data.bin")
        truncate(root.path + "/sub/data.bin", 50_000)
        var buffer = [UInt8](repeating: 0, count: 1000)
        #expect(throws: FileTable.Failure.shrank(id, expected: 1000, got: 0)) {
            try buffer.withUnsafeMutableBytes { try table.read(id, offset: 60_000, into: $0) }
        }
        #expect(throws: FileTable.Failure.shrank(id, expected: 1000, got: 400)) {
            try buffer.withUnsafeMutableBytes { try table.read(id, offset: 49_600, into: $0) }
        }
        #expect(try table.status(id).size == 50_000)
    }

    @Test("io_uring and pread give identical bytes over random ranges, and the same errors")
    func readersAgree() throws {
        let root = try ExportRoot()
        let viaPread = try FileTable(root: root.path)
        let viaURing = try FileTable(root: root.path)
        viaURing.reader = try URingReader()
        #expect(viaURing.reader.name == "io_uring" && viaPread.reader.name == "pread")
        let (first, _) = try viaPread.open(path: "sub/data.bin")
        let (second, _) = try viaURing.open(path: "sub/data.bin")
        var random = SeededGenerator(seed: 5)
        for _ in 0..<500 {
            let offset = Int.random(in: 0..<root.content.count, using: &random)
            let length = Int.random(in: 1...min(70_000, root.content.count - offset), using: &random)
            var a = [UInt8](repeating: 0, count: length), b = [UInt8](repeating: 1, count: length)
            try a.withUnsafeMutableBytes { try viaPread.read(first, offset: UInt64(offset), into: $0) }
            try b.withUnsafeMutableBytes { try viaURing.read(second, offset: UInt64(offset), into: $0) }
            let expected = Array(root.content[offset..<(offset + length)])
            #expect(a == expected && b == expected, "\(length) bytes at \(offset)")
        }
        // A bad descriptor: the same errno from both.
        var byte: UInt8 = 0
        let errors = try [PreadReader(), URingReader()].map { (reader: any FileReader) -> Int32? in
            do throws(FileReadError) {
                _ = try withUnsafeMutableBytes(of: &byte) { raw in
                    Result { () throws(FileReadError) in try reader.read(descriptor: -1, offset: 0, into: raw) }
                }.get()
            } catch { return error.errno }
            return nil
        }
        #expect(errors == [EBADF, EBADF])
    }

    @Test("the block device under a device number, from sysfs: a partition's namespace, a whole disk, none")
    func blockDeviceNames() throws {
        let sysfs = FileManager.default.temporaryDirectory.appendingPathComponent("iotcp-sysfs-\(getpid())").path
        defer { try? FileManager.default.removeItem(atPath: sysfs) }
        let namespace = sysfs + "/devices/pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1"
        try FileManager.default.createDirectory(atPath: namespace + "/nvme0n1p2", withIntermediateDirectories: true)
        #expect(FileManager.default.createFile(atPath: namespace + "/nvme0n1p2/partition", contents: Data("2\n".utf8)))
        try FileManager.default.createDirectory(atPath: sysfs + "/dev/block", withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: sysfs + "/dev/block/259:2", withDestinationPath: namespace + "/nvme0n1p2")
        try FileManager.default.createSymbolicLink(atPath: sysfs + "/dev/block/259:0", withDestinationPath: namespace)
        // glibc's makedev(259, 2) and makedev(259, 0).
        let partition: UInt64 = (259 << 8) | 2, whole: UInt64 = 259 << 8
        #expect(StorageDeviceProbe.blockDeviceName(device: partition, sysfs: sysfs) == "nvme0n1")
        #expect(StorageDeviceProbe.blockDeviceName(device: whole, sysfs: sysfs) == "nvme0n1")
        #expect(StorageDeviceProbe.blockDeviceName(device: (8 << 8) | 1, sysfs: sysfs) == nil)
        // This machine's files are on no NVMe namespace (overlay or virtual disks): libnvme finds none.
        var status = stat()
        #expect(stat(sysfs, &status) == 0)
        #expect(StorageDeviceProbe.nvmeNamespace(device: UInt64(status.st_dev)) == nil)
    }

    @Test("a missing export root is a clear error")
    func missingRoot() {
        #expect(throws: FileTable.Failure.notFound("/nonexistent/iotcp-root")) { try FileTable(root: "/nonexistent/iotcp-root") }
    }
}
