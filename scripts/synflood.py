#!/usr/bin/env python3
"""Sends COUNT TCP SYNs to ADDRESS:PORT from spoofed sources, each with Linux's SYN options (MSS,
SACK-permitted, timestamps, window scale) and a correct checksum, through a raw socket: run it inside the
test's network namespace only.

Usage: synflood.py ADDRESS PORT COUNT [RATE [SOURCES [SEED]]]
  RATE     SYNs a second (0, the default: as fast as it can)
  SOURCES  FIRST-LAST, the addresses to spoof (default 198.18.0.1-198.19.255.254, RFC 2544's benchmarking
           range, off any test link; an on-link range makes the server really send its SYN-ACKs). An IPv6
           ADDRESS takes IPv6 sources (default 2001:2::1-2001:2::ffff, RFC 5180's benchmarking range).
Prints "sent N SYNs in S s".
"""
import ipaddress
import random
import socket
import struct
import sys
import time


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def main() -> None:
    address, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    rate = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    ipv6 = ipaddress.ip_address(address).version == 6
    default_sources = "2001:2::1-2001:2::ffff" if ipv6 else "198.18.0.1-198.19.255.254"
    first, last = (sys.argv[5] if len(sys.argv) > 5 else default_sources).split("-")
    low, high = int(ipaddress.ip_address(first)), int(ipaddress.ip_address(last))
    rng = random.Random(int(sys.argv[6]) if len(sys.argv) > 6 else 15)
    destination = ipaddress.ip_address(address).packed
    # A raw IPPROTO_RAW socket takes the whole packet, header included, for either family (Linux).
    sender = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    # MSS 1460, SACK permitted, timestamps, NOP, window scale 7: 20 bytes, as Linux sends them.
    options_head = struct.pack("!BBH", 2, 4, 1460) + struct.pack("!BB", 4, 2) + struct.pack("!BB", 8, 10)
    options_tail = struct.pack("!I", 0) + struct.pack("!BBBB", 1, 3, 3, 7)
    start = time.monotonic()
    sent = 0
    for index in range(count):
        if rate and index % 500 == 0:
            ahead = start + index / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        source = ipaddress.ip_address(rng.randint(low, high)).packed
        source_port = rng.randrange(1024, 65536)
        sequence = rng.getrandbits(32)
        options = options_head + struct.pack("!I", rng.getrandbits(32)) + options_tail
        header = struct.pack("!HHIIBBHHH", source_port, port, sequence, 0, (5 + len(options) // 4) << 4, 0x02, 64240, 0, 0) + options
        if ipv6:
            pseudo = source + destination + struct.pack("!I3xB", len(header), socket.IPPROTO_TCP)
        else:
            pseudo = source + destination + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(header))
        tcp_sum = checksum(pseudo + header)
        header = header[:16] + struct.pack("!H", tcp_sum) + header[18:]
        if ipv6:
            ip = struct.pack("!IHBB16s16s", 6 << 28, len(header), socket.IPPROTO_TCP, 64, source, destination)
        else:
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(header), rng.getrandbits(16), 0x4000, 64, socket.IPPROTO_TCP, 0,
                             source, destination)
            ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        try:
            sender.sendto(ip + header, (address, 0))
            sent += 1
        except OSError:
            time.sleep(0.001)  # the device's queue is full: let it drain
    print("sent %d SYNs in %.1f s" % (sent, time.monotonic() - start))


if __name__ == "__main__":
    main()
