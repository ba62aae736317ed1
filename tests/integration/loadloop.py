#!/usr/bin/env python3
"""A client load for reload tests: THREADS threads send requests to
127.0.0.1:PORT until STOPFILE exists (or LIMIT seconds pass), half on one
keep-alive connection each, half on a new connection per request. Prints
"requests N failures F" and the first failures; exits 0.

usage: loadloop.py PORT STOPFILE [THREADS] [LIMIT] [STARTEDFILE]

STARTEDFILE, if given, is created once every thread has had an answer, so a
test can start reloading when the clients are known to be running."""

import http.client
import os
import sys
import threading
import time

port, stopfile = int(sys.argv[1]), sys.argv[2]
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 4
limit = float(sys.argv[4]) if len(sys.argv) > 4 else 60
started = sys.argv[5] if len(sys.argv) > 5 else None
lock = threading.Lock()
stats = {"requests": 0, "failures": 0, "errors": []}
answered = set()
end = time.monotonic() + limit
SCALE = float(os.environ.get("TIMEOUT_SCALE") or 1)


def run(keepalive):
    conn = None
    while not os.path.exists(stopfile) and time.monotonic() < end:
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10 * SCALE)
            conn.request("GET", "/loop?k=%d" % keepalive,
                         headers={} if keepalive else {"Connection": "close"})
            r = conn.getresponse()
            r.read()
            ok = r.status == 307 and r.getheader("Location", "").endswith("/loop?k=%d" % keepalive)
            err = None if ok else "status %d location %s" % (r.status, r.getheader("Location"))
            if not keepalive or r.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
        except (OSError, http.client.HTTPException) as e:
            ok, err = False, repr(e)
            if conn:
                conn.close()
            conn = None
        with lock:
            if started and ok:
                answered.add(threading.get_ident())
                if len(answered) == threads and not os.path.exists(started):
                    open(started, "w").close()
            stats["requests"] += 1
            if not ok:
                stats["failures"] += 1
                if len(stats["errors"]) < 5:
                    stats["errors"].append(err)


ts = [threading.Thread(target=run, args=(i % 2 == 0,)) for i in range(threads)]
for t in ts:
    t.start()
for t in ts:
    t.join()
print("requests %d failures %d" % (stats["requests"], stats["failures"]))
for e in stats["errors"]:
    print("error", e)
