import Testing
import IOTCPCommon

@Suite("Addresses of either family (IPAddress)")
struct IPAddressTests {
    @Test("IPv4 is kept IPv4-mapped: one family at a time, printed as each family's text, IPv6 bracketed in URLs")
    func families() throws {
        let v4 = IPAddress(IPv4Address(10, 77, 0, 2))
        #expect(v4.isIPv4 && v4.ipv4 == IPv4Address(10, 77, 0, 2) && v4.ipv6 == nil)
        #expect(v4.bits == IPv6Address("::ffff:10.77.0.2") && v4.headerLength == 20)
        #expect(v4.description == "10.77.0.2" && v4.urlHost == "10.77.0.2")
        let v6 = try #require(IPAddress("fd77::2"))
        #expect(!v6.isIPv4 && v6.ipv4 == nil && v6.ipv6 == IPv6Address("fd77::2") && v6.headerLength == 40)
        #expect(v6.description == "fd77::2" && v6.urlHost == "[fd77::2]")
        #expect(IPAddress("10.77.0.2") == v4 && IPAddress("::ffff:10.77.0.2") == v4, "the mapped text is the IPv4 address")
        #expect(IPAddress("10.77.0") == nil && IPAddress("fd77::2::1") == nil && IPAddress("") == nil)
        #expect(Set([v4, v6, IPAddress(IPv4Address(10, 77, 0, 2))]).count == 2)
    }

    @Test("the pseudo-header is the family's: IPv4's 12 bytes or IPv6's 40, as each address type sums it")
    func pseudoHeader() {
        func sum<A: PseudoHeaderAddress>(_ source: A, _ destination: A) -> UInt16 {
            var sum = InternetChecksum()
            A.addPseudoHeader(to: &sum, source: source, destination: destination, protocol: .tcp, length: 1234)
            return sum.foldedSum
        }
        let a4 = IPv4Address(10, 77, 0, 2), b4 = IPv4Address(10, 77, 0, 1)
        let a6 = IPv6Address("fd77::2")!, b6 = IPv6Address("fd77::1")!
        #expect(sum(IPAddress(a4), IPAddress(b4)) == sum(a4, b4))
        #expect(sum(IPAddress(a6), IPAddress(b6)) == sum(a6, b6))
        #expect(sum(a6, b6) != sum(IPv6Address(ipv4Mapped: a4), IPv6Address(ipv4Mapped: b4)))
    }
}
