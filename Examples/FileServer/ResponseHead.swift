/// A response head written straight into bytes, in the order it goes out. Built as interpolated Strings
/// and converted, a short response's head cost a tenth of the request's host CPU.
struct ResponseHead {
    private(set) var bytes: [UInt8] = []

    /// Starts with the status line.
    init(status: Int) {
        bytes.reserveCapacity(320)
        append("HTTP/1.1 ")
        append(status)
        append(" ")
        append(Self.reason(for: status))
        append("\r\n")
    }

    mutating func field(_ name: String, _ value: String) {
        append(name)
        append(": ")
        append(value)
        append("\r\n")
    }

    mutating func field<Value: BinaryInteger>(_ name: String, _ value: Value) {
        append(name)
        append(": ")
        append(value)
        append("\r\n")
    }

    /// `Content-Range: bytes FIRST-LAST/SIZE` (RFC 9110 §14.4).
    mutating func contentRange(first: UInt64, last: UInt64, size: UInt64) {
        append("Content-Range: bytes ")
        append(first)
        append("-")
        append(last)
        append("/")
        append(size)
        append("\r\n")
    }

    /// The blank line that ends the head, and the head.
    consuming func finished() -> [UInt8] {
        append("\r\n")
        return bytes
    }

    mutating func append(_ text: String) {
        bytes.append(contentsOf: text.utf8)
    }

    /// A decimal number, without making a String of it.
    mutating func append<Value: BinaryInteger>(_ value: Value) {
        if value < 0 { append("-") }
        var remaining = UInt64(value.magnitude)
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: room for UInt64's 20 digits
        withUnsafeMutableBytes(of: &digits) { buffer in
            var index = buffer.count
            repeat {
                index -= 1
                buffer[index] = UInt8(remaining % 10) + 48
                remaining /= 10
            } while remaining > 0
            bytes.append(contentsOf: buffer[index...])
        }
    }

    static func reason(for status: Int) -> String {
        switch status {
        case 200: "OK"
        case 206: "Partial Content"
        case 304: "Not Modified"
        case 400: "Bad Request"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 413: "Content Too Large"
        case 414: "URI Too Long"
        case 416: "Range Not Satisfiable"
        case 431: "Request Header Fields Too Large"
        case 500: "Internal Server Error"
        case 501: "Not Implemented"
        case 503: "Service Unavailable"
        default: "Error"
        }
    }
}
