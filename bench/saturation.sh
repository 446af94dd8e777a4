#!/usr/bin/env bash
# Efficiency and HubSpot 429s under saturation, three ways of pacing in one run: the same
# callers (the official Node SDK, bench/steal.cjs) for the same time against the simulator
# with HubSpot's real window (110 per rolling 10 s):
#   - through hubgate (SDK without limiter or retries);
#   - through nginx `limit_req` keyed on the Authorization header, at the same rate
#     (660 r/m = 110 per 10 s), queueing excess calls (burst, no nodelay), upstream keepalive;
#   - straight to the simulator with the SDK's own limiter preset and 6 retries.
# Efficiency: 2xx answers within whole windows of the first one / what those windows allow.
# Usage: bench/saturation.sh [SECONDS_PER_MODE] [CALLERS]
source "$(dirname "$0")/lib.sh"
seconds=${1:-40}
callers=${2:-20}
limit=110
window_ms=10000
need node nodejs
need npm
sdk="$(pwd)/target/sdk/node"
[ -d "$sdk/node_modules/@hubspot/api-client" ] || npm install --silent --no-audit --no-fund --no-package-lock --prefix "$sdk" @hubspot/api-client@14.0.1
echo "$(machine)"
cat >"$work/sim.toml" <<TOML
burst_limit = $limit
burst_window_ms = $window_ms
daily_limit = 0
[[tokens]]
token = "pat-na1-saturate"
app_id = 7
portal_id = 70
TOML
start_sim --config "$work/sim.toml"
start_gateway "[budgets]
burst_limit = $limit
burst_window_ms = $window_ms"
ng_port=$(free_port)
# burst = every caller: nginx queues them all rather than refusing any.
start_nginx limit_req "
  limit_req_zone \$http_authorization zone=hubspot:10m rate=$((limit * 60000 / window_ms))r/m;
  upstream simulator {
    server 127.0.0.1:$sim_port;
    keepalive 64;
  }
  server {
    listen 127.0.0.1:$ng_port;
    location / {
      limit_req zone=hubspot burst=$callers;
      limit_req_status 429;
      proxy_pass http://simulator;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }
  }"
wait_http "http://127.0.0.1:$ng_port/__sim/stats"
sim="http://127.0.0.1:$sim_port"
declare -A base=(
  [hubgate]="http://127.0.0.1:$gw_port"
  [nginx]="http://127.0.0.1:$ng_port"
  [sdk-presets]="$sim"
)
for mode in hubgate nginx sdk-presets; do
  curl -sf -X POST "$sim/__sim/reset" >/dev/null
  # Every pacer starts from idle: the previous mode's window has slid away.
  sleep $((window_ms / 1000 + 1))
  MODE=$mode BASE=${base[$mode]} TOKEN=pat-na1-saturate SECONDS=$seconds CONCURRENCY=$callers \
    NODE_PATH="$sdk/node_modules" node bench/steal.cjs >"$work/callers-$mode.json"
  sleep 1
  curl -sf "$sim/__sim/stats" >"$work/sim-$mode.json"
  echo "$mode: $(cat "$work/callers-$mode.json")" >&2
done
python3 - "$work" "$seconds" "$callers" "$limit" "$window_ms" <<'PY'
import json, sys
work, seconds, callers, limit, window_ms = sys.argv[1], *map(int, sys.argv[2:])
names = {
    "hubgate": "through hubgate (SDK without limiter or retries)",
    "nginx": f"through nginx `limit_req` ({limit * 60000 // window_ms} r/m, burst {callers}, no nodelay)",
    "sdk-presets": "straight, SDK limiter preset (9/s, 6 concurrent) and 6 retries",
}
print(f"\n`bench/saturation.sh {seconds} {callers}`: {callers} Node SDK callers for {seconds} s per "
      f"row, simulator limit {limit} per rolling {window_ms // 1000} s\n")
print("| callers | caller-visible errors | sent to HubSpot | HubSpot 429s | 2xx in span / allowed | max in any window |")
print("|---|---|---|---|---|---|")
for mode in names:
    c = json.load(open(f"{work}/callers-{mode}.json"))
    o = [x for x in json.load(open(f"{work}/sim-{mode}.json"))["owners"] if x["app_id"] == 7][0]
    rejected = o["rate_limited"]["TEN_SECONDLY_ROLLING"]
    allowed = limit * c["windows"]
    errors = sum(c["errors"].values())
    print(f"| {names[mode]} | {errors:,} | {o['arrivals']:,} | **{rejected:,}** "
          f"({100 * rejected / max(o['arrivals'], 1):.1f} %) | {c['inSpan']} / {allowed} = "
          f"**{100 * c['inSpan'] / allowed:.1f} %** | {o['max_arrivals_in_window']} |")
print("\nTargets for hubgate: efficiency >= 99 %, 0 HubSpot 429s.")
PY
