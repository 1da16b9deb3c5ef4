import Glibc

/// The memory (and descriptors) behind one or two channel ends; freed when the last end using it goes.
final class ChannelRegion: @unchecked Sendable {
    enum Storage {
        case allocated
        case mapped
    }

    let base: UnsafeMutableRawPointer
    let byteCount: Int
    let storage: Storage
    /// Eventfds and sockets this region's ends use; closed with it.
    let descriptors: [Int32]

    init(base: UnsafeMutableRawPointer, byteCount: Int, storage: Storage, descriptors: [Int32]) {
        self.base = base
        self.byteCount = byteCount
        self.storage = storage
        self.descriptors = descriptors
    }

    deinit {
        switch storage {
        case .allocated: base.deallocate()
        case .mapped: munmap(base, byteCount)
        }
        for descriptor in descriptors where descriptor >= 0 { Glibc.close(descriptor) }
    }
}
