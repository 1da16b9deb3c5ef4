import CIOTCPABI
import Glibc
import IOTCPEmbedded

// The C entry points of libiotcp (declared in iotcp.h). Each checks its pointers, turns failures into errno
// and iotcp_last_error, and never traps on what a caller passes.

/// Stacks handed out and not yet destroyed: a pointer not in it is refused with EBADF, not dereferenced.
private let liveStacks = LiveStacks()

private final class LiveStacks: @unchecked Sendable {
    private var stacks: Set<UnsafeRawPointer> = []
    private var lock = pthread_mutex_t()
    init() { pthread_mutex_init(&lock, nil) }
    func insert(_ pointer: UnsafeRawPointer) { _ = locked { stacks.insert(pointer) } }
    func remove(_ pointer: UnsafeRawPointer) -> Bool { locked { stacks.remove(pointer) != nil } }
    func contains(_ pointer: UnsafeRawPointer) -> Bool { locked { stacks.contains(pointer) } }
    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return body()
    }
}

private func cStack(_ pointer: OpaquePointer?) throws(CFailure) -> CStack {
    guard let pointer, liveStacks.contains(UnsafeRawPointer(pointer)) else {
        throw CFailure(EBADF, "not a live iotcp_stack (NULL, destroyed, or never created)")
    }
    return Unmanaged<CStack>.fromOpaque(UnsafeRawPointer(pointer)).takeUnretainedValue()
}

private func require<T>(_ pointer: T?, _ name: String) throws(CFailure) -> T {
    guard let pointer else { throw CFailure(EINVAL, "\(name) must not be NULL") }
    return pointer
}

private func connection(_ c: CStack, _ number: Int32) throws(CFailure) -> Socket {
    let socket = try c.socket(number)
    guard socket.connection != nil else { throw CFailure(EINVAL, "socket \(number) is a listener, not a connection") }
    return socket
}

/// Writes an endpoint as `accept(2)` and `getsockname(2)` do: a `sockaddr_in` or a `sockaddr_in6` by its
/// family, at most `*length` bytes of it (truncated silently, as POSIX says), and `*length` set to its whole
/// size. A NULL `address` writes nothing; with a non-NULL one `length` must be given.
private func store(_ address: IPAddress, port: UInt16, into target: UnsafeMutablePointer<sockaddr>?, length: UnsafeMutablePointer<socklen_t>?)
    throws(CFailure)
{
    guard let target else { return }
    let length = try require(length, "the address length")
    func copy<T>(_ value: T) {
        var value = value
        let size = MemoryLayout<T>.size
        withUnsafeBytes(of: &value) { bytes in
            UnsafeMutableRawPointer(target).copyMemory(from: bytes.baseAddress!, byteCount: min(Int(length.pointee), size))
        }
        length.pointee = socklen_t(size)
    }
    if let v4 = address.ipv4 {
        var result = sockaddr_in()
        result.sin_family = sa_family_t(AF_INET)
        result.sin_port = port.bigEndian
        result.sin_addr = in_addr(s_addr: v4.rawValue.bigEndian)
        copy(result)
    } else {
        var result = sockaddr_in6()
        result.sin6_family = sa_family_t(AF_INET6)
        result.sin6_port = port.bigEndian
        withUnsafeMutableBytes(of: &result.sin6_addr) { address.bits.store(to: $0, at: 0) }
        copy(result)
    }
}

// MARK: - Stacks

@_cdecl("iotcp_stack_create")
public func iotcp_stack_create(_ options: UnsafePointer<iotcp_options>?) -> OpaquePointer? {
    answer(nil) { () throws(CFailure) -> OpaquePointer? in
        let options = try require(options, "options").pointee
        let c = try CStack(options: options)
        let pointer = Unmanaged.passRetained(c).toOpaque()
        liveStacks.insert(UnsafeRawPointer(pointer))
        return OpaquePointer(pointer)
    }
}

@_cdecl("iotcp_stack_destroy")
public func iotcp_stack_destroy(_ stack: OpaquePointer?) -> Int32 {
    answer(-1) { () throws(CFailure) -> Int32 in
        let c = try cStack(stack)
        guard liveStacks.remove(UnsafeRawPointer(stack!)) else { throw CFailure(EBADF, "stack already destroyed") }
        c.shutDown()
        Unmanaged<CStack>.fromOpaque(UnsafeRawPointer(stack!)).release()
        return 0
    }
}

