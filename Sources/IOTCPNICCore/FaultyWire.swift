import IOTCPCommon

/// Faults injected in front of a wire, drawn from one seeded generator so a run replays exactly: loss,
/// duplication, reordering (a frame held back by a random extra delay), corruption (one byte flipped, which
/// a checksum must catch) and a fixed delay.
public struct FaultSettings: Hashable, Sendable, CustomStringConvertible {
    public var loss = 0.0
    public var duplication = 0.0
    public var reordering = 0.0
    public var corruption = 0.0
    public var delayNanoseconds: UInt64 = 0

    public init(loss: Double = 0, duplication: Double = 0, reordering: Double = 0, corruption: Double = 0, delayNanoseconds: UInt64 = 0) {
        self.loss = loss
        self.duplication = duplication
        self.reordering = reordering
        self.corruption = corruption
        self.delayNanoseconds = delayNanoseconds
    }

    public var isNone: Bool { loss == 0 && duplication == 0 && reordering == 0 && corruption == 0 && delayNanoseconds == 0 }

    /// Why these settings cannot be used, or nil.
    public var validationFailure: String? {
        for (name, value) in [("loss", loss), ("duplication", duplication), ("reordering", reordering), ("corruption", corruption)]
        where !(0...1).contains(value) {
            return "\(name) must be a probability from 0 to 1, not \(value)"
        }
        return nil
    }

    public var description: String {
        "loss \(loss * 100)%, duplication \(duplication * 100)%, reordering \(reordering * 100)%, corruption \(corruption * 100)%, delay \(Double(delayNanoseconds) / 1e6) ms"
    }
}

/// One direction of a faulty wire: frames go in with `send`, come out through `deliver` now or later.
public struct FaultyWire {
    public let settings: FaultSettings
    private var random: SeededGenerator
    private var held: [(release: UInt64, frame: [UInt8])] = []
    public private(set) var dropped = 0
    public private(set) var duplicated = 0
    public private(set) var reordered = 0
    public private(set) var corrupted = 0

    public init(settings: FaultSettings, seed: UInt64) {
        self.settings = settings
        random = SeededGenerator(seed: seed)
    }

    public mutating func send(_ frame: UnsafeRawBufferPointer, now: Instant, deliver: (UnsafeRawBufferPointer) -> Void) {
        if settings.isNone {
            deliver(frame)
            return
        }
        if Double.random(in: 0..<1, using: &random) < settings.loss {
            dropped += 1
            return
        }
        let copies = Double.random(in: 0..<1, using: &random) < settings.duplication ? 2 : 1
        if copies == 2 { duplicated += 1 }
        for _ in 0..<copies {
            var bytes = Array(frame)
            if bytes.count > 14, Double.random(in: 0..<1, using: &random) < settings.corruption {
                bytes[Int.random(in: 14..<bytes.count, using: &random)] ^= 0x20
                corrupted += 1
            }
            var delay = settings.delayNanoseconds
            if Double.random(in: 0..<1, using: &random) < settings.reordering {
                delay += UInt64.random(in: 100_000...2_000_000, using: &random)
                reordered += 1
            }
            if delay == 0 {
                bytes.withUnsafeBytes { deliver($0) }
            } else {
                held.append((now.nanoseconds + delay, bytes))
            }
        }
    }

    /// When the next held frame is due, for a loop deciding how long it may sleep.
    public var nextRelease: Instant? { held.lazy.map(\.release).min().map { Instant(nanoseconds: $0) } }

    /// Delivers the held frames whose time has come, in order of release.
    public mutating func releaseDue(now: Instant, deliver: (UnsafeRawBufferPointer) -> Void) {
        guard !held.isEmpty else { return }
        held.sort { $0.release < $1.release }
        while let first = held.first, first.release <= now.nanoseconds {
            held.removeFirst()
            first.frame.withUnsafeBytes { deliver($0) }
        }
    }
}
