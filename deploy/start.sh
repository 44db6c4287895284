#!/usr/bin/env bash
# Sets up sandgate and runs its main job on the bundled default policy.
#
# Until sandboxes land (`sandgate run WORKSPACE`), the main job is the policy
# engine: validate the default policy and show how it decides the requests an
# agent typically makes, including the ones it blocks and why.
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
