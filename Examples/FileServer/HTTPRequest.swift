import Foundation

/// One HTTP/1.1 request head, parsed from the bytes a connection received.
struct HTTPRequest: Equatable {
    var method: String
    var target: String
    var version: String
    var headers: [(name: String, value: String)]

    static func == (lhs: HTTPRequest, rhs: HTTPRequest) -> Bool {
        lhs.method == rhs.method && lhs.target == rhs.target && lhs.version == rhs.version
            && lhs.headers.map(\.name) == rhs.headers.map(\.name) && lhs.headers.map(\.value) == rhs.headers.map(\.value)
    }

    /// The first header called `name`, compared without regard to ASCII case (and without allocating).
    func header(_ name: String) -> String? {
        headers.first { header in
            header.name.utf8.count == name.utf8.count
                && zip(header.name.utf8, name.utf8).allSatisfy { $0 | 0x20 == $1 | 0x20 }
        }?.value
    }

    /// Every header called `name` (case-insensitive), in order.
    func headers(_ name: String) -> [String] {
        headers.compactMap { header in
            header.name.utf8.count == name.utf8.count && zip(header.name.utf8, name.utf8).allSatisfy { $0 | 0x20 == $1 | 0x20 }
                ? header.value : nil
        }
    }

    /// The largest request body this server reads (and throws away: it serves GET and HEAD only).
    static let maximumBody = 65536

    /// What follows the head (RFC 9112 §6): the bytes of a body to skip, or the status that refuses the
    /// request. Any disagreement about where the request ends is refused and the connection closed, so a
    /// proxy in front and this server can never split the stream differently (request smuggling).
    func bodyLength() -> Result<Int, RequestRefusal> {
        let encodings = headers("Transfer-Encoding"), lengths = headers("Content-Length")
        if !encodings.isEmpty {
            // A body length two ways (§6.3 item 3), or a coding this server does not take.
            return .failure(RequestRefusal(status: lengths.isEmpty ? 501 : 400))
        }
        guard !lengths.isEmpty else { return .success(0) }
        // Repeated fields, or one field listing the same value twice, must agree (§6.3 item 5).
        var value: Int?
        for field in lengths {
            for item in field.split(separator: ",", omittingEmptySubsequences: false) {
                let digits = item.trimmingCharacters(in: .whitespaces)
                guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= 48 && $0 <= 57 }), digits.utf8.count <= 18,
                      let length = Int(digits), value == nil || value == length
                else { return .failure(RequestRefusal(status: 400)) }
                value = length
            }
        }
        guard let value else { return .failure(RequestRefusal(status: 400)) }
        return value > Self.maximumBody ? .failure(RequestRefusal(status: 413)) : .success(value)
    }

    /// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host field; HTTP/1.0 may have none.
    var hostIsValid: Bool {
        let hosts = headers("Host")
        return version == "HTTP/1.0" ? hosts.count <= 1 : hosts.count == 1
    }

    /// HTTP/1.1 keeps the connection unless asked not to; HTTP/1.0 closes unless asked to keep it.
    var keepAlive: Bool {
        let options = headers("Connection").flatMap { $0.lowercased().split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        return version == "HTTP/1.0" ? options.contains("keep-alive") : !options.contains("close")
    }

    enum ParseResult: Equatable {
        /// A request and the bytes its head took.
        case request(HTTPRequest, consumed: Int)
        /// The head is not complete yet.
        case incomplete
        /// A request the server must refuse, with the status to answer.
        case failure(status: Int)
    }

    static let maximumRequestLine = 8192
    static let maximumHead = 16384

    /// Parses the first request head in `bytes`, if it is all there.
    static func parse(_ bytes: ArraySlice<UInt8>) -> ParseResult {
        guard let end = headEnd(bytes) else {
            if firstLineLength(bytes) > maximumRequestLine { return .failure(status: 414) }
            return bytes.count > maximumHead ? .failure(status: 431) : .incomplete
        }
        if end - bytes.startIndex > maximumHead { return .failure(status: 431) }
        // Bytes, not Foundation strings: this runs for every request, and splitting the head with
        // `components(separatedBy:)` and trimming with `trimmingCharacters(in:)` was a visible share of a
        // small-file server's CPU. Strings are made only for the fields kept.
        let head = bytes[bytes.startIndex..<end]
        guard String(validating: head, as: UTF8.self) != nil else { return .failure(status: 400) }
        var lines: [ArraySlice<UInt8>] = []
        var lineStart = head.startIndex, index = head.startIndex
        while index < head.endIndex {
            if head[index] == 13, index + 1 < head.endIndex, head[index + 1] == 10 {
                lines.append(head[lineStart..<index])
                index += 2
                lineStart = index
            } else {
                index += 1
            }
        }
        lines.append(head[lineStart..<head.endIndex])
        let requestLine = lines[0]
        if requestLine.count > maximumRequestLine { return .failure(status: 414) }
        let parts = requestLine.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        // HTTP/1.x with one digit of minor version (RFC 9112 §2.3); above 1.1 it is served as 1.1.
        guard parts.count == 3, !parts[0].isEmpty, parts[2].count == 8, parts[2].starts(with: "HTTP/1.".utf8),
              let minor = parts[2].last, minor >= 48 && minor <= 57, let target = originForm(parts[1]) else {
            return .failure(status: 400)
        }
        var headers: [(String, String)] = []
        for line in lines.dropFirst() where !line.isEmpty {
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon != line.startIndex,
                  !line[line.startIndex..<colon].contains(UInt8(ascii: " ")) else { return .failure(status: 400) }
            var valueStart = colon + 1, valueEnd = line.endIndex
            while valueStart < valueEnd, line[valueStart] == 0x20 || line[valueStart] == 0x09 { valueStart += 1 }
            while valueEnd > valueStart, line[valueEnd - 1] == 0x20 || line[valueEnd - 1] == 0x09 { valueEnd -= 1 }
            headers.append((String(decoding: line[line.startIndex..<colon], as: UTF8.self),
                            String(decoding: line[valueStart..<valueEnd], as: UTF8.self)))
        }
        let request = HTTPRequest(method: String(decoding: parts[0], as: UTF8.self), target: String(decoding: target, as: UTF8.self),
                                  version: String(decoding: parts[2], as: UTF8.self), headers: headers)
        return .request(request, consumed: end + 4 - bytes.startIndex)
    }

    /// The request target as a path (RFC 9112 §3.2): origin-form as it is, absolute-form (`http://host/path`,
    /// what a client talking to a proxy sends) reduced to its path. Anything else (`*`, authority-form) is
    /// not for a file server.
    private static func originForm(_ target: ArraySlice<UInt8>) -> ArraySlice<UInt8>? {
        if target.first == UInt8(ascii: "/") { return target }
        for scheme in ["http://", "https://"] where target.count > scheme.utf8.count {
            let prefix = target.prefix(scheme.utf8.count)
            guard zip(prefix, scheme.utf8).allSatisfy({ $0 | 0x20 == $1 }) else { continue }
            let rest = target.dropFirst(scheme.utf8.count)
            guard let slash = rest.firstIndex(of: UInt8(ascii: "/")) else { return Array("/".utf8)[...] }
            guard slash != rest.startIndex else { return nil }  // no authority
            return rest[slash...]
        }
        return nil
    }

    private static func headEnd(_ bytes: ArraySlice<UInt8>) -> Int? {
        var index = bytes.startIndex
        while index + 3 < bytes.endIndex {
            if bytes[index] == 13 && bytes[index + 1] == 10 && bytes[index + 2] == 13 && bytes[index + 3] == 10 { return index }
            index += 1
        }
        return nil
    }

    private static func firstLineLength(_ bytes: ArraySlice<UInt8>) -> Int {
        (bytes.firstIndex(of: 13) ?? bytes.endIndex) - bytes.startIndex
    }

    /// The path of the target, percent-decoded; nil when the encoding is invalid or decodes to a NUL.
    static func decodedPath(_ target: String) -> String? {
        let path = target.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? target
        var bytes: [UInt8] = []
        var iterator = Array(path.utf8).makeIterator()
        while let byte = iterator.next() {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next(), let low = iterator.next(),
                      let value = UInt8(String(decoding: [high, low], as: UTF8.self), radix: 16), value != 0 else { return nil }
                bytes.append(value)
            } else {
                bytes.append(byte)
            }
        }
        return String(bytes: bytes, encoding: .utf8)
    }
}

