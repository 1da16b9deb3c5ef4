import Metrics

/// A swift-metrics `Counter` fed from a running total the stack keeps anyway: `update` adds what the total
/// grew by since the last look. The stacks count in plain integers on their own thread (no atomics, no
/// lock per packet); the exporter turns the totals into metrics once per interval.
struct CumulativeCounter {
    let counter: Counter
    private var last = 0

    init(_ label: String, dimensions: [(String, String)]) {
        counter = Counter(label: label, dimensions: dimensions)
    }

    mutating func update(_ total: Int) {
        // A total that fell (a NIC runtime's data plane reset for a new host) starts counting again from there.
        if total > last { counter.increment(by: Int64(total - last)) }
        last = total
    }
}