@_cdecl("iotcp_stack_address")
public func iotcp_stack_address(_ stack: OpaquePointer?, _ address: UnsafeMutablePointer<in_addr>?) -> Int32 {
    answer(-1) { () throws(CFailure) -> Int32 in
        let c = try cStack(stack)
        let address = try require(address, "address")
        guard c.stack.engine.localAddress.rawValue != 0 else { throw CFailure(EADDRNOTAVAIL, "the stack has no IPv4 address") }
        address.pointee = in_addr(s_addr: c.stack.engine.localAddress.rawValue.bigEndian)
        return 0
    }
}

@_cdecl("iotcp_stack_address6")
public func iotcp_stack_address6(_ stack: OpaquePointer?, _ address: UnsafeMutablePointer<in6_addr>?) -> Int32 {
    answer(-1) { () throws(CFailure) -> Int32 in
        let c = try cStack(stack)
        let address = try require(address, "address")
        guard let ipv6 = c.stack.engine.localIPv6Address else { throw CFailure(EADDRNOTAVAIL, "the stack has no IPv6 address") }
        withUnsafeMutableBytes(of: &address.pointee) { ipv6.store(to: $0, at: 0) }
        return 0
    }
}

@_cdecl("iotcp_last_error")
public func iotcp_last_error() -> UnsafePointer<CChar> {
    LastError.text ?? UnsafePointer(emptyText)
}

nonisolated(unsafe) private let emptyText: UnsafeMutablePointer<CChar> = {
    let text = UnsafeMutablePointer<CChar>.allocate(capacity: 1)
    text.pointee = 0
    return text
}()

// MARK: - Sockets

@_cdecl("iotcp_listen")
public func iotcp_listen(_ stack: OpaquePointer?, _ port: UInt16, _ backlog: Int32) -> Int32 {
    answer(-1) { () throws(CFailure) -> Int32 in
        let c = try cStack(stack)
        guard port != 0 else { throw CFailure(EINVAL, "port 0") }
        let listener = try stackCall { () throws(IOTCPError) in try c.stack.listen(port: port, backlog: backlog > 0 ? Int(backlog) : 128) }
        return c.number(for: listener)
    }
}

@_cdecl("iotcp_accept")
public func iotcp_accept(
    _ stack: OpaquePointer?, _ listener: Int32, _ peer: UnsafeMutablePointer<sockaddr>?, _ length: UnsafeMutablePointer<socklen_t>?
) -> Int32 {
    answer(-1) { () throws(CFailure) -> Int32 in
        let c = try cStack(stack)
        let listening = try c.socket(listener)
        guard listening.listeningPort != nil else { throw CFailure(EINVAL, "socket \(listener) is not listening") }
        // Checked before a connection is taken, so a bad argument loses none.
        if peer != nil { _ = try require(length, "the address length") }
        guard let socket = try stackCall({ () throws(IOTCPError) in try c.stack.accept(listening) }) else {
            throw CFailure(EAGAIN, "no connection is waiting")
        }
        if let endpoints = c.stack.endpoints(of: socket) {
            try store(endpoints.remoteAddress, port: endpoints.remotePort, into: peer, length: length)
        }
        return c.number(for: socket)
    }
}

@_cdecl("iotcp_read")
public func iotcp_read(_ stack: OpaquePointer?, _ socket: Int32, _ buffer: UnsafeMutableRawPointer?, _ length: Int) -> Int {
    answer(-1) { () throws(CFailure) -> Int in
        let c = try cStack(stack)
        let connection = try connection(c, socket)
        guard length > 0 else { return 0 }
        let buffer = try require(buffer, "buffer")
        return try stackCall { () throws(IOTCPError) in
            try c.stack.read(connection, into: UnsafeMutableRawBufferPointer(start: buffer, count: length))
        }
    }
}

@_cdecl("iotcp_write")
public func iotcp_write(_ stack: OpaquePointer?, _ socket: Int32, _ buffer: UnsafeRawPointer?, _ length: Int) -> Int {
    answer(-1) { () throws(CFailure) -> Int in
        let c = try cStack(stack)
        let connection = try connection(c, socket)
        guard length > 0 else { return 0 }
        let buffer = try require(buffer, "buffer")
        return try stackCall { () throws(IOTCPError) in try c.stack.write(connection, UnsafeRawBufferPointer(start: buffer, count: length)) }
    }
}

