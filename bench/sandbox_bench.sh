#!/usr/bin/env bash
# Sandbox costs, measured with the real CLI and QEMU:
#  1. time from `sandgate run -d` to a ready guest agent (wall clock, and the
#     supervisor's own figure from QEMU's start), REPS times;
#  2. host memory per sandbox beyond guest RAM: QEMU's private memory
#     (RssAnon: TCG's translation cache, device state) and file pages,
#     virtiofsd and the supervisor (its proxy included), next to the guest
#     RAM QEMU holds (RssShmem: memfd pages the guest touched);
#  3. proxied connection rate from inside the guest (each connection passes
#     the guest agent, its virtio-serial port and the supervisor) against the
#     same client (one python3 process) on the proxy's socket from the host,
#     in the same run.
#
#   bench/sandbox_bench.sh        Environment: SANDGATE (binary), REPS (default 5), CONNS (default 50)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
sg=${SANDGATE:-$here/build/release/cli/sandgate}
reps=${REPS:-5}
conns=${CONNS:-50}
export SANDGATE_HOME=${SANDGATE_HOME:-$here/build/bench-home}
ws=$(mktemp -d)
origin_pid=""
cleanup() {
  for n in $(seq "$reps"); do "$sg" rm -f "bench$n" >/dev/null 2>&1 || true; done
  [ -n "$origin_pid" ] && kill "$origin_pid" 2>/dev/null
  rm -rf "$ws"
}
trap cleanup EXIT
now_ms() { date +%s%3N; }
status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

echo "== time to a ready agent ($reps runs, $(nproc) host cores)"
echo "run  wall_ms  supervisor_ready_ms  accel"
for n in $(seq "$reps"); do
  t0=$(now_ms)
  "$sg" run -d --name "bench$n" "$ws" >/dev/null
  t1=$(now_ms)
  st=$("$sg" ls --json | python3 -c "import json,sys; s=[x for x in json.load(sys.stdin) if x['name']=='bench$n'][0]; print(s['ready_ms'], s['accel'])")
  echo "$n  $((t1 - t0))  $st"
  [ "$n" -lt "$reps" ] && "$sg" rm -f "bench$n" >/dev/null
done

echo
echo "== host memory of one idle sandbox (KiB; guest RAM $("$sg" run --help | sed -n 's/.*--memory MIB.*default \([0-9]*\).*/\1/p') MiB)"
read -r qemu vfs sup < <("$sg" ls --json | python3 -c "import json,sys; s=[x for x in json.load(sys.stdin) if x['name']=='bench$reps'][0]; print(s['qemu_pid'], s['virtiofsd_pid'], s['pid'])")
echo "process     VmRSS  RssAnon  RssFile  RssShmem(guest RAM touched)"
for p in "qemu $qemu" "virtiofsd $vfs" "supervisor $sup"; do
  set -- $p
  printf '%-10s  %s  %s  %s  %s\n' "$1" "$(status_kib "$2" VmRSS)" "$(status_kib "$2" RssAnon)" \
    "$(status_kib "$2" RssFile)" "$(status_kib "$2" RssShmem)"
done
priv=$(( $(status_kib "$qemu" RssAnon) + $(status_kib "$vfs" RssAnon) + $(status_kib "$sup" RssAnon) ))
echo "beyond guest RAM, private (RssAnon of all three): $priv KiB"

echo
echo "== proxied connections per second: $conns sequential GETs, one python3 client process"
python3 -m http.server 0 --bind 127.0.0.1 >"$ws/origin.log" 2>&1 &
origin_pid=$!
port=""
for _ in $(seq 50); do
  port=$(sed -n 's/.*port \([0-9]*\).*/\1/p' "$ws/origin.log" | head -1)
  [ -n "$port" ] && break
  sleep 0.1
done
"$sg" network proxy "bench$reps" --allow-host "localhost:$port" >/dev/null
# The same client both sides: N connections, each one GET read to the end,
# timed inside the client (its start-up is not counted). The guest dials
# the proxy address; the host, the sandbox's proxy socket.
client='import socket, sys, time
family, addr, n, port = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
req = ("GET http://localhost:%s/ HTTP/1.0\r\n\r\n" % port).encode()
t = time.perf_counter()
for _ in range(n):
    s = socket.socket(socket.AF_UNIX if family == "unix" else socket.AF_INET)
    s.connect(addr if family == "unix" else (addr, 3128))
    s.sendall(req)
    while s.recv(65536):
        pass
    s.close()
print(round((time.perf_counter() - t) * 1000))'
guest_ms=$("$sg" exec "bench$reps" python3 -c "$client" inet 10.0.2.100 "$conns" "$port")
host_ms=$(python3 -c "$client" unix "$SANDGATE_HOME/sandboxes/bench$reps/proxy.sock" "$conns" "$port")
awk -v g="$guest_ms" -v h="$host_ms" -v n="$conns" 'BEGIN {
  printf "guest: %d in %d ms = %.1f/s   host (same client, same proxy socket): %d in %d ms = %.1f/s   guest/host = %.2f\n",
         n, g, n * 1000 / g, n, h, n * 1000 / h, h / g }'
