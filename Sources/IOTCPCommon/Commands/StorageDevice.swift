/// The storage device under an opened file, as far as the NIC can name it: an NVMe namespace, with its
/// controller's model and serial number.
public struct StorageDevice: Hashable, Sendable, CustomStringConvertible {
    public var model: String
    public var serial: String
    public var namespace: UInt32

    public init(model: String, serial: String, namespace: UInt32) {
        self.model = model
        self.serial = serial
        self.namespace = namespace
    }

    public var description: String { "\(model) (serial \(serial), namespace \(namespace))" }
}
