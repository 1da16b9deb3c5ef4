import IOTCPCommon

/// The numbers a TCP host derives from its secret, so that an off-path attacker cannot guess them: initial
/// sequence numbers (RFC 6528), per-connection timestamp offsets, and SYN cookies (RFC 4987 §3.6, `SYNCookies`). Pure:
/// the endpoints and the time come in, numbers go out; the engine decides when to use them.
struct ConnectionSecrets {
    let key0: UInt64
    let key1: UInt64

    // MARK: - ISNs and timestamp offsets

    /// RFC 6528: a 4-microsecond clock plus a keyed hash of the connection's endpoints.
    func initialSequence(local: IPAddress, remote: IPAddress, remotePort: UInt16, localPort: UInt16, now: Instant) -> SequenceNumber {
        var hasher = SipHasher24(key0: key0, key1: key1)
        hasher.combine(local)
        hasher.combine(localPort)
        hasher.combine(remote)
        hasher.combine(remotePort)
        return SequenceNumber(UInt32(truncatingIfNeeded: now.nanoseconds / 4000) &+ UInt32(truncatingIfNeeded: hasher.finalize()))
    }

    /// A random-looking offset for the connection's TSval, so timestamps reveal neither uptime nor other flows.
    func timestampOffset(remote: IPAddress, remotePort: UInt16, localPort: UInt16) -> UInt32 {
        var hasher = SipHasher24(key0: key1, key1: key0 ^ 0x7473)
        hasher.combine(remote)
        hasher.combine(remotePort)
        hasher.combine(localPort)
        return UInt32(truncatingIfNeeded: hasher.finalize())
    }

    // MARK: - SYN cookies

    /// The cookie codec, keyed from the same secret.
    var cookies: SYNCookies { SYNCookies(key0: key0, key1: key1) }

    typealias CookieParameters = SYNCookies.Parameters

    /// The stateless SYN-ACK answering `syn` (see `SYNCookies`).
    func cookieReply(to syn: TCPRepr, remote: IPAddress, local: IPAddress, now: Instant, configuration: TCPConfiguration) -> TCPRepr {
        var options = configuration.listenerOptions(port: syn.destinationPort)
        options.maximumSegmentSize = configuration.maximumSegmentSize(for: remote)
        return cookies.reply(to: syn, remote: remote, local: local, now: now, options: options)
    }

    /// Checks the cookie an ACK returns; nil when it is not one of ours.
    func verifyCookie(in ack: TCPRepr, remote: IPAddress, local: IPAddress, now: Instant) -> CookieParameters? {
        cookies.verify(ack, remote: remote, local: local, now: now)
    }
}
