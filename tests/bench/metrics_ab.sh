#!/usr/bin/env bash
# Throughput with per-request metrics on versus off, side by side: two fresh servers on core 0
# (same demo snapshot), wrk on core 1, alternating which goes first, ROUNDS rounds of SECONDS.
# Usage: tests/bench/metrics_ab.sh [SNAPSHOT_DIR (.demo)] [ROUNDS (6)] [SECONDS (6)]
# Needs the demo snapshot and its credentials file from `make run` (or voip-rooms demo-data).
set -euo pipefail
cd "$(dirname "$0")/../.."
snap=${1:-.demo} rounds=${2:-6} secs=${3:-6}
curl_line=$(grep -m1 "curl -s" "$snap.credentials.txt")
user=$(sed -E "s/.*X-User-Id: ([^']+)'.*/\1/" <<<"$curl_line")
token=$(sed -E "s/.*X-Auth-Token: ([^']+)'.*/\1/" <<<"$curl_line")
lua=$(mktemp --suffix=.lua)
cat >"$lua" <<LUA
wrk.headers["X-User-Id"] = "$user"
wrk.headers["X-Auth-Token"] = "$token"
local paths = {"/api/v1/voip/rooms?open=true", "/api/v1/voip/rooms?queue=support",
  "/api/v1/voip/rooms?sort=%7B%22callDuration%22%3A-1%7D", "/api/v1/voip/rooms?direction=outbound"}
local i = 0
request = function() i = i + 1; return wrk.format("GET", paths[(i % #paths) + 1]) end
LUA
ports=$(mktemp -d)  # each server binds port 0 and writes the port it got there
VOIP_ROOMS_METRICS=true taskset -c 0 .venv/bin/voip-rooms serve --snapshot "$snap" \
  --host 127.0.0.1 --port 0 --port-file "$ports/on" --log-level warning --drain-seconds 0 & on=$!
VOIP_ROOMS_METRICS=false taskset -c 0 .venv/bin/voip-rooms serve --snapshot "$snap" \
  --host 127.0.0.1 --port 0 --port-file "$ports/off" --log-level warning --drain-seconds 0 & off=$!
trap 'kill $on $off 2>/dev/null; rm -rf "$lua" "$ports"' EXIT
for name in on off; do
  for _ in $(seq 1 120); do [[ -s "$ports/$name" ]] && break; sleep 0.5; done
done
port_on=$(cat "$ports/on") port_off=$(cat "$ports/off")
for port in "$port_on" "$port_off"; do
  for _ in $(seq 1 120); do curl -sf "127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.5; done
done
rate() { taskset -c 1 wrk -t1 -c64 -d"${secs}s" -s "$lua" "http://127.0.0.1:$1" | awk '/Requests\/sec/ {print $2}'; }
ratios=()
for r in $(seq 1 "$rounds"); do
  if (( r % 2 )); then a=$(rate "$port_on"); b=$(rate "$port_off")
  else b=$(rate "$port_off"); a=$(rate "$port_on"); fi
  ratio=$(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", a / b}')
  echo "round $r: metrics on $a req/s, off $b req/s, on/off $ratio"
  ratios+=("$ratio")
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{v[NR]=$1} END {m = NR % 2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2; printf "median on/off: %.3f\n", m}'
