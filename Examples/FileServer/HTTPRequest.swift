import Foundation

/// One HTTP/1.1 request head, parsed from the bytes a connection received.
struct HTTPRequest: Equatable {
    var method: String
    var target: String
    var version: String
    var headers: [(name: String, value: String)]
    /// Read from the head's bytes while parsing (each request needs them, and a String's UTF-8 view is slow
    /// to walk): whether the connection stays open after the response, how many Host fields came, and
    /// whether any field frames a body.
    var keepAlive = true
    var hostCount = 0
    var framesBody = false

    static func == (lhs: HTTPRequest, rhs: HTTPRequest) -> Bool {
        lhs.method == rhs.method && lhs.target == rhs.target && lhs.version == rhs.version
            && lhs.headers.map(\.name) == rhs.headers.map(\.name) && lhs.headers.map(\.value) == rhs.headers.map(\.value)
            && lhs.keepAlive == rhs.keepAlive && lhs.hostCount == rhs.hostCount && lhs.framesBody == rhs.framesBody
    }

    /// The first header called `name`, compared without regard to ASCII case (and without allocating).
    func header(_ name: String) -> String? {
        headers.first { header in ASCII.equalIgnoringCase(header.name.utf8, name.utf8) }?.value
    }

    /// Every header called `name` (case-insensitive), in order.
    func headers(_ name: String) -> [String] {
        headers.compactMap { header in ASCII.equalIgnoringCase(header.name.utf8, name.utf8) ? header.value : nil }
    }

    /// The largest request body this server reads (and throws away: it serves GET and HEAD only).
    static let maximumBody = 65536

