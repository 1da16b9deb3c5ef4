import Foundation
import IOTCPCommon
import IOTCPHost
import IOTCPNIC
import Testing

@Suite("NIC data plane")
struct NICDataPlaneTests {
    static let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(5555), window: 1234, lastSegmentFlags: .psh,
                                          maximumSegmentSize: 1448, timestamps: TCPTimestamps(value: 1000, echoReply: 77))

    @Test("SEND becomes segments built from the template with the file's bytes, then an ECHO with the delay it really waited",
          arguments: DiskKind.allCases)
    func sendBuildsSegments(disk: DiskKind) throws {
        let root = try ExportRoot()
        let files = MemoryFiles()
        files.add("sub/data.bin", root.content)
        // The disk takes 3 ms: the SEND arrives at 10 ms, its data leaves at 13 ms.
        let memory = MemoryDisk(files: files)
        memory.delayNanoseconds = 3_000_000
        let nic = NICDataPlane(files: files, disk: memory)
        let (opening, fileID) = openFile(nic, "sub/data.bin", request: 7)
        let file = try #require(fileID)
        #expect(opening.opened.first?.0 == 7 && opening.opened.first?.2 == 100_000)
        var output = CollectingNICOutput()
        nic.handle(.flowOpen(FlowID(3), flowEndpoints), received: .zero, now: .zero, output: &output)
        nic.handle(.send(FlowID(3), SendRange(sequence: SequenceNumber(1_000_000), length: 5000, file: file, offset: 2000, template: Self.template)),
                   received: Instant.milliseconds(10), now: Instant.milliseconds(10), output: &output)
        nic.poll(now: Instant.milliseconds(10), output: &output)
        #expect(output.packets.isEmpty && output.echoes.isEmpty, "nothing leaves before its read is done")
        nic.poll(now: Instant.milliseconds(12), output: &output)
        #expect(output.packets.isEmpty)
        nic.poll(now: Instant.milliseconds(13), output: &output)
        #expect(output.packets.count == 4)
        var offset = 2000
        for (index, packet) in output.packets.enumerated() {
            let (tcp, payload, checksumOK) = try #require(parseSegment(packet))
            #expect(checksumOK)
            #expect(tcp.sequenceNumber == SequenceNumber(1_000_000) + (offset - 2000))
            #expect(tcp.acknowledgmentNumber == SequenceNumber(5555) && tcp.window == 1234)
            #expect(tcp.sourcePort == 80 && tcp.destinationPort == 40000)
            #expect(tcp.flags == (index == 3 ? [.ack, .psh] : .ack))
            #expect(tcp.options.timestamps == TCPTimestamps(value: 1003, echoReply: 77), "TSval plus the 3 ms the SEND waited")
            let same = payload == Array(root.content[offset..<(offset + payload.count)])
            #expect(same)
            offset += payload.count
        }
        #expect(offset == 7000)
        #expect(output.echoes.count == 1)
        #expect(output.echoes.first?.1 == SequenceNumber(1_005_000) && output.echoes.first?.2 == 3_000_000)
        #expect(nic.store.heldBytes == 5000)
        #expect(nic.counters.payloadBytesCopied == 0, "file bytes are gathered, never copied into frames")

        // The same through a real disk, reading the real file.
        let real = try makePlane(root, disk: disk)
        let (_, realFile) = openFile(real, "sub/data.bin")
        var realOutput = CollectingNICOutput()
        real.handle(.flowOpen(FlowID(3), flowEndpoints), received: .zero, now: .zero, output: &realOutput)
        real.handle(.send(FlowID(3), SendRange(sequence: SequenceNumber(1_000_000), length: 5000, file: try #require(realFile), offset: 2000,
                                               template: Self.template)), received: .zero, now: .zero, output: &realOutput)
        settle(real, output: &realOutput)
        let bytes = realOutput.packets.compactMap { parseSegment($0)?.1 }.flatMap { $0 }
        #expect(bytes == Array(root.content[2000..<7000]) && realOutput.echoes.count == 1)
    }

    @Test("with a wire that cuts super-segments, a SEND leaves in packets of 45 segments that cut into exactly the ordinary ones")
    func sendBuildsSuperSegments() throws {
        let root = try ExportRoot()
        let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(5555), window: 1234, lastSegmentFlags: [.psh, .fin],
                                       maximumSegmentSize: 1448, timestamps: TCPTimestamps(value: 1000, echoReply: 77))
        func run(offloads: WireOffloads) throws -> CollectingNICOutput {
            let nic = try makePlane(root)
            nic.offloads = offloads
            let (_, fileID) = openFile(nic, "sub/data.bin")
            var output = CollectingNICOutput()
            nic.handle(.flowOpen(FlowID(3), flowEndpoints), received: .zero, now: .zero, output: &output)
            nic.handle(.send(FlowID(3), SendRange(sequence: SequenceNumber(1_000_000), length: 100_000, file: try #require(fileID),
                                                  offset: 0, template: template)), received: .zero, now: .zero, output: &output)
            settle(nic, output: &output)
            #expect(output.errors.isEmpty && output.echoes.count == 1)
            return output
        }
        let plain = try run(offloads: .none)
        let offloaded = try run(offloads: .all)
        #expect(plain.packets.count == 70 && plain.segmentSizes.allSatisfy { $0 == 0 } && !plain.checksumOffloaded.contains(true))
        // 52 header bytes (IPv4 20, TCP 20, timestamps 12): 45 segments of 1448 fit in 65,535.
        #expect(offloaded.packets.map(\.count) == [52 + 65160, 52 + 34840])
        #expect(offloaded.segmentSizes == [1448, 1448])

        var cut: [[UInt8]] = []
        for (index, packet) in offloaded.packets.enumerated() {
            #expect(packet.withUnsafeBytes { Int($0.bigEndianUInt16(at: 2)) } == packet.count, "IPv4 total length")
            let tcp = try #require(parseSegment(packet)).0
            #expect(tcp.sequenceNumber == SequenceNumber(1_000_000) + index * 65160)
            #expect(tcp.flags == (index == 1 ? [.ack, .psh, .fin] : .ack), "FIN and PSH on the last super-segment only")
            // The checksum field holds the pseudo-header sum over the whole TCP length, for the wire to finish.
            var pseudo = InternetChecksum()
            pseudo.addPseudoHeader(source: flowEndpoints.localAddress.ipv4!, destination: flowEndpoints.remoteAddress.ipv4!,
                                   protocol: .tcp, length: packet.count - 20)
            #expect(packet.withUnsafeBytes { $0.bigEndianUInt16(at: 20 + 16) } == pseudo.foldedSum)
            // Cut it as the kernel does: the same headers, sequence advanced, FIN/PSH kept on the last piece
            // only, lengths and checksums recomputed.
            let payload = packet[52...]
            for start in stride(from: 0, to: payload.count, by: 1448) {
                let piece = Array(payload.dropFirst(start).prefix(1448))
                var segment = Array(packet[0..<52]) + piece
                let last = start + piece.count == payload.count
                segment.withUnsafeMutableBytes { raw in
                    raw.storeBigEndian(UInt16(raw.count), at: 2)
                    raw.storeBigEndian(UInt16(0), at: 10)
                    raw.storeBigEndian(InternetChecksum.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<20])), at: 10)
                    raw.storeBigEndian(tcp.sequenceNumber.rawValue &+ UInt32(start), at: 20 + 4)
                    if !last { raw[20 + 13] &= ~UInt8(0x09) }
                    TCPRepr.fillChecksum(segment: UnsafeMutableRawBufferPointer(rebasing: raw[20...]),
                                         source: flowEndpoints.localAddress.ipv4!, destination: flowEndpoints.remoteAddress.ipv4!)
                }
                cut.append(segment)
            }
        }
        #expect(cut.count == plain.packets.count)
        let identical = cut == plain.packets
        #expect(identical, "the wire's cuts are byte for byte the segments built without offload")
    }

    @Test("a SEND's head leaves in its first segment before the file's bytes, with or without super-segments; only the file is kept")
    func sendWithHead() throws {
        let root = try ExportRoot()
        let head = Array("HTTP/1.1 200 OK\r\nContent-Length: 3000\r\n\r\n".utf8)  // 41 bytes: odd, for the checksum
        let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(5555), window: 1234, lastSegmentFlags: [.psh, .fin],
                                       maximumSegmentSize: 1448, timestamps: TCPTimestamps(value: 1000, echoReply: 77))
        func run(offloads: WireOffloads) throws -> (CollectingNICOutput, NICDataPlane) {
            let nic = try makePlane(root)
            nic.offloads = offloads
            let (_, fileID) = openFile(nic, "sub/data.bin")
            var output = CollectingNICOutput()
            nic.handle(.flowOpen(FlowID(3), flowEndpoints), received: .zero, now: .zero, output: &output)
            head.withUnsafeBytes { bytes in
                nic.handle(.sendWithHead(FlowID(3), SendRange(sequence: SequenceNumber(1_000_000), length: 3000, file: fileID!, offset: 500,
                                                              template: template), head: bytes), received: .zero, now: .zero, output: &output)
            }
            settle(nic, output: &output)
            #expect(output.errors.isEmpty)
            #expect(output.echoes.map(\.1) == [SequenceNumber(1_000_000 + 41 + 3000)], "the ECHO covers head and range")
            return (output, nic)
        }
        let expected = head + Array(root.content[500..<3500])
        let (plain, plainPlane) = try run(offloads: .none)
        // Segments of 1448: the head and 1407 file bytes, then 1448, then the last 145 with PSH and FIN.
        let parsed = try plain.packets.map { try #require(parseSegment($0)) }
        #expect(parsed.map { $0.1.count } == [1448, 1448, 145] && parsed.allSatisfy(\.2), "sizes and checksums")
        #expect(parsed.map(\.0.sequenceNumber) == [SequenceNumber(1_000_000), SequenceNumber(1_001_448), SequenceNumber(1_002_896)])
        #expect(parsed.map(\.0.flags) == [.ack, .ack, [.ack, .psh, .fin]])
        #expect(parsed.flatMap(\.1) == expected)
        #expect(plainPlane.store.heldBytes == 3000, "the store keeps the file's bytes; the head is the host's to send again")
        #expect(plainPlane.counters.payloadBytesCopied == 41)

        // One super-segment for the wire to cut: head and file bytes behind one header, cut at 1448.
        let (offloaded, _) = try run(offloads: .all)
        #expect(offloaded.packets.count == 1 && offloaded.segmentSizes == [1448])
        let packet = try #require(offloaded.packets.first)
        #expect(packet.count == 52 + 41 + 3000 && Array(packet[52...]) == expected)
        var pseudo = InternetChecksum()
        pseudo.addPseudoHeader(source: flowEndpoints.localAddress.ipv4!, destination: flowEndpoints.remoteAddress.ipv4!, protocol: .tcp,
                               length: packet.count - 20)
        #expect(packet.withUnsafeBytes { $0.bigEndianUInt16(at: 20 + 16) } == pseudo.foldedSum)

        // Refused: a head as long as a segment; a head with no file bytes cannot be expressed (SEND length 0).
        let nic = try makePlane(root)
        let (_, fileID) = openFile(nic, "sub/data.bin")
        var output = CollectingNICOutput()
        nic.handle(.flowOpen(FlowID(3), flowEndpoints), received: .zero, now: .zero, output: &output)
        let long = [UInt8](repeating: 0x41, count: 1448)
        long.withUnsafeBytes { bytes in
            nic.handle(.sendWithHead(FlowID(3), SendRange(sequence: SequenceNumber(1), length: 10, file: fileID!, offset: 0, template: template),
                                     head: bytes), received: .zero, now: .zero, output: &output)
        }
        #expect(output.errors.map(\.0) == [.malformedCommand] && output.packets.isEmpty)
        // A head still held when the flow closes is let go with its chunk.
        head.withUnsafeBytes { bytes in
            nic.handle(.sendWithHead(FlowID(3), SendRange(sequence: SequenceNumber(1), length: 10, file: fileID!, offset: 0, template: template),
                                     head: bytes), received: .zero, now: .zero, output: &output)
        }
        nic.handle(.flowClose(FlowID(3), reason: 0), received: .zero, now: .zero, output: &output)
        settle(nic, output: &output)
        #expect(nic.deferredByteCount == 0, "nothing of the head is held after the flow closed")
    }

    @Test("errors are answered with ERROR naming the command, never a trap", arguments: RetransmitStore.Mode.allCases)
    func errors(mode: RetransmitStore.Mode) throws {
        let root = try ExportRoot()
        let nic = try makePlane(root, mode: mode, storeLimitBytes: 10_000)
        let (missing, _) = openFile(nic, "nope.txt", request: 11)
        #expect(missing.errors.first?.0 == .fileNotFound && missing.errors.first?.1 == CommandKind.open.rawValue && missing.errors.first?.2 == 11)
        let (escape, _) = openFile(nic, "../secret.txt", request: 12)
        #expect(escape.errors.first?.0 == .pathOutsideRoot)
        let (_, fileID) = openFile(nic, "sub/data.bin")
        let file = try #require(fileID)
        let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(1), window: 100, maximumSegmentSize: 1448)
        var output = CollectingNICOutput()
        nic.handle(.send(FlowID(9), SendRange(sequence: SequenceNumber(0), length: 10, file: file, offset: 0, template: template)),
                   received: .zero, now: .zero, output: &output)
        nic.handle(.flowOpen(FlowID(9), flowEndpoints), received: .zero, now: .zero, output: &output)
        nic.handle(.send(FlowID(9), SendRange(sequence: SequenceNumber(0), length: 10, file: OffloadedFileID(slot: 40, generation: 1), offset: 0, template: template)),
                   received: .zero, now: .zero, output: &output)
        nic.handle(.retransmit(FlowID(9), sequence: SequenceNumber(500), length: 10, template: template), received: .zero, now: .zero, output: &output)
        nic.handle(.send(FlowID(9), SendRange(sequence: SequenceNumber(0), length: 0xFFFF_FFFF, file: file, offset: 0, template: template)),
                   received: .zero, now: .zero, output: &output)
        nic.handle(.flowOpen(FlowID(0), flowEndpoints), received: .zero, now: .zero, output: &output)
        nic.handle(.flowOpen(FlowID(1 << 21), flowEndpoints), received: .zero, now: .zero, output: &output)
        // Past the file's end: the read comes back short, the host hears the file shrank, the flow's later
        // data is dropped.
        nic.handle(.send(FlowID(9), SendRange(sequence: SequenceNumber(0), length: 1000, file: file, offset: 99_500, template: template)),
                   received: .zero, now: .zero, output: &output)
        settle(nic, output: &output)
        let codes = output.errors.map(\.0)
        #expect(codes == [.unknownFlow, .unknownFile, .malformedCommand, .malformedCommand, .tooManyFlows, .tooManyFlows, .fileShrank])
        #expect(output.packets.isEmpty, "nothing half-sent")
        #expect(nic.store.heldBytes == 0 && nic.pool.inUse == 0 && (nic.files as! FileTable).leasesOut == 0)
        #expect(nic.flowCount == 1)
    }

    @Test("past the buffered store's limit a SEND still goes out, kept as its file range; its retransmission re-reads the file")
    func storeLimitSpillsToFileRanges() throws {
        let root = try ExportRoot()
        // Room for one buffer in the store.
        let nic = try makePlane(root, mode: .buffered, storeLimitBytes: BufferPool.defaultBufferSize)
        let (_, fileID) = openFile(nic, "sub/data.bin")
        let file = try #require(fileID)
        let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(1), window: 100, maximumSegmentSize: 1448)
        var output = CollectingNICOutput()
        nic.handle(.flowOpen(FlowID(9), flowEndpoints), received: .zero, now: .zero, output: &output)
        // The first SEND's buffer is kept; the second is kept as a file range.
        nic.handle(.send(FlowID(9), SendRange(sequence: SequenceNumber(0), length: 8_000, file: file, offset: 0, template: template)),
                   received: .zero, now: .zero, output: &output)
        nic.handle(.send(FlowID(9), SendRange(sequence: SequenceNumber(8_000), length: 20_000, file: file, offset: 8_000, template: template)),
                   received: .zero, now: .zero, output: &output)
        settle(nic, output: &output)
        #expect(output.errors.isEmpty && output.echoes.count == 2, "both went out, no ERROR")
        #expect(nic.store.heldBytes == 28_000 && nic.store.bufferedBytes == 8_000 && nic.counters.storeSpills == 1)
        #expect(nic.pool.inUse == 1, "one buffer kept, the other back in the pool")
        let sent = output.packets.count
        // A retransmission across both: the kept bytes at once, the re-read ones when their read is done.
        nic.handle(.retransmit(FlowID(9), sequence: SequenceNumber(7_000), length: 3_000, template: template),
                   received: .zero, now: .zero, output: &output)
        settle(nic, output: &output)
        #expect(output.errors.isEmpty)
        let resent = try output.packets[sent...].map { try #require(parseSegment($0)) }
        #expect(resent.allSatisfy { $0.2 }, "checksums verify")
        let bytes = resent.sorted { $0.0.sequenceNumber < $1.0.sequenceNumber }.flatMap { $0.1 }
        let intact = bytes == Array(root.content[7_000..<10_000])
        #expect(intact)
        nic.handle(.acknowledged(FlowID(9), through: SequenceNumber(28_000)), received: .zero, now: .zero, output: &output)
        #expect(nic.store.heldBytes == 0 && nic.store.bufferedBytes == 0 && nic.pool.inUse == 0)
    }

    @Test("buffered and bufferless retransmissions send identical bytes")
    func retransmitModesAgree() throws {
        let root = try ExportRoot()
        var results: [[[UInt8]]] = []
        for mode in RetransmitStore.Mode.allCases {
            let nic = try makePlane(root, mode: mode)
            let (_, fileID) = openFile(nic, "sub/data.bin")
            var output = CollectingNICOutput()
            nic.handle(.flowOpen(FlowID(2), flowEndpoints), received: .zero, now: .zero, output: &output)
            let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(9), window: 512, maximumSegmentSize: 1000)
            for (index, start) in [0, 3000, 7000].enumerated() {
                nic.handle(.send(FlowID(2), SendRange(sequence: SequenceNumber(UInt32(start)), length: UInt32([3000, 4000, 2500][index]),
                                                      file: fileID!, offset: UInt64(10 * start), template: template)),
                           received: .zero, now: .zero, output: &output)
            }
            settle(nic, output: &output)
            output.packets.removeAll()
            nic.handle(.acknowledged(FlowID(2), through: SequenceNumber(1500)), received: .zero, now: .zero, output: &output)
            nic.handle(.retransmit(FlowID(2), sequence: SequenceNumber(1500), length: 8000, template: template), received: .zero, now: .zero, output: &output)
            settle(nic, output: &output)
            #expect(output.errors.isEmpty)
            results.append(output.packets.sorted { parseSegment($0)!.0.sequenceNumber < parseSegment($1)!.0.sequenceNumber })
        }
        #expect(results[0].count == 9)
        let same = results[0] == results[1]
        #expect(same)
    }

    @Test("a completion's handler may submit the next read at once, on a delayed and on a shuffling disk")
    func submitFromACompletion() throws {
        let files = MemoryFiles()
        files.add("f", [UInt8](repeating: 3, count: 100))
        let (file, _) = try files.open(path: "f")
        let lease = try files.lease(file)
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
        defer { buffer.deallocate() }
        let disks: [any DiskIO] = [DelayedDisk(base: MemoryDisk(files: files), delayNanoseconds: 1_000_000),
                                   MemoryDisk(files: files, shuffleSeed: 7)]
        for disk in disks {
            #expect(disk.submit(DiskRead(descriptor: lease.descriptor, offset: 0, length: 10, destination: buffer, tag: 1), now: .zero))
            var seen: [UInt64] = []
            let later = Instant(nanoseconds: 5_000_000)
            // The data plane does this: a completion frees a buffer and the next chunk's read goes at once.
            _ = disk.reap(now: later, limit: 8) { tag, result in
                seen.append(tag)
                #expect(result == 10)
                if tag == 1 {
                    #expect(disk.submit(DiskRead(descriptor: lease.descriptor, offset: 10, length: 10, destination: buffer, tag: 2), now: later))
                }
            }
            _ = disk.reap(now: Instant(nanoseconds: 10_000_000), limit: 8) { tag, _ in seen.append(tag) }
            #expect(seen == [1, 2], "\(disk.name): completions \(seen)")
        }
    }

    @Test("a host packet with data after queued file data waits behind it, its TSval moved on by its wait; a pure ACK does not wait")
    func packetsKeepStreamOrder() throws {
        let files = MemoryFiles()
        files.add("f", [UInt8](repeating: 7, count: 3000))
        let disk = MemoryDisk(files: files)
        disk.delayNanoseconds = 20_000_000
        let nic = NICDataPlane(files: files, disk: disk)
        let (_, fileID) = openFile(nic, "f")
        var output = CollectingNICOutput()
        nic.handle(.flowOpen(FlowID(4), flowEndpoints), received: .zero, now: .zero, output: &output)
        nic.handle(.send(FlowID(4), SendRange(sequence: SequenceNumber(100), length: 3000, file: try #require(fileID), offset: 0,
                                              template: Self.template)), received: .zero, now: .zero, output: &output)
        nic.poll(now: .zero, output: &output)  // its read starts now and takes 20 ms
        func packet(sequence: UInt32, flags: TCPFlags, payload: [UInt8]) -> [UInt8] {
            var options = TCPOptions()
            options.timestamps = TCPTimestamps(value: 500, echoReply: 9)
            let tcp = TCPRepr(sourcePort: 80, destinationPort: 40000, sequenceNumber: SequenceNumber(sequence),
                              acknowledgmentNumber: SequenceNumber(5555), flags: flags, window: 100, options: options)
            var bytes = [UInt8](repeating: 0, count: 20 + tcp.headerLength + payload.count)
            bytes.withUnsafeMutableBytes { raw in
                try! IPv4Repr(source: flowEndpoints.localAddress.ipv4!, destination: flowEndpoints.remoteAddress.ipv4!, protocol: .tcp,
                              payloadLength: tcp.headerLength + payload.count).emit(into: raw)
                let segment = UnsafeMutableRawBufferPointer(rebasing: raw[20...])
                let header = try! tcp.emitHeader(into: segment)
                UnsafeMutableRawBufferPointer(rebasing: segment[header...]).copyBytes(from: payload)
                TCPRepr.fillChecksum(segment: segment, source: flowEndpoints.localAddress.ipv4!, destination: flowEndpoints.remoteAddress.ipv4!)
            }
            return bytes
        }
        let data = packet(sequence: 3100, flags: [.ack, .psh], payload: Array("HTTP/1.1 200 OK\r\n\r\n".utf8))
        let ack = packet(sequence: 3100, flags: .ack, payload: [])
        data.withUnsafeBytes { nic.handle(.packetOut(FlowID(4), packet: $0), received: .milliseconds(5), now: .milliseconds(5), output: &output) }
        ack.withUnsafeBytes { nic.handle(.packetOut(FlowID(4), packet: $0), received: .milliseconds(5), now: .milliseconds(5), output: &output) }
        nic.poll(now: .milliseconds(5), output: &output)
        #expect(output.packets == [ack], "the pure ACK goes at once")
        nic.poll(now: .milliseconds(20), output: &output)
        let sequences = output.packets.dropFirst().compactMap { parseSegment($0)?.0.sequenceNumber.rawValue }
        #expect(sequences == [100, 1548, 2996, 3100], "file data first, then the held packet")
        let held = try #require(parseSegment(output.packets.last!))
        #expect(held.2, "its checksum still verifies")
        #expect(held.0.options.timestamps?.value == 515, "TSval plus the 15 ms it was held")
        #expect(held.1 == Array("HTTP/1.1 200 OK\r\n\r\n".utf8))
        #expect(nic.counters.deferredPackets == 1)
    }

    @Test("many reads in flight across flows, completing out of order: each flow's bytes leave in order and whole")
    func manyReadsOutOfOrder() throws {
        let files = MemoryFiles()
        var random = SeededGenerator(seed: 41)
        var contents: [[UInt8]] = []
        for index in 0..<20 {
            let bytes = (0..<300_000).map { _ in UInt8.random(in: 0...255, using: &random) }
            contents.append(bytes)
            files.add("f\(index)", bytes)
        }
        let disk = MemoryDisk(files: files, shuffleSeed: 9)
        disk.delayNanoseconds = 1_000_000
        let nic = NICDataPlane(files: files, disk: disk)
        var output = CollectingNICOutput()
        var ids: [OffloadedFileID] = []
        for index in 0..<20 {
            let (_, id) = openFile(nic, "f\(index)", request: UInt32(index))
            ids.append(try #require(id))
            nic.handle(.flowOpen(FlowID(UInt32(index + 1)), FlowEndpoints(
                localAddress: flowEndpoints.localAddress.ipv4!, remoteAddress: flowEndpoints.remoteAddress.ipv4!, localPort: 80,
                remotePort: UInt16(30000 + index), remoteHardwareAddress: .zero, maximumSegmentSize: 1448)), received: .zero, now: .zero, output: &output)
            // Each file in two SENDs.
            for (start, length) in [(0, 120_000), (120_000, 180_000)] {
                nic.handle(.send(FlowID(UInt32(index + 1)), SendRange(sequence: SequenceNumber(UInt32(start)), length: UInt32(length),
                                                                      file: ids[index], offset: UInt64(start), template: Self.template)),
                           received: .zero, now: .zero, output: &output)
            }
        }
        var time = Instant.zero
        for _ in 0..<50 {
            nic.poll(now: time, output: &output)
            time = time + 1_000_000
        }
        #expect(disk.maximumInFlight >= 20, "reads of many flows in flight at once (\(disk.maximumInFlight))")
        #expect(output.errors.isEmpty && output.echoes.count == 40)
        var received = [[UInt8]](repeating: [], count: 20)
        var last = [UInt32](repeating: 0, count: 20)
        for packet in output.packets {
            let (tcp, payload, ok) = try #require(parseSegment(packet))
            let flow = Int(tcp.destinationPort) - 30000
            #expect(ok && tcp.sequenceNumber.rawValue == UInt32(received[flow].count), "flow \(flow) in order")
            received[flow] += payload
            last[flow] = tcp.sequenceNumber.rawValue
        }
        for index in 0..<20 { #expect(received[index] == contents[index], "flow \(index) whole") }
        // Flows took turns: the first segments of every flow went out before any flow finished.
        let firstFinished = output.packets.firstIndex { packet in
            guard let (tcp, payload, _) = parseSegment(packet) else { return false }
            return tcp.sequenceNumber.rawValue + UInt32(payload.count) == 300_000
        }
        let flowsStarted = Set(output.packets[..<(firstFinished ?? 0)].compactMap { parseSegment($0)?.0.destinationPort })
        #expect(flowsStarted.count == 20, "round robin: \(flowsStarted.count) flows had data out before the first one finished")
        for index in 0..<20 { nic.handle(.acknowledged(FlowID(UInt32(index + 1)), through: SequenceNumber(300_000)), received: time, now: time, output: &output) }
        #expect(nic.pool.inUse == 0 && nic.store.heldBytes == 0 && files.leasesOut == 0)
    }

    @Test("a read that fails mid-flow: the host gets an ERROR for that SEND, other flows go on, nothing leaks")
    func failingReadMidFlow() throws {
        let files = MemoryFiles()
        let content = (0..<400_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        files.add("a", content)
        files.add("b", content)
        let disk = MemoryDisk(files: files, shuffleSeed: 3)
        let nic = NICDataPlane(files: files, disk: disk)
        let (_, a) = openFile(nic, "a", request: 1)
        let (_, b) = openFile(nic, "b", request: 2)
        var output = CollectingNICOutput()
        let failingDescriptor = try files.lease(try #require(a)).descriptor
        files.release(FileLease(slot: a!.slot, descriptor: failingDescriptor))
        // Reads of file a from offset 200,000 on fail with EIO.
        disk.failures = { read in read.descriptor == failingDescriptor && read.offset >= 200_000 ? 5 : nil }
        for (flow, file) in [(FlowID(1), a!), (FlowID(2), b!)] {
            nic.handle(.flowOpen(flow, FlowEndpoints(localAddress: flowEndpoints.localAddress.ipv4!, remoteAddress: flowEndpoints.remoteAddress.ipv4!,
                                                     localPort: 80, remotePort: UInt16(40000 + flow.rawValue), remoteHardwareAddress: .zero,
                                                     maximumSegmentSize: 1448)), received: .zero, now: .zero, output: &output)
            nic.handle(.send(flow, SendRange(sequence: SequenceNumber(0), length: 400_000, file: file, offset: 0, template: Self.template)),
                       received: .zero, now: .zero, output: &output)
        }
        for _ in 0..<20 { nic.poll(now: .zero, output: &output) }
        #expect(output.errors.count == 1)
        #expect(output.errors.first?.0 == .readFailed && output.errors.first?.1 == CommandKind.send.rawValue)
        #expect(output.errors.first?.3.contains("EIO") == true, "\(output.errors.first?.3 ?? "")")
        let reference = output.errors.first?.2 ?? 0
        #expect(reference >= 200_000 - 65_160 && reference < 400_000, "it names the failed chunk's sequence number")
        var bytes: [UInt16: Int] = [:]
        for packet in output.packets {
            let (tcp, payload, _) = try #require(parseSegment(packet))
            bytes[tcp.destinationPort, default: 0] += payload.count
        }
        #expect(bytes[40002] == 400_000, "the other flow is served whole")
        #expect((bytes[40001] ?? 0) < 400_000 && output.echoes.map(\.0) == [FlowID(2)], "the failed SEND is never echoed")
        // The host ends the failed connection; everything comes back.
        nic.handle(.flowClose(FlowID(1), reason: 1), received: .zero, now: .zero, output: &output)
        nic.handle(.acknowledged(FlowID(2), through: SequenceNumber(400_000)), received: .zero, now: .zero, output: &output)
        for _ in 0..<5 { nic.poll(now: .zero, output: &output) }
        #expect(nic.pool.inUse == 0 && nic.store.heldBytes == 0 && files.leasesOut == 0 && nic.chunksInUse == 0 && nic.queuedByteCount == 0)
    }

    @Test("answers name the flow with the generation it was opened with; the previous generation's commands are refused")
    func flowGenerations() throws {
        let files = MemoryFiles()
        let content = (0..<100_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        files.add("a", content)
        let nic = NICDataPlane(files: files, disk: MemoryDisk(files: files, shuffleSeed: 1))
        let (_, file) = openFile(nic, "a", request: 1)
        var output = CollectingNICOutput()
        let old = FlowID(index: 1, generation: 1), new = FlowID(index: 1, generation: 2)
        #expect(old.index == new.index && old != new && new.description == "flow 1.2")
        nic.handle(.flowOpen(old, flowEndpoints), received: .zero, now: .zero, output: &output)
        nic.handle(.send(old, SendRange(sequence: SequenceNumber(0), length: 100_000, file: try #require(file), offset: 0, template: Self.template)),
                   received: .zero, now: .zero, output: &output)
        for _ in 0..<10 { nic.poll(now: .zero, output: &output) }
        #expect(output.echoes.map(\.0) == [old])

        nic.handle(.flowClose(old, reason: 0), received: .zero, now: .zero, output: &output)
        nic.handle(.flowOpen(new, flowEndpoints), received: .zero, now: .zero, output: &output)
        output = CollectingNICOutput()
        // A command still naming the old generation is about a connection that is gone.
        nic.handle(.send(old, SendRange(sequence: SequenceNumber(100_000), length: 1000, file: file!, offset: 0, template: Self.template)),
                   received: .zero, now: .zero, output: &output)
        for _ in 0..<5 { nic.poll(now: .zero, output: &output) }
        #expect(output.errors.map(\.0) == [.unknownFlow] && output.packets.isEmpty)
        nic.handle(.send(new, SendRange(sequence: SequenceNumber(0), length: 5000, file: file!, offset: 0, template: Self.template)),
                   received: .zero, now: .zero, output: &output)
        for _ in 0..<10 { nic.poll(now: .zero, output: &output) }
        #expect(output.echoes.map(\.0) == [new])
        let sent = output.packets.compactMap { parseSegment($0)?.1 }.flatMap { $0 }
        #expect(sent == Array(content[0..<5000]))
        // An index past what a flow id can carry is refused, not wrapped into another flow.
        nic.handle(.flowOpen(FlowID(rawValue: 0xFFF0_0000), flowEndpoints), received: .zero, now: .zero, output: &output)
        #expect(output.errors.last?.0 == .tooManyFlows)
    }

    @Test("a full wire: nothing is echoed until the data left, and it leaves once the wire takes it")
    func refusedWrites() throws {
        let root = try ExportRoot()
        let nic = try makePlane(root)
        let (_, fileID) = openFile(nic, "sub/data.bin")
        var output = CollectingNICOutput()
        output.refuse = true
        nic.handle(.flowOpen(FlowID(5), flowEndpoints), received: .zero, now: .zero, output: &output)
        nic.handle(.send(FlowID(5), SendRange(sequence: SequenceNumber(0), length: 10_000, file: try #require(fileID), offset: 0,
                                              template: Self.template)), received: .zero, now: .zero, output: &output)
        settle(nic, output: &output)
        #expect(output.refusals > 0 && output.packets.isEmpty && output.echoes.isEmpty, "refused: not echoed")
        #expect(nic.hasReadyWork)
        output.refuse = false
        settle(nic, now: .milliseconds(4), output: &output)
        #expect(output.packets.count == 7 && output.echoes.count == 1 && output.echoes.first?.2 == 4_000_000)
        let bytes = output.packets.compactMap { parseSegment($0)?.1 }.flatMap { $0 }
        let intact = bytes == Array(root.content[0..<10_000])
        #expect(intact)
    }

    @Test("a file closed by the host while its read is in flight: the read finishes on the old descriptor")
    func closeDuringRead() throws {
        let root = try ExportRoot()
        let table = try FileTable(root: root.path)
        // The read's completion is held 50 ms, so the close surely comes while it is in flight.
        let nic = NICDataPlane(files: table, disk: DelayedDisk(base: try ThreadPoolDisk(threads: 1), delayNanoseconds: 50_000_000))
        let (_, fileID) = openFile(nic, "sub/data.bin")
        let file = try #require(fileID)
        var output = CollectingNICOutput()
        nic.handle(.flowOpen(FlowID(5), flowEndpoints), received: .zero, now: .zero, output: &output)
        nic.handle(.send(FlowID(5), SendRange(sequence: SequenceNumber(0), length: 100_000, file: file, offset: 0, template: Self.template)),
                   received: .zero, now: .zero, output: &output)
        nic.poll(now: .zero, output: &output)
        nic.handle(.closeFile(file), received: .zero, now: .zero, output: &output)
        #expect(table.openCount == 0)
        // A new open must not be handed the descriptor number the reads still use (this file has 3 bytes:
        // reading it instead would end in "shrank").
        let (_, other) = openFile(nic, "%2e%2e")
        settle(nic, now: .milliseconds(100), output: &output)
        let bytes = output.packets.compactMap { parseSegment($0)?.1 }.flatMap { $0 }
        #expect(bytes == root.content && output.errors.isEmpty)
        #expect(table.leasesOut == 0 && table.deferredCloses >= 1 && other != nil)
    }

    /// Random SEND, ACKD, RETRANSMIT and FLOW_CLOSE sequences: the store never holds what was acknowledged,
    /// and holds nothing at the end.
    @Test("random command sequences end with zero bytes held", arguments: RetransmitStore.Mode.allCases)
    func randomSequences(mode: RetransmitStore.Mode) throws {
        let root = try ExportRoot()
        let nic = try makePlane(root, mode: mode)
        let (_, fileID) = openFile(nic, "sub/data.bin")
        let file = try #require(fileID)
        var random = SeededGenerator(seed: 77)
        let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(1), window: 512, maximumSegmentSize: 1448)
        var output = CollectingNICOutput()
        for round in 0..<200 {
            let flow = FlowID(UInt32(round % 7) + 1)
            nic.handle(.flowOpen(flow, flowEndpoints), received: .zero, now: .zero, output: &output)
            var next = UInt32.random(in: 0...UInt32.max, using: &random)
            let base = next
            var acked = next
            for _ in 0..<Int.random(in: 1...20, using: &random) {
                switch Int.random(in: 0..<4, using: &random) {
                case 0, 1:
                    let length = UInt32.random(in: 1...20_000, using: &random)
                    nic.handle(.send(flow, SendRange(sequence: SequenceNumber(next), length: length, file: file,
                                                     offset: UInt64(next &- base) % 50_000, template: template)),
                               received: .zero, now: .zero, output: &output)
                    next &+= length
                    if Bool.random(using: &random) { settle(nic, output: &output) }
                case 2 where next != acked:
                    settle(nic, output: &output)
                    acked = acked &+ UInt32.random(in: 1...(next &- acked), using: &random)
                    nic.handle(.acknowledged(flow, through: SequenceNumber(acked)), received: .zero, now: .zero, output: &output)
                    #expect(nic.heldBytes(flow: flow) == Int(next &- acked))
                case 3 where next != acked:
                    let start = acked &+ UInt32.random(in: 0..<(next &- acked), using: &random)
                    nic.handle(.retransmit(flow, sequence: SequenceNumber(start), length: min(next &- start, 5000), template: template),
                               received: .zero, now: .zero, output: &output)
                default:
                    break
                }
                output.packets.removeAll(keepingCapacity: true)
            }
            settle(nic, output: &output)
            if Bool.random(using: &random) {
                nic.handle(.acknowledged(flow, through: SequenceNumber(next)), received: .zero, now: .zero, output: &output)
                #expect(nic.heldBytes(flow: flow) == 0)
            }
            nic.handle(.flowClose(flow, reason: 0), received: .zero, now: .zero, output: &output)
        }
        settle(nic, output: &output)
        #expect(output.errors.isEmpty, "\(output.errors.prefix(3))")
        #expect(nic.store.heldBytes == 0 && nic.store.bufferedBytes == 0 && nic.pool.inUse == 0 && nic.chunksInUse == 0)
    }
}

@Suite("NIC data plane: sending from the page cache")
struct PageCacheTests {
    @Test("with checksums left to the wire, cached file bytes go out from the file's mapping: no read, no buffer, byte-exact")
    func sendsFromTheMapping() throws {
        let root = try ExportRoot()
        let nic = try makePlane(root)
        nic.offloads = .all
        let (_, fileID) = openFile(nic, "sub/data.bin")
        // Make sure the file's pages are cached (they were just written; read them once more to be sure).
        _ = try Data(contentsOf: URL(fileURLWithPath: root.path + "/sub/data.bin"))
        var output = CollectingNICOutput()
        nic.handle(.flowOpen(FlowID(1), flowEndpoints), received: .zero, now: .zero, output: &output)
        nic.handle(.send(FlowID(1), SendRange(sequence: SequenceNumber(0), length: 100_000, file: try #require(fileID), offset: 0,
                                              template: NICDataPlaneTests.template)), received: .zero, now: .zero, output: &output)
        settle(nic, output: &output)
        #expect(nic.counters.mappedChunks == 2 && nic.counters.reads == 0 && nic.pool.allocatedBytes == 0,
                "\(nic.counters.mappedChunks) chunks mapped, \(nic.counters.reads) reads")
        var payload: [UInt8] = []
        for (index, packet) in output.packets.enumerated() {
            let size = output.segmentSizes[index]
            payload += Array(packet[52...])
            #expect(size == 1448 && output.checksumOffloaded[index])
        }
        let intact = payload == root.content
        #expect(intact)
        // Kept as a file range; a retransmission comes from the mapping again.
        #expect(nic.store.heldBytes == 100_000 && nic.store.bufferedBytes == 0)
        output.packets.removeAll()
        nic.handle(.retransmit(FlowID(1), sequence: SequenceNumber(5000), length: 3000, template: NICDataPlaneTests.template),
                   received: .zero, now: .zero, output: &output)
        settle(nic, output: &output)
        let resentIntact = output.packets.map { Array($0[52...]) }.flatMap { $0 } == Array(root.content[5000..<8000])
        #expect(resentIntact)
        #expect(nic.counters.reads == 0 && nic.counters.mappedChunks == 3)
        nic.handle(.acknowledged(FlowID(1), through: SequenceNumber(100_000)), received: .zero, now: .zero, output: &output)
        #expect((nic.files as! FileTable).leasesOut == 0 && nic.chunksInUse == 0)
    }

    @Test("without checksum offload (faults or capture on the path), bytes are read into buffers as before")
    func mappingNeedsChecksumOffload() throws {
        let root = try ExportRoot()
        let nic = try makePlane(root)
        let (_, fileID) = openFile(nic, "sub/data.bin")
        var output = CollectingNICOutput()
        nic.handle(.flowOpen(FlowID(1), flowEndpoints), received: .zero, now: .zero, output: &output)
        nic.handle(.send(FlowID(1), SendRange(sequence: SequenceNumber(0), length: 100_000, file: try #require(fileID), offset: 0,
                                              template: NICDataPlaneTests.template)), received: .zero, now: .zero, output: &output)
        settle(nic, output: &output)
        #expect(nic.counters.mappedChunks == 0 && nic.counters.reads == 2)
        let intact = output.packets.compactMap { parseSegment($0)?.1 }.flatMap { $0 } == root.content
        #expect(intact)
    }
}

@Suite("NIC data plane: read-ahead and retransmissions")
struct ReadAheadTests {
    /// A RETRANSMIT over several bufferless ranges makes one re-read each, sent in order from the urgent
    /// queue. With the read-ahead nearly used up, the first of them must still be read first: were the later
    /// ones to take the last slots, the first (which the others wait behind) could never start.
    @Test("a multi-range bufferless RETRANSMIT under a small read-ahead completes, in order")
    func rereadsKeepTheirOrder() throws {
        let files = MemoryFiles()
        let content = (0..<400_000).map { UInt8(truncatingIfNeeded: $0 &* 13) }
        files.add("f", content)
        var limits = NICDataPlane.Limits()
        limits.maximumReadAheadChunks = 2
        let nic = NICDataPlane(files: files, disk: MemoryDisk(files: files), retransmitMode: .bufferless, limits: limits)
        let (_, fileID) = openFile(nic, "f")
        let file = try #require(fileID)
        var output = CollectingNICOutput()
        nic.handle(.flowOpen(FlowID(1), flowEndpoints), received: .zero, now: .zero, output: &output)
        // Four SENDs of 60,000 bytes: four stored ranges.
        for index in 0..<4 {
            nic.handle(.send(FlowID(1), SendRange(sequence: SequenceNumber(UInt32(index * 60_000)), length: 60_000, file: file,
                                                  offset: UInt64(index * 60_000), template: NICDataPlaneTests.template)),
                       received: .zero, now: .zero, output: &output)
        }
        for _ in 0..<20 { nic.poll(now: .zero, output: &output) }
        #expect(output.echoes.count == 4)
        output.packets.removeAll()
        nic.handle(.retransmit(FlowID(1), sequence: SequenceNumber(10_000), length: 200_000, template: NICDataPlaneTests.template),
                   received: .zero, now: .zero, output: &output)
        for _ in 0..<20 { nic.poll(now: .zero, output: &output) }
        let resent = output.packets.compactMap { parseSegment($0) }
        #expect(resent.map(\.0.sequenceNumber.rawValue) == resent.map(\.0.sequenceNumber.rawValue).sorted(), "in order")
        let intact = resent.flatMap(\.1) == Array(content[10_000..<210_000])
        #expect(intact, "every byte, once")
        #expect(nic.chunksInUse == 0 && output.errors.isEmpty)
    }
}