/// Why a request is refused before anything is served: the status, and the connection closes after it.
struct RequestRefusal: Error, Equatable {
    let status: Int
}

/// Content-Type by extension, for the files a static server usually holds.
func contentType(for path: String) -> String {
    let name = path.split(separator: "/").last ?? ""
    guard let dot = name.lastIndex(of: ".") else { return "application/octet-stream" }
    switch name[name.index(after: dot)...].lowercased() {
    case "html", "htm": return "text/html; charset=utf-8"
    case "txt": return "text/plain; charset=utf-8"
    case "css": return "text/css"
    case "js": return "text/javascript"
    case "json": return "application/json"
    case "png": return "image/png"
    case "jpg", "jpeg": return "image/jpeg"
    case "gif": return "image/gif"
    case "svg": return "image/svg+xml"
    case "pdf": return "application/pdf"
    case "mp4": return "video/mp4"
    default: return "application/octet-stream"
    }
}

/// A single byte range from a `Range` header, resolved against the file's size (RFC 9110 §14.1.2).
enum ByteRangeRequest: Equatable {
    /// No usable Range header (absent, not bytes, several ranges, or malformed): serve the whole file.
    case whole
    /// Serve bytes `first...last`.
    case partial(first: UInt64, last: UInt64)
    /// No byte of the range lies in the file: 416.
    case unsatisfiable

    init(header: String?, size: UInt64) {
        guard let header, header.hasPrefix("bytes=") else { self = .whole; return }
        let spec = header.dropFirst(6).trimmingCharacters(in: .whitespaces)
        guard !spec.contains(","), let dash = spec.firstIndex(of: "-") else { self = .whole; return }
        let start = spec[spec.startIndex..<dash], end = spec[spec.index(after: dash)...]
        if start.isEmpty {
            // A suffix: the last N bytes.
            guard let count = UInt64(end) else { self = .whole; return }
            guard count > 0, size > 0 else { self = .unsatisfiable; return }
            self = .partial(first: size - min(count, size), last: size - 1)
            return
        }
        guard let first = UInt64(start) else { self = .whole; return }
        var last = size == 0 ? 0 : size - 1
        if !end.isEmpty {
            guard let value = UInt64(end), value >= first else { self = .whole; return }
            last = min(value, last)
        }
        self = first < size ? .partial(first: first, last: last) : .unsatisfiable
    }
}
