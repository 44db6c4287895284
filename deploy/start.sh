#!/usr/bin/env bash
# Sets up sandgate and runs its main job: a sandbox on a workspace (this
# checkout) with the bundled default policy. The agent's command inside the
# microVM tries what agents try; the proxy decides each connection, and the
# network log shows every decision with the rule that made it.
#
#   deploy/start.sh [WORKSPACE]
set -euo pipefail
cd "$(dirname "$0")/.."
deploy/build.sh
sg=build/release/cli/sandgate
policy=config/default-policy.yaml
workspace=${1:-$PWD}
name=demo-$$

echo "\$ sandgate policy check $policy"
"$sg" policy check "$policy"

# Inside the guest: a request the default policy blocks (through the proxy,
# as every HTTP client there is configured to), then direct connections that
# have no route at all.
script='
echo "== inside the sandbox: $(uname -sr), proxy $HTTPS_PROXY"
echo "-- CONNECT pastebin.com:443 through the proxy:"
printf "CONNECT pastebin.com:443 HTTP/1.1\r\nHost: pastebin.com:443\r\n\r\n" | nc 10.0.2.100 3128
echo "-- direct TCP to a public address and to the host: no route but the proxy"
nc -w 3 1.1.1.1 443 </dev/null || true
nc -w 3 10.0.2.2 22 </dev/null || true
'
echo
echo "\$ sandgate run --name $name $workspace -- sh -c '...'"
SANDGATE_VERBOSE=1 "$sg" run --name "$name" "$workspace" -- sh -c "$script"
echo
echo "\$ sandgate network log $name"
"$sg" network log "$name"
echo
echo "\$ sandgate network log verify $name"
"$sg" network log verify "$name"
rm -rf "${SANDGATE_HOME:-$HOME/.sandgate}/sandboxes/$name"
