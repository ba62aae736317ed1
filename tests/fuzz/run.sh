#!/bin/sh
# Builds the libFuzzer harnesses with clang (ASan + UBSan) and runs each for
# FUZZ_SECONDS (default 30). Needs clang and libclang-rt-dev (Debian).
# Usage: tests/fuzz/run.sh [http_parse|config ...]
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
out=${FUZZ_OUT:-$top/tests/out/fuzz}
secs=${FUZZ_SECONDS:-30}
mkdir -p "$out"
command -v clang >/dev/null || { echo "clang not found (apt-get install clang libclang-rt-dev)"; exit 77; }
[ -f "$top/autoconf.h" ] || [ -f "$out/autoconf.h" ] || : >"$out/autoconf.h"
cflags="-g -O1 -std=gnu11 -fsanitize=fuzzer,address,undefined -I$top/src -I$out $(pkg-config --cflags libevent yaml-0.1)"
libs="$(pkg-config --libs libevent yaml-0.1)"
src="$top/src"
common="$src/http_parse.c $src/redirect.c $src/config.c $src/yaml_tree.c $src/diag.c $src/route.c $src/select.c"
targets=${*:-http_parse config}
for t in $targets; do
    # shellcheck disable=SC2086
    clang $cflags -DSYSCONFDIR='"/etc"' -o "$out/fuzz_$t" "$top/tests/fuzz/fuzz_$t.c" $common $libs
    mkdir -p "$out/corpus_$t"
    seeds="$top/tests/fuzz/seeds_$t"
    [ -d "$seeds" ] && cp -n "$seeds"/* "$out/corpus_$t/" 2>/dev/null || true
    echo "fuzzing $t for ${secs}s"
    "$out/fuzz_$t" -max_total_time="$secs" -max_len=4096 -timeout=5 "$out/corpus_$t" 2>"$out/fuzz_$t.log" ||
        { tail -n 40 "$out/fuzz_$t.log"; exit 1; }
    tail -n 1 "$out/fuzz_$t.log"
done
