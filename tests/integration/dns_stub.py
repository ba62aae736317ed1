#!/usr/bin/env python3
"""A tiny DNS server for the ACME tests (UDP, 127.0.0.1 only).

    dns_stub.py serve PORT [--nx PREFIX]... [--max-seconds S]
        Answers every A query with 127.0.0.1, every other type (AAAA
        included) with an empty NOERROR answer, and a name that starts with
        one of the --nx prefixes (default: "nx" and "c.") with NXDOMAIN.
        One line per query on stderr. Ends on SIGTERM, or after S seconds
        (default 3600: never outlives a hung test by much).

    dns_stub.py query PORT NAME [A|AAAA] [--timeout S]
        One query; prints the rcode name and the addresses of the answer
        ("NOERROR 127.0.0.1", "NOERROR", "NXDOMAIN"); exit 0 if an answer
        came, 2 if none did within S seconds (default 1).

An ACME server (pebble -dnsserver 127.0.0.1:PORT) resolves the names it
validates here, so its http-01 and tls-alpn-01 connections go to the
daemon on loopback.
"""
import os
import random
import signal
import socket
import struct
import sys
import time

QTYPE = {"A": 1, "AAAA": 28}
RCODE = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


def read_name(msg, pos):
    """(name, position after it) of the uncompressed name at pos."""
    labels = []
    while True:
        if pos >= len(msg):
            raise ValueError("name runs past the message")
        n = msg[pos]
        if n == 0:
            return ".".join(labels), pos + 1
        if n & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(msg[pos + 1:pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n


def encode_name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        if label:
            out += bytes([len(label)]) + label.encode("ascii")
    return out + b"\0"


def answer(msg, nx_prefixes):
    """The response to the query msg, and a line for the log."""
    qid, flags, qd = struct.unpack("!HHH", msg[:6])
    rd = flags & 0x0100
    if qd != 1 or flags & 0x8000:
        hdr = struct.pack("!HHHHHH", qid, 0x8000 | rd | 1, 0, 0, 0, 0)  # FORMERR
        return hdr, "FORMERR"
    name, pos = read_name(msg, 12)
    qtype, qclass = struct.unpack("!HH", msg[pos:pos + 4])
    question = msg[12:pos + 4]
    lname = name.lower()
    rcode, answers = 0, b""
    if any(lname.startswith(p) for p in nx_prefixes):
        rcode = 3
    elif qtype == 1 and qclass == 1:
        answers = (b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4)
                   + socket.inet_aton("127.0.0.1"))
    hdr = struct.pack("!HHHHHH", qid, 0x8000 | 0x0400 | rd | 0x0080 | rcode,
                      1, 1 if answers else 0, 0, 0)
    return hdr + question + answers, "%s type %d: %s%s" % (
        name, qtype, RCODE[rcode], " 127.0.0.1" if answers else "")


def serve(argv):
    port, nx, max_s, i = int(argv[0]), [], 3600.0, 1
    while i < len(argv):
        if argv[i] == "--nx":
            nx.append(argv[i + 1].lower())
        elif argv[i] == "--max-seconds":
            max_s = float(argv[i + 1])
        else:
            sys.exit("dns_stub: unknown option " + argv[i])
        i += 2
    if not nx:
        nx = ["nx", "c."]
    signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    end = time.monotonic() + max_s
    while time.monotonic() < end:
        s.settimeout(max(0.1, min(5.0, end - time.monotonic())))
        try:
            msg, peer = s.recvfrom(4096)
        except socket.timeout:
            continue
        try:
            resp, line = answer(msg, nx)
        except (ValueError, struct.error) as e:
            sys.stderr.write("dns_stub: bad query from %s: %s\n" % (peer, e))
            continue
        s.sendto(resp, peer)
        sys.stderr.write("dns_stub: %s\n" % line)
        sys.stderr.flush()


def query(argv):
    port, name, qtype, timeout = int(argv[0]), argv[1], "A", 1.0
    rest = argv[2:]
    while rest:
        if rest[0] == "--timeout":
            timeout = float(rest[1])
            rest = rest[2:]
        else:
            qtype = rest[0].upper()
            rest = rest[1:]
    qid = random.randint(0, 0xFFFF)
    msg = (struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + encode_name(name)
           + struct.pack("!HH", QTYPE[qtype], 1))
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    end = time.monotonic() + timeout
    try:
        s.sendto(msg, ("127.0.0.1", port))
        while True:
            s.settimeout(max(0.01, end - time.monotonic()))
            resp = s.recv(4096)
            if len(resp) >= 12 and struct.unpack("!H", resp[:2])[0] == qid:
                break
    except OSError:
        return 2
    _, flags, qd, an = struct.unpack("!HHHH", resp[:8])
    pos = 12
    for _ in range(qd):
        _, pos = read_name(resp, pos)
        pos += 4
    addrs = []
    for _ in range(an):
        if resp[pos] & 0xC0 == 0xC0:
            pos += 2
        else:
            _, pos = read_name(resp, pos)
        rtype, _, _, rdlen = struct.unpack("!HHIH", resp[pos:pos + 10])
        pos += 10
        if rtype == 1 and rdlen == 4:
            addrs.append(socket.inet_ntoa(resp[pos:pos + 4]))
        elif rtype == 28 and rdlen == 16:
            addrs.append(socket.inet_ntop(socket.AF_INET6, resp[pos:pos + 16]))
        pos += rdlen
    print(" ".join([RCODE.get(flags & 0xF, str(flags & 0xF))] + addrs))
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in ("serve", "query"):
        sys.exit(__doc__)
    sys.exit(serve(sys.argv[2:]) if sys.argv[1] == "serve" else query(sys.argv[2:]))
