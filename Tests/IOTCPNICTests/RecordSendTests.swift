import IOTCPCommon
import IOTCPNIC
import IOTCPTLS
import Testing

/// SEND_RECORDS on the NIC: records read, sealed in place and segmented, checked against the wire bytes the
/// reference record layer (`TLSRecordProtection`, checked against RFC 8448) gives for the same stream.
@Suite("NIC data plane: TLS records")
struct RecordSendTests {
    static let template = SegmentTemplate(acknowledgmentNumber: SequenceNumber(5555), window: 1234, lastSegmentFlags: .psh,
                                          maximumSegmentSize: 1448, timestamps: TCPTimestamps(value: 1000, echoReply: 77))
    static let start = SequenceNumber(4_294_900_000)  // the run wraps the sequence space
    static let flow = FlowID(3)

    struct Setup {
        var nic: NICDataPlane
        var files: MemoryFiles
        var file: OffloadedFileID
        var expected: [UInt8]
        var run: RecordSendRange
    }

    /// A 30,000-byte range of a file as records of 4,000 bytes numbered from 7, and the stream they make.
    static func setUp(version: TLSRecordVersion, store: RetransmitStore.Mode, seed: UInt64) throws -> Setup {
        var generator = SeededGenerator(seed: seed)
        let content = (0..<100_000).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let key = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let iv = (0..<TLSKeys.ivLength(version)).map { _ in UInt8.random(in: 0...255, using: &generator) }
        let files = MemoryFiles()
        files.add("f.bin", content)
        let nic = NICDataPlane(files: files, disk: MemoryDisk(files: files), retransmitMode: store)
        nic.recordSealers = TLSRecordSealers()
        let file = try #require(openFile(nic, "f.bin").1)
        var output = CollectingNICOutput()
        nic.handle(.flowOpen(flow, flowEndpoints), received: .zero, now: .zero, output: &output)
        key.withUnsafeBytes { key in
            iv.withUnsafeBytes { iv in
                nic.handle(.tlsKeys(flow, TLSKeys(version: version, key: key, iv: iv)), received: .zero, now: .zero, output: &output)
            }
        }
        #expect(output.errors.isEmpty)
        let reference = try TLSRecordProtection(version: version == .tls13 ? .tls13 : .tls12, key: key, iv: iv)
        var expected: [UInt8] = []
        for record in 0..<8 {
            let from = 5000 + record * 4000, to = min(5000 + 30_000, from + 4000)
            var sealed = [UInt8](repeating: 0, count: reference.recordLength(plaintext: to - from))
            _ = try content[from..<to].withUnsafeBytes { plaintext in
                try sealed.withUnsafeMutableBytes { try reference.seal(plaintext, contentType: .applicationData, sequence: 7 + UInt64(record), into: $0) }
            }
            expected += sealed
        }
        let run = RecordSendRange(sequence: start, length: UInt32(expected.count), runStart: start, recordPlaintext: 4000, file: file,
                                  offset: 5000, runPlaintext: 30_000, firstRecord: 7, template: template)
        return Setup(nic: nic, files: files, file: file, expected: expected, run: run)
    }

    /// Runs the NIC until its queues are empty; returns the payloads by stream offset from the run's start.
    static func drain(_ nic: NICDataPlane, _ output: inout CollectingNICOutput) throws -> [(Int, [UInt8])] {
        for step in 1...50 { nic.poll(now: Instant.milliseconds(UInt64(step)), output: &output) }
        defer { output.packets.removeAll() }
        return try output.packets.map { packet in
            let (tcp, payload, checksumOK) = try #require(parseSegment(packet))
            #expect(checksumOK)
            #expect(payload.count <= 1448)
            return (tcp.sequenceNumber - start, payload)
        }
    }

