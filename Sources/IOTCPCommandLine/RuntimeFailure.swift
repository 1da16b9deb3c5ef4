/// A failure while setting up or running, as opposed to a bad command line: the CLIs print it as
/// "Error: ..." and exit with status 1, without the usage text a `ValidationError` brings (which would
/// suggest the options were wrong when the machine, a path or another process was).
public struct RuntimeFailure: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
