#!/usr/bin/env python3
"""The attacker's tools for udpkit's tests: datagrams and ICMP errors with forged sources,
written with a raw socket (root only). Traffic goes only where the test says, which is
loopback or a host in a network namespace the test made.

  spoof.py udp --to IP:PORT --from IP[,IP...]|--from-net A.B.C. --first N --last M
               [--count N] [--size N] [--port P]
      UDP datagrams to IP:PORT, each from the next forged source (round robin).
  spoof.py spray --to IP:PORT --victim IP:PORT --mix N --count N [--size N]
      The eviction attack on a rate limiter: a datagram from the victim's address, then N
      from random sources in 127.0.0.0/8 (each in a random /24), --count times.
  spoof.py stamp --to IP:PORT --victim IP:PORT [--rounds N]
      STAMP test packets (44 bytes) to IP:PORT from the victim's address and port, one for
      every Session-Sender Identifier (0 to 65535), --rounds times: a forger spraying a
      stateful reflector in the victim's name.
  spoof.py icmp --to IP --about SRC_IP:SRC_PORT DST_IP:DST_PORT --code N [--count N]
      ICMP destination-unreachable (type 3, code N) to IP, about a UDP datagram that
      SRC_IP:SRC_PORT sent to DST_IP:DST_PORT: what a router or host would send back.

Prints how many it sent. Every loop is bounded by --count.
"""

import argparse
import socket
import struct
import sys


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    header = struct.pack(
        "!BBHHHBBH4s4s",
        0x45, 0, 20 + len(payload), 0x1234, 0, 64, proto, 0,
        socket.inet_aton(src), socket.inet_aton(dst),
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + payload


def udp(src: str, sport: int, dst: str, dport: int, data: bytes) -> bytes:
    pseudo = struct.pack("!4s4sBBH", socket.inet_aton(src), socket.inet_aton(dst), 0, 17, 8 + len(data))
    header = struct.pack("!HHHH", sport, dport, 8 + len(data), 0)
    csum = checksum(pseudo + header + data) or 0xFFFF
    return struct.pack("!HHHH", sport, dport, 8 + len(data), csum) + data


def host_port(text: str):
    host, port = text.rsplit(":", 1)
    return host, int(port)


def main() -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="what", required=True)
    u = sub.add_parser("udp")
    u.add_argument("--to", required=True)
    u.add_argument("--from", dest="sources", default="")
    u.add_argument("--from-net", default="")
    u.add_argument("--first", type=int, default=1)
    u.add_argument("--last", type=int, default=254)
    u.add_argument("--count", type=int, default=1)
    u.add_argument("--size", type=int, default=1)
    u.add_argument("--port", type=int, default=40000)
    r = sub.add_parser("spray")
    r.add_argument("--to", required=True)
    r.add_argument("--victim", required=True)
    r.add_argument("--mix", type=int, default=4)
    r.add_argument("--count", type=int, default=1)
    r.add_argument("--size", type=int, default=1)
    t = sub.add_parser("stamp")
    t.add_argument("--to", required=True)
    t.add_argument("--victim", required=True)
    t.add_argument("--rounds", type=int, default=1)
    i = sub.add_parser("icmp")
    i.add_argument("--to", required=True)
    i.add_argument("--about", nargs=2, required=True)
    i.add_argument("--code", type=int, required=True)
    i.add_argument("--count", type=int, default=1)
    args = parser.parse_args()

    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    sent = 0
    if args.what == "udp":
        dst, dport = host_port(args.to)
        sources = [s for s in args.sources.split(",") if s]
        if args.from_net:
            sources += [f"{args.from_net}{n}" for n in range(args.first, args.last + 1)]
        data = b"x" * args.size
        for n in range(args.count):
            src = sources[n % len(sources)]
            packet = ipv4(src, dst, 17, udp(src, args.port, dst, dport, data))
            raw.sendto(packet, (dst, 0))
            sent += 1
    elif args.what == "spray":
        import random
        dst, dport = host_port(args.to)
        vip, vport = host_port(args.victim)
        data = b"x" * args.size
        for _ in range(args.count):
            raw.sendto(ipv4(vip, dst, 17, udp(vip, vport, dst, dport, data)), (dst, 0))
            sent += 1
            for _ in range(args.mix):
                src = f"127.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
                sport = random.randrange(1024, 65536)
                raw.sendto(ipv4(src, dst, 17, udp(src, sport, dst, dport, data)), (dst, 0))
                sent += 1
    elif args.what == "stamp":
        dst, dport = host_port(args.to)
        vip, vport = host_port(args.victim)
        for seq in range(args.rounds):
            for ssid in range(65536):
                data = struct.pack("!IQHH", seq, 0, 0x8001, ssid) + bytes(28)
                raw.sendto(ipv4(vip, dst, 17, udp(vip, vport, dst, dport, data)), (dst, 0))
                sent += 1
    else:
        (src, sport), (dst, dport) = host_port(args.about[0]), host_port(args.about[1])
        original = ipv4(src, dst, 17, udp(src, sport, dst, dport, b"x" * 38))[:28]
        # A next-hop MTU above any real one: the kernel reports the error but keeps its route.
        body = struct.pack("!BBHHH", 3, args.code, 0, 0, 65535 if args.code == 4 else 0) + original
        body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
        # The error comes from the host the datagram was sent to (or a router on the way).
        packet = ipv4(dst, args.to, 1, body)
        for _ in range(args.count):
            raw.sendto(packet, (args.to, 0))
            sent += 1
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
