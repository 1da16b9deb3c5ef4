import CIOTCPSystem
import Glibc
import IOTCPSystem
import IOTCPCommon
import IOTCPNICCore
import SystemPackage

/// A TAP interface: Ethernet frames to and from the kernel through a file descriptor. The interface can
/// be moved into a network namespace after it is opened; the descriptor stays with this process.
///
/// With `vnetHeader`, each frame crosses with a virtio_net_hdr in front, which lets the NIC hand the
/// kernel one TCP super-segment of up to 64 KiB with its checksum left to finish (`SegmentationOffload`):
/// the kernel splits it, or, for its own sockets, takes it whole as it would a GRO-merged packet.
public final class TapDevice: WireBackend {
    public let name: String
    public let descriptor: Int32
    public let vnetHeader: Bool
    public var takesSuperSegments: Bool { vnetHeader }
    public typealias Failure = WireFailure
    /// The header read in front of each frame, and the one written in front of each frame sent.
    private let headerIn = UnsafeMutableRawBufferPointer.allocate(byteCount: TapDevice.vnetHeaderLength, alignment: 8)
    private let headerOut = UnsafeMutableRawBufferPointer.allocate(byteCount: TapDevice.vnetHeaderLength, alignment: 8)
    /// The gather list (vnet header, frame header, payload) for readv/writev, reused so no frame allocates.
    private let vectors = UnsafeMutablePointer<iovec>.allocate(capacity: 3)

    /// Bytes of `struct virtio_net_hdr` (no `num_buffers`): flags, gso_type, hdr_len, gso_size,
    /// csum_start, csum_offset, in the host's byte order (legacy virtio on a little-endian machine).
    public static let vnetHeaderLength = 10

    public init(name: String, vnetHeader: Bool = true) throws(TapDevice.Failure) {
        var buffer = [CChar](repeating: 0, count: 32)
        for (index, byte) in name.utf8.prefix(15).enumerated() { buffer[index] = CChar(bitPattern: byte) }
        let descriptor = iotcp_tap_open(&buffer, vnetHeader ? 1 : 0)
        guard descriptor >= 0 else {
            headerIn.deallocate()
            headerOut.deallocate()
            vectors.deallocate()
            throw Failure(description: "\(SystemCallError("cannot open TAP \(name)")) (needs /dev/net/tun and CAP_NET_ADMIN)")
        }
        self.descriptor = descriptor
        self.vnetHeader = vnetHeader
        self.name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    deinit {
        close(descriptor)
        headerIn.deallocate()
        headerOut.deallocate()
        vectors.deallocate()
    }

    /// Whether the kernel was offered checksum and TCP/IPv4 segmentation offload (`acceptSuperSegments`).
    @exclusivity(unchecked) public private(set) var superSegmentsAccepted = false
    @exclusivity(unchecked) public private(set) var lastReadOffload: ReceivedOffload?

    /// Offers the kernel to hand its TCP/IPv4 packets over unsummed and uncut (TUN_F_CSUM | TUN_F_TSO4),
    /// or withdraws the offer. Needs the vnet header, which says per frame what was left (`lastReadOffload`).
    public func acceptSuperSegments(_ accept: Bool) -> Bool {
        guard vnetHeader else { return false }
        if accept == superSegmentsAccepted { return true }
        guard iotcp_tap_set_offload(descriptor, accept ? 1 : 0) == 0 else { return false }
        superSegmentsAccepted = accept
        return true
    }

    /// Reads one frame into `buffer`; nil when none is waiting. Unless `acceptSuperSegments` was asked, the
    /// frame is complete and checksummed; with it, `lastReadOffload` says what the kernel left unfinished.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(TapDevice.Failure) -> Int? {
        if vnetHeader {
            vectors[0] = iovec(iov_base: headerIn.baseAddress, iov_len: headerIn.count)
            vectors[1] = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
            let count = retryingOnInterrupt { readv(descriptor, vectors, 2) }
            if count >= 0 {
                lastReadOffload = nil
                if superSegmentsAccepted {
                    // virtio_net_hdr: flags (NEEDS_CSUM 1, DATA_VALID 2), gso_type (TCPV4 1), ..., gso_size.
                    let flags = headerIn[0], kind = headerIn[1] & 0x7F
                    if flags & 3 != 0 || kind != 0 {
                        lastReadOffload = ReceivedOffload(
                            checksumPartial: flags & 1 != 0, checksumVerified: flags & 2 != 0,
                            segmentSize: kind == 1 ? headerIn.loadUnaligned(fromByteOffset: 4, as: UInt16.self) : 0)
                    }
                }
                return max(count - headerIn.count, 0)
            }
        } else {
            let count = retryingOnInterrupt { Glibc.read(descriptor, buffer.baseAddress, buffer.count) }
            if count >= 0 { return count }
        }
        if errno == EAGAIN { return nil }
        throw Failure(description: SystemCallError("reading \(name)").description)
    }

    /// Writes one frame, `header` then `payload` gathered by the kernel (no copy here), or with `offload` one
    /// frame whose TCP checksum the kernel finishes, cut at the MSS when it is a super-segment (needs
    /// `vnetHeader`). Returns false when the kernel did not take it (a full queue, an interface down): the
    /// caller decides whether to try again.
    public func write(header: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, offload: SegmentationOffload?) throws(TapDevice.Failure) -> TransmitResult {
        if offload != nil && !vnetHeader { throw Failure(description: "writing \(name): checksum and segmentation offload need a vnet header") }
        var count = 0
        if vnetHeader {
            headerOut.initializeMemory(as: UInt8.self, repeating: 0)
            if let offload {
                headerOut[0] = 1  // VIRTIO_NET_HDR_F_NEEDS_CSUM
                // VIRTIO_NET_HDR_GSO_TCPV4 (1) or _TCPV6 (4) by the frame's EtherType, or none.
                let ipv6 = header.count >= 14 && header[12] == 0x86 && header[13] == 0xDD
                headerOut[1] = offload.segmentSize > 0 ? (ipv6 ? 4 : 1) : 0
                headerOut.storeBytes(of: offload.headerLength, toByteOffset: 2, as: UInt16.self)
                headerOut.storeBytes(of: offload.segmentSize, toByteOffset: 4, as: UInt16.self)
                headerOut.storeBytes(of: offload.checksumStart, toByteOffset: 6, as: UInt16.self)
                headerOut.storeBytes(of: UInt16(16), toByteOffset: 8, as: UInt16.self)  // TCP's checksum field
            }
            vectors[count] = iovec(iov_base: headerOut.baseAddress, iov_len: headerOut.count)
            count += 1
        }
        vectors[count] = iovec(iov_base: UnsafeMutableRawPointer(mutating: header.baseAddress), iov_len: header.count)
        count += 1
        if !payload.isEmpty {
            vectors[count] = iovec(iov_base: UnsafeMutableRawPointer(mutating: payload.baseAddress), iov_len: payload.count)
            count += 1
        }
        if retryingOnInterrupt({ writev(descriptor, vectors, Int32(count)) }) >= 0 { return .sent }
        switch errno {
        case EAGAIN, ENOBUFS: return .refused
        case EIO: return .refused  // the interface is down or not yet up: the frame has nowhere to go
        case EFAULT: return .unreadablePayload
        default: throw Failure(description: SystemCallError("writing \(name)").description)
        }
    }

    /// Waits until a frame is readable or `milliseconds` pass.
    public func waitReadable(milliseconds: Int32) {
        var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        _ = poll(&entry, 1, milliseconds)
    }
}
