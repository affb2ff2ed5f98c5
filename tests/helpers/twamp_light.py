#!/usr/bin/env python3
"""A TWAMP-light peer for the tests, written from RFC 5357's packet diagrams (4.1.2 and
4.2.1, unauthenticated mode), not from udpkit's code: the field-by-field view a router or
a probe in the field has.

  twamp_light.py reflector READY_FILE [LEN]
                                          answer every packet of 14 bytes or more with a
                                          41-byte reflector packet (no padding; cut to LEN,
                                          38 as twampy's), until killed; the port goes to
                                          READY_FILE
  twamp_light.py sender HOST PORT COUNT   send COUNT 14-byte packets, one every 20 ms,
                                          and print a JSON line of what came back
  twamp_light.py cos HOST PORT DSCP1      send one STAMP packet (44 bytes) with a Class of
                                          Service TLV asking for DSCP1 (RFC 8972 4.4) and
                                          print the reply's TOS byte and its TLV, as JSON
Loopback only.
"""

import json
import socket
import struct
import sys
import time

NTP_UNIX = 2_208_988_800


def ntp_now():
    t = time.time()
    return ((int(t) + NTP_UNIX) << 32) | int((t % 1) * (1 << 32))


def reflector(ready, length=41):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    with open(ready + ".tmp", "w") as f:
        f.write(str(s.getsockname()[1]))
    import os
    os.rename(ready + ".tmp", ready)
    own = 0
    while True:
        data, peer = s.recvfrom(65535)
        received = ntp_now()
        if len(data) < 14:
            continue
        seq, ts, err = struct.unpack("!IQH", data[:14])
        # Sequence Number, Timestamp, Error Estimate, MBZ (2), Receive Timestamp, Sender
        # Sequence Number, Sender Timestamp, Sender Error Estimate, MBZ (2), Sender TTL.
        reply = struct.pack("!IQHHQIQHHB", own, ntp_now(), 0x8001, 0, received, seq, ts,
                            err, 0, 255)
        assert len(reply) == 41
        own += 1
        s.sendto(reply[:length], peer)


def sender(host, port, count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(0.5)
    sent = {}
    back = {}
    lengths = set()
    for seq in range(count):
        ts = ntp_now()
        sent[seq] = ts
        s.sendto(struct.pack("!IQH", seq, ts, 0x8001), (host, port))
        try:
            while True:
                data, _ = s.recvfrom(65535)
                if len(data) < 41:
                    continue
                sseq, sts = struct.unpack("!IQ", data[24:36])
                if sent.get(sseq) == sts:
                    back[sseq] = data
                    lengths.add(len(data))
                if sseq == seq:
                    break
        except socket.timeout:
            pass
        time.sleep(0.02)
    ttl = sorted({d[40] for d in back.values()})
    print(json.dumps({"sent": count, "received": len(back), "lengths": sorted(lengths),
                      "ttl": ttl}))


def cos(host, port, dscp1):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_RECVTOS, 1)
    s.settimeout(2)
    base = struct.pack("!IQHH", 1, ntp_now(), 0x8001, 7) + bytes(28)
    # Flags (U set, as a sender sets it), Type 4, Length 4; DSCP1 in the first six bits,
    # then DSCP2, EC2 and RP left zero for the reflector, EC1 and the rest zero.
    tlv = struct.pack("!BBH", 0x80, 4, 4) + bytes([dscp1 << 2, 0, 0, 0])
    s.sendto(base + tlv, (host, port))
    data, anc, _, _ = s.recvmsg(2048, socket.CMSG_SPACE(4))
    tos = None
    for level, kind, value in anc:
        if level == socket.IPPROTO_IP and kind == socket.IP_TOS:
            tos = value[0]
    value = data[48:52]
    print(json.dumps({"len": len(data), "tos": tos, "flags": data[44],
                      "rp": value[1] & 3, "dscp1": value[0] >> 2}))


if __name__ == "__main__":
    if sys.argv[1] == "reflector":
        reflector(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 41)
    elif sys.argv[1] == "sender":
        sender(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        cos(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
