import CIOTCPSystem
import Glibc
import IOTCPCommon

/// Both halves of the stack in one process: two slot rings in private memory. The embedded default,
/// and what the unit tests use. The halves may run on one thread (each polls in turn) or on two (with
/// `.doorbell`, a receiver sleeps on an eventfd; with `.busyPoll`, it spins).
public enum InProcessChannel {
    public static func makePair(
        configuration: ChannelConfiguration = ChannelConfiguration()
    ) throws(ChannelError) -> (host: RingChannelEnd, nic: RingChannelEnd) {
        if let failure = configuration.validationFailure { throw .setup(failure) }
        let ringBytes = configuration.ringBytes
        let base = UnsafeMutableRawPointer.allocate(byteCount: 2 * ringBytes, alignment: 4096)
        base.initializeMemory(as: UInt8.self, repeating: 0, count: 2 * ringBytes)
        let hostToNIC = SlotRingControl(base: base, slotCount: configuration.slotCount, slotBytes: configuration.slotBytes)
        let nicToHost = SlotRingControl(
            base: base + ringBytes, slotCount: configuration.slotCount, slotBytes: configuration.slotBytes)
        hostToNIC.initialize()
        nicToHost.initialize()

        var hostDoorbell: Int32 = -1, nicDoorbell: Int32 = -1
        if configuration.waiting == .doorbell {
            do {
                hostDoorbell = try systemCall("eventfd") { iotcp_eventfd() }
                nicDoorbell = try systemCall("eventfd") { iotcp_eventfd() }
            } catch {
                if hostDoorbell >= 0 { Glibc.close(hostDoorbell) }
                base.deallocate()
                throw error
            }
        }
        let region = ChannelRegion(
            base: base, byteCount: 2 * ringBytes, storage: .allocated, descriptors: [hostDoorbell, nicDoorbell])
        let host = RingChannelEnd(
            outgoing: hostToNIC, incoming: nicToHost, waiting: configuration.waiting,
            peerDoorbell: nicDoorbell, ownDoorbell: hostDoorbell, peerSocket: -1, region: region)
        let nic = RingChannelEnd(
            outgoing: nicToHost, incoming: hostToNIC, waiting: configuration.waiting,
            peerDoorbell: hostDoorbell, ownDoorbell: nicDoorbell, peerSocket: -1, region: region)
        return (host, nic)
    }
}
