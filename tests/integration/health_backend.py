#!/usr/bin/env python3
"""A health-check target for detourd's integration tests, on 127.0.0.1.

usage: health_backend.py PORT MODEFILE [--tls CERT KEY]

Its behaviour is read from MODEFILE at every connection, so a test can
change it while detourd checks it:
  ok      200 with body "ok"
  500     500 with body "error"
  body    200 with body "nope" (an expect_body mismatch)
  hang    accept, read the request, never answer
  slow    200 "ok" after 150 ms
Exits on SIGTERM."""

import os
import signal
import socket
import ssl
import sys
import threading
import time

port, modefile = int(sys.argv[1]), sys.argv[2]
ctx = None
if len(sys.argv) > 3 and sys.argv[3] == "--tls":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[4], sys.argv[5])

signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
held = []


def mode():
    try:
        with open(modefile) as f:
            return f.read().strip() or "ok"
    except OSError:
        return "ok"


def serve(c):
    try:
        c.settimeout(5)
        if ctx:
            c = ctx.wrap_socket(c, server_side=True)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            d = c.recv(4096)
            if not d:
                return
            data += d
        m = mode()
        if m == "hang":
            held.append(c)
            return
        if m == "slow":
            time.sleep(0.15)
        status, body = {"500": ("500 Internal Server Error", b"error"),
                        "body": ("200 OK", b"nope")}.get(m, ("200 OK", b"ok"))
        c.sendall(b"HTTP/1.0 " + status.encode() + b"\r\nContent-Length: " +
                  str(len(body)).encode() + b"\r\n\r\n" + body)
        c.close()
    except (OSError, ssl.SSLError):
        try:
            c.close()
        except OSError:
            pass


s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(128)
while True:
    conn, _ = s.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
