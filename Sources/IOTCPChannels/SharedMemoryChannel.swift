import CIOTCPSystem
import Glibc
import IOTCPCommon
import IOTCPSystem

/// Host and NIC as two processes on one machine: the two slot rings live in a memfd mapping that the
/// NIC creates and hands to the host, with both doorbell eventfds, over a Unix socket at a path both
/// know. The socket then stays open and says when the other process is gone.
///
/// Region layout: a 4 KiB header (magic, version, slot count and size), the host-to-NIC ring, then the
/// NIC-to-host ring.
public enum SharedMemoryChannel {
    static let regionMagic: UInt32 = 0x4D48_5349  // "ISHM"
    static let regionVersion: UInt32 = 1
    static let regionHeaderBytes = 4096
    static let handshakeBytes = 32

    /// The region's identity at offsets 0-15 (magic, version, slot count, slot size): the region header
    /// and the handshake both begin with it.
    static func storeIdentity(_ configuration: ChannelConfiguration, into bytes: UnsafeMutableRawBufferPointer) {
        bytes.storeLittleEndian(regionMagic, at: 0)
        bytes.storeLittleEndian(regionVersion, at: 4)
        bytes.storeLittleEndian(UInt32(configuration.slotCount), at: 8)
        bytes.storeLittleEndian(UInt32(configuration.slotBytes), at: 12)
    }

    /// What the NIC stack sends with the region's descriptors: its identity, the waiting mode, its size.
    static func handshake(_ configuration: ChannelConfiguration, regionBytes: Int) -> [UInt8] {
        var handshake = [UInt8](repeating: 0, count: handshakeBytes)
        handshake.withUnsafeMutableBytes { bytes in
            storeIdentity(configuration, into: bytes)
            bytes.storeLittleEndian(UInt32(configuration.waiting == .busyPoll ? 1 : 0), at: 16)
            bytes.storeLittleEndian(UInt64(regionBytes), at: 24)
        }
        return handshake
    }

    /// The NIC side: listens at `path` for the host to connect.
    public static func listen(
        path: String, configuration: ChannelConfiguration = ChannelConfiguration()
    ) throws(ChannelError) -> SharedMemoryListener {
        if let failure = configuration.validationFailure { throw .setup(failure) }
        let socket = try systemCall("socket(AF_UNIX)") { Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
        do {
            _ = try systemCall("listening on \(path)") { iotcp_unix_listen(socket, path, 4) }
        } catch {
            Glibc.close(socket)
            throw error
        }
        return SharedMemoryListener(socket: socket, path: path, configuration: configuration)
    }

    /// The host side: connects to the NIC listening at `path`, retrying until `timeoutNanoseconds` pass
    /// (the NIC may still be starting), and maps the rings it sends.
    public static func connect(path: String, timeoutNanoseconds: Int64 = 10_000_000_000) throws(ChannelError) -> RingChannelEnd {
        let deadline = monotonicNanoseconds() + timeoutNanoseconds
        var socket: Int32 = -1
        while true {
            socket = try systemCall("socket(AF_UNIX)") { Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0) }
            if iotcp_unix_connect(socket, path) == 0 { break }
            let code = errno
            Glibc.close(socket)
            guard code == ENOENT || code == ECONNREFUSED || code == EINTR else {
                throw ChannelError(SystemCallError("connecting to \(path)", errno: Errno(rawValue: code)))
            }
            if monotonicNanoseconds() >= deadline { throw .timedOut("no NIC stack is listening at \(path)") }
            usleep(10_000)
        }
        do {
            return try receiveRegion(socket: socket, deadline: deadline, path: path)
        } catch {
            Glibc.close(socket)
            throw error
        }
    }