@_cdecl("iotcp_writev")
public func iotcp_writev(_ stack: OpaquePointer?, _ socket: Int32, _ vectors: UnsafePointer<iovec>?, _ count: Int32) -> Int {
    answer(-1) { () throws(CFailure) -> Int in
        let c = try cStack(stack)
        let connection = try connection(c, socket)
        guard count >= 0, count <= 1024 else { throw CFailure(EINVAL, "iovcnt \(count) is not within 0...1024") }
        guard count > 0 else { return 0 }
        let vectors = try require(vectors, "iov")
        var total = 0
        for index in 0..<Int(count) {
            let vector = vectors[index]
            guard vector.iov_len > 0 else { continue }
            let base = try require(vector.iov_base, "iov[\(index)].iov_base")
            let taken: Int
            do throws(IOTCPError) {
                taken = try c.stack.write(connection, UnsafeRawBufferPointer(start: base, count: vector.iov_len))
            } catch {
                // Bytes already queued count: the error is for the next call, as writev does.
                if total > 0 { return total }
                throw CFailure(error)
            }
            total += taken
            if taken < vector.iov_len { break }
        }
        return total
    }
}

@_cdecl("iotcp_shutdown")
public func iotcp_shutdown(_ stack: OpaquePointer?, _ socket: Int32, _ how: Int32) -> Int32 {
    answer(-1) { () throws(CFailure) -> Int32 in
        let c = try cStack(stack)
        let connection = try connection(c, socket)
        switch how {
        case Int32(SHUT_RD): return 0
        case Int32(SHUT_WR), Int32(SHUT_RDWR): try stackCall { () throws(IOTCPError) in try c.stack.shutdown(connection) }
        default: throw CFailure(EINVAL, "how must be SHUT_RD, SHUT_WR or SHUT_RDWR")
        }
        return 0
    }
}

@_cdecl("iotcp_close")
public func iotcp_close(_ stack: OpaquePointer?, _ socket: Int32) -> Int32 {
    answer(-1) { () throws(CFailure) -> Int32 in
        let c = try cStack(stack)
        let target = try c.socket(socket)
        c.forget(socket: socket)
        do throws(IOTCPError) { try c.stack.close(target) } catch {
            // A connection that already failed or ended is closed all the same: nothing is left to release.
            if case .tcp(.invalidHandle) = error { return 0 }
            if case .badSocket = error { return 0 }
            throw CFailure(error)
        }
        return 0
    }
}

@_cdecl("iotcp_getsockname")
public func iotcp_getsockname(
    _ stack: OpaquePointer?, _ socket: Int32, _ address: UnsafeMutablePointer<sockaddr>?, _ length: UnsafeMutablePointer<socklen_t>?
) -> Int32 {
    answer(-1) { () throws(CFailure) -> Int32 in
        let c = try cStack(stack)
        let target = try c.socket(socket)
        let address = try require(address, "address")
        if let port = target.listeningPort {
            // A listener takes connections to every address of the stack: it is named by its IPv4 one if it
            // has one (as a dual-stack socket bound to the IPv4 address would be), else by its IPv6 one.
            let engine = c.stack.engine
            let own = engine.localAddress.rawValue != 0 || engine.localIPv6Address == nil
                ? IPAddress(engine.localAddress) : IPAddress(engine.localIPv6Address!)
            try store(own, port: port, into: address, length: length)
        } else {
            guard let endpoints = c.stack.endpoints(of: target) else { throw CFailure(ENOTCONN, "socket \(socket) has closed") }
            try store(endpoints.localAddress, port: endpoints.localPort, into: address, length: length)
        }
        return 0
    }
}

@_cdecl("iotcp_getpeername")
public func iotcp_getpeername(
    _ stack: OpaquePointer?, _ socket: Int32, _ address: UnsafeMutablePointer<sockaddr>?, _ length: UnsafeMutablePointer<socklen_t>?
) -> Int32 {
    answer(-1) { () throws(CFailure) -> Int32 in
        let c = try cStack(stack)
        let target = try connection(c, socket)
        let address = try require(address, "address")
        guard let endpoints = c.stack.endpoints(of: target) else { throw CFailure(ENOTCONN, "socket \(socket) has closed") }
        try store(endpoints.remoteAddress, port: endpoints.remotePort, into: address, length: length)
        return 0
    }
}

// Linux's option numbers (<sys/socket.h>, <netinet/in.h>, <netinet/tcp.h>), named here because Glibc's
// Swift module does not carry <netinet/tcp.h>.
private let solSocket: Int32 = 1, soKeepalive: Int32 = 9, ipprotoTCP: Int32 = 6, tcpNoDelay: Int32 = 1, tcpCork: Int32 = 3

