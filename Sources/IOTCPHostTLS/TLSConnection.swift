import IOTCPCommon
import IOTCPHost
import IOTCPTLS

/// HTTPS-style TLS over an iotcp connection with the record encryption on the NIC.
///
/// The handshake runs on the host (OpenSSL, through `TLSServerSession`) over the socket's ordinary reads and
/// writes. When it is done the connection hands the server's record keys to the NIC (TLS_KEYS) and becomes
/// the sequencer of the TLS stream: every outgoing record gets its number here, in the order it is queued.
/// Its own bytes (`write`: HTTP heads, alerts) it seals itself; file ranges (`offloadWrite`) it queues as
/// runs of records that the NIC reads, seals and sends, so the host never touches the file's bytes.
/// Records from the peer are opened by OpenSSL on the host.
///
/// Single-threaded, on the stack's thread, like the stack. Typical use, in an event loop:
///
/// ```swift
/// let tls = TLSConnection(socket: socket, context: context)!
/// // on .readable:
/// switch try tls.read(from: stack, into: buffer) { case .data(let n): ...; case .wouldBlock: break; case .closed: ... }
/// // to answer:
/// _ = try tls.write(to: stack, head)                       // sealed here
/// _ = try tls.offloadWrite(to: stack, file: id, offset: 0, length: size)   // sealed on the NIC
/// try tls.close(stack)                                     // close_notify, then FIN
/// ```
public final class TLSConnection {
    public let socket: Socket
    private let session: TLSServerSession
    private var sealer: TLSRecordSealer?
    private var nextRecord: UInt64 = 0
    /// TLS 1.3: the current traffic secret, kept for the next KeyUpdate; erased when the connection goes.
    private var keys: TLSWriteKeys?
    /// Sealed bytes (or handshake flights) the socket's queue did not take yet: sent before anything else.
    private var pending: [UInt8] = []
    private var pendingSent = 0
    private var scratch = [UInt8](repeating: 0, count: 16 << 10)
    /// File bytes per record the NIC seals. 16 KiB, TLS's largest, costs the fewest record headers and tags;
    /// lowered at the handshake's end if the client asked for a smaller max_fragment_length.
    public var recordPlaintext = RecordSendRange.maximumRecordPlaintext
    /// The most plaintext any record of this connection may carry (the host's own ones too).
    private var recordLimit = RecordSendRange.maximumRecordPlaintext
    /// Records sealed under one key before this connection refuses to seal more: AES-GCM's bound (RFC 8446
    /// §5.5 puts it near 2^24.5 records); a TLS 1.3 server updates its keys long before (`updateKeys`).
    public static let recordsPerKeyLimit: UInt64 = 1 << 24
    /// Bytes were fed to OpenSSL, or it last returned data, since it last said it had nothing to give.
    private var opensslMayHaveMore = true

    public enum ReadResult: Equatable {
        case data(Int)
        /// Nothing to return now (the handshake may have moved on); wait for `.readable` (or `.writable` if
        /// `hasPendingOutput`).
        case wouldBlock
        /// The peer sent close_notify or closed the connection.
        case closed
    }

    /// Nil only if OpenSSL could not allocate the session.
    public init?(socket: Socket, context: TLSServerContext, maximumVersion: TLSRecordVersion? = nil) {
        guard let session = TLSServerSession(context: context, maximumVersion: maximumVersion) else { return nil }
        self.socket = socket
        self.session = session
    }

    public var isEstablished: Bool { sealer != nil }
    public var version: TLSRecordVersion? { isEstablished ? session.version : nil }
    public var serverName: String? { session.serverName }
    /// Bytes sealed or written by the handshake that wait for room in the socket's queue.
    public var hasPendingOutput: Bool { pendingSent < pending.count }
    /// OpenSSL may hold decrypted bytes not yet read (the socket can be empty then: call `read` again rather
    /// than wait for `.readable`).
    public var mayHaveBufferedInput: Bool { opensslMayHaveMore }

