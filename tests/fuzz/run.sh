#!/bin/sh
# The long fuzzing campaign: builds libdetourd and every harness with clang
# (libFuzzer, ASan, UBSan) in $FUZZ_OUT (default tests/out/fuzz), runs each
# for FUZZ_SECONDS (default 60) starting from its corpus in
# tests/fuzz/corpus/NAME, and with FUZZ_MERGE=1 merges the new inputs that add
# coverage back into that corpus (then commit the small ones: make check
# replays every file there). Needs clang and libclang-rt-dev (Debian).
# Usage: tests/fuzz/run.sh [http_parse|chunked|config|redirect|probe_http|statefile ...]
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
out=${FUZZ_OUT:-$top/tests/out/fuzz}
secs=${FUZZ_SECONDS:-60}
command -v clang >/dev/null || { echo "clang not found (apt-get install clang libclang-rt-dev)"; exit 77; }
[ -x "$top/configure" ] || (cd "$top" && ./autogen.sh)
san="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
b="$out/build"
mkdir -p "$b"
if [ ! -f "$b/Makefile" ]; then
    (cd "$b" && "$top/configure" CC=clang CFLAGS="-g -O1 -fsanitize=fuzzer-no-link $san" \
        --without-systemd >"$b/configure.log" 2>&1) || { tail -n 20 "$b/configure.log"; exit 1; }
fi
make -s -C "$b" libdetourd.la >"$b/make.log" 2>&1 || { tail -n 40 "$b/make.log"; exit 1; }
libs="$(pkg-config --libs libevent libevent_openssl libevent_pthreads openssl yaml-0.1) -lm -pthread"
targets=${*:-http_parse chunked config redirect probe_http statefile}
for t in $targets; do
    # shellcheck disable=SC2086
    clang -g -O1 -std=gnu11 -fsanitize=fuzzer $san -I"$top/src" -I"$b" \
        -o "$out/fuzz_$t" "$top/tests/fuzz/fuzz_$t.c" "$b/.libs/libdetourd.a" $libs
    corpus="$top/tests/fuzz/corpus/$t"
    work="$out/corpus_$t"
    mkdir -p "$work"
    echo "fuzzing $t for ${secs}s"
    "$out/fuzz_$t" -max_total_time="$secs" -max_len=4096 -timeout=5 -rss_limit_mb=2048 \
        "$work" "$corpus" >"$out/fuzz_$t.log" 2>&1 || { tail -n 40 "$out/fuzz_$t.log"; exit 1; }
    tail -n 1 "$out/fuzz_$t.log"
    if [ "${FUZZ_MERGE:-0}" = 1 ]; then
        before=$(ls "$corpus" | wc -l)
        "$out/fuzz_$t" -merge=1 -max_len=4096 "$corpus" "$work" >"$out/merge_$t.log" 2>&1 ||
            { tail -n 20 "$out/merge_$t.log"; exit 1; }
        echo "$t: corpus $before -> $(ls "$corpus" | wc -l) files"
    fi
done
