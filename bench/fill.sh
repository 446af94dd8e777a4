#!/usr/bin/env bash
# Window fill with the default margins: how much of each rolling window one saturated owner
# (20 callers of `hubgate load`) gets through hubgate, at 2 s and 10 s windows, with 1, 50
# and 300 ms of transit between hubgate and the simulator (the simulator counts a call when
# it arrives, as HubSpot does); then six owners × ten callers bursting into an arrival queue
# (0.5 ms per call at the simulator) and a latency that jumps 1 → 300 → 1 ms mid-run.
# Fill: the mean over time (sampled every 20 ms, from the second window on) of the calls
# HubSpot accepted in the rolling window ending then, over the limit.
# Usage: bench/fill.sh [WINDOWS_PER_RUN]   (default 8)
source "$(dirname "$0")/lib.sh"
windows=${1:-8}
echo "$(machine)"
toml() {
  printf 'burst_limit = %s\nburst_window_ms = %s\ndaily_limit = 0\n' "$1" "$2"
  for i in 1 2 3 4 5 6; do
    printf '[[tokens]]\ntoken = "pat-na1-fill-%s"\napp_id = %s\nportal_id = %s\n' "$i" "$i" "$((100 + i))"
  done
}
faults() { curl -sf -X POST -H 'content-type: application/json' -d "$1" "http://127.0.0.1:$sim_port/__sim/faults" >/dev/null; }
# sample SECONDS: the simulator's accepted calls summed over owners and its 429s, every
# 20 ms for SECONDS, one "time accepted rejected" line each.
sample() {
  python3 - "$sim_port" "$1" <<'PY'
import json, sys, time, urllib.request
port, seconds = sys.argv[1], float(sys.argv[2])
end = time.monotonic() + seconds
while time.monotonic() < end:
    s = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/__sim/stats"))
    accepted = sum(o["accepted"] for o in s["owners"])
    print(time.monotonic(), accepted, s["totals"]["rate_limited"]["TEN_SECONDLY_ROLLING"], flush=True)
    time.sleep(0.02)
PY
}
# run LIMIT WINDOW_MS OWNERS CALLERS FAULTS LABEL [JUMP]: one measured run.
run() {
  local limit=$1 window_ms=$2 owners=$3 callers=$4 fault=$5 label=$6 jump=${7:-}
  toml "$limit" "$window_ms" >"$work/sim.toml"
  start_sim --config "$work/sim.toml"
  start_gateway "[budgets]
burst_limit = $limit
burst_window_ms = $window_ms"
  faults "$fault"
  local tokens seconds
  tokens=$(seq -s, -f 'pat-na1-fill-%g' 1 "$owners")
  seconds=$(python3 -c "print($window_ms * ($windows + 1) / 1000)")
  "$bin" load --target "http://127.0.0.1:$gw_port" --token "$tokens" --callers "$callers" \
    --duration "$seconds" --mix get=1 --quiet --json >"$work/load.json" &
  local load=$!
  sample "$seconds" >"$work/samples" &
  local sampler=$!
  if [ -n "$jump" ]; then
    sleep "$(python3 -c "print($window_ms * 3 / 1000)")"; faults '{"latency_ms":300}'
    sleep "$(python3 -c "print($window_ms * 3 / 1000)")"; faults '{"latency_ms":1}'
  fi
  wait "$load" "$sampler"
  python3 - "$work/samples" "$limit" "$owners" "$window_ms" "$label" <<'PY'
import sys
path, limit, owners, window_ms, label = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rows = [tuple(map(float, line.split())) for line in open(path)]
w = window_ms / 1000
start = rows[0][0]
fills, j = [], 0
for t, accepted, _ in rows:
    if t < start + 2 * w:
        continue
    while rows[j + 1][0] <= t - w:
        j += 1
    fills.append((accepted - rows[j][1]) / (limit * owners))
print(f"{label:>44}: mean window fill {sum(fills) / len(fills):.4f} over {len(fills)} samples; "
      f"{int(rows[-1][2])} × 429")
PY
  kill "$gw_pid" "$sim_pid" 2>/dev/null || true
  wait "$gw_pid" "$sim_pid" 2>/dev/null || true
}
for window_ms in 2000 10000; do
  for latency in 1 50 300; do
    run 110 "$window_ms" 1 20 "{\"latency_ms\":$latency}" "window $((window_ms / 1000)) s, latency $latency ms"
  done
done
run 40 2000 6 60 '{"latency_ms":1,"arrival_service_us":500}' "2 s, 6 owners × 10 callers, arrival queue"
run 110 10000 1 20 '{"latency_ms":1}' "10 s, latency 1 → 300 → 1 ms" jump
