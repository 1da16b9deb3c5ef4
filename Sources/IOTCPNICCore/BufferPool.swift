import IOTCPCommon

/// The NIC's payload memory: fixed-size, page-aligned buffers that disk reads land in and frames are sent
/// from, allocated in slabs as load asks for them, up to a limit, and never given back to the allocator.
///
/// A buffer is one disk read of up to 64 KiB of payload (a super-segment's worth) plus room to align the
/// read for `O_DIRECT`. It is named by its index, so the data plane's records stay small and hold no
/// references; the pool hands out and takes back indices. Slabs are few and large so the disk can register
/// each with the kernel once (io_uring's registered buffers): `slabAdded` is told of every new one.
public final class BufferPool {
    /// Bytes of one buffer: 64 KiB of payload and 8 KiB for alignment slack at both ends.
    public let bufferSize: Int
    /// Alignment of every buffer's start (and of its size): what direct I/O asks of memory.
    public let alignment: Int
    public let buffersPerSlab: Int
    /// The most buffers the pool will ever hold.
    public let capacity: Int
    /// Buffers handed out now.
    @exclusivity(unchecked) public private(set) var inUse = 0
    /// Times `take` found no buffer (the pool at its capacity, all in use).
    @exclusivity(unchecked) public private(set) var exhausted = 0
    /// Called with each new slab's index and memory (to register it with the disk).
    @exclusivity(unchecked) public var slabAdded: ((Int, UnsafeMutableRawBufferPointer) -> Void)?

    @exclusivity(unchecked) private var slabs: [UnsafeMutableRawPointer] = []
    @exclusivity(unchecked) private var free: [UInt32] = []

    public static let defaultBufferSize = 72 * 1024

    /// A pool of at most `capacityBytes` of buffers of `bufferSize` bytes, in slabs of `slabBytes`.
    public init(capacityBytes: Int, bufferSize: Int = BufferPool.defaultBufferSize, slabBytes: Int = 4 << 20, alignment: Int = 4096) {
        precondition(bufferSize > 0 && bufferSize % alignment == 0, "a buffer is a whole number of aligned blocks")
        self.bufferSize = bufferSize
        self.alignment = alignment
        buffersPerSlab = max(slabBytes / bufferSize, 1)
        capacity = max(capacityBytes / bufferSize, 1)
        free.reserveCapacity(capacity)
    }

    deinit {
        for slab in slabs { slab.deallocate() }
    }

    /// Slabs the pool may ever have.
    public var maximumSlabs: Int { (capacity + buffersPerSlab - 1) / buffersPerSlab }
    /// Bytes allocated so far.
    public var allocatedBytes: Int { allocatedBuffers * bufferSize }
    public var allocatedBuffers: Int { min(slabs.count * buffersPerSlab, capacity) }
    public var available: Int { capacity - inUse }

    /// A free buffer's index, or nil when all `capacity` are in use.
    public func take() -> UInt32? {
        if let index = popFree() { return index }
        return takeFromNewSlab()
    }

    private func popFree() -> UInt32? {
        guard let index = free.popLast() else { return nil }
        inUse += 1
        return index
    }

    private func takeFromNewSlab() -> UInt32? {
        guard slabs.count < maximumSlabs else {
            exhausted += 1
            return nil
        }
        let count = min(buffersPerSlab, capacity - slabs.count * buffersPerSlab)
        let memory = UnsafeMutableRawPointer.allocate(byteCount: count * bufferSize, alignment: alignment)
        let first = slabs.count * buffersPerSlab
        slabs.append(memory)
        // Handed out from the lowest index up, so the free list's top is the slab's first buffer.
        for index in stride(from: first + count - 1, through: first, by: -1) { free.append(UInt32(index)) }
        slabAdded?(slabs.count - 1, UnsafeMutableRawBufferPointer(start: memory, count: count * bufferSize))
        return popFree()
    }

    /// Gives a buffer back.
    public func give(_ index: UInt32) {
        precondition(Int(index) < allocatedBuffers, "buffer \(index) was never handed out")
        free.append(index)
        inUse -= 1
    }

    /// The buffer's memory.
    public func memory(_ index: UInt32) -> UnsafeMutableRawBufferPointer {
        UnsafeMutableRawBufferPointer(start: address(index), count: bufferSize)
    }

    public func address(_ index: UInt32) -> UnsafeMutableRawPointer {
        let slab = Int(index) / buffersPerSlab
        return slabs[slab] + (Int(index) - slab * buffersPerSlab) * bufferSize
    }

    /// Which slab (registered buffer) holds buffer `index`.
    public func slab(of index: UInt32) -> Int { Int(index) / buffersPerSlab }
}
