#!/usr/bin/env python3
"""A tiny real HTTP/1.1 backend for detourd's integration tests.

usage: backend.py PORT NAME

Listens on 127.0.0.1:PORT and answers every method with 200 and a JSON body
    {"method", "path", "body_len", "body_sha256", "region": NAME}
so a test can check that the method and the body arrived intact after a
client followed detourd's redirect. Exits 0 on SIGTERM or SIGINT.
Python 3 standard library only.
"""
import hashlib
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 64 * 1024 * 1024  # refuse anything larger (a test bug, not a use)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "detourd-test-backend"
    timeout = 30  # a stuck client must not pin a thread forever

    def log_message(self, fmt, *args):  # quiet: tests read stdout/stderr
        pass

    def _read_chunked(self):
        data = bytearray()
        while True:
            line = self.rfile.readline(4098)
            if not line:
                raise ValueError("eof in chunk size")
            size = int(line.split(b";", 1)[0].strip() or b"x", 16)
            if size == 0:
                while True:  # trailers up to the blank line
                    t = self.rfile.readline(4098)
                    if t in (b"\r\n", b"\n", b""):
                        return bytes(data)
            if len(data) + size > MAX_BODY:
                raise ValueError("body too large")
            data += self.rfile.read(size)
            self.rfile.readline(4)  # CRLF after the chunk data

    def _read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if te.lower() == "chunked":
            return self._read_chunked()
        n = int(self.headers.get("Content-Length", "0") or "0")
        if n < 0 or n > MAX_BODY:
            raise ValueError("bad Content-Length")
        return self.rfile.read(n) if n else b""

    def _handle(self):
        try:
            body = self._read_body()
        except (ValueError, OSError) as e:
            msg = ("bad request: %s\n" % e).encode()
            self.send_response(400)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(msg)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(msg)
            self.close_connection = True
            return
        out = json.dumps({
            "method": self.command,
            "path": self.path,
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "region": self.server.region_name,
        }, sort_keys=True).encode() + b"\n"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    def __getattr__(self, name):
        # BaseHTTPRequestHandler dispatches to do_<METHOD>: answer them all
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)


def main():
    if len(sys.argv) != 3:
        sys.stderr.write("usage: backend.py PORT NAME\n")
        return 2
    port = int(sys.argv[1])
    ThreadingHTTPServer.allow_reuse_address = True
    ThreadingHTTPServer.daemon_threads = True
    srv = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    srv.region_name = sys.argv[2]

    def stop(signum, frame):
        # shutdown() waits for serve_forever() to return: not from its thread
        threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        srv.serve_forever(poll_interval=0.1)
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
