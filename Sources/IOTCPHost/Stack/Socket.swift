import IOTCPCommon

/// A socket of an `IOTCPStack`: a listening port or a connection. Like a file descriptor it is a small
/// value, but a stale one (kept after `close`) is recognised and refused, never confused with a newer
/// socket.
public struct Socket: Hashable, Sendable, CustomStringConvertible {
    enum Kind: Hashable, Sendable {
        case listener(UInt16)
        case connection(TCPHandle)
    }

    let kind: Kind

    init(listener port: UInt16) { kind = .listener(port) }
    init(connection handle: TCPHandle) { kind = .connection(handle) }

    /// The engine's handle for a connection socket, nil for a listener.
    public var connection: TCPHandle? {
        if case .connection(let handle) = kind { return handle }
        return nil
    }

    /// The port a listening socket listens on, nil for a connection.
    public var listeningPort: UInt16? {
        if case .listener(let port) = kind { return port }
        return nil
    }

    public var description: String {
        switch kind {
        case .listener(let port): "listener :\(port)"
        case .connection(let handle): "socket \(handle.slot).\(handle.generation)"
        }
    }
}

/// A file the NIC opened for this host: its id (valid until `offloadClose`) and its status when opened.
public struct OffloadedFile: Hashable, Sendable, CustomStringConvertible {
    public let id: OffloadedFileID
    public let path: String
    public let status: OffloadedFileStatus
    /// The storage device under the file, when the NIC could name it (an NVMe namespace).
    public let device: StorageDevice?

    public init(id: OffloadedFileID, path: String, status: OffloadedFileStatus, device: StorageDevice? = nil) {
        self.id = id
        self.path = path
        self.status = status
        self.device = device
    }

    public var size: UInt64 { status.size }
    public var description: String { "\(path) (\(id), \(status.size) bytes)" }
}

/// An `offloadOpen` in progress; its completion comes as an `.offloadOpened` event with the same request.
public struct OffloadRequest: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt32
    public var description: String { "offload request \(rawValue)" }
}