@_cdecl("iotcp_setsockopt")
public func iotcp_setsockopt(
    _ stack: OpaquePointer?, _ socket: Int32, _ level: Int32, _ name: Int32, _ value: UnsafeRawPointer?, _ length: socklen_t
) -> Int32 {
    answer(-1) { () throws(CFailure) -> Int32 in
        let c = try cStack(stack)
        let target = try c.socket(socket)
        let value = try require(value, "value")
        guard length >= socklen_t(MemoryLayout<Int32>.size) else { throw CFailure(EINVAL, "the option's value is an int") }
        let enabled = value.loadUnaligned(as: Int32.self) != 0
        guard target.connection != nil else {
            throw CFailure(EOPNOTSUPP, "socket \(socket) is a listener: set options on each accepted connection")
        }
        switch (level, name) {
        case (ipprotoTCP, tcpNoDelay): try stackCall { () throws(IOTCPError) in try c.stack.setNoDelay(target, enabled) }
        case (ipprotoTCP, tcpCork): try stackCall { () throws(IOTCPError) in try c.stack.setCork(target, enabled) }
        case (solSocket, soKeepalive): try stackCall { () throws(IOTCPError) in try c.stack.setKeepalive(target, enabled) }
        default: throw CFailure(ENOPROTOOPT, "only TCP_NODELAY, TCP_CORK and SO_KEEPALIVE are options here")
        }
        return 0
    }
}

// MARK: - Offloaded files

@_cdecl("iotcp_offload_open")
public func iotcp_offload_open(_ stack: OpaquePointer?, _ path: UnsafePointer<CChar>?, _ data: UInt64) -> Int32 {
    answer(-1) { () throws(CFailure) -> Int32 in
        let c = try cStack(stack)
        let path = String(cString: try require(path, "path"))
        _ = try stackCall { () throws(IOTCPError) in try c.stack.offloadOpen(path, token: data) }
        return 0
    }
}

@_cdecl("iotcp_offload_fstat")
public func iotcp_offload_fstat(_ stack: OpaquePointer?, _ file: Int32, _ status: UnsafeMutablePointer<iotcp_file_status>?) -> Int32 {
    answer(-1) { () throws(CFailure) -> Int32 in
        let c = try cStack(stack)
        let id = try c.file(file)
        let status = try require(status, "status")
        let known = try stackCall { () throws(IOTCPError) in try c.stack.offloadFstat(id) }
        status.pointee = iotcp_file_status(
            size: known.size, modification_seconds: known.modificationSeconds, modification_nanoseconds: known.modificationNanoseconds,
            mode: known.mode, inode: known.inode, device: known.device)
        return 0
    }
}

@_cdecl("iotcp_offload_write")
public func iotcp_offload_write(_ stack: OpaquePointer?, _ socket: Int32, _ file: Int32, _ offset: UInt64, _ length: Int) -> Int {
    answer(-1) { () throws(CFailure) -> Int in
        let c = try cStack(stack)
        let connection = try connection(c, socket)
        let id = try c.file(file)
        guard length >= 0 else { throw CFailure(EINVAL, "negative length") }
        return try stackCall { () throws(IOTCPError) in try c.stack.offloadWrite(connection, file: id, offset: offset, length: length) }
    }
}

@_cdecl("iotcp_offload_close")
public func iotcp_offload_close(_ stack: OpaquePointer?, _ file: Int32) -> Int32 {
    answer(-1) { () throws(CFailure) -> Int32 in
        let c = try cStack(stack)
        let id = try c.file(file)
        c.forget(file: file)
        try stackCall { () throws(IOTCPError) in try c.stack.offloadClose(id) }
        return 0
    }
}

// MARK: - The event queue

private let epollNumber: Int32 = 0

@_cdecl("iotcp_epoll_create")
public func iotcp_epoll_create(_ stack: OpaquePointer?) -> Int32 {
    answer(-1) { () throws(CFailure) -> Int32 in
        let c = try cStack(stack)
        c.epollCreated = true
        return epollNumber
    }
}

