#!/bin/bash
# The Debian package: builds it with scripts/package (lintian included) and
# checks what it installs: the paths in `dpkg-deb -c`, the conffile in
# `dpkg-deb -I`, the units' paths, what the maintainer scripts do with the
# service and the socket, and, unpacked into a scratch root with `dpkg -x`,
# that the installed detourd accepts the installed example config.
# Prints TAP; exits non-zero if any test failed.
#
# Usage: tests/package.sh [DEB]   (with DEB: check that .deb, build nothing)
# Needs dpkg-dev; scripts/package installs what the build needs.
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/detourd-package-test.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM

N=0
FAILED=0
WHY=
diag() {
    local line
    while IFS= read -r line; do printf '# %s\n' "$line"; done <<<"$*"
}
why() { WHY=$*; return 1; }
t() { # DESC FUNC...
    local desc=$1
    shift
    WHY=
    N=$((N + 1))
    if "$@"; then
        printf 'ok %d - %s\n' "$N" "$desc"
    else
        FAILED=$((FAILED + 1))
        printf 'not ok %d - %s\n' "$N" "$desc"
        [ -n "$WHY" ] && diag "$WHY"
    fi
    return 0
}

version=$(sed -n 's/^AC_INIT(\[[^]]*\], *\[\([^]]*\)\].*/\1/p' "$top/configure.ac")
arch=$(dpkg --print-architecture)
root=$work/root
deb=${1:-}

build() {
    local t0=$SECONDS before after
    before=$(git -C "$top" status --porcelain --ignored 2>/dev/null)
    if ! "$top/scripts/package" "$work/out" >"$work/package.log" 2>&1; then
        cat "$work/package.log"
        why "scripts/package failed (its output is above)"
        return 1
    fi
    deb=$(tail -n 1 "$work/package.log")
    diag "scripts/package took $((SECONDS - t0)) s; lintian said:"
    diag "$(sed -n '/^lintian:$/,/^lintian: clean/p' "$work/package.log")"
    [ -f "$deb" ] || why "scripts/package printed '$deb', which is no file" || return 1
    # built out of tree: the checkout is as it was (where it is a git checkout)
    after=$(git -C "$top" status --porcelain --ignored 2>/dev/null)
    [ "$before" = "$after" ] || why "scripts/package changed the checkout:"$'\n'"$(diff <(echo "$before") <(echo "$after"))"
}

name() {
    [ "$(basename "$deb")" = "detourd_${version}_${arch}.deb" ] ||
        why "built $(basename "$deb"), want detourd_${version}_${arch}.deb (configure.ac's version)"
}

contents() {
    local list path missing=""
    list=$(dpkg-deb -c "$deb") || { why "dpkg-deb -c failed"; return 1; }
    for path in ./usr/sbin/detourd ./etc/detourd/detourd.yaml \
        ./usr/share/man/man8/detourd.8.gz ./usr/share/man/man5/detourd.yaml.5.gz \
        ./usr/share/doc/detourd/copyright; do
        grep -q " $path\$" <<<"$list" || missing="$missing $path"
    done
    for path in detourd.service detourd.socket; do
        grep -Eq " \./(usr/)?lib/systemd/system/$path\$" <<<"$list" ||
            missing="$missing (usr/)lib/systemd/system/$path"
    done
    [ -z "$missing" ] || why "missing from the .deb:$missing"$'\n'"$list"
    grep -Eq '^-rwxr-xr-x root/root .* \./usr/sbin/detourd$' <<<"$list" ||
        why "usr/sbin/detourd is not an executable owned by root: $(grep detourd\$ <<<"$list")"
}

conffile() {
    local conffiles want
    conffiles=$(dpkg-deb -I "$deb" conffiles 2>&1 | sort)
    want=$(printf '%s\n' /etc/detourd/detourd.yaml /etc/logrotate.d/detourd | sort)
    [ "$conffiles" = "$want" ] || why "conffiles: got '$conffiles', want '$want'"
}

