import IOTCPCommon
import Testing
@testable import IOTCPHost

/// A server connection with `segments` full segments of a file on the wire (SENT and ECHOed), its handshake
/// having taken `handshakeMilliseconds` (the first RTT sample), and the peer's ACKs scripted by segment.
struct ScriptedFlight {
    var script: Script
    let handle: TCPHandle
    let base: UInt32
    var peerClock: UInt32 = 8000

    /// `head` bytes of the application's go first, in the first segment with the file after them.
    init(configuration: TCPConfiguration = TCPConfiguration(), synOptions: TCPOptions = Script.linuxSynOptions(),
         handshakeMilliseconds: UInt64 = 20, segments: Int = 10, head: Int = 0) throws {
        script = Script(configuration: configuration)
        _ = try script.engine.listen(port: 80)
        let synAck = try #require(script.inject(sequence: 1000, flags: .syn, options: synOptions).segments.first)
        if handshakeMilliseconds > 0 { script.advance(milliseconds: handshakeMilliseconds) }
        var ackOptions = TCPOptions()
        if synOptions.timestamps != nil {
            ackOptions.timestamps = TCPTimestamps(value: 1001, echoReply: synAck.tcp.options.timestamps?.value ?? 0)
        }
        script.inject(sequence: 1001, acknowledgment: synAck.sequence.rawValue &+ 1, flags: .ack, window: 502, options: ackOptions)
        handle = try #require(script.engine.accept(TCPListenerID(port: 80)))
        base = synAck.sequence.rawValue &+ 1
        if handshakeMilliseconds > 0 {
            #expect(script.engine.info(of: handle)!.smoothedRTT == handshakeMilliseconds * Nanoseconds.millisecond)
        }
        if head > 0 {
            let bytes = [UInt8](repeating: 0x48, count: head)
            _ = try bytes.withUnsafeBytes { try script.engine.write(handle, $0, more: true, now: script.now, output: &script.output) }
        }
        _ = try script.writeFile(handle, length: segments * 1448 - head)
        echoSends()
        #expect(script.engine.info(of: handle)!.sendMaximum == segment(segments))
    }

    /// Queues `segments` more of the file from segment `index` and puts what the engine SENDs on the wire.
    mutating func write(segments: Int, at index: Int) throws {
        _ = try script.writeFile(handle, length: segments * 1448, offset: UInt64(index * 1448))
        echoSends()
    }

    /// The NIC's ECHO for every SEND emitted: the data is on the wire.
    private mutating func echoSends() {
        for send in script.output.take().sends {
            script.engine.handleEcho(flow: handle.flow, sequenceEnd: send.1.sequence + Int(send.1.length), nicDelayNanoseconds: 0,
                                     now: script.now, output: &script.output)
        }
        _ = script.output.take()
    }

    func segment(_ index: Int) -> SequenceNumber { SequenceNumber(base &+ UInt32(index * 1448)) }

    /// An ACK from the peer through segment `through` (exclusive), with SACK blocks in segments.
    @discardableResult
    mutating func acknowledge(through: Int, sack: [(Int, Int)] = [], window: UInt16 = 502) -> [Emitted] {
        peerClock += 1
        var options = script.peerTimestamps(peerClock)
        options.sackBlocks = SACKBlockList(sack.map { SACKBlock(left: segment($0.0), right: segment($0.1)) })
        return script.inject(sequence: 1001, acknowledgment: segment(through).rawValue, flags: .ack, window: window, options: options)
    }

    var info: TCPConnectionInfo { script.engine.info(of: handle)! }
}
