import IOTCPCommon

/// The commands the demo exchanges: command `i` is a SEND whose every field is a function of `i`, and
/// its answer is an ECHO that is too, so each side checks every field of every command it receives.
enum DemoPattern {
    static func sendRange(_ index: Int) -> (flow: FlowID, range: SendRange) {
        let i = UInt64(index)
        let flow = FlowID(UInt32(index % 1000) + 1)
        let template = SegmentTemplate(
            acknowledgmentNumber: SequenceNumber(UInt32(truncatingIfNeeded: ~i)),
            window: UInt16(truncatingIfNeeded: i), lastSegmentFlags: index % 7 == 0 ? .psh : [],
            maximumSegmentSize: 1448,
            timestamps: index % 2 == 0
                ? TCPTimestamps(value: UInt32(truncatingIfNeeded: i &* 3), echoReply: UInt32(truncatingIfNeeded: i &* 7)) : nil)
        let range = SendRange(
            sequence: SequenceNumber(UInt32(truncatingIfNeeded: i &* 1448)), length: UInt32(index % 65536) + 1,
            file: OffloadedFileID(slot: UInt32(index % 64), generation: UInt32(truncatingIfNeeded: i >> 16)),
            offset: i &* 4096, template: template)
        return (flow, range)
    }

    static func send(_ index: Int) -> Command {
        let (flow, range) = sendRange(index)
        return .send(flow, range)
    }

    /// What the NIC answers to SEND `index`.
    static func echo(_ index: Int) -> Command {
        let (flow, range) = sendRange(index)
        return .echo(flow, sequenceEnd: range.sequence + Int(range.length), nicDelayNanoseconds: UInt64(index))
    }

    /// Nil when `command` is exactly SEND `index`, else what differs.
    static func checkSend(_ command: Command, index: Int) -> String? {
        let (flow, range) = sendRange(index)
        guard case .send(let gotFlow, let gotRange) = command else { return "command #\(index) is \(command.kind), not SEND" }
        guard gotFlow == flow, gotRange == range else { return "SEND #\(index) differs: \(gotFlow) \(gotRange)" }
        return nil
    }

    /// Nil when `command` is exactly the ECHO for SEND `index`, else what differs.
    static func checkEcho(_ command: Command, index: Int) -> String? {
        let (flow, range) = sendRange(index)
        guard case .echo(let gotFlow, let sequenceEnd, let delay) = command else {
            return "command #\(index) is \(command.kind), not ECHO"
        }
        guard gotFlow == flow, sequenceEnd == range.sequence + Int(range.length), delay == UInt64(index) else {
            return "ECHO #\(index) differs: \(gotFlow) end \(sequenceEnd) delay \(delay)"
        }
        return nil
    }
}
