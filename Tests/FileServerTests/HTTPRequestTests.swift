@testable import FileServer
import Testing

/// The file server's reading of request heads: where a request ends (RFC 9112 §6), which targets and
/// versions it takes (§2.3, §3.2), and the Host rule, the places where a proxy in front and this server
/// could disagree about the stream.
@Suite("HTTP request framing")
struct HTTPRequestTests {
    func request(_ text: String) throws -> HTTPRequest {
        guard case .request(let request, _) = HTTPRequest.parse(Array(text.utf8)[...]) else {
            Issue.record("not parsed: \(text)")
            throw RequestRefusal(status: 0)
        }
        return request
    }

    func status(_ text: String) -> Int? {
        if case .failure(let status) = HTTPRequest.parse(Array(text.utf8)[...]) { return status }
        return nil
    }

    @Test("Content-Length: one value, repeated values that agree, and everything else refused")
    func contentLength() throws {
        let base = "GET / HTTP/1.1\r\nHost: x\r\n"
        #expect(try request(base + "\r\n").bodyLength() == .success(0))
        #expect(try request(base + "Content-Length: 5\r\n\r\n").bodyLength() == .success(5))
        #expect(try request(base + "Content-Length: 5\r\nContent-Length: 5\r\n\r\n").bodyLength() == .success(5))
        #expect(try request(base + "Content-Length: 5, 5\r\n\r\n").bodyLength() == .success(5))
        #expect(try request(base + "Content-Length: 5\r\nContent-Length: 6\r\n\r\n").bodyLength() == .failure(RequestRefusal(status: 400)))
        #expect(try request(base + "Content-Length: 5, 6\r\n\r\n").bodyLength() == .failure(RequestRefusal(status: 400)))
        #expect(try request(base + "Content-Length: +5\r\n\r\n").bodyLength() == .failure(RequestRefusal(status: 400)))
        #expect(try request(base + "Content-Length: 0x10\r\n\r\n").bodyLength() == .failure(RequestRefusal(status: 400)))
        #expect(try request(base + "Content-Length: \r\n\r\n").bodyLength() == .failure(RequestRefusal(status: 400)))
        #expect(try request(base + "Content-Length: 99999999999999999999\r\n\r\n").bodyLength() == .failure(RequestRefusal(status: 400)))
        #expect(try request(base + "Content-Length: 65537\r\n\r\n").bodyLength() == .failure(RequestRefusal(status: 413)))
    }

    @Test("Transfer-Encoding is refused: 501 alone, 400 beside a Content-Length (a request smuggling shape)")
    func transferEncoding() throws {
        let base = "POST / HTTP/1.1\r\nHost: x\r\n"
        #expect(try request(base + "Transfer-Encoding: chunked\r\n\r\n").bodyLength() == .failure(RequestRefusal(status: 501)))
        #expect(try request(base + "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n").bodyLength() == .failure(RequestRefusal(status: 400)))
        #expect(try request(base + "transfer-encoding: gzip, chunked\r\n\r\n").bodyLength() == .failure(RequestRefusal(status: 501)))
    }

    @Test("Host: exactly one in HTTP/1.1, at most one in HTTP/1.0")
    func host() throws {
        #expect(try request("GET / HTTP/1.1\r\nHost: a\r\n\r\n").hostIsValid)
        #expect(try !request("GET / HTTP/1.1\r\n\r\n").hostIsValid)
        #expect(try !request("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n").hostIsValid)
        #expect(try request("GET / HTTP/1.0\r\n\r\n").hostIsValid)
        #expect(try !request("GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n").hostIsValid)
    }

    @Test("targets: origin-form as is, absolute-form reduced to its path, the rest refused")
    func targets() throws {
        #expect(try request("GET /a/b?c HTTP/1.1\r\nHost: x\r\n\r\n").target == "/a/b?c")
        #expect(try request("GET http://example.com/a/b?c HTTP/1.1\r\nHost: example.com\r\n\r\n").target == "/a/b?c")
        #expect(try request("GET HTTP://example.com:8080/f HTTP/1.1\r\nHost: example.com\r\n\r\n").target == "/f")
        #expect(try request("GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n").target == "/")
        #expect(status("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n") == 400)
        #expect(status("CONNECT example.com:443 HTTP/1.1\r\nHost: x\r\n\r\n") == 400)
        #expect(status("GET http:///a HTTP/1.1\r\nHost: x\r\n\r\n") == 400)
    }

