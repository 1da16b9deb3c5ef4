// libFuzzer target for the wire formats, compiled together with IOTCPCommon's sources by
// scripts/fuzz.sh. Besides "never trap", it checks an oracle: whatever parses emits to bytes that
// parse to the same fields.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzWire(_ start: UnsafePointer<UInt8>?, _ count: Int) -> Int32 {
    let bytes = UnsafeRawBufferPointer(start: start, count: count)
    if let ethernet = try? EthernetFrameView(bytes) {
        if let arp = try? ARPRepr(parsing: ethernet.payload) { checkARP(arp) }
        if let packet = try? IPv4PacketView(ethernet.payload, verifyChecksum: false) {
            checkIPv4(IPv4Repr(packet))
            if let (icmp, data) = try? ICMPv4Repr.parse(packet.payload) { checkICMP(icmp, data) }
            if let segment = try? TCPSegmentView(packet.payload), let tcp = try? TCPRepr(segment) {
                checkTCP(tcp, payload: segment.payload)
            }
        }
        checkIPv6Packet(ethernet.payload)
    }
    // The raw input as each layer on its own, so short inputs reach the deep parsers too.
    if let segment = try? TCPSegmentView(bytes), let tcp = try? TCPRepr(segment) { checkTCP(tcp, payload: segment.payload) }
    _ = try? IPv4PacketView(bytes)
    checkIPv6Packet(bytes)
    _ = try? TCPOptions(parsing: bytes)
    _ = try? NeighborDiscoveryOptions(parsing: bytes)
    checkIPv6Text(bytes)
    return 0
}

func checkTCP(_ tcp: TCPRepr, payload: UnsafeRawBufferPointer) {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 60 + payload.count, alignment: 8)
    defer { buffer.deallocate() }
    let length: Int
    do {
        length = try tcp.emitHeader(into: buffer)
    } catch .optionsTooLong {
        // Linux's layout pads with NOPs, so options packed tighter by a sender may not fit once re-laid.
        return
    } catch {
        fatalError("emit failed for a parsed segment: \(error)")
    }
    let whole = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<(length + payload.count)])
    if !payload.isEmpty { UnsafeMutableRawBufferPointer(rebasing: whole[length...]).copyMemory(from: payload) }
    TCPRepr.fillChecksum(segment: whole, source: IPv4Address(1, 2, 3, 4), destination: IPv4Address(5, 6, 7, 8))
    guard let view = try? TCPSegmentView(UnsafeRawBufferPointer(whole)), let again = try? TCPRepr(view) else {
        fatalError("an emitted segment does not parse")
    }
    precondition(again == tcp, "TCP fields changed through emit and parse")
    precondition(view.payload.elementsEqual(payload), "TCP data changed")
    precondition(view.checksumVerifies(source: IPv4Address(1, 2, 3, 4), destination: IPv4Address(5, 6, 7, 8)))
}

func checkIPv4(_ ip: IPv4Repr) {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 20 + ip.payloadLength, alignment: 8)
    defer { buffer.deallocate() }
    buffer.initializeMemory(as: UInt8.self, repeating: 0)
    guard (try? ip.emit(into: buffer)) != nil, let view = try? IPv4PacketView(UnsafeRawBufferPointer(buffer)) else {
        fatalError("an emitted IPv4 header does not parse")
    }
    precondition(IPv4Repr(view) == ip, "IPv4 fields changed through emit and parse")
}

func checkARP(_ arp: ARPRepr) {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: ARPRepr.length, alignment: 8)
    defer { buffer.deallocate() }
    guard (try? arp.emit(into: buffer)) != nil, let again = try? ARPRepr(parsing: UnsafeRawBufferPointer(buffer)) else {
        fatalError("an emitted ARP packet does not parse")
    }
    precondition(again == arp)
}

func checkICMP(_ icmp: ICMPv4Repr, _ data: UnsafeRawBufferPointer) {
    let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 8 + data.count, alignment: 8)
    defer { buffer.deallocate() }
    guard (try? icmp.emit(into: buffer, data: data)) != nil,
          let (again, againData) = try? ICMPv4Repr.parse(UnsafeRawBufferPointer(buffer))
    else { fatalError("an emitted ICMP message does not parse") }
    precondition(again == icmp && againData.elementsEqual(data))
}

/// An IPv6 packet: the extension-header walk stays inside the packet, the fixed header round-trips, and
/// ICMPv6 (with Neighbor Discovery options) and TCP over it round-trip with the IPv6 pseudo-header.
func checkIPv6Packet(_ bytes: UnsafeRawBufferPointer) {
    let packet: IPv6PacketView
    do throws(WireError) {
        packet = try IPv6PacketView(bytes)
    } catch {
        if let problem = error.ipv6ParameterProblem {
            precondition(problem.pointer >= 0 && problem.pointer < min(bytes.count, 40 + 0xFFFF), "a pointer outside the packet")
        }
        return
    }
    precondition(packet.upperLayerOffset >= 40 && packet.upperLayerOffset <= packet.bytes.count)
    precondition(packet.upperLayerPointer < packet.upperLayerOffset)
    let ip = IPv6Repr(packet)
    let header = UnsafeMutableRawBufferPointer.allocate(byteCount: 40, alignment: 8)
    defer { header.deallocate() }
    guard (try? ip.emit(into: header)) != nil else { fatalError("a parsed IPv6 header does not emit") }
    precondition(header.elementsEqual(packet.bytes[0..<40]), "the IPv6 fixed header changed through parse and emit")
    let source = ip.source, destination = ip.destination
    if packet.upperLayerProtocol == .icmpv6,
       let (icmp, data) = try? ICMPv6Repr.parse(packet.upperLayer, source: source, destination: destination, verifyChecksum: false) {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: icmp.fixedLength + data.count, alignment: 8)
        defer { buffer.deallocate() }
        guard (try? icmp.emit(into: buffer, data: data, source: source, destination: destination)) != nil,
              let (again, againData) = try? ICMPv6Repr.parse(UnsafeRawBufferPointer(buffer), source: source, destination: destination)
        else { fatalError("an emitted ICMPv6 message does not parse") }
        precondition(again == icmp && againData.elementsEqual(data), "ICMPv6 fields changed through emit and parse")
        if let options = try? NeighborDiscoveryOptions(parsing: data) {
            let encoded = UnsafeMutableRawBufferPointer.allocate(byteCount: options.encodedLength, alignment: 8)
            defer { encoded.deallocate() }
            guard (try? options.emit(into: encoded)) != nil,
                  let reread = try? NeighborDiscoveryOptions(parsing: UnsafeRawBufferPointer(encoded))
            else { fatalError("emitted Neighbor Discovery options do not parse") }
            precondition(reread == options)
        }
        _ = icmp.isValidNeighborDiscovery(hopLimit: ip.hopLimit, source: source, destination: destination, options: .init())
    }
    if packet.upperLayerProtocol == .tcp, let segment = try? TCPSegmentView(packet.upperLayer), let tcp = try? TCPRepr(segment) {
        checkTCP(tcp, payload: segment.payload)
    }
}

/// Text read as an IPv6 address prints canonically, and the canonical text reads back to the same address.
func checkIPv6Text(_ bytes: UnsafeRawBufferPointer) {
    guard bytes.count <= 64 else { return }
    let text = String(decoding: bytes, as: UTF8.self)
    guard let address = IPv6Address(text) else { return }
    precondition(IPv6Address(address.description) == address, "canonical text does not read back")
}