# the access log's rotation, as the README prints it, and logrotate reads it
logrotate_conf() {
    local f=$root/etc/logrotate.d/detourd out
    [ -f "$f" ] || why "no /etc/logrotate.d/detourd" || return 1
    grep -q '^/var/log/detourd/access.log {' "$f" || why "it does not rotate /var/log/detourd/access.log" || return 1
    grep -q 'systemctl kill -s USR1 detourd.service' "$f" || why "no SIGUSR1 in postrotate" || return 1
    grep -qx '    nocreate' "$f" || why "no nocreate (detourd creates the new file itself)" || return 1
    if command -v logrotate >/dev/null 2>&1; then
        out=$(logrotate --debug --state "$work/logrotate.state" "$f" 2>&1) ||
            why "logrotate --debug rejects it:"$'\n'"$out"
    fi
}

# Everything the installed README points to is installed beside it: its
# relative links (docs/fleet.md, bench/README.md, ...) and the docs/ and
# bench/ paths it names, uncompressed, so links resolve.
docs_complete() {
    local doc=$root/usr/share/doc/detourd readme missing="" p
    readme=$doc/README.md
    [ -f "$readme" ] || why "no /usr/share/doc/detourd/README.md (compressed?)" || return 1
    while IFS= read -r p; do
        [ -e "$doc/$p" ] || missing="$missing $p"
    done < <({
        grep -oE '\]\([^)#:]+\)' "$readme" | sed 's/^](//; s/)$//'
        grep -oE '`(docs|bench)/[^` ]+`' "$readme" | tr -d '`' | grep -v '/$'
    } | sort -u | grep -vE '^bench/(run|checks|failover|reload|idle|fleet|acme)$')
    [ -z "$missing" ] || why "the README or docs/ name what the package lacks:$missing"
}

# the daemon links jansson (the fleet's and the state file's JSON): the
# package depends on its library, as dpkg-shlibdeps found it
depends() {
    local dep
    dep=$(dpkg-deb -f "$deb" Depends) || why "dpkg-deb -f failed" || return 1
    grep -q 'libjansson4' <<<"$dep" || why "Depends lacks libjansson4: $dep"
}

# man pages name the configured paths, not placeholders (PREFIX alone is
# the fleet's etcd key prefix, a word of the docs, not a build path)
man_paths() {
    local m8 m5
    m8=$(zcat "$root/usr/share/man/man8/detourd.8.gz") || why "no detourd.8" || return 1
    m5=$(zcat "$root/usr/share/man/man5/detourd.yaml.5.gz") || why "no detourd.yaml.5" || return 1
    ! grep -nE 'SYSCONFDIR|PREFIX/(lib|share|etc|s?bin)|@[a-z_]+@' <<<"$m8$m5" >"$work/man.bad" ||
        why "placeholders in the man pages:"$'\n'"$(head -n 5 "$work/man.bad")" || return 1
    grep -q '/etc/detourd/detourd\.yaml' <<<"$m8" || why "detourd(8) does not name /etc/detourd/detourd.yaml" || return 1
    grep -qE '/(usr/)?lib/systemd/system' <<<"$m8" || why "detourd(8) does not name the unit directory"
}

unpack() {
    dpkg -x "$deb" "$root" || why "dpkg -x failed"
}

units() {
    local dir svc sock
    dir=$(dirname "$(find "$root" -name detourd.service)")
    svc=$dir/detourd.service
    sock=$dir/detourd.socket
    if [ ! -f "$svc" ] || [ ! -f "$sock" ]; then
        why "no units in the scratch root"
        return 1
    fi
    grep -qx 'ExecStart=/usr/sbin/detourd -c /etc/detourd/detourd.yaml' "$svc" ||
        why "detourd.service: $(grep ^ExecStart= "$svc")"$'\n'"want ExecStart=/usr/sbin/detourd -c /etc/detourd/detourd.yaml" || return 1
    grep -qx 'ExecStartPre=/usr/sbin/detourd -t -c /etc/detourd/detourd.yaml' "$svc" ||
        why "detourd.service: $(grep ^ExecStartPre= "$svc")" || return 1
    ! grep -n '@[a-z]*@' "$svc" "$sock" >"$work/subst" || why "unsubstituted: $(cat "$work/subst")" || return 1
    # the shipped socket matches the shipped config, so enabling it works as is
    if ! grep -qx 'ListenStream=127.0.0.1:8080' "$sock" ||
        ! grep -qx '  - "127.0.0.1:8080"' "$root/etc/detourd/detourd.yaml"; then
        why "detourd.socket's ListenStream= and the example's listen: differ"
    fi
}

