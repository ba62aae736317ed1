#!/usr/bin/env python3
"""A client load for reload tests: THREADS threads send requests to
127.0.0.1:PORT until STOPFILE exists (or LIMIT seconds pass), half on one
keep-alive connection each, half on a new connection per request. Prints
"requests N failures F" and the first failures; exits 0.

usage: loadloop.py PORT STOPFILE [THREADS] [LIMIT]"""

import http.client
import os
import sys
import threading
import time

port, stopfile = int(sys.argv[1]), sys.argv[2]
threads = int(sys.argv[3]) if len(sys.argv) > 3 else 4
limit = float(sys.argv[4]) if len(sys.argv) > 4 else 60
lock = threading.Lock()
stats = {"requests": 0, "failures": 0, "errors": []}
end = time.monotonic() + limit


def run(keepalive):
    conn = None
    while not os.path.exists(stopfile) and time.monotonic() < end:
        try:
            if conn is None:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
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
