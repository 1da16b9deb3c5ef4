extension IOTCPStack {
    /// Reads up to `maximumCount` received bytes into a new array: empty at end of stream, `.wouldBlock`
    /// when nothing is there yet. For servers that do not manage their own buffers; the pointer form
    /// copies straight into the caller's memory.
    public func read(_ socket: Socket, maximumCount: Int) throws(IOTCPError) -> [UInt8] {
        guard maximumCount > 0 else { return [] }
        var taken = 0
        var failure: IOTCPError?
        let bytes = [UInt8](unsafeUninitializedCapacity: maximumCount) { buffer, initialized in
            do throws(IOTCPError) {
                taken = try read(socket, into: UnsafeMutableRawBufferPointer(buffer))
            } catch {
                failure = error
            }
            initialized = taken
        }
        if let failure { throw failure }
        return bytes
    }

    /// Queues bytes (copied); returns how many were taken, which may be fewer than all of them
    /// (`.wouldBlock` when none).
    public func write(_ socket: Socket, _ bytes: some Collection<UInt8>) throws(IOTCPError) -> Int {
        let contiguous = bytes.withContiguousStorageIfAvailable { buffer -> Result<Int, IOTCPError> in
            do throws(IOTCPError) { return .success(try write(socket, UnsafeRawBufferPointer(buffer))) } catch { return .failure(error) }
        }
        if let contiguous { return try contiguous.get() }
        let copied = Array(bytes)
        let result = copied.withUnsafeBytes { buffer -> Result<Int, IOTCPError> in
            do throws(IOTCPError) { return .success(try write(socket, buffer)) } catch { return .failure(error) }
        }
        return try result.get()
    }
}