@_cdecl("iotcp_epoll_ctl")
public func iotcp_epoll_ctl(_ stack: OpaquePointer?, _ epoll: Int32, _ operation: Int32, _ socket: Int32, _ events: UInt32, _ data: UInt64) -> Int32 {
    answer(-1) { () throws(CFailure) -> Int32 in
        let c = try cStack(stack)
        guard c.epollCreated, epoll == epollNumber else { throw CFailure(EBADF, "no event queue \(epoll): call iotcp_epoll_create") }
        let target = try c.socket(socket)
        switch operation {
        case IOTCP_EPOLL_CTL_DEL:
            c.stack.deregister(target)
        case IOTCP_EPOLL_CTL_ADD, IOTCP_EPOLL_CTL_MOD:
            var interests: EventKinds = []
            if events & IOTCP_EPOLLIN != 0 {
                interests.insert(target.listeningPort != nil ? .acceptable : .readable)
            }
            if events & IOTCP_EPOLLOUT != 0 { interests.insert(.writable) }
            if events & IOTCP_EPOLLRDHUP != 0 { interests.insert(.readClosed) }
            let mode: TriggerMode = events & IOTCP_EPOLLET != 0 ? .edge : .level
            try stackCall { () throws(IOTCPError) in try c.stack.register(target, interests: interests, token: data, mode: mode) }
        default:
            throw CFailure(EINVAL, "operation must be IOTCP_EPOLL_CTL_ADD, _MOD or _DEL")
        }
        return 0
    }
}

@_cdecl("iotcp_epoll_wait")
public func iotcp_epoll_wait(_ stack: OpaquePointer?, _ epoll: Int32, _ events: UnsafeMutablePointer<iotcp_event>?, _ maxEvents: Int32, _ timeout: Int32) -> Int32 {
    answer(-1) { () throws(CFailure) -> Int32 in
        let c = try cStack(stack)
        guard c.epollCreated, epoll == epollNumber else { throw CFailure(EBADF, "no event queue \(epoll): call iotcp_epoll_create") }
        guard maxEvents > 0 else { throw CFailure(EINVAL, "max_events must be positive") }
        let output = try require(events, "events")
        let nanoseconds: Int64? = timeout < 0 ? nil : Int64(timeout) * 1_000_000
        try stackCall { () throws(IOTCPError) in _ = try c.stack.wait(into: &c.events, maxEvents: Int(maxEvents), timeoutNanoseconds: nanoseconds) }
        var count = 0
        for event in c.events {
            switch event {
            case .socket(let socket, let kinds, let token):
                var bits: UInt32 = 0
                if !kinds.isDisjoint(with: [.readable, .acceptable]) { bits |= IOTCP_EPOLLIN }
                if kinds.contains(.writable) { bits |= IOTCP_EPOLLOUT }
                if kinds.contains(.readClosed) { bits |= IOTCP_EPOLLRDHUP }
                if kinds.contains(.hangUp) { bits |= IOTCP_EPOLLHUP }
                if kinds.contains(.error) { bits |= IOTCP_EPOLLERR }
                output[count] = iotcp_event(events: bits, result: c.number(for: socket), data: token)
            case .offloadOpened(_, let result, let token):
                switch result {
                case .success(let file): output[count] = iotcp_event(events: IOTCP_OFFLOAD_OPENED, result: c.number(for: file.id), data: token)
                case .failure(let error): output[count] = iotcp_event(events: IOTCP_OFFLOAD_OPENED, result: -CFailure.errno(for: error), data: token)
                }
            }
            count += 1
        }
        return Int32(count)
    }
}

// MARK: - Waiting in the caller's event loop

@_cdecl("iotcp_pollable_fd")
public func iotcp_pollable_fd(_ stack: OpaquePointer?) -> Int32 {
    answer(-1) { () throws(CFailure) -> Int32 in try cStack(stack).stack.pollDescriptor }
}

@_cdecl("iotcp_before_poll")
public func iotcp_before_poll(_ stack: OpaquePointer?, _ limit: Int32) -> Int32 {
    answer(-1) { () throws(CFailure) -> Int32 in
        let c = try cStack(stack)
        guard let nanoseconds = c.stack.prepareToPoll(upTo: Int64(max(limit, 0)) * 1_000_000) else { return 0 }
        // At least a millisecond: a positive answer must mean "sleep"; finer waits end early on the descriptor.
        return Int32(max((nanoseconds + 999_999) / 1_000_000, 1))
    }
}

@_cdecl("iotcp_after_poll")
public func iotcp_after_poll(_ stack: OpaquePointer?) {
    answer(()) { () throws(CFailure) in try cStack(stack).stack.finishPolling() }
}
