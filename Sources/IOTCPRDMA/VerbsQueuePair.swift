internal import CRDMA
import Glibc
import IOTCPChannels
import IOTCPCommon
import IOTCPSystem

/// A reliable-connected queue pair on an RDMA device (libibverbs), with everything it owns: protection
/// domain, one completion queue for sends and receives with a completion channel to sleep on, and one
/// registered region holding `depth` send buffers and `depth` receive buffers. Its rdma_cm identifier
/// has an event channel of its own, which reports the connection's end.
///
/// Work request ids say what completed even when a completion carries an error (its opcode is then
/// undefined): receives are `receiveTag | index`, sends their buffer index, control sends `controlTag`.
public final class VerbsQueuePair: QueuePairTransport, @unchecked Sendable {
    public let depth: Int
    public let bufferBytes: Int
    public private(set) var inlineLimit: Int

    let id: UnsafeMutablePointer<rdma_cm_id>
    let events: UnsafeMutablePointer<rdma_event_channel>
    private let domain: UnsafeMutablePointer<ibv_pd>
    private let completionChannel: UnsafeMutablePointer<ibv_comp_channel>
    private let queue: UnsafeMutablePointer<ibv_cq>
    private let memory: UnsafeMutableRawPointer
    private let memoryRegion: UnsafeMutablePointer<ibv_mr>
    private let workCompletions: UnsafeMutablePointer<ibv_wc>
    private var hasQueuePair = false
    private var ended = false
    private var disconnected = false
    private var unacknowledgedEvents: UInt32 = 0

    static let receiveTag: UInt64 = 1 << 32
    static let controlTag: UInt64 = 0xFFFF_FFFF
    /// Bytes the queue pair is asked to copy at posting time; the device may grant less.
    static let requestedInline = 256
    static let pollBatch = 32

    /// Creates the queue pair's resources on `id`'s device (its address must be resolved, or it must come
    /// from a connection request); `events` is the identifier's event channel, already non-blocking.
    /// Takes ownership of both: on failure they are destroyed.
    init(id: UnsafeMutablePointer<rdma_cm_id>, events: UnsafeMutablePointer<rdma_event_channel>, depth: Int, bufferBytes: Int) throws(ChannelError) {
        self.id = id
        self.events = events
        self.depth = depth
        self.bufferBytes = bufferBytes
        self.inlineLimit = 0
        var cleanup: [() -> Void] = [
            { rdma_destroy_id(id) },
            { rdma_destroy_event_channel(events) },
        ]
        func unwind() { for step in cleanup { step() } }
        guard let context = id.pointee.verbs else {
            unwind()
            throw .setup("the rdma_cm identifier has no device (is the address resolved?)")
        }
        guard let domain = ibv_alloc_pd(context) else {
            let code = errno
            unwind()
            throw ChannelError(SystemCallError("ibv_alloc_pd", errno: Errno(rawValue: code)))
        }
        cleanup.insert({ ibv_dealloc_pd(domain) }, at: 0)
        guard let completionChannel = ibv_create_comp_channel(context) else {
            let code = errno
            unwind()
            throw ChannelError(SystemCallError("ibv_create_comp_channel", errno: Errno(rawValue: code)))
        }
        cleanup.insert({ ibv_destroy_comp_channel(completionChannel) }, at: 0)
        RDMAChannel.setNonBlocking(completionChannel.pointee.fd)
        // Room for every receive and every send that may be outstanding (twice the depth) at once.
        guard let queue = ibv_create_cq(context, Int32(3 * depth + 8), nil, completionChannel, 0) else {
            let code = errno
            unwind()
            throw ChannelError(SystemCallError("ibv_create_cq", errno: Errno(rawValue: code)))
        }
        cleanup.insert({ ibv_destroy_cq(queue) }, at: 0)
        let memoryBytes = 2 * depth * bufferBytes
        guard let memory = aligned_alloc(4096, memoryBytes) else {
            unwind()
            throw .setup("cannot allocate \(memoryBytes) bytes of channel buffers")
        }
        cleanup.insert({ free(memory) }, at: 0)
        guard let memoryRegion = ibv_reg_mr(domain, memory, memoryBytes, Int32(IBV_ACCESS_LOCAL_WRITE.rawValue)) else {
            let code = errno
            unwind()
            throw ChannelError(SystemCallError("ibv_reg_mr of \(memoryBytes) bytes", errno: Errno(rawValue: code)))
        }
        cleanup.insert({ ibv_dereg_mr(memoryRegion) }, at: 0)

        var attributes = ibv_qp_init_attr()
        attributes.send_cq = queue
        attributes.recv_cq = queue
        attributes.qp_type = IBV_QPT_RC
        attributes.sq_sig_all = 1
        attributes.cap.max_send_wr = UInt32(2 * depth + 4)
        attributes.cap.max_recv_wr = UInt32(depth)
        attributes.cap.max_send_sge = 1
        attributes.cap.max_recv_sge = 1
        attributes.cap.max_inline_data = UInt32(Self.requestedInline)
        if rdma_create_qp(id, domain, &attributes) != 0 {
            // Some devices refuse inline data: ask again without it.
            attributes.cap.max_inline_data = 0
            if rdma_create_qp(id, domain, &attributes) != 0 {
                let code = errno
                unwind()
                throw ChannelError(SystemCallError("rdma_create_qp (depth \(depth))", errno: Errno(rawValue: code)))
            }
        }
        self.inlineLimit = Int(attributes.cap.max_inline_data)
        self.domain = domain
        self.completionChannel = completionChannel
        self.queue = queue
        self.memory = memory
        self.memoryRegion = memoryRegion
        self.workCompletions = .allocate(capacity: Self.pollBatch)
        self.hasQueuePair = true
    }

