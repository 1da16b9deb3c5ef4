import Foundation

/// One figure a benchmark reports.
struct Figure: Codable {
    let name: String
    let value: Double
    let unit: String
    /// A floor this figure is held to, if any, in the same unit (higher is better).
    let target: Double?
    /// A ceiling this figure is held to, if any (lower is better: time or memory per unit).
    var ceiling: Double? = nil

    var line: String {
        var targetText = target.map { String(format: "  (target ≥ %g: %@)", $0, value >= $0 ? "met" : "MISSED") } ?? ""
        if let ceiling { targetText = String(format: "  (target ≤ %g: %@)", ceiling, value <= ceiling ? "met" : "MISSED") }
        let padded = name.count < 60 ? name + String(repeating: " ", count: 60 - name.count) : name
        return padded + String(format: " %10.2f ", value) + unit + targetText
    }
}

/// Monotonic nanoseconds.
@inline(__always)
func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

/// Runs `body` (which does `unitsPerCall` units of work) repeatedly for at least `seconds`, after a
/// warm-up, and returns units per second of the fastest of `rounds` rounds (the one least disturbed by
/// the rest of a shared machine).
func rate(seconds: Double, rounds: Int = 5, unitsPerCall: Double, _ body: () -> Void) -> Double {
    for _ in 0..<3 { body() }
    var best = 0.0
    for _ in 0..<rounds {
        let start = now()
        var calls = 0.0
        repeat {
            body()
            calls += 1
        } while Double(now() - start) < seconds * 1e9 / Double(rounds)
        best = max(best, calls * unitsPerCall / (Double(now() - start) / 1e9))
    }
    return best
}

/// Where benchmark results go so the optimiser must compute them: a store to a global is an effect it
/// cannot prove unobserved. (An empty `@inline(never)` function is not enough: side-effect analysis
/// sees through it and deletes the work.)
nonisolated(unsafe) var blackHole: UInt64 = 0
nonisolated(unsafe) var opaqueBuffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)

@inline(never)
func consume(_ value: some BinaryInteger) { blackHole &+= UInt64(truncatingIfNeeded: value) }

/// Returns its argument through a call the optimiser cannot see into, so work on it cannot be hoisted
/// out of a benchmark loop or proven redundant.
@inline(never)
func opaque(_ buffer: UnsafeMutableRawBufferPointer) -> UnsafeMutableRawBufferPointer {
    opaqueBuffer = buffer
    return opaqueBuffer
}

@inline(never)
func opaque(_ buffer: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
    UnsafeRawBufferPointer(opaque(UnsafeMutableRawBufferPointer(mutating: buffer)))
}
