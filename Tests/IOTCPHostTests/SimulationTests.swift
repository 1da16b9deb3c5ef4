import IOTCPCommon
import Testing
@testable import IOTCPHost

@Suite("Deterministic simulation: engine to engine through a NIC, over a lossy wire")
struct SimulationTests {
    @Test("one clean transfer is delivered byte-exact and both ends close")
    func cleanTransfer() {
        var simulation = Simulation(seed: 1, conditions: WireConditions(oneWayDelay: 5 * Nanoseconds.millisecond), sizes: [300_000])
        let finished = simulation.run()
        #expect(finished)
        #expect(simulation.transfers[0].received == 300_000 && !simulation.transfers[0].corrupt)
        #expect(simulation.nic.heldBytes == 0 && simulation.nic.heldAtClose == 0, "ACKD freed everything the NIC held")
        #expect(simulation.packetsDropped == 0)
    }

    /// Many transfers of random sizes under random conditions; each simulation replays from its seed.
    @Test("2,000 transfers of random sizes, with loss, duplication, reordering and corruption, arrive byte-exact")
    func randomTransfers() {
        var total = 0, bytes = 0
        for seed in UInt64(1)...500 {
            var random = SeededGenerator(seed: seed &* 7919)
            let sizes = (0..<4).map { _ -> Int in
                switch Int.random(in: 0..<10, using: &random) {
                case 0: 0
                case 1...5: Int.random(in: 1...20_000, using: &random)
                case 6...8: Int.random(in: 20_000...200_000, using: &random)
                default: Int.random(in: 200_000...600_000, using: &random)
                }
            }
            let conditions = WireConditions(
                oneWayDelay: [50_000, 1_000_000, 20_000_000].randomElement(using: &random)!,
                jitter: 100_000, loss: [0, 0.01, 0.05].randomElement(using: &random)!, duplication: 0.01,
                reordering: 0.02, corruption: 0.005)
            var simulation = Simulation(seed: seed, conditions: conditions, sizes: sizes)
            let finished = simulation.run()
            #expect(finished, "seed \(seed), \(conditions), sizes \(sizes): not finished by the limit")
            for transfer in simulation.transfers {
                #expect(transfer.received == transfer.size && !transfer.corrupt, "seed \(seed): \(transfer.received)/\(transfer.size) corrupt \(transfer.corrupt)")
            }
            #expect(simulation.nic.heldAtClose == 0 && simulation.nic.retransmitsNotFound == 0, "seed \(seed)")
            total += sizes.count
            bytes += sizes.reduce(0, +)
        }
        #expect(total == 2000)
        print("simulation: \(total) transfers, \(bytes) bytes")
    }

