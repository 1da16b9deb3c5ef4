internal import CIOTCPNVMe
import Glibc
import IOTCPCommon

/// Names the device under a file from its device number (`st_dev`): sysfs says which block device that is
/// (a partition's parent is its namespace), and libnvme, scanning sysfs, gives the namespace's model, serial
/// and id. Files on anything else (overlayfs, tmpfs, SATA, a virtual disk) have no device to report.
public enum StorageDeviceProbe {
    /// The NVMe namespace under `device`, or nil.
    public static func nvmeNamespace(device: UInt64, sysfs: String = "/sys") -> StorageDevice? {
        guard let name = blockDeviceName(device: device, sysfs: sysfs), name.hasPrefix("nvme") else { return nil }
        var found = iotcp_nvme_namespace()
        guard iotcp_nvme_describe(name, &found) == 1 else { return nil }
        let model = withUnsafeBytes(of: found.model) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        let serial = withUnsafeBytes(of: found.serial) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        return StorageDevice(model: model.trimmingTrailingSpaces, serial: serial.trimmingTrailingSpaces, namespace: UInt32(found.nsid))
    }

    /// The whole-disk (namespace) block device for a device number: "nvme0n1" for the partition nvme0n1p2,
    /// or nil when `sysfs/dev/block/MAJOR:MINOR` does not exist (filesystems without a block device).
    public static func blockDeviceName(device: UInt64, sysfs: String = "/sys") -> String? {
        // glibc's major() and minor() encodings.
        let major = ((device >> 8) & 0xFFF) | ((device >> 32) & ~UInt64(0xFFF))
        let minor = (device & 0xFF) | ((device >> 12) & ~UInt64(0xFF))
        guard let resolved = realpath("\(sysfs)/dev/block/\(major):\(minor)", nil) else { return nil }
        defer { free(resolved) }
        let path = String(cString: resolved)
        let components = path.split(separator: "/")
        guard let last = components.last else { return nil }
        if access(path + "/partition", F_OK) == 0, components.count >= 2 { return String(components[components.count - 2]) }
        return String(last)
    }
}

extension String {
    var trimmingTrailingSpaces: String {
        var trimmed = self
        while trimmed.last == " " { trimmed.removeLast() }
        return trimmed
    }
}
