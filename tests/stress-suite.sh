#!/bin/bash
# Runs the test suite N times in a row, each time on a fresh clone of the
# current HEAD, while a CPU-heavy job keeps both cores busy: a suite that
# passes here does not depend on timing. Not part of scripts/test.
#
# usage: tests/stress-suite.sh [-n N] [-t SECONDS] [-- COMMAND [ARGS...]]
#   -n N        runs (default 3)
#   -t SECONDS  limit for one run (default 3600); a run past it fails
#   COMMAND     what to run in each clone (default scripts/test)
# Environment: STRESS_CPUS (CPU hogs, default 2), KEEP=1 keeps the clones
# and logs, TMPDIR.
#
# The CPU load is stress-ng --cpu (scripts/deps stress installs it), else
# busy loops in python3. Every process started here is stopped by its PID;
# the load is bounded in time even if this script is killed. Prints a line
# per run and, last, "stress-suite: P passed, F failed"; exits non-zero if
# any run failed. Only committed work is tested (a clone of HEAD).
set -u

runs=3
limit=3600
while getopts "n:t:h" opt; do
    case $opt in
    n) runs=$OPTARG ;;
    t) limit=$OPTARG ;;
    *)
        sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'
        exit 2
        ;;
    esac
done
shift $((OPTIND - 1))
[ "${1:-}" = -- ] && shift
[ $# -gt 0 ] || set -- scripts/test
case $runs$limit in *[!0-9]*)
    echo "stress-suite: -n and -t take whole numbers" >&2
    exit 2
    ;;
esac

top=$(cd "$(dirname "$0")/.." && pwd)
head=$(git -C "$top" rev-parse HEAD) || {
    echo "stress-suite: $top is not a git checkout" >&2
    exit 2
}
work=$(mktemp -d "${TMPDIR:-/tmp}/detourd-stress.XXXXXX") || exit 2
cpus=${STRESS_CPUS:-2}
# the load outlives no run: bounded by the whole series' limit
load_secs=$((runs * limit + 60))
hogs=()
runner=

stop_pid() { # PID: TERM, then KILL if it is still there after 10 s
    local i
    kill -TERM "$1" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$1" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
}

cleanup() {
    local p
    [ -n "$runner" ] && stop_pid "$runner"
    for p in "${hogs[@]}"; do stop_pid "$p"; done
    if [ "${KEEP:-0}" = 1 ]; then
        echo "stress-suite: clones and logs kept in $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_load() {
    if command -v stress-ng >/dev/null 2>&1; then
        stress-ng --cpu "$cpus" --timeout "${load_secs}s" --quiet &
        hogs+=($!)
        echo "stress-suite: load: stress-ng --cpu $cpus (pid ${hogs[0]})"
    else
        local i
        for ((i = 0; i < cpus; i++)); do
            python3 -c 'import sys, time
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    pass' "$load_secs" &
            hogs+=($!)
        done
        echo "stress-suite: load: $cpus python3 busy loops (pids ${hogs[*]})"
    fi
}

echo "stress-suite: $runs run(s) of '$*' on fresh clones of $head, limit ${limit}s each"
start_load
passed=0 failed=0
for ((r = 1; r <= runs; r++)); do
    clone=$work/run$r
    log=$work/run$r.log
    t0=$(date +%s)
    if ! git clone -q --no-local "$top" "$clone" >"$log" 2>&1 ||
        ! git -C "$clone" checkout -q --detach "$head" >>"$log" 2>&1; then
        echo "stress-suite: run $r/$runs: FAIL (cannot clone; see below)"
        tail -n 20 "$log"
        failed=$((failed + 1))
        continue
    fi
    (cd "$clone" && exec timeout -s TERM -k 30 "$limit" "$@") </dev/null >>"$log" 2>&1 &
    runner=$!
    wait "$runner"
    rc=$?
    runner=
    secs=$(($(date +%s) - t0))
    if [ "$rc" -eq 0 ]; then
        passed=$((passed + 1))
        echo "stress-suite: run $r/$runs: PASS in ${secs}s ($(grep -E '^# (PASS|FAIL|TOTAL):' "$log" | tail -n 3 | tr -s ' ' | tr '\n' ' '))"
    else
        failed=$((failed + 1))
        why="exit $rc"
        [ "$rc" -eq 124 ] && why="over the ${limit}s limit"
        echo "stress-suite: run $r/$runs: FAIL ($why) after ${secs}s; the log's failures and end:"
        grep -E '^(not ok|FAIL:|ERROR:|valgrind.sh: FAIL|Bail out)' "$log" | head -n 40 | sed 's/^/    /'
        tail -n 30 "$log" | sed 's/^/    /'
        KEEP=1
    fi
    [ "${KEEP:-0}" = 1 ] || rm -rf "$clone"
done
echo "stress-suite: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
