import Glibc
import IOTCPCommon
import SystemPackage

/// Writes every frame on the wire to a classic pcap file (Ethernet link type) that tshark and Wireshark
/// open. One write per frame: a diagnostic, not a hot-path feature.
public final class PcapWriter {
    public let path: String
    private let descriptor: FileDescriptor

    public init(path: String) throws(Errno) {
        self.path = path
        do {
            descriptor = try FileDescriptor.open(
                FilePath(path), .writeOnly, options: [.create, .truncate], permissions: [.ownerReadWrite, .groupRead, .otherRead])
        } catch let error as Errno {
            throw error
        } catch {
            throw Errno.ioError
        }
        var header = [UInt8](repeating: 0, count: 24)
        header.withUnsafeMutableBytes { bytes in
            bytes.storeLittleEndian(UInt32(0xA1B2_C3D4), at: 0)  // microsecond timestamps
            bytes.storeLittleEndian(UInt16(2), at: 4)
            bytes.storeLittleEndian(UInt16(4), at: 6)
            bytes.storeLittleEndian(UInt32(65535), at: 16)       // snap length
            bytes.storeLittleEndian(UInt32(1), at: 20)           // LINKTYPE_ETHERNET
        }
        _ = try? header.withUnsafeBytes { try descriptor.writeAll($0) }
    }

    deinit { try? descriptor.close() }

    /// Appends one frame, stamped with the wall clock.
    public func write(_ frame: UnsafeRawBufferPointer) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        var record = [UInt8](repeating: 0, count: 16)
        record.withUnsafeMutableBytes { bytes in
            bytes.storeLittleEndian(UInt32(truncatingIfNeeded: now.tv_sec), at: 0)
            bytes.storeLittleEndian(UInt32(truncatingIfNeeded: now.tv_nsec / 1000), at: 4)
            bytes.storeLittleEndian(UInt32(frame.count), at: 8)
            bytes.storeLittleEndian(UInt32(frame.count), at: 12)
        }
        _ = try? record.withUnsafeBytes { try descriptor.writeAll($0) }
        _ = try? descriptor.writeAll(frame)
    }
}
