#!/usr/bin/env bash
# Sets up sandgate and runs its main job on the bundled default policy.
#
# Until sandboxes land (`sandgate run WORKSPACE`), the main job is the policy
# engine and the proxy: validate the default policy, show how it decides the
# requests an agent typically makes and why, then run the proxy on it and send
# it a request it blocks.
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/build.sh
sg=build/release/cli/sandgate
policy=config/default-policy.yaml

"$sg" policy check "$policy"
show() {
  echo
  echo "\$ sandgate policy explain $policy $*"
  "$sg" policy explain "$policy" "$@" && echo "(exit 0: allowed)" || echo "(exit $?: denied)"
}
show api.anthropic.com:443 --addr 160.79.104.10
show registry.npmjs.org:443
show pastebin.com:443
show github.com:22
show metadata.google.internal:80 --addr 169.254.169.254
show 0x7f.1:8080

# The proxy itself, on the default policy: a request the policy blocks gets a
# 403 that names the rule and the fix (decided before any DNS lookup).
# Its network log goes to a folder of this run's own.
log=$(mktemp)
netlog=$(mktemp -d)
"$sg" proxy --config "$policy" --listen 127.0.0.1:0 --log "$netlog/log/network.jsonl" \
  --log-key "$netlog/keys/log.key" >"$log" 2>&1 &
pid=$!
trap 'kill "$pid" 2>/dev/null; rm -rf "$log" "$netlog"' EXIT
port=""
for _ in $(seq 50); do
  port=$(sed -n 's/.*listening on 127.0.0.1:\([0-9]*\).*/\1/p' "$log")
  [ -n "$port" ] && break
  sleep 0.1
done
echo
echo "\$ sandgate proxy --config $policy --listen 127.0.0.1:$port &"
echo "\$ curl -x http://127.0.0.1:$port http://pastebin.com/"
curl -sS -i -x "http://127.0.0.1:$port" http://pastebin.com/

# Every decision is in the network log, hash-chained: stop the proxy, then
# read and verify it.
kill -TERM "$pid"
wait "$pid" || true
echo
echo "\$ sandgate network log"
"$sg" network log --log "$netlog/log/network.jsonl"
echo
echo "\$ sandgate network log verify"
"$sg" network log verify --log "$netlog/log/network.jsonl" --key "$netlog/keys/log.key"
