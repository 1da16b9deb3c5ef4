import IOTCPCommon

/// A table by a peer's endpoints over both families, for the NIC's endings and splices: IPv4 endpoints by
/// a one-word key (`ipv4`, which the IPv4 receive path looks up directly), IPv6 ones by their whole address
/// (`ipv6`). Lookups and updates by an `IPAddress` of either family pick the table.
struct EndpointIndex<Value: Equatable> {
    var ipv4: [NICDataPlane.EndpointKey: Value] = [:]
    var ipv6: [NICDataPlane.EndpointKey6: Value] = [:]

    var count: Int { ipv4.count + ipv6.count }
    var isEmpty: Bool { ipv4.isEmpty && ipv6.isEmpty }

    subscript(remote: IPAddress, remotePort: UInt16, localPort: UInt16) -> Value? {
        get {
            if let v4 = remote.ipv4 {
                return ipv4.isEmpty ? nil : ipv4[NICDataPlane.EndpointKey(remoteAddress: v4.rawValue, remotePort: remotePort, localPort: localPort)]
            }
            return ipv6.isEmpty ? nil : ipv6[NICDataPlane.EndpointKey6(remoteAddress: remote.bits, remotePort: remotePort, localPort: localPort)]
        }
        set {
            if let v4 = remote.ipv4 {
                ipv4[NICDataPlane.EndpointKey(remoteAddress: v4.rawValue, remotePort: remotePort, localPort: localPort)] = newValue
            } else {
                ipv6[NICDataPlane.EndpointKey6(remoteAddress: remote.bits, remotePort: remotePort, localPort: localPort)] = newValue
            }
        }
    }

    /// Forgets these endpoints if they still map to `value` (a later entry of the same endpoints stays).
    mutating func remove(remote: IPAddress, remotePort: UInt16, localPort: UInt16, ifStill value: Value) {
        if self[remote, remotePort, localPort] == value { self[remote, remotePort, localPort] = nil }
    }
}
