#!/usr/bin/env bash
# Proxy throughput with the network log on versus off, in one run: two
# sandgate proxies (same policy, same core, one writing the log), an nginx
# origin, and wrk sending keep-alive absolute-form GETs of a small file,
# alternating between the two proxies REPS times so drift hits both alike.
#
#   bench/log_ab.sh [PEERS_DIR]   (wrk-abs.lua from the peers harness; default ../shared/bench/peers)
# Environment: SANDGATE (binary), REPS (default 5), SECS per run (default 5),
# CONNS (default 16). Needs nginx and wrk (the peers harness installs them).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
peers=${1:-$here/../shared/bench/peers}
sg=${SANDGATE:-$here/build/release/cli/sandgate}
reps=${REPS:-5}
secs=${SECS:-5}
conns=${CONNS:-16}
origin_port=18090 on_port=13141 off_port=13142
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done; rm -rf "$work"' EXIT

mkdir -p "$work/www" "$work/nginx"
chmod 755 "$work" "$work/www"  # nginx's worker (nobody) must read the file, or every answer is a 403
head -c 512 /dev/zero | tr '\0' x > "$work/www/small"
cat > "$work/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $work/nginx/pid;
error_log $work/nginx/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  keepalive_requests 1000000;
  server { listen 127.0.0.1:$origin_port reuseport; root $work/www; }
}
EOF
taskset -c 0 nginx -c "$work/nginx.conf" &
pids+=($!)
printf 'version: 1\nmode: deny\nallow_hosts:\n  - "origin.ab.test:%s"\nallow_cidrs:\n  - 127.0.0.1/32\n' \
  "$origin_port" > "$work/policy.yaml"
echo "127.0.0.1 origin.ab.test" > "$work/hosts"
common=(proxy --config "$work/policy.yaml" --hosts-file "$work/hosts" --threads 1)
taskset -c 1 "$sg" "${common[@]}" --listen "127.0.0.1:$on_port" --log "$work/log/network.jsonl" \
  --log-key "$work/keys/log.key" >/dev/null 2>&1 &
pids+=($!)
taskset -c 1 "$sg" "${common[@]}" --listen "127.0.0.1:$off_port" --no-log >/dev/null 2>&1 &
pids+=($!)
for port in $origin_port $on_port $off_port; do
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null && break; sleep 0.1; done
done

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
tick=$(getconf CLK_TCK)
run() {  # port pid -> "requests_per_second cpu_us_per_request"
  local before after out
  before=$(cpu_ticks "$2")
  out=$(BENCH_MODE=proxy BENCH_ORIGIN="origin.ab.test:$origin_port" BENCH_PATH=/small \
    taskset -c 0 wrk -t1 -c"$conns" -d"${secs}s" -s "$peers/wrk-abs.lua" "http://127.0.0.1:$1" 2>/dev/null |
    sed -n 's/^{"wrk":1,"requests":\([0-9]*\),"bytes":[0-9]*,"duration_us":\([0-9]*\).*/\1 \2/p')
  after=$(cpu_ticks "$2")
  awk -v o="$out" -v t="$((after - before))" -v hz="$tick" \
    'BEGIN { split(o, a, " "); printf "%.0f %.1f", a[1] / (a[2] / 1e6), t / hz * 1e6 / a[1] }'
}
on_pid=${pids[1]} off_pid=${pids[2]}
run $on_port "$on_pid" >/dev/null; run $off_port "$off_pid" >/dev/null  # warm-up
echo "rep  on_rps  off_rps  on/off  on_cpu_us/req  off_cpu_us/req"
for rep in $(seq "$reps"); do
  read -r on on_cpu <<<"$(run $on_port "$on_pid")"
  read -r off off_cpu <<<"$(run $off_port "$off_pid")"
  echo "$rep  $on  $off  $(awk -v a="$on" -v b="$off" 'BEGIN { printf "%.3f", a / b }')  $on_cpu  $off_cpu"
done | tee "$work/results"
awk '{ on += $2; off += $3; oc += $5; fc += $6 }
     END { printf "mean  %.0f  %.0f  %.3f  %.1f  %.1f\n", on / NR, off / NR, on / off, oc / NR, fc / NR }' "$work/results"
echo "log records written: $(wc -l < "$work/log/network.jsonl")"
