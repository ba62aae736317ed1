#!/usr/bin/env python3
"""Drives headless Chromium through the DevTools protocol on a pipe
(--remote-debugging-pipe: no port, no WebSocket), in real time: pages that
hold a stream open (EventSource) never let --virtual-time-budget end, and
--dump-dom without it dumps before the scripts ran.

usage: cdp.py [options] CHROMIUM_COMMAND... -- URL

options (before the command), done in the order given:
  --size WxH         the viewport (default 1280x800); WxHm: a phone's
                     (mobile, touch)
  --stage EXPR FILE  wait until the JavaScript EXPR is true in the page, then
                     create FILE; a stage that times out skips the stages
                     after it, not the rest
  --js EXPR          run EXPR in the page (a click, say)
  --reload           load the page again
  --dom FILE         the page's DOM (outerHTML) to FILE
  --eval EXPR FILE   JSON.stringify(EXPR) to FILE
  --png FILE         a screenshot of the viewport to FILE
  --png-full FILE    a screenshot of the whole page to FILE
  --timeout S        for each stage (default 20, times $TIMEOUT_SCALE)

Exit status: 0 every stage passed; 1 a stage timed out (the DOM and the
rest are written all the same); 2 Chromium failed."""

import base64
import fcntl
import json
import os
import subprocess
import sys
import time

SCALE = float(os.environ.get("TIMEOUT_SCALE") or 1)


def main(argv):
    acts, timeout = [], 20.0
    while argv and argv[0].startswith("--") and argv[0] != "--":
        o = argv.pop(0)
        if o in ("--stage", "--eval"):
            acts.append((o, argv.pop(0), argv.pop(0)))
        elif o in ("--dom", "--js", "--png", "--png-full", "--size"):
            acts.append((o, argv.pop(0)))
        elif o == "--reload":
            acts.append((o,))
        elif o == "--timeout":
            timeout = float(argv.pop(0))
        else:
            sys.exit("unknown option " + o)
    k = argv.index("--")
    cmd, url = argv[:k], argv[k + 1]

    # the child's fd 3 is what it reads, fd 4 what it writes; our ends high
    # up so that the dup2s below cannot clobber them
    def high(fd):
        h = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(fd)
        return h

    to_r, to_w = map(high, os.pipe())
    from_r, from_w = map(high, os.pipe())

    def child():
        os.dup2(to_r, 3)
        os.dup2(from_w, 4)
        os.set_inheritable(3, True)
        os.set_inheritable(4, True)

    p = subprocess.Popen(cmd + ["--remote-debugging-pipe", "about:blank"], preexec_fn=child,
                         close_fds=False, stdin=subprocess.DEVNULL)
    os.close(to_r)
    os.close(from_w)
    buf, nid = b"", [0]
    deadline_all = time.monotonic() + 60 * SCALE

    def call(method, params=None, session=None):
        nonlocal buf
        nid[0] += 1
        msg = {"id": nid[0], "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(to_w, json.dumps(msg).encode() + b"\0")
        while True:
            while b"\0" not in buf:
                if time.monotonic() > deadline_all:
                    raise RuntimeError("no answer to " + method)
                chunk = os.read(from_r, 65536)
                if not chunk:
                    raise RuntimeError("Chromium closed the pipe")
                buf += chunk
            raw, buf = buf.split(b"\0", 1)
            m = json.loads(raw)
            if m.get("id") == nid[0]:
                if "error" in m:
                    raise RuntimeError("%s: %s" % (method, m["error"]))
                return m.get("result", {})

    rc = 0
    try:
        tid = call("Target.createTarget", {"url": "about:blank"})["targetId"]
        sid = call("Target.attachToTarget", {"targetId": tid, "flatten": True})["sessionId"]
        def size(spec):
            mobile = spec.endswith("m")
            w, h = map(int, spec.rstrip("m").split("x"))
            call("Emulation.setDeviceMetricsOverride",
                 {"width": w, "height": h, "deviceScaleFactor": 1, "mobile": mobile}, sid)
            call("Emulation.setTouchEmulationEnabled", {"enabled": mobile}, sid)

        size("1280x800")
        call("Page.navigate", {"url": url}, sid)

        def js(expr):
            r = call("Runtime.evaluate", {"expression": expr, "returnByValue": True}, sid)
            return r.get("result", {}).get("value")

        def shot(path, full):
            params = {"format": "png"}
            if full:
                m = call("Page.getLayoutMetrics", {}, sid)["cssContentSize"]
                params.update(captureBeyondViewport=True,
                              clip={"x": 0, "y": 0, "width": m["width"], "height": m["height"], "scale": 1})
            with open(path, "wb") as f:
                f.write(base64.b64decode(call("Page.captureScreenshot", params, sid)["data"]))

        for a in acts:
            if a[0] == "--stage":
                if rc:
                    continue
                end = time.monotonic() + timeout * SCALE
                while not js("(function () { try { return !!(%s); } catch (e) { return false; } })()" % a[1]):
                    if time.monotonic() > end:
                        print("stage timed out: " + a[1], file=sys.stderr)
                        rc = 1
                        break
                    time.sleep(0.02)
                if not rc:
                    open(a[2], "w").close()
            elif a[0] == "--eval":
                with open(a[2], "w") as f:
                    f.write(json.dumps(js("(function () { try { return (%s); } catch (e) { return String(e); } })()" % a[1])) + "\n")
            elif a[0] == "--js":
                js(a[1])
            elif a[0] == "--reload":
                call("Page.reload", {}, sid)
            elif a[0] == "--size":
                size(a[1])
            elif a[0] == "--dom":
                with open(a[1], "w", encoding="utf-8") as f:
                    f.write(js("document.documentElement.outerHTML") or "")
            else:
                shot(a[1], a[0] == "--png-full")
        try:
            call("Browser.close")
        except RuntimeError:
            pass
    except (RuntimeError, OSError, ValueError) as e:
        print("cdp: %s" % e, file=sys.stderr)
        rc = 2
    try:
        p.wait(10 * SCALE)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    return rc


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