    @Test("versions: HTTP/1.x with one digit (above 1.1 served as 1.1); others refused")
    func versions() throws {
        #expect(try request("GET / HTTP/1.2\r\nHost: x\r\n\r\n").keepAlive)
        #expect(try !request("GET / HTTP/1.0\r\n\r\n").keepAlive)
        #expect(status("GET / HTTP/2.0\r\nHost: x\r\n\r\n") == 400)
        #expect(status("GET / HTTP/1.10\r\nHost: x\r\n\r\n") == 400)
        #expect(status("GET / http/1.1\r\nHost: x\r\n\r\n") == 400)
    }

    @Test("Connection options are a list: close anywhere in it closes; keep-alive keeps an HTTP/1.0 connection")
    func connectionOptions() throws {
        #expect(try !request("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, close\r\n\r\n").keepAlive)
        #expect(try request("GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\n\r\n").keepAlive)
        #expect(try request("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keepAlive)
    }

    @Test("heads another parser could split differently are refused: names not tokens, folded lines, bare CR/LF/NUL, controls in the target")
    func smugglingShapes() throws {
        #expect(status("GET / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding\t: chunked\r\n\r\n") == 400)
        #expect(status("GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\tTransfer-Encoding: chunked\r\n\r\n") == 400, "obs-fold")
        #expect(status("GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\nTransfer-Encoding: chunked\r\n\r\n") == 400, "bare LF")
        #expect(status("GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\rContent-Length: 5\r\n\r\n") == 400, "bare CR")
        #expect(status("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\u{0}b\r\n\r\n") == 400, "NUL")
        #expect(status("GET /a\tb HTTP/1.1\r\nHost: x\r\n\r\n") == 400)
        #expect(status("G(T / HTTP/1.1\r\nHost: x\r\n\r\n") == 400)
        #expect(status("GET / HTTP/1.1\r\nHo\u{e9}st: x\r\n\r\n") == 400)
        #expect(try request("GET / HTTP/1.1\r\nHost: x\r\nX-Odd_Name.v2~!: a\tb\r\n\r\n").header("x-odd_name.v2~!") == "a\tb",
                "tchar names and tabs inside a value are fine")
    }

    @Test("pipelined requests parse one at a time; a body's bytes are not a request")
    func pipelining() throws {
        let text = "GET /a HTTP/1.1\r\nHost: x\r\nContent-Length: 19\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n"
        var bytes = Array(text.utf8)[...]
        guard case .request(let first, let consumed) = HTTPRequest.parse(bytes) else { Issue.record("first"); return }
        #expect(first.target == "/a" && first.bodyLength() == .success(19))
        bytes = bytes.dropFirst(consumed + 19)  // the body, thrown away as the server does
        guard case .request(let next, _) = HTTPRequest.parse(bytes) else { Issue.record("next"); return }
        #expect(next.target == "/c", "the body (which looks like a request for /b) was skipped, not served")
        // A byte short: what is left starts with a bare LF, an empty line the next parse skips (RFC 9112 §2.2).
        guard case .request(let skipped, let taken) = HTTPRequest.parse(Array("\r\n\nGET /d HTTP/1.1\r\nHost: x\r\n\r\nX".utf8)[...]) else {
            Issue.record("after empty lines")
            return
        }
        #expect(skipped.target == "/d" && taken == 31, "the empty lines and the head, not the X after it")
        #expect(HTTPRequest.parse(Array("\r\n\r\n".utf8)[...]) == .incomplete, "nothing but empty lines: nothing yet")
    }
}

/// The byte-level pieces of the request and response path: list fields, percent-decoding, types by
/// extension, and response heads written as bytes.
@Suite("HTTP bytes")
struct HTTPBytesTests {
    @Test("a list field's elements, trimmed and compared without regard to case")
    func lists() {
        func list(_ text: String, _ element: [UInt8]) -> Bool { ASCII.list(Array(text.utf8)[...], contains: element) }
        #expect(list("close", ASCII.close))
        #expect(list(" Upgrade ,\tCLOSE ", ASCII.close))
        #expect(list("a,,close", ASCII.close))
        #expect(!list("closed, xclose", ASCII.close))
        #expect(!list("", ASCII.close))
        #expect(!list("keep\ralive", ASCII.keepAlive), "only letters fold")
        #expect(ASCII.equalIgnoringCase(Array("Transfer-ENCODING".utf8)[...], ASCII.transferEncoding))
        #expect(ASCII.equalIgnoringCase("Content-Length".utf8, "content-LENGTH".utf8))
        #expect(!ASCII.equalIgnoringCase("Host".utf8, "Hosts".utf8))
    }

