import CIOTCPABI
import Glibc
import IOTCPEmbedded
import IOTCPRDMA

/// What a C `iotcp_stack *` points to: the host stack, the embedded NIC and namespace it may own, and the
/// tables that give sockets and files the small integers C callers hold.
final class CStack {
    let stack: IOTCPStack
    private let embedded: EmbeddedNIC?
    private let namespace: NetworkNamespace?
    /// Index: the C socket number; nil for a free number.
    private var sockets: [Socket?] = []
    private var socketNumbers: [Socket: Int32] = [:]
    private var freeSockets: [Int32] = []
    private var files: [OffloadedFileID?] = []
    private var fileNumbers: [OffloadedFileID: Int32] = [:]
    private var freeFiles: [Int32] = []
    var events: [StackEvent] = []
    var epollCreated = false

    init(options: iotcp_options) throws(CFailure) {
        let address = options.address.map { String(cString: $0) } ?? "10.77.0.2/24"
        let netns = options.netns.map { String(cString: $0) } ?? "iotcp"
        let namespace: NetworkNamespace
        do { namespace = try NetworkNamespace(name: netns, address: address) } catch { throw CFailure(EINVAL, "\(error)") }
        let channel: any CommandChannel
        if let nic = options.nic.map({ String(cString: $0) }) {
            embedded = nil
            self.namespace = nil
            do throws(ChannelError) {
                if nic.hasPrefix("shm:"), nic.count > 4 {
                    channel = try SharedMemoryChannel.connect(path: String(nic.dropFirst(4)))
                } else if nic.hasPrefix(RDMAEndpoint.scheme) {
                    let endpoint: RDMAEndpoint
                    do { endpoint = try RDMAEndpoint(parsing: nic) } catch { throw ChannelError.setup("\(error)") }
                    channel = try RDMAChannel.connect(to: endpoint)
                } else {
                    throw ChannelError.setup("the NIC must be shm:PATH or rdma://IP:PORT, not \(nic)")
                }
            } catch {
                throw CFailure(error.isSetup ? EINVAL : ECONNREFUSED, "reaching the NIC at \(nic): \(error)")
            }
        } else {
            guard let root = options.root.map({ String(cString: $0) }) else {
                throw CFailure(EINVAL, "an embedded stack needs options.root, the directory it may offload files from")
            }
            let files: FileTable
            do { files = try FileTable(root: root) } catch { throw CFailure(ENOENT, "export root \(root): \(error)") }
            let tap: TapDevice
            do { tap = try TapDevice(name: "iotcp\(getpid() % 10_000)") } catch { throw CFailure(EPERM, "\(error)") }
            do { try namespace.create(with: tap, replacing: options.replace_netns != 0) } catch { throw CFailure(EEXIST, "\(error)") }
            let runtime = NICRuntime(
                wire: tap, link: EthernetLink(hardwareAddress: MACAddress(0x02, 0, 0, 0x77, 0, 2), address: namespace.stackAddress,
                                              prefixLength: namespace.prefixLength),
                dataPlane: .standard(files: files))
            let nic: EmbeddedNIC
            do { nic = try EmbeddedNIC(runtime: runtime) } catch {
                namespace.remove()
                throw CFailure(EIO, "\(error)")
            }
            nic.start()
            embedded = nic
            self.namespace = namespace
            channel = nic.hostChannel
        }
        stack = IOTCPStack(channel: channel, address: namespace.stackAddress)
    }

    /// Stops the NIC half (embedded) and removes the namespace it made.
    func shutDown() {
        for case let socket? in sockets { try? stack.abort(socket) }
        stack.flush()
        embedded?.stop()
        namespace?.remove()
    }

    // MARK: - Numbers for sockets and files

    func number(for socket: Socket) -> Int32 {
        if let known = socketNumbers[socket] { return known }
        let number: Int32
        if let free = freeSockets.popLast() {
            number = free
            sockets[Int(free)] = socket
        } else {
            number = Int32(sockets.count)
            sockets.append(socket)
        }
        socketNumbers[socket] = number
        return number
    }

    func socket(_ number: Int32) throws(CFailure) -> Socket {
        guard number >= 0, Int(number) < sockets.count, let socket = sockets[Int(number)] else {
            throw CFailure(EBADF, "no socket \(number) (never opened, or closed)")
        }
        return socket
    }

    func forget(socket number: Int32) {
        guard let socket = sockets[Int(number)] else { return }
        sockets[Int(number)] = nil
        socketNumbers[socket] = nil
        freeSockets.append(number)
    }

    func number(for file: OffloadedFileID) -> Int32 {
        if let known = fileNumbers[file] { return known }
        let number: Int32
        if let free = freeFiles.popLast() {
            number = free
            files[Int(free)] = file
        } else {
            number = Int32(files.count)
            files.append(file)
        }
        fileNumbers[file] = number
        return number
    }

    func file(_ number: Int32) throws(CFailure) -> OffloadedFileID {
        guard number >= 0, Int(number) < files.count, let file = files[Int(number)] else {
            throw CFailure(EBADF, "no offloaded file \(number) (never opened, or closed)")
        }
        return file
    }

    func forget(file number: Int32) {
        guard let file = files[Int(number)] else { return }
        files[Int(number)] = nil
        fileNumbers[file] = nil
        freeFiles.append(number)
    }
}

extension ChannelError {
    fileprivate var isSetup: Bool { if case .setup = self { true } else { false } }
}