    /// Responses with heads: each head written with `more` leaves as the head of the file's first SEND, in
    /// the NIC's first segment; when that segment is lost the host resends the head and the NIC the file.
    @Test("500 transfers with response heads sent as SEND heads, with loss, duplication, reordering and corruption, arrive byte-exact")
    func transfersWithHeads() {
        var total = 0, headsSent = 0
        for seed in UInt64(1)...125 {
            var random = SeededGenerator(seed: seed &* 104_729)
            let sizes = (0..<4).map { _ -> Int in
                switch Int.random(in: 0..<10, using: &random) {
                case 0: 0
                case 1...6: Int.random(in: 1...5_000, using: &random)
                default: Int.random(in: 5_000...300_000, using: &random)
                }
            }
            let conditions = WireConditions(
                oneWayDelay: [50_000, 1_000_000, 20_000_000].randomElement(using: &random)!,
                jitter: 100_000, loss: [0.01, 0.05, 0.2].randomElement(using: &random)!, duplication: 0.01,
                reordering: 0.02, corruption: 0.005)
            var simulation = Simulation(seed: seed, conditions: conditions, sizes: sizes, heads: true)
            let finished = simulation.run()
            #expect(finished, "seed \(seed), \(conditions), sizes \(sizes): not finished by the limit")
            for transfer in simulation.transfers {
                #expect(transfer.received == transfer.headLength + transfer.size && !transfer.corrupt,
                        "seed \(seed): \(transfer.received)/\(transfer.headLength)+\(transfer.size) corrupt \(transfer.corrupt)")
            }
            #expect(simulation.nic.heldAtClose == 0 && simulation.nic.retransmitsNotFound == 0, "seed \(seed)")
            headsSent += simulation.nic.sendsWithHead
            total += sizes.count
        }
        #expect(total == 500)
        #expect(headsSent > 300, "most responses left with their head in the file's first segment (\(headsSent))")
    }

    @Test("a grid of loss (0, 1, 5, 20 %) by RTT (0.1, 10, 100 ms) always completes", arguments: [0.0, 0.01, 0.05, 0.20])
    func lossAndDelayGrid(loss: Double) {
        let size = 1_000_000
        for rtt in [100_000, 10_000_000, 100_000_000] as [UInt64] {
            let conditions = WireConditions(oneWayDelay: rtt / 2, loss: loss)
            var simulation = Simulation(seed: UInt64(rtt) ^ UInt64(loss * 1000), conditions: conditions, sizes: [size])
            let start = simulation.now
            let finished = simulation.run()
            let seconds = Double((simulation.transfers[0].completedAt ?? simulation.now) - start) / 1e9
            #expect(finished, "\(conditions)")
            #expect(simulation.transfers[0].received == size && !simulation.transfers[0].corrupt)
            let goodput: Double = Double(size * 8) / seconds / 1e6
            let rttMilliseconds: Double = Double(rtt) / 1e6
            let lossPercent: Double = loss * 100
            print("simulation grid: loss \(lossPercent)%, RTT \(rttMilliseconds) ms: 1 MB in \(seconds) s, goodput \(goodput) Mbit/s")
        }
    }
    /// Tail loss probes against the RTO alone: the same 16 seeded 1 MB transfers each way, every one byte-exact;
    /// prints the time to the last byte (mean, median, 90th percentile, worst) for Docs/benchmarks.md.
    @Test("1 MB transfers at 5 and 20 % loss complete byte-exact with tail loss probes and without; probes go only when on",
          arguments: [0.05, 0.20])
    func tailLossProbeComparison(loss: Double) {
        for rtt in [100_000, 10_000_000] as [UInt64] {
            compare("tail loss probes: loss \(loss * 100)%, RTT \(Double(rtt) / 1e6) ms",
                    conditions: WireConditions(oneWayDelay: rtt / 2, loss: loss), counted: "probes",
                    turn: { $0.tailLossProbes = $1 }, count: { $0.lossRecovery.lossProbes })
        }
    }

    /// Lost retransmission detection against the RTO alone, as above; the last two conditions reorder a tenth
    /// (with 0-2 ms of jitter on every segment) or a fiftieth of the segments, where a late original must not
    /// pass for a lost retransmission's evidence too often (the transfers still complete byte-exact either way).
    @Test("1 MB transfers at loss complete byte-exact with lost retransmission detection and without; it acts only when on",
          arguments: [(0.05, 0.0), (0.20, 0.0), (0.05, 0.10), (0.05, 0.02)])
    func lostRetransmissionComparison(loss: Double, reordering: Double) {
        compareAtBothRTTs("lost retransmissions", loss: loss, reordering: reordering, counted: "found lost",
                          turn: { $0.lostRetransmissionDetection = $1 }, count: { $0.lossRecovery.lostRetransmissions })
    }

    /// The reordering window against IsLost alone, as above.
    @Test("1 MB transfers at loss complete byte-exact with the reordering window and without; it acts only when on",
          arguments: [(0.05, 0.0), (0.20, 0.0), (0.05, 0.10), (0.05, 0.02)])
    func reorderingWindowComparison(loss: Double, reordering: Double) {
        compareAtBothRTTs("reordering window", loss: loss, reordering: reordering, counted: "windows passed",
                          turn: { $0.reorderingWindow = $1 }, count: { $0.lossRecovery.reorderingWindowLosses })
    }

    /// `compare` on a 0.1 ms and a 10 ms path; reordering of a tenth or more comes with 0-2 ms of jitter.
    private func compareAtBothRTTs(_ name: String, loss: Double, reordering: Double, counted: String,
                                   turn: (inout TCPConfiguration, Bool) -> Void, count: (TCPEngine) -> Int) {
        for rtt in [100_000, 10_000_000] as [UInt64] {
            compare("\(name): loss \(loss * 100)%, reordering \(reordering * 100)%, RTT \(Double(rtt) / 1e6) ms",
                    conditions: WireConditions(oneWayDelay: rtt / 2, jitter: reordering >= 0.1 ? 2_000_000 : 0, loss: loss,
                                               reordering: reordering),
                    counted: counted, turn: turn, count: count)
        }
    }

    /// 16 seeded 1 MB transfers under `conditions` with a feature off (`turn(&configuration, false)`) and on,
    /// every one byte-exact; the server's `count` of the feature's acts must be zero off and not zero on.
    /// Prints the time to the last byte (mean, median, p90, worst) and the RTOs each way.
    private func compare(_ title: String, conditions: WireConditions, counted: String,
                         turn: (inout TCPConfiguration, Bool) -> Void, count: (TCPEngine) -> Int) {
        var line = "\(title), 1 MB x 16:"
        for on in [false, true] {
            var configuration = Simulation.defaultConfiguration
            turn(&configuration, on)
            var seconds: [Double] = []
            var timeouts = 0, acts = 0
            for seed in UInt64(1)...16 {
                var simulation = Simulation(seed: seed &* 7919 ^ (2 * conditions.oneWayDelay), conditions: conditions,
                                            sizes: [1_000_000], configuration: configuration)
                let start = simulation.now
                let finished = simulation.run()
                #expect(finished, "seed \(seed), \(conditions), on \(on)")
                let transfer = simulation.transfers[0]
                #expect(transfer.received == 1_000_000 && !transfer.corrupt, "seed \(seed), \(conditions), on \(on)")
                seconds.append(Double((transfer.completedAt ?? simulation.now) - start) / 1e9)
                timeouts += simulation.server.lossRecovery.timeouts
                acts += count(simulation.server)
            }
            if on { #expect(acts > 0, "\(title)") } else { #expect(acts == 0, "\(title)") }
            seconds.sort()
            let mean = seconds.reduce(0, +) / Double(seconds.count)
            line += " \(on ? "with" : "without"): mean \(rounded(mean)) s, median \(rounded(seconds[8])), p90 \(rounded(seconds[14])), "
                + "worst \(rounded(seconds[15])), RTOs \(timeouts), \(counted) \(acts);"
        }
        print(line)
    }

    private func rounded(_ value: Double) -> String { String(Double(Int(value * 1000)) / 1000) }
}