# has SCRIPT FIXED-STRING WHAT: SCRIPT (of the unpacked control area) has it
has() {
    grep -qF -- "$2" "$work/control/$1" || why "$1 does not $3 (no \"$2\"):"$'\n'"$(cat "$work/control/$1")"
}

maintscripts() {
    dpkg-deb -e "$deb" "$work/control" || { why "dpkg-deb -e failed"; return 1; }
    # the service: enabled and started on install, restarted after an upgrade
    has postinst "deb-systemd-helper enable 'detourd.service'" "enable detourd.service" || return 1
    has postinst "_dh_action=restart" "restart after an upgrade" || return 1
    has postinst "deb-systemd-invoke \$_dh_action 'detourd.service'" "start detourd.service" || return 1
    # the socket: enabled again only where the operator had enabled it,
    # never started or restarted by the package
    has postinst "deb-systemd-helper debian-installed 'detourd.socket'" "leave detourd.socket to the operator" || return 1
    if grep -n "deb-systemd-invoke.*detourd\.socket" "$work/control/postinst"; then
        why "postinst starts or restarts detourd.socket"
        return 1
    fi
    # removal stops both, the socket first; purge forgets both
    has prerm "deb-systemd-invoke stop detourd.socket" "stop detourd.socket" || return 1
    has prerm "deb-systemd-invoke stop 'detourd.service'" "stop detourd.service" || return 1
    local order
    order=$(grep -o "stop '*detourd\.[a-z]*" "$work/control/prerm" | tr -d "'" | tr '\n' ' ')
    [ "$order" = "stop detourd.socket stop detourd.service " ] ||
        why "prerm stops in the order '$order', want the socket first" || return 1
    has postrm "deb-systemd-helper purge 'detourd.service'" "purge detourd.service" || return 1
    has postrm "deb-systemd-helper purge 'detourd.socket'" "purge detourd.socket"
}

installed_binary() {
    local out
    out=$("$root/usr/sbin/detourd" -V 2>&1)
    [[ $out == *"$version"* ]] || why "detourd -V: '$out', want $version" || return 1
    # the default config path is the packaged one (configured --sysconfdir=/etc)
    out=$("$root/usr/sbin/detourd" -h 2>&1)
    [[ $out == *"default /etc/detourd/detourd.yaml"* ]] ||
        why "detourd -h does not name /etc/detourd/detourd.yaml as the default:"$'\n'"$out"
}

example_config() {
    local out
    out=$("$root/usr/sbin/detourd" -t -c "$root/etc/detourd/detourd.yaml" 2>&1) ||
        why "detourd -t on the installed example config failed:"$'\n'"$out" || return 1
    diag "$out"
}

start=$SECONDS
if [ -n "$deb" ]; then
    printf 'ok 1 - scripts/package builds the package, lintian clean # SKIP checking %s\n' "$deb"
    N=1
else
    t "scripts/package builds the package, lintian clean" build
fi
if [ -f "$deb" ]; then
    t "named detourd_${version}_${arch}.deb" name
    t "dpkg-deb -c: binary, man pages, units, config, copyright" contents
    t "Depends: libjansson4 (and the other libraries, by dpkg-shlibdeps)" depends
    t "dpkg-deb -I: the conffiles are /etc/detourd/detourd.yaml and /etc/logrotate.d/detourd" conffile
    t "dpkg -x into a scratch root" unpack
    t "units run /usr/sbin/detourd on /etc/detourd/detourd.yaml; socket matches the example" units
    t "maintainer scripts: service enabled, started, restarted on upgrade; socket left to the operator" maintscripts
    t "installed detourd: version $version, default config /etc/detourd/detourd.yaml" installed_binary
    t "installed detourd -t accepts the installed example config" example_config
    t "/etc/logrotate.d/detourd rotates the access log (logrotate --debug accepts it)" logrotate_conf
    t "the docs the installed README links to and names are installed beside it" docs_complete
    t "the man pages name /etc/detourd/detourd.yaml and the unit directory, no placeholders" man_paths
fi
printf '1..%d\n' "$N"
diag "took $((SECONDS - start)) s"
[ "$FAILED" -eq 0 ] || { diag "$FAILED of $N tests failed"; exit 1; }
