#!/usr/bin/env bash
# The workspace share's speed, as ratios measured in one run: the same
# Python file work (bench/share_bench.py) on the host's folder, in a sandbox
# on the shared workspace (virtio-fs), and in the sandbox on its own tmpfs.
# The last separates the share's cost from the guest's CPU (TCG emulates it).
#
#   bench/share_bench.sh [REPS]    (default 3; medians)
# Environment: SANDGATE (binary), SANDGATE_HOME, FILES (default 2000), MIB (default 256).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
sg=${SANDGATE:-$here/build/release/cli/sandgate}
reps=${1:-3}
files=${FILES:-2000}
mib=${MIB:-256}
ws=$(mktemp -d)
name=share-bench-$$
trap '"$sg" rm -f "$name" >/dev/null 2>&1 || true; rm -rf "$ws"' EXIT
cp "$here/bench/share_bench.py" "$ws/"
args="--files $files --mib $mib"

"$sg" run -d --name "$name" --memory 1024 "$ws" >/dev/null
: > "$ws/host.jsonl"; : > "$ws/guest-share.jsonl"; : > "$ws/guest-tmpfs.jsonl"
for _ in $(seq "$reps"); do
  python3 "$ws/share_bench.py" "$ws" $args >> "$ws/host.jsonl"
  "$sg" exec "$name" python3 share_bench.py "$ws" $args >> "$ws/guest-share.jsonl"
  "$sg" exec "$name" python3 share_bench.py /tmp $args >> "$ws/guest-tmpfs.jsonl"
done
accel=$("$sg" ls --json | python3 -c "import json,sys; print([s['accel'] for s in json.load(sys.stdin) if s['name']=='$name'][0])")

python3 - "$ws" "$reps" "$files" "$mib" "$accel" <<'PY'
import json, statistics, sys
ws, reps, files, mib, accel = sys.argv[1:]
def load(n):
    rows = [json.loads(l) for l in open(f"{ws}/{n}.jsonl")]
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}
host, share, tmpfs = load("host"), load("guest-share"), load("guest-tmpfs")
print(f"workspace share ({accel}), medians of {reps}; {files} small files, one {mib} MiB file")
print(f"{'metric':<14}{'host':>12}{'guest share':>14}{'guest tmpfs':>14}{'share/host':>12}{'share/tmpfs':>13}")
for k in host:
    print(f"{k:<14}{host[k]:>12.0f}{share[k]:>14.0f}{tmpfs[k]:>14.0f}{share[k]/host[k]:>12.3f}{share[k]/tmpfs[k]:>13.3f}")
PY