    private static func receiveRegion(socket: Int32, deadline: Int64, path: String) throws(ChannelError) -> RingChannelEnd {
        try waitReadable(socket, until: deadline, what: "the NIC stack's handshake at \(path)")
        var handshake = [UInt8](repeating: 0, count: handshakeBytes)
        var descriptors = [Int32](repeating: -1, count: 3)
        var received: Int32 = 0
        let length = try systemCall("receiving the channel handshake") {
            handshake.withUnsafeMutableBytes { bytes in
                iotcp_receive_with_fds(socket, bytes.baseAddress, bytes.count, &descriptors, 3, &received)
            }
        }
        let passed = Array(descriptors.prefix(Int(received)))
        func closePassed() { for descriptor in passed { Glibc.close(descriptor) } }
        guard length == handshakeBytes, received == 3 else {
            closePassed()
            throw .setup("malformed handshake from \(path): \(length) bytes and \(received) descriptors")
        }
        let fields = handshake.withUnsafeBytes { bytes in
            (bytes.littleEndian(UInt32.self, at: 0), bytes.littleEndian(UInt32.self, at: 4),
             Int(bytes.littleEndian(UInt32.self, at: 8)), Int(bytes.littleEndian(UInt32.self, at: 12)),
             bytes.littleEndian(UInt32.self, at: 16))
        }
        let (magic, version, slotCount, slotBytes, waitingRaw) = fields
        let configuration = ChannelConfiguration(
            slotCount: slotCount, slotBytes: slotBytes, waiting: waitingRaw == 1 ? .busyPoll : .doorbell)
        guard magic == regionMagic, version == regionVersion else {
            closePassed()
            throw .setup("the NIC stack at \(path) speaks shared-memory version \(version), this host \(regionVersion)")
        }
        if let failure = configuration.validationFailure {
            closePassed()
            throw .setup("the NIC stack at \(path) sent an unusable configuration: \(failure)")
        }
        let memory = passed[0]
        defer { Glibc.close(memory) }
        do {
            try checkPeer(socket, what: "the NIC stack listening at \(path)")
        } catch {
            Glibc.close(passed[1])
            Glibc.close(passed[2])
            throw error
        }
        guard iotcp_size_is_sealed(memory) == 1 else {
            Glibc.close(passed[1])
            Glibc.close(passed[2])
            throw .setup("the shared region from \(path) is not sealed against resizing; refusing it (a resize would crash this process)")
        }
        let regionBytes = regionHeaderBytes + 2 * configuration.ringBytes
        var status = stat()
        guard fstat(memory, &status) == 0, Int(status.st_size) >= regionBytes else {
            Glibc.close(passed[1])
            Glibc.close(passed[2])
            throw .setup("the shared region from \(path) is smaller than its rings need")
        }
        let base: UnsafeMutableRawPointer
        do {
            base = try map(memory, byteCount: regionBytes)
        } catch {
            Glibc.close(passed[1])
            Glibc.close(passed[2])
            throw error
        }
        let hostToNIC = SlotRingControl(base: base + regionHeaderBytes, slotCount: slotCount, slotBytes: slotBytes)
        let nicToHost = SlotRingControl(
            base: base + regionHeaderBytes + configuration.ringBytes, slotCount: slotCount, slotBytes: slotBytes)
        let hostDoorbell = passed[1], nicDoorbell = passed[2]
        let region = ChannelRegion(
            base: base, byteCount: regionBytes, storage: .mapped, descriptors: [hostDoorbell, nicDoorbell, socket])
        return RingChannelEnd(
            outgoing: hostToNIC, incoming: nicToHost, waiting: configuration.waiting,
            peerDoorbell: nicDoorbell, ownDoorbell: hostDoorbell, peerSocket: socket, region: region)
    }

    /// Only a peer running as this process's user, or as root, may be the other half: a socket path in a
    /// shared directory can be squatted by anyone, and the other half can crash or starve this one.
    static func checkPeer(_ socket: Int32, what: String) throws(ChannelError) {
        var uid: UInt32 = 0
        _ = try systemCall("reading the credentials of \(what)") { iotcp_peer_uid(socket, &uid) }
        let own = geteuid()
        guard uid == own || uid == 0 else {
            throw .setup("\(what) runs as user \(uid), neither this process's user (\(own)) nor root; refused "
                         + "(put the socket in a directory only they can write, e.g. /run/iotcp)")
        }
    }

