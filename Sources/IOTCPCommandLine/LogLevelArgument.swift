import ArgumentParser
import Logging

/// `--log-level trace|debug|info|notice|warning|error|critical`, for both CLIs.
extension Logger.Level: @retroactive ExpressibleByArgument {}
