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

# Inside the guest, what agents do: HTTP and HTTPS through the proxy (every
# client there is configured to use it), and direct connections that have
# no route at all.
script='
echo "== inside the sandbox: $(uname -sr), Debian $(cat /etc/debian_version), in $(pwd)"
echo "-- curl http://pastebin.com/  (blocked by the default policy):"
curl -sS http://pastebin.com/
echo "-- curl https://pastebin.com/:"
curl -sS -o /dev/null https://pastebin.com/ || true
echo "-- curl https://api.anthropic.com/  (allowed; the answer depends on this host'"'"'s network):"
curl -sS -o /dev/null -m 10 -w "HTTP %{http_code}\n" https://api.anthropic.com/ || true
echo "-- direct TCP to a public address and to the host: no route but the proxy"
nc -z -w 3 1.1.1.1 443 && echo "reached 1.1.1.1 (unexpected)" || echo "1.1.1.1:443 unreachable"
nc -z -w 3 10.0.2.2 22 && echo "reached the host (unexpected)" || echo "10.0.2.2:22 unreachable"
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
