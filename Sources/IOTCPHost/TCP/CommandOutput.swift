import IOTCPCommon

/// Where the engine puts what it decides: commands for the NIC, and packets it built itself.
///
/// The engine is generic over this, so each call is specialised and direct. Production code writes
/// straight into channel messages (`ChannelOutbox`); tests record and inspect.
public protocol CommandOutput {
    /// A command for the NIC: SEND, RETRANSMIT, ACKD, FLOW_OPEN, FLOW_CLOSE.
    mutating func emit(_ command: Command)

    /// A packet for the NIC to transmit as it is (PACKET_OUT): `build` fills `length` bytes, an IPv4
    /// packet from its header, in the place it will be sent from.
    mutating func emitPacket(flow: FlowID, length: Int, _ build: (UnsafeMutableRawBufferPointer) -> Void)
}
