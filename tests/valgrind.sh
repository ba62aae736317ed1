#!/bin/bash
# Runs the integration tests with every detourd under valgrind (memcheck).
# Fails if a test fails, if valgrind reports an error or a definite/indirect
# leak in any daemon, or if a daemon exited with valgrind's error status 99.
# Exit 77 (automake's "skipped") when valgrind is not installed.
#
# usage: DETOURD=_build/detourd tests/valgrind.sh
#        (TOP_BUILDDIR, TIMEOUT_SCALE and KEEP_TMP are honoured too)

: "${TOP_BUILDDIR:=.}"
DETOURD=${DETOURD:-$TOP_BUILDDIR/detourd}
HERE=$(cd "$(dirname "$0")" && pwd)

if ! command -v valgrind >/dev/null 2>&1; then
    echo "valgrind.sh: valgrind not found; skipping" >&2
    exit 77
fi
if [ ! -x "$DETOURD" ]; then
    echo "valgrind.sh: detourd binary not found: $DETOURD (set DETOURD)" >&2
    exit 1
fi
# a libtool wrapper script is not what we want to run under valgrind
if head -c 2 "$DETOURD" | grep -q '#!' && [ -x "$(dirname "$DETOURD")/.libs/$(basename "$DETOURD")" ]; then
    DETOURD=$(dirname "$DETOURD")/.libs/$(basename "$DETOURD")
fi

OUT=${IT_OUT:-$TOP_BUILDDIR/tests/out}
mkdir -p "$OUT" || exit 1
VG_DIR=$(mktemp -d "$OUT/vg.XXXXXX") || exit 1
VG_DIR=$(cd "$VG_DIR" && pwd)
# shellcheck disable=SC2317 # called by the trap
cleanup() {
    if [ "${KEEP_TMP:-0}" = 1 ]; then
        echo "valgrind.sh: logs kept in $VG_DIR" >&2
    else
        rm -rf "$VG_DIR"
        rmdir "$OUT" 2>/dev/null
    fi
}
trap cleanup EXIT

export DETOURD TOP_BUILDDIR
export TIMEOUT_SCALE=${TIMEOUT_SCALE:-5}
export DETOURD_EXIT_LOG=$VG_DIR/exits
export DETOURD_WRAPPER="valgrind --error-exitcode=99 --leak-check=full \
--show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
--track-fds=no -q --log-file=$VG_DIR/vg.%p.log"
: >"$DETOURD_EXIT_LOG"

status=0
# the suites that exercise the request path, health checks, the lifecycle
# (threads, reload), TLS and the event sinks (child processes, the HTTPS
# client, the SSE streams) and the fleet (the etcd client, its TLS and
# streams), and ACME (its client, storage, the challenges on the serving
# threads); VALGRIND_SUITES overrides the list
for suite in ${VALGRIND_SUITES:-run.sh checks.sh lifecycle.sh tls.sh events_exec.sh events_webhook.sh events_sse.sh fleet.sh acme.sh}; do
    "$HERE/integration/$suite" | tee "$VG_DIR/$suite.tap"
    rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ] || grep -q '^not ok' "$VG_DIR/$suite.tap"; then
        echo "valgrind.sh: FAIL: $suite failed under valgrind (exit $rc)"
        status=1
    fi
    if ! grep -q '^1\.\.[0-9]' "$VG_DIR/$suite.tap"; then
        echo "valgrind.sh: FAIL: $suite printed no TAP plan"
        status=1
    fi
done

# with -q valgrind writes only what it reports: any non-empty log is a finding
for log in "$VG_DIR"/vg.*.log; do
    [ -e "$log" ] || continue
    if [ -s "$log" ]; then
        echo "valgrind.sh: FAIL: valgrind reported (${log##*/}):"
        sed 's/^/    /' "$log"
        status=1
    fi
done
if awk '$3 == 99 { found = 1; print "valgrind.sh: FAIL: " $1 " (pid " $2 ") exited 99 (valgrind errors)" }
        END { exit !found }' "$DETOURD_EXIT_LOG"; then
    status=1
fi
nlogs=$(find "$VG_DIR" -name 'vg.*.log' | wc -l)
if [ "$nlogs" -eq 0 ]; then
    echo "valgrind.sh: FAIL: no valgrind logs: was detourd run under valgrind at all?"
    status=1
fi

if [ "$status" -eq 0 ]; then
    echo "valgrind.sh: PASS ($nlogs detourd processes under valgrind, no errors, no leaks)"
fi
exit "$status"
