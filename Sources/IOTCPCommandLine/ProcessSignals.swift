import Glibc

/// Set by SIGINT or SIGTERM once `installProcessSignals()` ran: the server's loop stops at its next turn.
public nonisolated(unsafe) var stopRequested: sig_atomic_t = 0
/// Set by SIGUSR1: the loop logs its counters and listings at its next turn, and clears it.
public nonisolated(unsafe) var describeRequested: sig_atomic_t = 0

/// SIGINT and SIGTERM ask the loop to stop, SIGUSR1 to describe itself, and SIGPIPE is ignored (a
/// vanished peer is an error from the write, not the end of the process).
public func installProcessSignals() {
    signal(SIGINT) { _ in stopRequested = 1 }
    signal(SIGTERM) { _ in stopRequested = 1 }
    signal(SIGUSR1) { _ in describeRequested = 1 }
    signal(SIGPIPE, SIG_IGN)
}

/// Writes a line to a descriptor at once (Swift 6 forbids the C `stdout` global; pipes buffer `print`).
public func say(_ text: String, to descriptor: Int32 = 1) {
    var line = text + "\n"
    line.withUTF8 { bytes in _ = write(descriptor, bytes.baseAddress, bytes.count) }
}