    /// What follows the head (RFC 9112 §6): the bytes of a body to skip, or the status that refuses the
    /// request. Any disagreement about where the request ends is refused and the connection closed, so a
    /// proxy in front and this server can never split the stream differently (request smuggling).
    func bodyLength() -> Result<Int, RequestRefusal> {
        guard framesBody else { return .success(0) }
        let encodings = headers("Transfer-Encoding"), lengths = headers("Content-Length")
        if !encodings.isEmpty {
            // A body length two ways (§6.3 item 3), or a coding this server does not take.
            return .failure(RequestRefusal(status: lengths.isEmpty ? 501 : 400))
        }
        guard !lengths.isEmpty else { return .success(0) }
        // Repeated fields, or one field listing the same value twice, must agree (§6.3 item 5).
        var value: Int?
        for field in lengths {
            for item in field.utf8.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false) {
                let digits = ASCII.trimmingWhitespace(item)
                guard !digits.isEmpty, digits.allSatisfy({ $0 >= 48 && $0 <= 57 }), digits.count <= 18 else {
                    return .failure(RequestRefusal(status: 400))
                }
                let length = ASCII.decimal(digits)
                guard value == nil || value == length else { return .failure(RequestRefusal(status: 400)) }
                value = length
            }
        }
        guard let value else { return .failure(RequestRefusal(status: 400)) }
        return value > Self.maximumBody ? .failure(RequestRefusal(status: 413)) : .success(value)
    }

    /// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host field; HTTP/1.0 may have none.
    var hostIsValid: Bool {
        version == "HTTP/1.0" ? hostCount <= 1 : hostCount == 1
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
        // RFC 9112 §2.2: empty lines before a request line are ignored (some clients send a CRLF after a body).
        var start = bytes.startIndex
        while true {
            if start + 1 < bytes.endIndex, bytes[start] == 13, bytes[start + 1] == 10 {
                start += 2
            } else if start < bytes.endIndex, bytes[start] == 10 {
                start += 1
            } else {
                break
            }
        }
        switch parseHead(bytes[start...]) {
        case .request(let request, let consumed): return .request(request, consumed: consumed + start - bytes.startIndex)
        case let other: return other
        }
    }

    private static func parseHead(_ bytes: ArraySlice<UInt8>) -> ParseResult {
        guard let end = headEnd(bytes) else {
            if firstLineLength(bytes) > maximumRequestLine { return .failure(status: 414) }
            return bytes.count > maximumHead ? .failure(status: 431) : .incomplete
        }
        if end - bytes.startIndex > maximumHead { return .failure(status: 431) }
        // Bytes, not Foundation strings: this runs for every request, and splitting the head with
        // `components(separatedBy:)` and trimming with `trimmingCharacters(in:)` was a visible share of a
        // small-file server's CPU. Strings are made only for the fields kept.
        let head = bytes[bytes.startIndex..<end]
        // Almost every head is ASCII, which is valid UTF-8 without building a String to find out.
        guard head.allSatisfy({ $0 < 0x80 }) || String(validating: head, as: UTF8.self) != nil else { return .failure(status: 400) }
        let requestLine = head[head.startIndex..<(lineEnd(head, from: head.startIndex) ?? head.endIndex)]
        if requestLine.count > maximumRequestLine { return .failure(status: 414) }
        // Method, target and version, separated by exactly two spaces.
        guard let firstSpace = requestLine.firstIndex(of: UInt8(ascii: " ")),
              let secondSpace = requestLine[(firstSpace + 1)...].firstIndex(of: UInt8(ascii: " ")),
              !requestLine[(secondSpace + 1)...].contains(UInt8(ascii: " ")) else { return .failure(status: 400) }
        let method = requestLine[requestLine.startIndex..<firstSpace], version = requestLine[(secondSpace + 1)...]
        // HTTP/1.x with one digit of minor version (RFC 9112 §2.3); above 1.1 it is served as 1.1.
        // The method a token, the target free of controls (RFC 9112 §3): a byte another parser in front
        // might read differently is refused, not passed on.
        guard !method.isEmpty, ASCII.isToken(method), !requestLine[(firstSpace + 1)..<secondSpace].contains(where: ASCII.isControl),
              version.count == 8, version.prefix(7).elementsEqual(ASCII.http1),
              let minor = version.last, minor >= 48 && minor <= 57,
              let target = originForm(requestLine[(firstSpace + 1)..<secondSpace]) else {
            return .failure(status: 400)
        }
        var headers: [(name: String, value: String)] = []
        headers.reserveCapacity(8)
        // HTTP/1.1 keeps the connection unless an option says close; HTTP/1.0 closes unless one says keep-alive.
        // The Connection field is a list of options (RFC 9110 §7.6.1).
        let http10 = minor == UInt8(ascii: "0")
        let connectionOption = http10 ? ASCII.keepAlive : ASCII.close
        var optionListed = false, hostCount = 0, framesBody = false
        var lineStart = requestLine.endIndex + 2
        while lineStart < head.endIndex {
            let line = head[lineStart..<(lineEnd(head, from: lineStart) ?? head.endIndex)]
            lineStart = line.endIndex + 2
            if line.isEmpty { continue }
            // A field name is a token: no space or tab before the colon, no folded line (obs-fold starts with
            // whitespace), and no bare CR, LF or NUL in the value (RFC 9112 §5.1, §5.2, RFC 9110 §5.5): any of
            // them is a place where a proxy in front and this server could split the head differently.
            guard let colon = line.firstIndex(of: UInt8(ascii: ":")), colon != line.startIndex,
                  ASCII.isToken(line[line.startIndex..<colon]),
                  !line[(colon + 1)...].contains(where: { $0 == 13 || $0 == 10 || $0 == 0 }) else { return .failure(status: 400) }
            var valueStart = colon + 1, valueEnd = line.endIndex
            while valueStart < valueEnd, line[valueStart] == 0x20 || line[valueStart] == 0x09 { valueStart += 1 }
            while valueEnd > valueStart, line[valueEnd - 1] == 0x20 || line[valueEnd - 1] == 0x09 { valueEnd -= 1 }
            let name = line[line.startIndex..<colon], value = line[valueStart..<valueEnd]
            if ASCII.equalIgnoringCase(name, ASCII.connection) {
                optionListed = optionListed || ASCII.list(value, contains: connectionOption)
            } else if ASCII.equalIgnoringCase(name, ASCII.host) {
                hostCount += 1
            } else if ASCII.equalIgnoringCase(name, ASCII.contentLength) || ASCII.equalIgnoringCase(name, ASCII.transferEncoding) {
                framesBody = true
            }
            headers.append((String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
        }
        let request = HTTPRequest(method: String(decoding: method, as: UTF8.self), target: String(decoding: target, as: UTF8.self),
                                  version: String(decoding: version, as: UTF8.self), headers: headers,
                                  keepAlive: http10 ? optionListed : !optionListed, hostCount: hostCount, framesBody: framesBody)
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

    /// Where the line starting at `start` ends (its CR of a CRLF), nil when no CRLF follows.
    private static func lineEnd(_ bytes: ArraySlice<UInt8>, from start: Int) -> Int? {
        var index = start
        while index + 1 < bytes.endIndex {
            if bytes[index] == 13 && bytes[index + 1] == 10 { return index }
            index += 1
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

    /// The path of the target (what precedes `?`), percent-decoded (two hex digits after each `%`); nil when
    /// the encoding is invalid, the result is not UTF-8, or it holds a NUL.
    static func decodedPath(_ target: String) -> String? {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(target.utf8.count)
        var iterator = target.utf8.makeIterator()
        while let byte = iterator.next(), byte != UInt8(ascii: "?") {
            if byte == UInt8(ascii: "%") {
                guard let high = iterator.next().flatMap(ASCII.hexDigit), let low = iterator.next().flatMap(ASCII.hexDigit) else { return nil }
                bytes.append(high << 4 | low)
            } else {
                bytes.append(byte)
            }
            if bytes.last == 0 { return nil }
        }
        return String(validating: bytes, as: UTF8.self)
    }
}

/// Why a request is refused before anything is served: the status, and the connection closes after it.
struct RequestRefusal: Error, Equatable {
    let status: Int
}

/// Content-Type by extension, for the files a static server usually holds.
func contentType(for path: String) -> String {
    let name = path.utf8.lastIndex(of: UInt8(ascii: "/")).map { path.utf8[path.utf8.index(after: $0)...] } ?? path.utf8[...]
    // The known extensions are short: a longer one is not worth lowercasing (short strings do not allocate).
    guard let dot = name.lastIndex(of: UInt8(ascii: ".")), name.distance(from: dot, to: name.endIndex) <= 5 else {
        return "application/octet-stream"
    }
    switch Substring(name[name.index(after: dot)...]).lowercased() {
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

/// Byte-level helpers for HTTP's ASCII syntax, so the per-request path neither allocates nor goes through
/// Foundation (lowercasing, splitting and trimming Strings there was a fifth of a short request's host CPU).
enum ASCII {
    @inline(__always)
    static func lowercased(_ byte: UInt8) -> UInt8 { byte >= 65 && byte <= 90 ? byte + 32 : byte }

    // What the parser looks for in every head, as bytes (walking a String's UTF-8 view is slow).
    static let http1: [UInt8] = Array("HTTP/1.".utf8)
    static let connection: [UInt8] = Array("connection".utf8)
    static let host: [UInt8] = Array("host".utf8)
    static let contentLength: [UInt8] = Array("content-length".utf8)
    static let transferEncoding: [UInt8] = Array("transfer-encoding".utf8)
    static let close: [UInt8] = Array("close".utf8)
    static let keepAlive: [UInt8] = Array("keep-alive".utf8)

    /// Equal to `lowercase` (lowercase already) without regard to ASCII case: the parser's hot comparison.
    static func equalIgnoringCase(_ bytes: ArraySlice<UInt8>, _ lowercase: [UInt8]) -> Bool {
        guard bytes.count == lowercase.count else { return false }
        return bytes.withUnsafeBufferPointer { bytes in
            lowercase.withUnsafeBufferPointer { lowercase in
                for index in 0..<bytes.count where lowercased(bytes[index]) != lowercase[index] { return false }
                return true
            }
        }
    }

    /// Equal without regard to ASCII case (other bytes compared exactly).
    static func equalIgnoringCase<A: Collection<UInt8>, B: Collection<UInt8>>(_ a: A, _ b: B) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { lowercased($0) == lowercased($1) }
    }

    /// RFC 9110 §5.6.2's tchar: what a method or a field name is made of.
    static func isToken(_ bytes: ArraySlice<UInt8>) -> Bool {
        !bytes.isEmpty && bytes.allSatisfy { byte in
            switch byte {
            case 48...57, 65...90, 97...122: true
            case 33, 35, 36, 37, 38, 39, 42, 43, 45, 46, 94, 95, 96, 124, 126: true  // !#$%&'*+-.^_`|~
            default: false
            }
        }
    }

    /// A control character or space: never in a request target.
    static func isControl(_ byte: UInt8) -> Bool { byte <= 0x20 || byte == 0x7F }

    /// Without leading and trailing spaces and tabs (HTTP's OWS).
    static func trimmingWhitespace<C: BidirectionalCollection<UInt8>>(_ bytes: C) -> C.SubSequence {
        let isSpace = { (byte: UInt8) in byte == 0x20 || byte == 0x09 }
        guard let first = bytes.firstIndex(where: { !isSpace($0) }), let last = bytes.lastIndex(where: { !isSpace($0) }) else {
            return bytes[bytes.endIndex...]
        }
        return bytes[first...last]
    }

    /// Whether a comma-separated field value (RFC 9110 §5.6.1) lists `element` (given in lowercase), compared
    /// without regard to ASCII case, each element trimmed of spaces and tabs.
    static func list(_ value: ArraySlice<UInt8>, contains element: [UInt8]) -> Bool {
        var start = value.startIndex
        while true {
            let end = value[start...].firstIndex(of: UInt8(ascii: ",")) ?? value.endIndex
            if equalIgnoringCase(trimmingWhitespace(value[start..<end]), element) { return true }
            guard end < value.endIndex else { return false }
            start = value.index(after: end)
        }
    }

    /// The value of a hexadecimal digit, nil for any other byte.
    static func hexDigit(_ byte: UInt8) -> UInt8? {
        switch byte {
        case 48...57: byte - 48
        case 65...70: byte - 55
        case 97...102: byte - 87
        default: nil
        }
    }

    /// The value of decimal digits the caller has checked (at most 18 of them, so it cannot overflow).
    static func decimal<C: Collection<UInt8>>(_ digits: C) -> Int {
        digits.reduce(0) { $0 * 10 + Int($1 - 48) }
    }
}
