import CIOTCPSystem
import Glibc
import IOTCPCommon
import SystemPackage

/// A TAP interface: Ethernet frames to and from the kernel through a file descriptor. The interface can
/// be moved into a network namespace after it is opened; the descriptor stays with this process.
public final class TapDevice {
    public let name: String
    public let descriptor: Int32

    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public init(name: String) throws(TapDevice.Failure) {
        var buffer = [CChar](repeating: 0, count: 32)
        for (index, byte) in name.utf8.prefix(15).enumerated() { buffer[index] = CChar(bitPattern: byte) }
        let descriptor = iotcp_tap_open(&buffer)
        guard descriptor >= 0 else {
            throw Failure(description: "cannot open TAP \(name): \(Errno(rawValue: errno)) (needs /dev/net/tun and CAP_NET_ADMIN)")
        }
        self.descriptor = descriptor
        self.name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    deinit { close(descriptor) }

    /// Reads one frame into `buffer`; nil when none is waiting.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws(TapDevice.Failure) -> Int? {
        while true {
            let count = Glibc.read(descriptor, buffer.baseAddress, buffer.count)
            if count >= 0 { return count }
            switch errno {
            case EINTR: continue
            case EAGAIN: return nil
            default: throw Failure(description: "reading \(name): \(Errno(rawValue: errno))")
            }
        }
    }

    /// Writes one frame. A full queue drops the frame (as a wire would); TCP recovers.
    public func write(_ frame: UnsafeRawBufferPointer) throws(TapDevice.Failure) {
        while true {
            let count = Glibc.write(descriptor, frame.baseAddress, frame.count)
            if count >= 0 { return }
            switch errno {
            case EINTR: continue
            case EAGAIN, ENOBUFS: return
            case EIO: return  // the interface is down or not yet up: the frame has nowhere to go
            default: throw Failure(description: "writing \(name): \(Errno(rawValue: errno))")
            }
        }
    }

    /// Waits until a frame is readable or `milliseconds` pass.
    public func waitReadable(milliseconds: Int32) {
        var entry = pollfd(fd: descriptor, events: Int16(POLLIN), revents: 0)
        _ = poll(&entry, 1, milliseconds)
    }
}
