#!/usr/bin/env bash
# Runs the side-by-side peers benchmark (direct, squid, tinyproxy) with
# sandgate added, on the harness's own policy: its 1000 host rules and its
# private-CIDR deny list, translated to sandgate's policy YAML.
#
#   bench/peers.sh PEERS_DIR     (the harness folder: run.sh, conf/)
# Environment: SANDGATE (binary, default build/release/cli/sandgate),
# SANDGATE_PORT (default 13129), SANDGATE_ARGS (more `sandgate proxy` options,
# e.g. "--busy-poll 50"), OUT_DIR (results; default $TMPDIR/peers-results),
# and every knob run.sh takes.
set -euo pipefail
peers=${1:?usage: bench/peers.sh PEERS_DIR}
here=$(cd "$(dirname "$0")/.." && pwd)
sg=${SANDGATE:-$here/build/release/cli/sandgate}
port=${SANDGATE_PORT:-13129}
origin_port=${ORIGIN_PORT:-18080}
source_port=${SOURCE_PORT:-18081}
work=$(mktemp -d)
pid=""
trap 'if [ -n "$pid" ]; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; fi; rm -rf "$work"' EXIT

# The harness's allowlist: ".d" is the domain and its subdomains, "h" one host;
# the benchmark allows HTTP and CONNECT to the origin's two ports only.
{
  echo "version: 1"
  echo "mode: deny"
  echo "allow_hosts:"
  grep -v '^#' "$peers/conf/allow_hosts.txt" | while read -r h; do
    [ -z "$h" ] && continue
    case "$h" in .*) h="**$h" ;; esac
    printf '  - "%s:%s"\n  - "%s:%s"\n' "$h" "$origin_port" "$h" "$source_port"
  done
  # Ranges sandgate does not already block by default.
  echo "block_cidrs:"
  for c in $(grep -v '^#' "$peers/conf/deny_cidrs.txt"); do
    "$sg" policy explain <(printf 'version: 1\nmode: allow\n') "[${c%/*}]" >/dev/null 2>&1 \
      || "$sg" policy explain <(printf 'version: 1\nmode: allow\n') "${c%/*}" >/dev/null 2>&1 \
      || continue
    echo "  - $c"
  done
} > "$work/policy.yaml"
"$sg" policy check "$work/policy.yaml"

# Logging on, as deployed (and as the peers log), into this run's folder.
read -r -a more <<< "${SANDGATE_ARGS:-}"
taskset -c 1 "$sg" proxy --config "$work/policy.yaml" --listen "127.0.0.1:$port" --threads 1 \
  --log "$work/log/network.jsonl" --log-key "$work/keys/log.key" "${more[@]}" > "$work/proxy.out" &
pid=$!
# Ready when it says it listens; a proxy that did not start (the port taken,
# say) must not leave the run to whatever else answers on the port.
for _ in $(seq 100); do
  grep -q "listening on" "$work/proxy.out" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if ! grep -q "listening on" "$work/proxy.out" 2>/dev/null || ! kill -0 "$pid" 2>/dev/null; then
  pid=""
  echo "peers.sh: sandgate did not start (see above)" >&2
  exit 1
fi
# Results never go into the harness folder (it may be shared and read-only).
OUT_DIR=${OUT_DIR:-${TMPDIR:-/tmp}/peers-results} EXTRA_PROXY="127.0.0.1:$port" EXTRA_NAME=sandgate \
  EXTRA_PID=$pid "$peers/run.sh"
