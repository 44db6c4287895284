#!/usr/bin/env bash
# Builds the Debian package from a build folder, installs it on this machine,
# runs the proxy the way its systemd unit does (the unit itself when systemd
# is PID 1, else the unit's own command line as an unprivileged user in the
# folders the unit would make), proxies requests through it, reloads it, and
# purges the package, checking that nothing is left.
#
#   deploy/package-test.sh [BUILD_DIR]   (default build/release; needs root)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/release}
unit=/lib/systemd/system/sandgate-proxy.service
fail() { echo "package-test: FAILED: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "package-test: needs root (it installs a package); skipped"; exit 0; }
if [ "$(dpkg-query -W -f='${Status}' sandgate 2>/dev/null || true)" = "install ok installed" ]; then
  echo "package-test: a sandgate package is already installed here; not touching it (skipped)"
  exit 0
fi

echo "-- cpack"
(cd "$build" && cpack -G DEB >/dev/null)
debs=("$build"/sandgate_*.deb)
deb=${debs[-1]}
# (captured first: grep -q leaving early would fail the pipe under pipefail)
info=$(dpkg-deb -I "$deb")
# Depends comes from the binaries' shared libraries (glibc, libidn2 and
# OpenSSL; the rest is linked in, see CMakeLists.txt).
grep -q 'Depends:.*libssl3' <<<"$info" || fail "no shared-library dependencies in $deb"
pids=()
work=$(mktemp -d)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
  if dpkg-query -W sandgate >/dev/null 2>&1; then apt-get purge -y -q sandgate >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

echo "-- install $(basename "$deb")"
apt-get install -y -q "$PWD/$deb" >/dev/null
for f in /usr/bin/sandgate /usr/libexec/sandgate/sandgate-agent /usr/share/sandgate/guest/build-image.sh \
         /etc/sandgate/policy.yaml "$unit" /usr/share/bash-completion/completions/sandgate \
         /usr/share/doc/sandgate/examples/github-org.yaml; do
  [ -e "$f" ] || fail "$f is not installed"
done
man -w sandgate-run >/dev/null || fail "no man page for sandgate-run"
/usr/bin/sandgate policy check /etc/sandgate/policy.yaml /usr/share/doc/sandgate/examples/*.yaml >/dev/null ||
  fail "a shipped policy does not pass policy check"

echo "-- a sandbox from the installed files"
# The installed sandgate finds its agent, image script and default policy
# under /usr; SANDGATE_IMAGES (test.sh sets it) reuses the test image cache.
chmod 700 "$work"  # QEMU, run as a user of its own, needs no way in: it is handed what it uses
mkdir -p "$work/ws" "$work/home"
out=$(SANDGATE_HOME="$work/home" /usr/bin/sandgate run "$work/ws" -- sh -c 'echo in-guest > made.txt; uname -r' 2>&1) ||
  fail "sandgate run from the package: $out"
[ "$(cat "$work/ws/made.txt")" = in-guest ] || fail "the installed sandbox did not write the workspace: $out"
getent passwd sandgate-vm >/dev/null || fail "the package did not create the sandgate-vm user"
qemu=$(SANDGATE_HOME="$work/home" /usr/bin/sandgate ls --json |
  python3 -c 'import json, sys; s = json.load(sys.stdin)[0]; print(s["qemu_user"], s["qemu_group"])')
# A user of its own (from 0x70000000), in the package's group.
[ "${qemu% *}" -ge 1879048192 ] && [ "${qemu#* }" = sandgate-vm ] ||
  fail "QEMU ran as $qemu, not a user of its own in group sandgate-vm: $out"

echo "-- systemd-analyze"
systemd-analyze verify "$unit" "${unit%.service}.socket" || fail "systemd-analyze verify"
exposure=$(systemd-analyze security --offline=true --no-pager "$unit" | sed -n 's/.*Overall exposure level for .*: \([0-9.]*\).*/\1/p')
echo "exposure level: $exposure"
awk -v e="$exposure" 'BEGIN { exit !(e != "" && e < 2.0) }' || fail "exposure $exposure is not under 2.0"

# An origin on loopback for the proxied requests. (Its log is made first:
# the background shell may not have opened it when the loop first reads it,
# and a failed read would end this script under set -e.)
: >"$work/origin.log"
python3 -m http.server 0 --bind 127.0.0.1 --directory /usr/share/doc/sandgate >"$work/origin.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do
  port=$(sed -n 's/.*port \([0-9]*\).*/\1/p;T;q' "$work/origin.log")
  [ -n "$port" ] && break
  sleep 0.1
done
[ -n "$port" ] || fail "the origin did not start"

echo "-- start the proxy as its unit does"
if [ -d /run/systemd/system ]; then
  systemctl start sandgate-proxy.service
  pid() { systemctl show -p MainPID --value sandgate-proxy.service; }
else
  # No systemd here: the unit's ExecStart as an unprivileged user, in the
  # log and state folders the unit's LogsDirectory= and StateDirectory= make.
  cmd=$(sed -n '/^ExecStart=/,/[^\\]$/p' "$unit" | sed 's/^ExecStart=//; s/\\$//' | tr -s ' \n' ' ')
  install -d -o nobody -m 0750 /var/log/sandgate
  install -d -o nobody -m 0700 /var/lib/sandgate
  setpriv --reuid=nobody --regid=nogroup --clear-groups --no-new-privs $cmd >"$work/proxy.log" 2>&1 &
  pids+=($!)
  proxy_pid=$!
  pid() { echo "$proxy_pid"; }
fi
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:9128/healthz && break; sleep 0.1; done
curl -sf http://127.0.0.1:9128/healthz >/dev/null || fail "the proxy did not come up: $(cat "$work/proxy.log" 2>/dev/null)"

# The shipped policy blocks loopback: a 403 that names the rule.
code=$(curl -s -o "$work/body" -w '%{http_code}' -x http://127.0.0.1:3128 "http://127.0.0.1:$port/")
[ "$code" = 403 ] || fail "expected 403 from the shipped policy, got $code"
grep -q 'sandgate network proxy' "$work/body" || fail "the 403 body does not say how to allow it"

echo "-- reload"
cp /etc/sandgate/policy.yaml "$work/policy.orig"
printf 'version: 1\nmode: deny\nallow_hosts:\n  - 127.0.0.1:%s\nallow_cidrs:\n  - 127.0.0.1/32\n' "$port" \
  > /etc/sandgate/policy.yaml
kill -HUP "$(pid)"
for _ in $(seq 50); do
  code=$(curl -s -o /dev/null -w '%{http_code}' -x http://127.0.0.1:3128 "http://127.0.0.1:$port/policy.md")
  [ "$code" = 200 ] && break
  sleep 0.1
done
[ "$code" = 200 ] || fail "after the reload the request got $code, not 200"
grep -q '"type":"policy"' /var/log/sandgate/network.jsonl || fail "no policy record in the log"
[ "$(grep -c '"event":"reload"' /var/log/sandgate/network.jsonl)" -ge 1 ] || fail "the reload is not in the log"
/usr/bin/sandgate network log --log /var/log/sandgate/network.jsonl --quiet >/dev/null || fail "network log"
cp "$work/policy.orig" /etc/sandgate/policy.yaml

echo "-- stop and purge"
if [ -d /run/systemd/system ]; then systemctl stop sandgate-proxy.service; else kill -TERM "$(pid)"; wait "$(pid)" || true; fi
/usr/bin/sandgate network log verify --log /var/log/sandgate/network.jsonl --key /var/lib/sandgate/log.key >/dev/null ||
  fail "the log does not verify after a clean stop"
apt-get purge -y -q sandgate >/dev/null
if getent passwd sandgate-vm >/dev/null; then fail "the sandgate-vm user is left after purge"; fi
for f in /usr/bin/sandgate /usr/libexec/sandgate /usr/share/sandgate /etc/sandgate "$unit" /var/log/sandgate \
         /var/lib/sandgate /usr/share/man/man1/sandgate.1.gz; do
  [ ! -e "$f" ] || fail "$f is left after purge"
done
echo "package-test: ok (exposure $exposure)"