    /// Reads what the socket has, feeds it to TLS, and returns decrypted bytes. During the handshake this
    /// answers the peer's flights and, at its end, hands the keys to the NIC. Throws `TLSFailure` for a
    /// handshake or record the peer got wrong (the caller closes the connection), `IOTCPError` for the socket.
    public func read(from stack: IOTCPStack, into buffer: UnsafeMutableRawBufferPointer) throws -> ReadResult {
        var peerClosed = false
        defer { if peerClosed { opensslMayHaveMore = true } }
        while true {
            let count: Int
            do {
                count = try scratch.withUnsafeMutableBytes { try stack.read(socket, into: $0) }
            } catch IOTCPError.wouldBlock {
                break
            }
            if count == 0 {
                peerClosed = true
                break
            }
            scratch.withUnsafeBytes { session.feed(UnsafeRawBufferPointer(rebasing: $0[0..<count])) }
            opensslMayHaveMore = true
        }
        // Nothing new came and OpenSSL said it had nothing: asking again would only cost (a server calls this
        // on every writable event while a response goes out).
        guard opensslMayHaveMore || peerClosed else { return .wouldBlock }
        while true {
            let progress = try session.advance(into: buffer)
            opensslMayHaveMore = true
            if case .idle = progress { opensslMayHaveMore = false }
            if case .handshaking = progress { opensslMayHaveMore = false }
            try queue(session.takeOutput(), to: stack)
            switch progress {
            case .handshaking:
                return peerClosed ? .closed : .wouldBlock
            case .established:
                try handOver(stack)
                continue
            case .data(let count):
                return .data(count)
            case .idle:
                return peerClosed ? .closed : .wouldBlock
            case .closed:
                return .closed
            }
        }
    }

    private func handOver(_ stack: IOTCPStack) throws {
        var keys = try session.transmitKeys()
        defer { keys.erase() }
        try install(keys, on: stack)
    }

    /// Gives the NIC `keys` (TLS_KEYS) and seals this side's records with them from `keys.firstRecord` on.
    private func install(_ keys: TLSWriteKeys, on stack: IOTCPStack) throws {
        guard let made = TLSRecordSealer(keys) else { throw TLSFailure("the negotiated keys cannot be used for sealing") }
        try keys.key.withUnsafeBytes { key in
            try keys.iv.withUnsafeBytes { iv in
                try stack.startRecordOffload(socket, keys: TLSKeys(version: keys.version, key: key, iv: iv))
            }
        }
        sealer = made
        nextRecord = keys.firstRecord
        recordLimit = min(session.recordPlaintextLimit, RecordSendRange.maximumRecordPlaintext)
        recordPlaintext = min(recordPlaintext, recordLimit)
        self.keys?.erase()
        if keys.version == .tls13 {
            // Only the secret is needed for the next update; the key and IV now live in the sealers.
            var kept = keys
            for index in kept.key.indices { kept.key[index] = 0 }
            for index in kept.iv.indices { kept.iv[index] = 0 }
            self.keys = kept
        }
    }

    deinit { keys?.erase() }

    /// Records sealed under the current keys: how far the stream has used them (a KeyUpdate starts again
    /// from 0).
    public var recordsUnderCurrentKeys: UInt64 { nextRecord }

    /// TLS 1.3 KeyUpdate from the server (RFC 8446 §4.6.3): seals a KeyUpdate message under the current keys,
    /// then moves this side and the NIC to the next traffic secret, records numbered from 0 again. If it
    /// throws, end the connection: the peer may already be on the new keys.
    ///
    /// Done only when every byte sent so far has been acknowledged: records the NIC sealed under the old keys
    /// may otherwise have to be sealed again for a retransmission, and the NIC keeps one set of keys a flow.
    /// Returns false, doing nothing, when that is not so yet (call it again between responses) or the
    /// connection is TLS 1.2, which has no KeyUpdate.
    public func updateKeys(on stack: IOTCPStack) throws -> Bool {
        guard let current = keys, let next = current.updated() else { return false }
        try flush(to: stack)
        guard !hasPendingOutput, let info = stack.info(of: socket), info.queuedBytes == 0 else { return false }
        var updated = next
        defer { updated.erase() }
        // handshake type key_update (24), length 1, update_not_requested (0).
        let message: [UInt8] = [24, 0, 0, 1, 0]
        _ = try message.withUnsafeBytes { try write(to: stack, $0, contentType: 22) }
        // The client moves to the new keys with this record: if this side cannot follow, the caller must end
        // the connection (it throws).
        try install(updated, on: stack)
        return true
    }

