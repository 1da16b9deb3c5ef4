import IOTCPCommon
import Testing
@testable import IOTCPHost

@Suite("TLS records on the host: keys to the NIC, runs in the sequence space, SENDs on record boundaries")
struct RecordSendHostTests {
    @Test("a 100,000-byte file as TLS 1.3 records: TLS_KEYS first, SEND_RECORDS covering the run once, cut on record boundaries")
    func recordRun() throws {
        var script = Script()
        let (handle, iss) = try establishPassive(&script, window: 5000)
        let file = OffloadedFileID(slot: 1, generation: 1)
        // Before the keys, no records.
        #expect(throws: TCPError.self) {
            try script.engine.writeRecords(handle, file: file, offset: 0, length: 1000, recordPlaintext: 16384, firstRecord: 0,
                                           now: script.now, output: &script.output)
        }
        let key = [UInt8](repeating: 7, count: 16), iv = [UInt8](repeating: 9, count: 12)
        try key.withUnsafeBytes { key in
            try iv.withUnsafeBytes { iv in
                try script.engine.setRecordKeys(handle, TLSKeys(version: .tls13, key: key, iv: iv), output: &script.output)
            }
        }
        var emitted = script.output.take()
        #expect(emitted.contains { if case .tlsKeys(_, .tls13, 16) = $0 { true } else { false } })
        // A head sealed by the host (any bytes here), then the file as records numbered from 1.
        let head = [UInt8](repeating: 0x17, count: 300)
        _ = try head.withUnsafeBytes { try script.engine.write(handle, $0, now: script.now, output: &script.output) }
        // Two calls, the second going on where the first's whole records end: one run, as one call would make.
        let first = try script.engine.writeRecords(handle, file: file, offset: 500, length: 3 * 16384, recordPlaintext: 16384, firstRecord: 1,
                                                   now: script.now, output: &script.output)
        let second = try script.engine.writeRecords(handle, file: file, offset: 500 + 3 * 16384, length: 100_000 - 3 * 16384,
                                                    recordPlaintext: 16384, firstRecord: 4, now: script.now, output: &script.output)
        #expect(first + second == 100_000)
        let runStart = SequenceNumber(iss &+ 1 &+ 300)
        let runLength = 100_000 + 7 * 22  // seven records, each 22 bytes longer than its plaintext
        let stride = 16384 + 22
        var sends: [RecordSendRange] = []
        var acknowledged = iss &+ 1
        var clock: UInt32 = 1002
        // ACK everything sent and ECHO every SEND until the run is out.
        for _ in 0..<200 {
            emitted += script.output.take()
            let new = emitted.recordSends
            emitted.removeAll()
            for range in new {
                sends.append(range)
                script.engine.handleEcho(flow: handle.flow, sequenceEnd: range.sequence + Int(range.length), nicDelayNanoseconds: 0,
                                         now: script.now, output: &script.output)
            }
            let highest = sends.last.map { $0.sequence + Int($0.length) } ?? runStart
            if highest == runStart + runLength && highest.rawValue == acknowledged { break }
            script.now = script.now + 10 * Nanoseconds.millisecond
            acknowledged = highest.rawValue
            clock += 10
            emitted += script.inject(sequence: 1001, acknowledgment: acknowledged, flags: .ack, window: 5000,
                                     options: script.peerTimestamps(clock))
        }
        #expect(!sends.isEmpty)
        var expectedStart = runStart
        for range in sends {
            // SENDs made before the second call know the run as it was then; both agree on every record.
            #expect(range.runStart == runStart && range.firstRecord == 1 && range.offset == 500)
            #expect(range.runPlaintext == 100_000 || (range.runPlaintext == 3 * 16384 && range.sequence + Int(range.length) <= runStart + 3 * stride))
            #expect(range.recordPlaintext == 16384)
            #expect(range.sequence == expectedStart, "the run goes out once, in order, with no gap")
            let end = range.sequence + Int(range.length)
            let endOffset = end - runStart
            // A SEND ends on a record boundary, or at the run's end, or inside the one record it started in
            // (a window smaller than a record).
            let onBoundary = endOffset % stride == 0 || endOffset == runLength
            let withinOneRecord = (range.sequence - runStart) / stride == (endOffset - 1) / stride
            #expect(onBoundary || withinOneRecord, "SEND [\(range.sequence - runStart), \(endOffset)) cuts a record it does not start in")
            expectedStart = end
        }
        #expect(expectedStart == runStart + runLength)
        #expect(sends.last?.runPlaintext == 100_000, "the second call extended the first's run")
    }
}
