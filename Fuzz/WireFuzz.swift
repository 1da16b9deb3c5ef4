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
    }
    // The raw input as each layer on its own, so short inputs reach the deep parsers too.
    if let segment = try? TCPSegmentView(bytes), let tcp = try? TCPRepr(segment) { checkTCP(tcp, payload: segment.payload) }
    _ = try? IPv4PacketView(bytes)
    _ = try? TCPOptions(parsing: bytes)
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
