import Foundation
import Glibc
import IOTCPCommon
import IOTCPNIC
import Testing

/// An export root with files, a subdirectory, and symlinks pointing inside and outside it.
final class ExportRoot {
    let path: String
    let outside: String
    let content: [UInt8]

    init(under folder: URL = FileManager.default.temporaryDirectory) throws {
        let base = folder.standardizedFileURL.appendingPathComponent("iotcp-files-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
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

    @Test("a file that shrinks under a read is reported, not padded", arguments: DiskKind.allCases)
    func shrinkingFile(disk: DiskKind) throws {
        let root = try ExportRoot()
        let nic = try makePlane(root, disk: disk)
        let (_, fileID) = openFile(nic, "sub/data.bin")
        let file = try #require(fileID)
        truncate(root.path + "/sub/data.bin", 50_000)
        var output = CollectingNICOutput()
        nic.handle(.flowOpen(FlowID(1), flowEndpoints), received: .zero, now: .zero, output: &output)
        nic.handle(.send(FlowID(1), SendRange(sequence: SequenceNumber(0), length: 1000, file: file, offset: 49_600,
                                              template: NICDataPlaneTests.template)), received: .zero, now: .zero, output: &output)
        settle(nic, output: &output)
        #expect(output.errors.map(\.0) == [.fileShrank] && output.errors.first?.3.contains("got 400") == true, "\(output.errors)")
        #expect(output.packets.isEmpty && output.echoes.isEmpty)
        #expect(try nic.files.status(file).size == 50_000)
    }

    @Test("io_uring and the pread threads: hundreds of reads in flight at once, every one byte-exact, bad descriptors the same error")
    func disksAgree() throws {
        let root = try ExportRoot()
        let table = try FileTable(root: root.path)
        let (id, _) = try table.open(path: "sub/data.bin")
        let lease = try table.lease(id)
        defer { table.release(lease) }
        for disk in [try URingDisk(entries: 256) as any DiskIO, try ThreadPoolDisk(threads: 4, capacity: 256)] {
            let pool = BufferPool(capacityBytes: 256 * BufferPool.defaultBufferSize)
            var registered: [Bool] = []
            pool.slabAdded = { slab, memory in registered.append(disk.register(slab: slab, memory: memory)) }
            var random = SeededGenerator(seed: 5)
            var reads: [(buffer: UInt32, offset: Int, length: Int)] = []
            for tag in 0..<256 {
                let buffer = try #require(pool.take())
                let offset = Int.random(in: 0..<root.content.count, using: &random)
                let length = Int.random(in: 1...min(65_536, root.content.count - offset), using: &random)
                reads.append((buffer, offset, length))
                let slab = pool.slab(of: buffer)
                #expect(disk.submit(DiskRead(descriptor: lease.descriptor, offset: UInt64(offset), length: length,
                                             destination: pool.address(buffer), registeredSlab: registered[slab] ? Int32(slab) : -1,
                                             tag: UInt64(tag)), now: .zero))
            }
            #expect(!disk.submit(DiskRead(descriptor: lease.descriptor, offset: 0, length: 1, destination: pool.address(reads[0].buffer), tag: 999),
                                 now: .zero), "past its capacity a disk refuses")
            disk.flush()
            var results = [Int?](repeating: nil, count: 256)
            let deadline = Date().addingTimeInterval(10)
            while results.contains(nil) && Date() < deadline {
                _ = disk.reap(now: .zero, limit: 64) { tag, result in results[Int(tag)] = result }
            }
            for (tag, read) in reads.enumerated() {
                #expect(results[tag] == read.length, "\(disk.name): read \(tag)")
                let bytes = Array(UnsafeRawBufferPointer(start: pool.address(read.buffer), count: read.length))
                let intact = bytes == Array(root.content[read.offset..<(read.offset + read.length)])
                #expect(intact, "\(disk.name): read \(tag)'s bytes")
                pool.give(read.buffer)
            }
            #expect(disk.inFlight == 0)
            // A bad descriptor fails the read with EBADF, whichever disk.
            #expect(disk.submit(DiskRead(descriptor: 9999, offset: 0, length: 10, destination: pool.address(reads[0].buffer), tag: 7), now: .zero))
            disk.flush()
            var failure: Int?
            while failure == nil && Date() < deadline { _ = disk.reap(now: .zero, limit: 1) { _, result in failure = result } }
            #expect(failure == -Int(EBADF), "\(disk.name)")
        }
        if getuid() == 0 { #expect(try URingDisk().name.contains("io_uring")) }
    }

    @Test("io_uring reads land in registered buffers when the kernel allows it (root may lock the memory)")
    func registeredBuffers() throws {
        let root = try ExportRoot()
        let disk = try URingDisk()
        let nic = NICDataPlane(files: try FileTable(root: root.path), disk: disk)
        let (_, fileID) = openFile(nic, "sub/data.bin")
        var output = CollectingNICOutput()
        nic.handle(.flowOpen(FlowID(1), flowEndpoints), received: .zero, now: .zero, output: &output)
        nic.handle(.send(FlowID(1), SendRange(sequence: SequenceNumber(0), length: 100_000, file: try #require(fileID), offset: 0,
                                              template: NICDataPlaneTests.template)), received: .zero, now: .zero, output: &output)
        settle(nic, output: &output)
        let intact = output.packets.compactMap { parseSegment($0)?.1 }.flatMap { $0 } == root.content
        #expect(intact)
        if getuid() == 0 {
            #expect(disk.registeredSlabs == 1 && disk.registrationFailures == 0, "as root the pool's slab is registered")
        } else {
            #expect(disk.registeredSlabs + disk.registrationFailures == 1)
        }
    }

    @Test("O_DIRECT: aligned reads into aligned buffers serve any unaligned range byte-exact, retransmissions too",
          arguments: DiskKind.allCases)
    func directIO(disk: DiskKind) throws {
        // On the build folder's file system (the temporary one may be tmpfs, which refuses O_DIRECT).
        let root = try ExportRoot(under: URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../.build"))
        let table = try FileTable(root: root.path, directIO: true)
        let nic = NICDataPlane(files: table, disk: try disk.make(), retransmitMode: .bufferless)
        let (_, fileID) = openFile(nic, "sub/data.bin")
        let file = try #require(fileID)
        #expect(table.directFallbacks == 0, "the build folder's file system takes O_DIRECT")
        #expect(try table.lease(file).alignment == 4096)
        table.release(try table.lease(file))
        table.release(try table.lease(file))
        var output = CollectingNICOutput()
        nic.handle(.flowOpen(FlowID(1), flowEndpoints), received: .zero, now: .zero, output: &output)
        // Unaligned start and end, a range crossing many blocks, and the file's last bytes.
        var sequence = 0
        for (offset, length) in [(1, 1), (4095, 2), (12_345, 70_001), (99_000, 1_000)] {
            nic.handle(.send(FlowID(1), SendRange(sequence: SequenceNumber(UInt32(sequence)), length: UInt32(length), file: file,
                                                  offset: UInt64(offset), template: NICDataPlaneTests.template)),
                       received: .zero, now: .zero, output: &output)
            sequence += length
        }
        settle(nic, output: &output)
        #expect(output.errors.isEmpty, "\(output.errors)")
        let bytes = output.packets.compactMap { parseSegment($0)?.1 }.flatMap { $0 }
        let expected = [(1, 1), (4095, 2), (12_345, 70_001), (99_000, 1_000)].flatMap { root.content[$0.0..<($0.0 + $0.1)] }
        let intact = bytes == expected
        #expect(intact)
        // Bufferless: a retransmission re-reads, aligned again.
        output.packets.removeAll()
        nic.handle(.retransmit(FlowID(1), sequence: SequenceNumber(3), length: 5000, template: NICDataPlaneTests.template),
                   received: .zero, now: .zero, output: &output)
        settle(nic, output: &output)
        let resentIntact = output.packets.compactMap { parseSegment($0)?.1 }.flatMap { $0 } == Array(root.content[12_345..<(12_345 + 5000)])
        #expect(resentIntact)
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
        // This machine's own files: libnvme names a namespace exactly when sysfs says the disk is NVMe.
        var status = stat()
        #expect(stat(sysfs, &status) == 0)
        let onNVMe = StorageDeviceProbe.blockDeviceName(device: UInt64(status.st_dev))?.hasPrefix("nvme") == true
        #expect((StorageDeviceProbe.nvmeNamespace(device: UInt64(status.st_dev)) != nil) == onNVMe)
    }

    @Test("a FIFO (or any special file) is refused at once, never waited on; the table keeps serving")
    func specialFilesAreRefusedWithoutBlocking() throws {
        let root = try ExportRoot()
        #expect(mkfifo(root.path + "/pipe", 0o644) == 0)
        let table = try FileTable(root: root.path)
        let start = Date()
        #expect(throws: FileTable.Failure.notARegularFile("pipe")) { try table.open(path: "pipe") }
        #expect(Date().timeIntervalSince(start) < 1, "no writer was needed to get an answer")
        #expect(throws: FileTable.Failure.notARegularFile("sub")) { try table.open(path: "sub") }
        #expect(try table.open(path: "sub/data.bin").1.size == 100_000)
        #expect(table.openCount == 1, "nothing leaked from the refused opens")
    }

    @Test("a file its owner may not read is refused with 'permission denied', whoever the NIC runs as")
    func unreadableFilesAreRefused() throws {
        let root = try ExportRoot()
        #expect(FileManager.default.createFile(atPath: root.path + "/private", contents: Data("secret".utf8)))
        #expect(chmod(root.path + "/private", 0) == 0)
        #expect(FileManager.default.createFile(atPath: root.path + "/others-only", contents: Data("x".utf8)))
        let table = try FileTable(root: root.path)
        #expect(throws: FileTable.Failure.permissionDenied("private")) { try table.open(path: "private") }
        // Served as another user (not the owner, not the group): only the "others" bits count.
        #expect(chmod(root.path + "/others-only", 0o604) == 0)
        #expect(chmod(root.path + "/private", 0o640) == 0)
        let stranger = try FileTable(root: root.path, servingAs: (user: 54321, group: 54321))
        #expect(throws: FileTable.Failure.permissionDenied("private")) { try stranger.open(path: "private") }
        #expect(try stranger.open(path: "others-only").1.size == 1)
        #expect(table.openCount == 0 && stranger.openCount == 1)
    }

    @Test("a missing export root is a clear error")
    func missingRoot() {
        #expect(throws: FileTable.Failure.notFound("/nonexistent/iotcp-root")) { try FileTable(root: "/nonexistent/iotcp-root") }
    }

    /// Opens `path`, maps it through a lease, copies what the mapping shows, and closes it again.
    private func mappedBytes(_ table: FileTable, _ path: String) throws -> [UInt8]? {
        let (id, _) = try table.open(path: path)
        let lease = try table.lease(id)
        defer {
            table.release(lease)
            try? table.close(id)
        }
        return table.mapping(lease).map { Array($0) }
    }

    @Test("a file opened again reuses its kept mapping; a changed length maps anew; small files are read, not mapped")
    func keptMappings() throws {
        let root = try ExportRoot()
        let table = try FileTable(root: root.path, idleMappingLimit: 2)
        #expect(try mappedBytes(table, "sub/data.bin") == root.content)
        #expect(try mappedBytes(table, "inside") == root.content)
        #expect(table.mappings == 1 && table.mappingReuses == 1 && table.idleMappings == 1)

        // Rewritten in place with the same length: the shared mapping shows the new bytes.
        var changed = root.content
        changed[0] ^= 0xFF
        changed[99_999] ^= 0xFF
        let handle = try #require(FileHandle(forWritingAtPath: root.path + "/sub/data.bin"))
        try handle.write(contentsOf: Data(changed))
        #expect(try mappedBytes(table, "sub/data.bin") == changed)
        #expect(table.mappings == 1 && table.mappingReuses == 2)
        // Grown: a new mapping of the new length; the old one is unmapped, not kept beside it.
        try handle.write(contentsOf: Data(changed[0..<20_000]))
        try handle.close()
        #expect(try mappedBytes(table, "sub/data.bin") == changed + changed[0..<20_000])
        #expect(table.mappings == 2 && table.idleMappings == 1)

        // Idle mappings are bounded: a third file pushes out the oldest.
        for name in ["a.bin", "b.bin", "c.bin"] {
            try Data(repeating: UInt8(name.utf8.first!), count: 20_000).write(to: URL(fileURLWithPath: root.path + "/" + name))
            #expect(try mappedBytes(table, name) == [UInt8](repeating: UInt8(name.utf8.first!), count: 20_000))
        }
        #expect(table.idleMappings == 2 && table.mappings == 5)
        #expect(try mappedBytes(table, "c.bin") != nil && table.mappings == 5)
        #expect(try mappedBytes(table, "sub/data.bin") != nil && table.mappings == 6)
        table.dropIdleMappings()
        #expect(table.idleMappings == 0)

        // Below `minimumMappedSize` (16 KiB by default) a file is read: nil here, and no mapping made.
        try Data(repeating: 7, count: 4096).write(to: URL(fileURLWithPath: root.path + "/small.bin"))
        #expect(try mappedBytes(table, "small.bin") == nil && table.mappings == 6)
    }

    @Test("two opens of one file share a mapping while both are open; it outlives neither's close")
    func sharedWhileOpen() throws {
        let root = try ExportRoot()
        let table = try FileTable(root: root.path)
        let (first, _) = try table.open(path: "sub/data.bin")
        let (second, _) = try table.open(path: "inside")
        let firstLease = try table.lease(first), secondLease = try table.lease(second)
        let a = try #require(table.mapping(firstLease)), b = try #require(table.mapping(secondLease))
        #expect(a.baseAddress == b.baseAddress && table.mappings == 1)
        table.release(firstLease)
        try table.close(first)
        #expect(Array(b) == root.content && table.idleMappings == 0)
        table.release(secondLease)
        try table.close(second)
        #expect(table.idleMappings == 1)
    }


    @Test("residency: an uncached file is not sent from its mapping; pages read since are, the rest are not")
    func residencyFollowsThePageCache() throws {
        // On the build folder's file system: tmpfs pages cannot be dropped from the cache.
        let root = try ExportRoot(under: URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../.build"))
        let path = root.path + "/sub/data.bin"
        let evict = Glibc.open(path, O_RDONLY)
        #expect(fdatasync(evict) == 0 && posix_fadvise(evict, 0, 0, POSIX_FADV_DONTNEED) == 0)
        Glibc.close(evict)
        let table = try FileTable(root: root.path)
        let (id, _) = try table.open(path: "sub/data.bin")
        let lease = try table.lease(id)
        defer { table.release(lease) }
        // No read-ahead on this descriptor, so exactly the pages read below become cached.
        #expect(posix_fadvise(lease.descriptor, 0, 0, POSIX_FADV_RANDOM) == 0)
        #expect(table.mapping(lease) != nil)
        #expect(!table.isResident(lease, offset: 0, length: 4096))
        var buffer = [UInt8](repeating: 0, count: 8192)
        try buffer.withUnsafeMutableBytes { try table.read(id, offset: 0, into: $0) }
        #expect(table.isResident(lease, offset: 0, length: 8192))
        #expect(!table.isResident(lease, offset: 50_000, length: 1000))
        var whole = [UInt8](repeating: 0, count: 100_000)
        try whole.withUnsafeMutableBytes { try table.read(id, offset: 0, into: $0) }
        #expect(table.isResident(lease, offset: 50_000, length: 1000) && table.isResident(lease, offset: 0, length: 100_000))
        #expect(!table.isResident(lease, offset: 99_000, length: 2000), "past the end of the file is never resident")
    }

}
