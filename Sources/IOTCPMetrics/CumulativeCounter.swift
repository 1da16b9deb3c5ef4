import Metrics

/// swift-metrics `Counter`s fed from running totals a stack keeps anyway: each `update` adds what every
/// total grew by since the last look. The stacks count in plain integers on their own thread (no atomics,
/// no lock per packet); the exporter turns the totals into metrics once per interval.
struct CumulativeCounters<Source> {
    private var counters: [(counter: Counter, total: (Source) -> Int, last: Int)]

    /// One counter per entry, named `prefix` + name + `_total`, reading its total from the source.
    init(prefix: String, dimensions: [(String, String)], _ entries: KeyValuePairs<String, (Source) -> Int>) {
        counters = entries.map { name, total in (Counter(label: "\(prefix)\(name)_total", dimensions: dimensions), total, 0) }
    }

    mutating func update(from source: Source) {
        for index in counters.indices {
            let total = counters[index].total(source)
            // A total that fell (a NIC runtime's data plane reset for a new host) counts on from there.
            if total > counters[index].last { counters[index].counter.increment(by: Int64(total - counters[index].last)) }
            counters[index].last = total
        }
    }
}