    deinit {
        disconnect()
        if hasQueuePair { rdma_destroy_qp(id) }
        acknowledgeNotification()
        if unacknowledgedEvents > 0 { ibv_ack_cq_events(queue, unacknowledgedEvents) }
        ibv_destroy_cq(queue)
        ibv_destroy_comp_channel(completionChannel)
        ibv_dereg_mr(memoryRegion)
        free(memory)
        ibv_dealloc_pd(domain)
        drainConnectionEvents()
        rdma_destroy_id(id)
        rdma_destroy_event_channel(events)
        workCompletions.deallocate()
    }

    public func sendBuffer(_ index: Int) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: memory + index * bufferBytes, count: bufferBytes)
    }

    public func receiveBuffer(_ index: Int) -> UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: memory + (depth + index) * bufferBytes, count: bufferBytes)
    }

    public func postSend(buffer: Int?, length: Int, immediate: UInt32, inline: Bool) throws(ChannelError) {
        var element = ibv_sge(
            addr: UInt64(UInt(bitPattern: memory + (buffer ?? 0) * bufferBytes)), length: UInt32(length),
            lkey: memoryRegion.pointee.lkey)
        var request = ibv_send_wr()
        request.wr_id = buffer.map { UInt64($0) } ?? Self.controlTag
        request.opcode = IBV_WR_SEND_WITH_IMM
        request.send_flags = IBV_SEND_SIGNALED.rawValue | (inline && length > 0 ? IBV_SEND_INLINE.rawValue : 0)
        request.imm_data = immediate.bigEndian
        var failed: UnsafeMutablePointer<ibv_send_wr>?
        let result = withUnsafeMutablePointer(to: &element) { element in
            request.sg_list = element
            request.num_sge = buffer == nil || length == 0 ? 0 : 1
            return ibv_post_send(id.pointee.qp, &request, &failed)
        }
        guard result == 0 else {
            throw ChannelError(SystemCallError("ibv_post_send", errno: Errno(rawValue: result)))
        }
    }

    public func postReceive(_ index: Int) throws(ChannelError) {
        var element = ibv_sge(
            addr: UInt64(UInt(bitPattern: memory + (depth + index) * bufferBytes)), length: UInt32(bufferBytes),
            lkey: memoryRegion.pointee.lkey)
        var request = ibv_recv_wr()
        request.wr_id = Self.receiveTag | UInt64(index)
        request.num_sge = 1
        var failed: UnsafeMutablePointer<ibv_recv_wr>?
        let result = withUnsafeMutablePointer(to: &element) { element in
            request.sg_list = element
            return ibv_post_recv(id.pointee.qp, &request, &failed)
        }
        guard result == 0 else {
            throw ChannelError(SystemCallError("ibv_post_recv", errno: Errno(rawValue: result)))
        }
    }

    public func poll(_ completions: UnsafeMutableBufferPointer<QueuePairCompletion>) throws(ChannelError) -> Int {
        let wanted = Int32(Swift.min(completions.count, Self.pollBatch))
        let count = ibv_poll_cq(queue, wanted, workCompletions)
        guard count >= 0 else { throw .system(operation: "ibv_poll_cq", errno: -count, message: "the completion queue failed") }
        for index in 0..<Int(count) {
            let completion = workCompletions[index]
            let isReceive = completion.wr_id & Self.receiveTag != 0
            let buffer = isReceive ? Int(completion.wr_id & 0xFFFF_FFFF)
                : completion.wr_id == Self.controlTag ? -1 : Int(completion.wr_id)
            var result = QueuePairCompletion(kind: isReceive ? .receive : .send, buffer: buffer)
            if completion.status == IBV_WC_SUCCESS {
                result.byteCount = Int(completion.byte_len)
                if isReceive, completion.wc_flags & UInt32(IBV_WC_WITH_IMM.rawValue) != 0 {
                    result.immediate = UInt32(bigEndian: completion.imm_data)
                }
            } else {
                result.failure = String(cString: ibv_wc_status_str(completion.status))
                result.flushed = completion.status == IBV_WC_WR_FLUSH_ERR
            }
            completions[index] = result
        }
        return Int(count)
    }

    public var completionDescriptor: Int32 { completionChannel.pointee.fd }

    public func armNotification() throws(ChannelError) {
        let result = ibv_req_notify_cq(queue, 0)
        guard result == 0 else {
            throw ChannelError(SystemCallError("ibv_req_notify_cq", errno: Errno(rawValue: result)))
        }
    }

    public func acknowledgeNotification() {
        var eventQueue: UnsafeMutablePointer<ibv_cq>?
        var context: UnsafeMutableRawPointer?
        while ibv_get_cq_event(completionChannel, &eventQueue, &context) == 0 { unacknowledgedEvents += 1 }
        // Acknowledging takes a lock: do it in batches.
        if unacknowledgedEvents >= 64 {
            ibv_ack_cq_events(queue, unacknowledgedEvents)
            unacknowledgedEvents = 0
        }
    }

    public var connectionDescriptor: Int32 { events.pointee.fd }

    public func connectionEnded() -> Bool {
        if ended { return true }
        drainConnectionEvents()
        return ended
    }

    /// Takes every waiting connection event (the descriptor never blocks) and notes an ending one.
    private func drainConnectionEvents() {
        while let event = try? RDMAChannel.nextEvent(events, until: 0) {
            switch event.type {
            case RDMA_CM_EVENT_DISCONNECTED, RDMA_CM_EVENT_DEVICE_REMOVAL, RDMA_CM_EVENT_TIMEWAIT_EXIT,
                 RDMA_CM_EVENT_CONNECT_ERROR, RDMA_CM_EVENT_UNREACHABLE, RDMA_CM_EVENT_REJECTED:
                ended = true
            default:
                break
            }
        }
    }

    public func disconnect() {
        guard !disconnected else { return }
        disconnected = true
        _ = rdma_disconnect(id)
    }
}