    /// Seals `bytes` into records (numbered here) and queues them; returns how many plaintext bytes were
    /// taken, all of them unless the socket's queue is full (then `.wouldBlock` until `.writable`).
    public func write(to stack: IOTCPStack, _ bytes: UnsafeRawBufferPointer, contentType: UInt8 = 23) throws -> Int {
        guard let sealer else { throw TLSFailure("write before the handshake finished") }
        try flush(to: stack)
        guard !hasPendingOutput else { throw IOTCPError.wouldBlock }
        let records = UInt64(max((bytes.count + recordLimit - 1) / recordLimit, 1))
        guard nextRecord + records <= Self.recordsPerKeyLimit else {
            throw TLSFailure("\(nextRecord) records sealed under one key: no more without a KeyUpdate")
        }
        var offset = 0
        while offset < bytes.count || (bytes.isEmpty && offset == 0 && contentType != 23) {
            let take = min(bytes.count - offset, recordLimit)
            guard let record = sealer.sealed(UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + take)]), number: nextRecord,
                                             contentType: contentType) else { throw TLSFailure("cannot seal a record") }
            nextRecord += 1
            try queue(record, to: stack)
            offset += take
            if bytes.isEmpty { break }
        }
        return bytes.count
    }

    /// Queues file bytes as records the NIC seals (`IOTCPStack.offloadWriteRecords`); returns the bytes
    /// taken (whole records), `.wouldBlock` when none.
    public func offloadWrite(to stack: IOTCPStack, file: OffloadedFileID, offset: UInt64, length: Int) throws -> Int {
        guard sealer != nil else { throw TLSFailure("write before the handshake finished") }
        try flush(to: stack)
        guard !hasPendingOutput else { throw IOTCPError.wouldBlock }
        let recordsLeft = Self.recordsPerKeyLimit - min(nextRecord, Self.recordsPerKeyLimit)
        guard recordsLeft > 0 else { throw TLSFailure("\(nextRecord) records sealed under one key: no more without a KeyUpdate") }
        let allowed = Int(min(UInt64(length), recordsLeft * UInt64(recordPlaintext)))
        let taken = try stack.offloadWriteRecords(socket, file: file, offset: offset, length: allowed, recordPlaintext: recordPlaintext,
                                                  firstRecord: nextRecord)
        nextRecord += UInt64((taken + recordPlaintext - 1) / recordPlaintext)
        return taken
    }

    /// Sends what waited for room in the socket's queue.
    public func flush(to stack: IOTCPStack) throws {
        while pendingSent < pending.count {
            let written: Int
            do {
                written = try pending.withUnsafeBytes { try stack.write(socket, UnsafeRawBufferPointer(rebasing: $0[pendingSent...])) }
            } catch IOTCPError.wouldBlock {
                return
            }
            if written == 0 { return }
            pendingSent += written
        }
        pending.removeAll(keepingCapacity: true)
        pendingSent = 0
    }

    private func queue(_ bytes: [UInt8], to stack: IOTCPStack) throws {
        guard !bytes.isEmpty else { return }
        pending += bytes
        try flush(to: stack)
    }

    /// Ends the stream: close_notify (sealed, once the handshake is done), then the stack's close.
    public func close(_ stack: IOTCPStack) throws {
        if sealer != nil {
            let closeNotify: [UInt8] = [1, 0]  // warning, close_notify
            _ = try? closeNotify.withUnsafeBytes { try write(to: stack, $0, contentType: 21) }
        }
        try stack.close(socket)
    }
}