    @Test("SENDs cut anywhere, even inside records, put the reference stream on the wire",
          arguments: [TLSRecordVersion.tls13, .tls12], RetransmitStore.Mode.allCases)
    func sendsMatchReference(version: TLSRecordVersion, store: RetransmitStore.Mode) throws {
        let setup = try Self.setUp(version: version, store: store, seed: UInt64(version.rawValue))
        var output = CollectingNICOutput()
        // Three SENDs: the first ends inside record 2, the second inside record 5.
        var cursor = 0
        for cut in [9_000, 21_500, setup.expected.count] {
            var piece = setup.run
            piece.sequence = Self.start + cursor
            piece.length = UInt32(cut - cursor)
            setup.nic.handle(.sendRecords(Self.flow, piece), received: .zero, now: .zero, output: &output)
            cursor = cut
        }
        var wire = [UInt8](repeating: 0xEE, count: setup.expected.count)
        var covered = 0
        for (offset, payload) in try Self.drain(setup.nic, &output) {
            wire.replaceSubrange(offset..<(offset + payload.count), with: payload)
            covered += payload.count
        }
        #expect(output.errors.isEmpty)
        #expect(covered == setup.expected.count, "each byte sent once")
        #expect(wire == setup.expected)
        #expect(output.echoes.map(\.1) == [Self.start + 9_000, Self.start + 21_500, Self.start + setup.expected.count])
        // Records 2 and 5 were cut by a SEND, so they were sealed twice.
        #expect(setup.nic.counters.recordsSealed == 10)
        #expect(setup.nic.store.heldBytes == setup.expected.count)

        // Retransmissions of whole records, of a few bytes inside one, and across record boundaries, from the
        // buffers (buffered) or read and sealed again (bufferless): always the bytes first sent.
        var generator = SeededGenerator(seed: 99)
        for _ in 0..<40 {
            let from = Int.random(in: 0..<setup.expected.count, using: &generator)
            let length = Int.random(in: 1...min(9000, setup.expected.count - from), using: &generator)
            setup.nic.handle(.retransmit(Self.flow, sequence: Self.start + from, length: UInt32(length), template: Self.template),
                             received: .zero, now: .zero, output: &output)
            var got = [UInt8](repeating: 0xEE, count: length)
            for (offset, payload) in try Self.drain(setup.nic, &output) {
                #expect(offset >= from && offset + payload.count <= from + length)
                got.replaceSubrange((offset - from)..<(offset - from + payload.count), with: payload)
            }
            #expect(got == Array(setup.expected[from..<(from + length)]), "retransmission of \(length) bytes at \(from)")
        }
        #expect(output.errors.isEmpty)
        if store == .bufferless { #expect(setup.nic.counters.recordsSealed > 10, "lost records are sealed again") }

        // ACKD frees what was acknowledged; what is left still comes back right.
        setup.nic.handle(.acknowledged(Self.flow, through: Self.start + 10_000), received: .zero, now: .zero, output: &output)
        #expect(setup.nic.store.heldBytes == setup.expected.count - 10_000)
        setup.nic.handle(.retransmit(Self.flow, sequence: Self.start + 10_000, length: 3000, template: Self.template),
                         received: .zero, now: .zero, output: &output)
        let again = try Self.drain(setup.nic, &output).sorted { $0.0 < $1.0 }.flatMap(\.1)
        #expect(again == Array(setup.expected[10_000..<13_000]))
        setup.nic.handle(.flowClose(Self.flow, reason: 0), received: .zero, now: .zero, output: &output)
        #expect(setup.nic.store.heldBytes == 0)
    }

    @Test("a record is never sealed again from a file changed since it was opened: the flow fails instead")
    func changedFileIsNotResealed() throws {
        let setup = try Self.setUp(version: .tls13, store: .bufferless, seed: 8)
        var output = CollectingNICOutput()
        setup.nic.handle(.sendRecords(Self.flow, setup.run), received: .zero, now: .zero, output: &output)
        let first = try Self.drain(setup.nic, &output)
        #expect(first.reduce(0) { $0 + $1.1.count } == setup.expected.count)
        setup.files.truncate("f.bin", to: 90_000)  // another process rewrites the file
        setup.nic.handle(.retransmit(Self.flow, sequence: Self.start + 100, length: 1000, template: Self.template),
                         received: .zero, now: .zero, output: &output)
        #expect(try Self.drain(setup.nic, &output).isEmpty, "nothing sealed from the changed file goes out")
        #expect(setup.nic.counters.changedFileReseals == 1)
        #expect(output.errors.count == 1 && output.errors.first?.1 == CommandKind.retransmit.rawValue)
        #expect(output.errors.first?.3.contains("changed since its TLS records were sealed") == true)
    }

    @Test("new keys (a KeyUpdate) drop a retransmission still waiting for its read: it is never sealed under the new key")
    func newKeysDropStaleRetransmissions() throws {
        let setup = try Self.setUp(version: .tls13, store: .bufferless, seed: 9)
        var output = CollectingNICOutput()
        setup.nic.handle(.sendRecords(Self.flow, setup.run), received: .zero, now: .zero, output: &output)
        _ = try Self.drain(setup.nic, &output)
        // A RETRANSMIT whose read has not completed, then the whole stream acknowledged and new keys.
        setup.nic.handle(.retransmit(Self.flow, sequence: Self.start, length: 2000, template: Self.template),
                         received: .zero, now: .zero, output: &output)
        setup.nic.handle(.acknowledged(Self.flow, through: Self.start + setup.expected.count), received: .zero, now: .zero, output: &output)
        let key = [UInt8](repeating: 3, count: 16), iv = [UInt8](repeating: 4, count: 12)
        key.withUnsafeBytes { key in
            iv.withUnsafeBytes { iv in
                setup.nic.handle(.tlsKeys(Self.flow, TLSKeys(version: .tls13, key: key, iv: iv)), received: .zero, now: .zero, output: &output)
            }
        }
        #expect(try Self.drain(setup.nic, &output).isEmpty, "the stale retransmission did not leave")
        #expect(output.errors.isEmpty)
        #expect(setup.nic.counters.tlsFlows == 1, "a KeyUpdate is not a new flow")
        #expect(setup.nic.store.heldBytes == 0 && setup.nic.chunksInUse == 0)
    }

    @Test("SEND_RECORDS without keys, outside its run, or after FLOW_CLOSE is refused; a NIC without sealing refuses keys")
    func refusals() throws {
        let setup = try Self.setUp(version: .tls13, store: .buffered, seed: 5)
        var output = CollectingNICOutput()
        var outside = setup.run
        outside.length = UInt32(setup.expected.count + 1)
        setup.nic.handle(.sendRecords(Self.flow, outside), received: .zero, now: .zero, output: &output)
        #expect(output.errors.map(\.0) == [.malformedCommand])
        // Another flow, no keys.
        setup.nic.handle(.flowOpen(FlowID(4), flowEndpoints), received: .zero, now: .zero, output: &output)
        setup.nic.handle(.sendRecords(FlowID(4), setup.run), received: .zero, now: .zero, output: &output)
        #expect(output.errors.last.map { $0.0 == .malformedCommand && $0.3.contains("before TLS_KEYS") } == true)
        // The keys go with the flow.
        setup.nic.handle(.flowClose(Self.flow, reason: 0), received: .zero, now: .zero, output: &output)
        setup.nic.handle(.flowOpen(Self.flow, flowEndpoints), received: .zero, now: .zero, output: &output)
        setup.nic.handle(.sendRecords(Self.flow, setup.run), received: .zero, now: .zero, output: &output)
        #expect(output.errors.last.map { $0.3.contains("before TLS_KEYS") } == true)
        #expect(try Self.drain(setup.nic, &output).isEmpty)

        let files = MemoryFiles()
        let plain = NICDataPlane(files: files, disk: MemoryDisk(files: files))
        plain.handle(.flowOpen(Self.flow, flowEndpoints), received: .zero, now: .zero, output: &output)
        let key = [UInt8](repeating: 1, count: 16), iv = [UInt8](repeating: 2, count: 12)
        key.withUnsafeBytes { key in
            iv.withUnsafeBytes { iv in
                plain.handle(.tlsKeys(Self.flow, TLSKeys(version: .tls13, key: key, iv: iv)), received: .zero, now: .zero, output: &output)
            }
        }
        #expect(output.errors.last.map { $0.0 == .unsupported } == true)
    }
}
