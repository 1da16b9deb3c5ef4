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
    private var sockets = NumberTable<Socket>(noun: "socket")
    private var files = NumberTable<OffloadedFileID>(noun: "offloaded file")
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
                                              prefixLength: namespace.prefixLength,
                                              ipv6: namespace.ipv6.map { IPv6Settings(address: $0.stackAddress, prefixLength: $0.prefixLength) }),
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
        stack = IOTCPStack(channel: channel, address: namespace.stackAddress, ipv6Address: namespace.ipv6?.stackAddress)
    }

    /// Stops the NIC half (embedded) and removes the namespace it made.
    func shutDown() {
        for socket in sockets.all { try? stack.abort(socket) }
        stack.flush()
        embedded?.stop()
        namespace?.remove()
    }

    // MARK: - Numbers for sockets and files

    func number(for socket: Socket) -> Int32 { sockets.number(for: socket) }
    func socket(_ number: Int32) throws(CFailure) -> Socket { try sockets.value(number) }
    func forget(socket number: Int32) { sockets.forget(number) }
    func number(for file: OffloadedFileID) -> Int32 { files.number(for: file) }
    func file(_ number: Int32) throws(CFailure) -> OffloadedFileID { try files.value(number) }
    func forget(file number: Int32) { files.forget(number) }
}

/// Small non-negative integers for values C callers hold, as file descriptors are: the lowest freed number
/// is not promised, only that a number in use names one value and a forgotten one names none.
struct NumberTable<Value: Hashable> {
    let noun: String
    private var values: [Value?] = []
    private var numbers: [Value: Int32] = [:]
    private var free: [Int32] = []

    init(noun: String) { self.noun = noun }

    /// All values still held.
    var all: [Value] { values.compactMap { $0 } }

    mutating func number(for value: Value) -> Int32 {
        if let known = numbers[value] { return known }
        let number: Int32
        if let reused = free.popLast() {
            number = reused
            values[Int(reused)] = value
        } else {
            number = Int32(values.count)
            values.append(value)
        }
        numbers[value] = number
        return number
    }

    func value(_ number: Int32) throws(CFailure) -> Value {
        guard number >= 0, Int(number) < values.count, let value = values[Int(number)] else {
            throw CFailure(EBADF, "no \(noun) \(number) (never opened, or closed)")
        }
        return value
    }

    mutating func forget(_ number: Int32) {
        guard number >= 0, Int(number) < values.count, let value = values[Int(number)] else { return }
        values[Int(number)] = nil
        numbers[value] = nil
        free.append(number)
    }
}

extension ChannelError {
    fileprivate var isSetup: Bool { if case .setup = self { true } else { false } }
}