    @Test("percent-decoding: two hex digits, the query cut, NUL and bad UTF-8 refused")
    func paths() {
        #expect(HTTPRequest.decodedPath("/a%20b.txt?x=%00") == "/a b.txt")
        #expect(HTTPRequest.decodedPath("/%e2%82%AC") == "/\u{20AC}")
        #expect(HTTPRequest.decodedPath("/a%2") == nil)
        #expect(HTTPRequest.decodedPath("/a%zz") == nil)
        #expect(HTTPRequest.decodedPath("/a%+1") == nil)
        #expect(HTTPRequest.decodedPath("/a%00b") == nil)
        #expect(HTTPRequest.decodedPath("/%ff") == nil)
        #expect(HTTPRequest.decodedPath("/plain") == "/plain")
    }

    @Test("Content-Type by the last extension of the last component, any case")
    func types() {
        #expect(contentType(for: "/a/index.HTML") == "text/html; charset=utf-8")
        #expect(contentType(for: "/v.d/movie.mp4") == "video/mp4")
        #expect(contentType(for: "/v.txt/noext") == "application/octet-stream")
        #expect(contentType(for: "/x.tar.gz") == "application/octet-stream")
        #expect(contentType(for: "/x.jpeg") == "image/jpeg")
        #expect(contentType(for: "/x.superlongextension") == "application/octet-stream")
    }

    @Test("a response head byte for byte: status line, fields in order, numbers in decimal, the blank line")
    func responseHead() {
        var head = ResponseHead(status: 206)
        head.field("Content-Length", UInt64(11))
        head.field("Server", "iotcp")
        head.contentRange(first: 0, last: 18_446_744_073_709_551_614, size: UInt64.max)
        let text = String(decoding: head.finished(), as: UTF8.self)
        #expect(text == "HTTP/1.1 206 Partial Content\r\nContent-Length: 11\r\nServer: iotcp\r\n"
            + "Content-Range: bytes 0-18446744073709551614/18446744073709551615\r\n\r\n")
        var zero = ResponseHead(status: 599)
        zero.field("Content-Length", 0)
        zero.field("X-Offset", -42)
        #expect(String(decoding: zero.finished(), as: UTF8.self) == "HTTP/1.1 599 Error\r\nContent-Length: 0\r\nX-Offset: -42\r\n\r\n")
    }

    @Test("keep-alive and Host read while parsing, as the fields say")
    func parsedFacts() throws {
        func parsed(_ text: String) -> HTTPRequest? {
            if case .request(let request, _) = HTTPRequest.parse(Array(text.utf8)[...]) { return request }
            return nil
        }
        #expect(parsed("GET / HTTP/1.1\r\nHost: a\r\n\r\n") != parsed("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n").map {
            var request = $0
            request.headers.removeLast()
            return request
        }, "equal heads but for what was read from a removed field: not equal")
        let close = try #require(parsed("GET / HTTP/1.1\r\nconnection: keep-alive\r\nCONNECTION: close\r\nHost: a\r\n\r\n"))
        #expect(!close.keepAlive && close.hostCount == 1 && close.hostIsValid && !close.framesBody)
        let old = try #require(parsed("GET / HTTP/1.0\r\nConnection: close, keep-alive\r\n\r\n"))
        #expect(old.keepAlive && old.hostCount == 0)
        let body = try #require(parsed("POST / HTTP/1.1\r\nHost: a\r\nHost: b\r\ncontent-length: 3\r\n\r\n"))
        #expect(body.framesBody && !body.hostIsValid && body.bodyLength() == .success(3))
        #expect(HTTPRequest.parse(Array("GET  / HTTP/1.1\r\n\r\n".utf8)[...]) == .failure(status: 400))
        #expect(HTTPRequest.parse(Array("GET / HTTP/1.1 x\r\n\r\n".utf8)[...]) == .failure(status: 400))
        #expect(HTTPRequest.parse(Array("GET /\u{e9} HTTP/1.1\r\nHost: a\r\n\r\n".utf8)[...]) != .failure(status: 400), "UTF-8 is taken")
        let notUTF8: [UInt8] = Array("GET /".utf8) + [0xff] + Array(" HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
        #expect(HTTPRequest.parse(notUTF8[...]) == .failure(status: 400))
    }
}
