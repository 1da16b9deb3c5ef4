import IOTCPCommon
import Testing
@testable import IOTCPHost

/// The table of connections recently handed to the NIC: what it finds, for how long, and that it stays the
/// size its live entries need.
@Suite("Recent hand-overs")
struct RecentHandOversTests {
    let second: UInt64 = Nanoseconds.second

    @Test("found for the grace period with the peer's ISN, then not; a second hand-over of the same endpoints replaces the first")
    func lookUpAndExpiry() {
        var table = RecentHandOvers(grace: 2 * second)
        let start = Instant.milliseconds(1_000)
        #expect(table.lookUp(42, now: start) == nil)
        table.insert(42, peerInitialSequence: SequenceNumber(7), now: start)
        table.insert(43, peerInitialSequence: SequenceNumber(8), now: start + second)
        #expect(table.lookUp(42, now: start + (2 * second - 1))?.peerInitialSequence == SequenceNumber(7))
        #expect(table.lookUp(42, now: start + 2 * second) == nil, "expired")
        #expect(table.lookUp(43, now: start + 2 * second)?.peerInitialSequence == SequenceNumber(8))
        table.insert(43, peerInitialSequence: SequenceNumber(9), now: start + 2 * second)
        let again = table.lookUp(43, now: start + 3 * second + 1)
        #expect(again?.peerInitialSequence == SequenceNumber(9) && again?.at == start + 2 * second)
        #expect(table.lookUp(44, now: start) == nil && table.lookUp(0, now: start) == nil)
    }

    @Test("endpoints handed over again and again among expiring others: the newest hand-over is always the one found")
    func repeatedHandOvers() {
        var table = RecentHandOvers(grace: 2 * second)
        var now = Instant.milliseconds(1_000)
        // Keys 0..<40 come back every half second, each time with a new ISN, while keys of their own expire
        // around them, so probe sequences hold expired slots ahead of a key's earlier, still live, entry.
        for round in 1...40 {
            for key in UInt64(1)...40 {
                table.insert(key << 20, peerInitialSequence: SequenceNumber(UInt32(round)), now: now)
                table.insert(key << 20 | UInt64(round), peerInitialSequence: SequenceNumber(0), now: now)
            }
            for key in UInt64(1)...40 {
                let found = table.lookUp(key << 20, now: now)
                #expect(found?.peerInitialSequence == SequenceNumber(UInt32(round)) && found?.at == now, "key \(key), round \(round)")
            }
            #expect(table.lookUp(UInt64(7) << 20 | UInt64(max(round - 4, 0)), now: now) == nil || round <= 4)
            now = now + second / 2
        }
    }

    @Test("a steady rate of hand-overs: every live one found, expired ones reused, the table sized to the live ones")
    func steadyRate() {
        var table = RecentHandOvers(grace: 2 * second)
        var now = Instant.milliseconds(5_000)
        let perMillisecond: UInt64 = 5  // 5,000 a second: 10,000 live at once
        var key: UInt64 = 1 << 40
        for _ in 0..<6_000 {
            for _ in 0..<perMillisecond {
                table.insert(key, peerInitialSequence: SequenceNumber(UInt32(truncatingIfNeeded: key)), now: now)
                key += 1
            }
            now = now + Nanoseconds.millisecond
        }
        // The last two seconds' keys are there, with their ISNs; older ones are gone.
        let newest = key - 1, liveCount = 2 * 1000 * perMillisecond
        for probe in stride(from: newest, to: newest - liveCount + perMillisecond, by: -97) {
            #expect(table.lookUp(probe, now: now)?.peerInitialSequence == SequenceNumber(UInt32(truncatingIfNeeded: probe)))
        }
        #expect(table.lookUp(newest - liveCount - perMillisecond, now: now) == nil)
        #expect(table.capacity <= 8 * Int(liveCount) && table.capacity >= 2 * Int(liveCount), "sized to the live entries: \(table.capacity)")
        // A tenth of the rate: once the old entries have expired and the table has turned over, it is rebuilt
        // at the size the new rate needs.
        for _ in 0..<(2 * table.capacity) {
            table.insert(key, peerInitialSequence: SequenceNumber(1), now: now)
            key += 1
            now = now + 2 * Nanoseconds.millisecond
        }
        #expect(table.capacity <= 4096, "1,000 live entries: \(table.capacity) slots")
        #expect(table.lookUp(newest, now: now) == nil && table.lookUp(key - 1, now: now) != nil)
    }
}
