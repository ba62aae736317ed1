"""Shared helpers for detourd's Python benchmarks (failover, checks):
building the daemon, free loopback ports, CPU accounting from /proc, and a
controllable loopback backend. Traffic stays on 127.0.0.1."""

import os
import socket
import subprocess
import sys
import threading
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(TOP, "bench", "out")
TICK = os.sysconf("SC_CLK_TCK")


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def detourd_binary():
    """$DETOURD, or an -O2 build in bench/out/build (shared with bench/run)."""
    if os.environ.get("DETOURD"):
        return os.environ["DETOURD"]
    build = os.path.join(OUT, "build")
    os.makedirs(build, exist_ok=True)
    with open(os.path.join(OUT, "build.log"), "ab") as lf:
        if not os.access(os.path.join(TOP, "configure"), os.X_OK):
            subprocess.check_call(["./autogen.sh"], cwd=TOP, stdout=lf, stderr=lf)
        if not os.path.exists(os.path.join(build, "Makefile")):
            subprocess.check_call([os.path.join(TOP, "configure"), "CFLAGS=-O2"],
                                  cwd=build, stdout=lf, stderr=lf)
        subprocess.check_call(["make", "-j2", "detourd"], cwd=build, stdout=lf, stderr=lf)
    return os.path.join(build, "detourd")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def cpu_seconds(pid):
    """utime+stime of a process (all its threads) in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_port(port, timeout=10.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


class Backend:
    """A tiny HTTP backend on 127.0.0.1 whose failure mode can be switched:
    'ok' answers every request with 200 "ok"; 'closed' closes the listening
    socket (connections are refused); 'blackhole' accepts and never answers."""

    def __init__(self, port):
        self.port = port
        self.mode = "ok"
        self.lsock = None
        self.held = []
        self.lock = threading.Lock()
        self._open()

    def _open(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(512)
        self.lsock = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, s):
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            if self.mode == "blackhole":
                with self.lock:
                    self.held.append(c)
                continue
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c):
        try:
            c.settimeout(2)
            data = b""
            while b"\r\n\r\n" not in data and len(data) < 65536:
                d = c.recv(4096)
                if not d:
                    break
                data += d
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        except OSError:
            pass
        finally:
            c.close()

    def set_mode(self, mode):
        if mode == self.mode:
            return
        if self.mode == "closed":
            self._open()
        if mode == "closed":
            # shutdown() wakes the thread blocked in accept(); close() alone
            # would leave the port listening until the next connection
            try:
                self.lsock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.lsock.close()
        if self.mode == "blackhole":
            with self.lock:
                for c in self.held:
                    c.close()
                self.held = []
        self.mode = mode


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