    static func map(_ descriptor: Int32, byteCount: Int) throws(ChannelError) -> UnsafeMutableRawPointer {
        let address = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0)
        guard let address, address != MAP_FAILED else {
            let code = errno
            throw ChannelError(SystemCallError("mmap of the shared region", errno: Errno(rawValue: code)))
        }
        return address
    }

    static func waitReadable(_ descriptor: Int32, until deadline: Int64?, what: String) throws(ChannelError) {
        while true {
            var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
            var milliseconds: Int32 = -1
            if let deadline {
                let remaining = deadline - monotonicNanoseconds()
                if remaining <= 0 { throw .timedOut("waiting for \(what)") }
                milliseconds = Int32(clamping: (remaining + 999_999) / 1_000_000)
            }
            let ready = try systemCall("poll") { poll(&entry, 1, milliseconds) }
            if ready > 0 { return }
        }
    }
}

/// A NIC stack waiting for its host at a Unix socket path. Removes the path when it goes.
public final class SharedMemoryListener: @unchecked Sendable {
    public let path: String
    public let configuration: ChannelConfiguration
    private let socket: Int32

    init(socket: Int32, path: String, configuration: ChannelConfiguration) {
        self.socket = socket
        self.path = path
        self.configuration = configuration
    }

    deinit {
        Glibc.close(socket)
        unlink(path)
    }

    /// Waits for a host to connect (nil: no limit), creates the shared rings and hands them over.
    /// Returns the NIC's end. May be called again after a host went away.
    public func accept(timeoutNanoseconds: Int64? = nil) throws(ChannelError) -> RingChannelEnd {
        let deadline = timeoutNanoseconds.map { monotonicNanoseconds() + $0 }
        try SharedMemoryChannel.waitReadable(socket, until: deadline, what: "a host to connect at \(path)")
        let connection = try systemCall("accept on \(path)") { iotcp_accept_cloexec(socket) }
        var owned: [Int32] = [connection]
        func release() { for descriptor in owned { Glibc.close(descriptor) } }
        do {
            try SharedMemoryChannel.checkPeer(connection, what: "the host connecting at \(path)")
            let ringBytes = configuration.ringBytes
            let regionBytes = SharedMemoryChannel.regionHeaderBytes + 2 * ringBytes
            let memory = try systemCall("memfd_create") { iotcp_memfd_create("iotcp-channel") }
            defer { Glibc.close(memory) }
            _ = try systemCall("sizing the shared region") { ftruncate(memory, off_t(regionBytes)) }
            // Neither side may change its size now: a shrink would kill the other with SIGBUS.
            _ = try systemCall("sealing the shared region") { iotcp_seal_size(memory) }
            let hostDoorbell = try systemCall("eventfd") { iotcp_eventfd() }
            owned.append(hostDoorbell)
            let nicDoorbell = try systemCall("eventfd") { iotcp_eventfd() }
            owned.append(nicDoorbell)
            let base = try SharedMemoryChannel.map(memory, byteCount: regionBytes)
            // A fresh memfd reads as zeros, so every ring index and flag already starts at 0.
            let header = UnsafeMutableRawBufferPointer(start: base, count: SharedMemoryChannel.regionHeaderBytes)
            SharedMemoryChannel.storeIdentity(configuration, into: header)
            let region = ChannelRegion(
                base: base, byteCount: regionBytes, storage: .mapped, descriptors: [hostDoorbell, nicDoorbell, connection])
            owned = []  // the region owns them now
            let handshake = SharedMemoryChannel.handshake(configuration, regionBytes: regionBytes)
            let passed: [Int32] = [memory, hostDoorbell, nicDoorbell]
            _ = try systemCall("sending the channel handshake") {
                handshake.withUnsafeBytes { bytes in
                    iotcp_send_with_fds(connection, bytes.baseAddress, bytes.count, passed, Int32(passed.count))
                }
            }
            let hostToNIC = SlotRingControl(
                base: base + SharedMemoryChannel.regionHeaderBytes, slotCount: configuration.slotCount,
                slotBytes: configuration.slotBytes)
            let nicToHost = SlotRingControl(
                base: base + SharedMemoryChannel.regionHeaderBytes + ringBytes, slotCount: configuration.slotCount,
                slotBytes: configuration.slotBytes)
            return RingChannelEnd(
                outgoing: nicToHost, incoming: hostToNIC, waiting: configuration.waiting,
                peerDoorbell: hostDoorbell, ownDoorbell: nicDoorbell, peerSocket: connection, region: region)
        } catch {
            release()
            throw error
        }
    }
}
