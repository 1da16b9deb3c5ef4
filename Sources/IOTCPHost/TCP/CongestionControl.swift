import IOTCPCommon
import Glibc  // cbrt

/// Which congestion controller a connection uses.
public enum CongestionAlgorithm: String, Sendable, CaseIterable {
    /// RFC 9438, the default (as in Linux).
    case cubic
    /// RFC 5681 with RFC 6582's recovery.
    case newReno
}

/// The congestion window and slow-start threshold, in bytes, and how they move. An enum rather than a
/// protocol, so a connection stores its controller inline and the per-ACK call is a direct switch.
struct CongestionController {
    private(set) var window: Int
    private(set) var slowStartThreshold: Int = .max
    private(set) var segmentSize: Int
    private let algorithm: CongestionAlgorithm
    private var cubic: CubicState
    /// Bytes acknowledged in congestion avoidance not yet turned into window (RFC 5681 §3.1's byte counting).
    private var avoidanceCredit = 0

    struct CubicState {
        /// Window before the last reduction, in segments (W_max).
        var maximumWindow: Double = 0
        var previousMaximum: Double = 0
        /// Time from the epoch's start to the window returning to W_max, in seconds (K).
        var k: Double = 0
        var epochStart: Instant?
        /// The Reno-friendly estimate, in segments (W_est).
        var renoEstimate: Double = 0
    }

    static let cubicC = 0.4
    static let cubicBeta = 0.7

    init(algorithm: CongestionAlgorithm, segmentSize: Int, initialWindowSegments: Int) {
        self.algorithm = algorithm
        self.segmentSize = segmentSize
        // RFC 6928: min(10 × MSS, max(2 × MSS, 14,600)) for the default of 10.
        window = initialWindowSegments * segmentSize
        cubic = CubicState()
    }

    var isInSlowStart: Bool { window < slowStartThreshold }

    /// The path's segments got smaller (Packet Too Big): the window and threshold keep their number of
    /// segments, as Linux keeps its window in packets, so the sending rate in segments does not jump.
    mutating func resize(segmentSize newSize: Int) {
        guard newSize > 0, newSize != segmentSize else { return }
        window = max(window / segmentSize, 1) * newSize
        if slowStartThreshold != .max { slowStartThreshold = max(slowStartThreshold / segmentSize, 2) * newSize }
        avoidanceCredit = 0
        segmentSize = newSize
    }

    /// New data acknowledged outside loss recovery.
    mutating func onAcknowledged(bytes: Int, now: Instant, smoothedRTT: UInt64) {
        if isInSlowStart {
            // RFC 3465 with L = 2: at most two segments per ACK.
            window += min(bytes, 2 * segmentSize)
            return
        }
        switch algorithm {
        case .newReno:
            avoidanceCredit += bytes
            if avoidanceCredit >= window {
                avoidanceCredit -= window
                window += segmentSize
            }
        case .cubic:
            cubicAvoidance(bytes: bytes, now: now, smoothedRTT: smoothedRTT)
        }
    }

    private mutating func cubicAvoidance(bytes: Int, now: Instant, smoothedRTT: UInt64) {
        let segments = Double(window) / Double(segmentSize)
        if cubic.epochStart == nil {
            cubic.epochStart = now
            if cubic.maximumWindow <= segments {
                cubic.k = 0
                cubic.maximumWindow = segments
            } else {
                cubic.k = cbrt((cubic.maximumWindow - segments) / Self.cubicC)
            }
            cubic.renoEstimate = segments
        }
        let elapsed = Double(now - cubic.epochStart!) / 1e9
        let rtt = Double(smoothedRTT) / 1e9
        let offset = elapsed + rtt - cubic.k
        let target = Self.cubicC * offset * offset * offset + cubic.maximumWindow
        // RFC 9438 §4.3: the Reno-friendly window grows by α per window of acknowledged data.
        let alpha = 3 * (1 - Self.cubicBeta) / (1 + Self.cubicBeta)
        cubic.renoEstimate += alpha * Double(bytes) / Double(window)
        if cubic.renoEstimate > target {
            window = max(window, Int(cubic.renoEstimate * Double(segmentSize)))
            return
        }
        // §4.4: move a fraction (target − cwnd)/cwnd of a segment per segment acknowledged, at most 1.5×.
        let bounded = min(target, 1.5 * segments)
        if bounded > segments {
            let increase = (bounded - segments) / segments * Double(bytes)
            avoidanceCredit += Int(increase)
            if avoidanceCredit >= 1 {
                window += avoidanceCredit
                avoidanceCredit = 0
            }
        }
    }

    /// Loss detected by duplicate ACKs or SACK: the window for recovery. `flight` is bytes outstanding.
    mutating func onLossDetected(flight: Int, now: Instant) {
        switch algorithm {
        case .newReno:
            slowStartThreshold = max(flight / 2, 2 * segmentSize)
        case .cubic:
            let segments = Double(window) / Double(segmentSize)
            // §4.7 fast convergence: yield more when the window did not regain its last maximum.
            if segments < cubic.maximumWindow {
                cubic.maximumWindow = segments * (1 + Self.cubicBeta) / 2
            } else {
                cubic.maximumWindow = segments
            }
            cubic.epochStart = nil
            slowStartThreshold = max(Int(Double(window) * Self.cubicBeta), 2 * segmentSize)
        }
        window = slowStartThreshold
        avoidanceCredit = 0
    }

    /// A retransmission timeout: back to one segment (RFC 5681 §3.1's loss window).
    mutating func onTimeout(flight: Int) {
        onLossDetected(flight: flight, now: .zero)
        window = segmentSize
    }

    /// RFC 6582: inflate by a segment for each further duplicate ACK during NewReno recovery.
    mutating func inflate(by bytes: Int) { window += bytes }

    /// Leave recovery with the window at the threshold.
    mutating func deflateToThreshold() { window = slowStartThreshold }

    /// Set the window (a partial ACK's deflation in RFC 6582 §3.2 step 3).
    mutating func setWindow(_ bytes: Int) { window = max(bytes, segmentSize) }
}
