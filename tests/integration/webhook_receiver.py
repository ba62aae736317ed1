#!/usr/bin/env python3
"""A webhook receiver for the events tests: a threaded HTTP server on
127.0.0.1:PORT (or each --bind address) that appends one JSON line per
request to LOG:
{"t": arrival (Unix ms, float), "end": just before the answer was sent, "method",
"path", "headers": {lowercase name: value}, "body", "sig_ok": the
X-Detourd-Signature checked with --secret (null without it), "status",
"peer": the client's address, "sni": the TLS server name it sent (null
without TLS or SNI)}.

usage: webhook_receiver.py PORT LOG [--secret S] [--fail-first N]
       [--status CODE] [--delay-ms MS] [--hang] [--tls CERT KEY]
       [--bind ADDR]...

--fail-first N  answer 500 to the first N requests, then --status
--status CODE   the answer (default 200)
--delay-ms MS   wait before answering (shows whether requests overlap)
--hang          read the request, log it, never answer (hold the connection)
--tls CERT KEY  speak HTTPS with this certificate chain and key
--bind ADDR     listen on ADDR (IPv4 or IPv6), PORT the same on each; given
                several times, on each (default 127.0.0.1)
Stops on SIGTERM."""

import hashlib
import hmac
import json
import os
import signal
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

port, logpath = int(sys.argv[1]), sys.argv[2]
opts = {"secret": None, "fail_first": 0, "status": 200, "delay": 0.0, "hang": False, "tls": None,
        "bind": []}
args = sys.argv[3:]
while args:
    a = args.pop(0)
    if a == "--secret":
        opts["secret"] = args.pop(0)
    elif a == "--fail-first":
        opts["fail_first"] = int(args.pop(0))
    elif a == "--status":
        opts["status"] = int(args.pop(0))
    elif a == "--delay-ms":
        opts["delay"] = int(args.pop(0)) / 1000.0
    elif a == "--hang":
        opts["hang"] = True
    elif a == "--tls":
        opts["tls"] = (args.pop(0), args.pop(0))
    elif a == "--bind":
        opts["bind"].append(args.pop(0))
    else:
        sys.exit("unknown option " + a)

lock = threading.Lock()
seen = [0]
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):  # quiet
        pass

    def handle_any(self):
        t = time.time() * 1000
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b""
        sig_ok = None
        if opts["secret"] is not None:
            want = "sha256=" + hmac.new(opts["secret"].encode(), body, hashlib.sha256).hexdigest()
            sig_ok = hmac.compare_digest(want, self.headers.get("X-Detourd-Signature", ""))
        with lock:
            seen[0] += 1
            k = seen[0]
        status = 500 if k <= opts["fail_first"] else opts["status"]
        rec = {"t": t, "method": self.command, "path": self.path,
               "headers": {h.lower(): v for h, v in self.headers.items()},
               "body": body.decode("utf-8", "replace"), "sig_ok": sig_ok,
               "status": None if opts["hang"] else status, "peer": self.client_address[0],
               "sni": getattr(self.connection, "sni", None)}
        if opts["hang"]:
            self.write_log(rec)
            end = time.monotonic() + 600  # bounded: never outlives a hung test by much
            while time.monotonic() < end:
                time.sleep(1)
            return
        if opts["delay"]:
            time.sleep(opts["delay"])
        out = b"ok\n"
        # recorded before the answer goes out: the next request cannot
        # arrive before it, so the log is in arrival order and the next
        # "t" is never below this "end", however the threads are scheduled
        rec["end"] = time.time() * 1000
        self.write_log(rec)
        self.send_response(status)
        self.send_header("Content-Length", str(len(out)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(out)
        self.wfile.flush()
        self.close_connection = True

    def write_log(self, rec):
        with lock, open(logpath, "a") as f:
            f.write(json.dumps(rec) + "\n")

    do_POST = do_GET = do_PUT = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Server6(Server):
    address_family = socket.AF_INET6


def sni(sock, name, ctx):  # noted on the connection for its records
    sock.sni = name


ctx = None
if opts["tls"]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*opts["tls"])
    ctx.sni_callback = sni
servers = []
for addr in opts["bind"] or ["127.0.0.1"]:  # all bound before any serves
    srv = (Server6 if ":" in addr else Server)((addr, port), Handler)
    if ctx:
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    servers.append(srv)
for srv in servers[1:]:
    threading.Thread(target=srv.serve_forever, daemon=True).start()
servers[0].serve_forever()
