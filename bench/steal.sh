#!/usr/bin/env bash
# The steal scenario: another client spends 30 % of an owner's rolling window while 20
# callers saturate it, measured side by side in one run: callers through hubgate, callers
# using the official Node SDK's own limiter preset and retries against the simulator, and
# callers with a plain SDK. Window: HubSpot's real 10 s, limit 110, outside 33 per window.
# Usage: bench/steal.sh [SECONDS_PER_MODE]
source "$(dirname "$0")/lib.sh"
seconds=${1:-40}
sdk="$(pwd)/target/sdk/node"
[ -d "$sdk/node_modules/@hubspot/api-client" ] || npm install --silent --no-audit --no-fund --no-package-lock --prefix "$sdk" @hubspot/api-client@14.0.1
cat >"$work/sim.toml" <<TOML
burst_limit = 110
burst_window_ms = 10000
daily_limit = 0
[[tokens]]
token = "pat-na1-steal"
app_id = 7
portal_id = 70
TOML
start_sim --config "$work/sim.toml"
start_gateway "[budgets]
burst_limit = 110
burst_window_ms = 10000"
sim="http://127.0.0.1:$sim_port"
for mode in hubgate sdk-presets sdk-plain; do
  curl -sf -X POST "$sim/__sim/reset" >/dev/null
  curl -sf -X POST -H 'content-type: application/json' -d '{"app_id":7,"portal_id":70,"per_window":33}' "$sim/__sim/outside" >/dev/null
  sleep 10  # the other client is already spending when the callers start
  base=$([ "$mode" = hubgate ] && echo "http://127.0.0.1:$gw_port" || echo "$sim")
  callers=$(MODE=$mode BASE=$base TOKEN=pat-na1-steal SECONDS=$seconds CONCURRENCY=20 NODE_PATH="$sdk/node_modules" node bench/steal.cjs)
  curl -sf -X POST -H 'content-type: application/json' -d '{"app_id":7,"portal_id":70,"per_window":0}' "$sim/__sim/outside" >/dev/null
  sleep 1
  curl -sf "$sim/__sim/stats" | python3 -c '
import json, sys
callers = json.loads(sys.argv[1]); seconds = int(sys.argv[2])
o = [x for x in json.load(sys.stdin)["owners"] if x["app_id"] == 7][0]
ours = o["arrivals"] - o["outside"]
rejected = o["rate_limited"]["TEN_SECONDLY_ROLLING"]
left = (110 - 33) * callers["windows"]
errors = sum(callers["errors"].values())
mode, ok, by_code = callers["mode"], callers["ok"], callers["errors"]
in_span, windows = callers["inSpan"], callers["windows"]
print(f"{mode:>12}: callers got {ok} answers and {errors} errors {by_code}; "
      f"sent {ours}, HubSpot refused {rejected} ({100 * rejected / max(ours, 1):.1f} %); "
      f"{in_span} answered within {windows} windows of the first, of the {left} slots "
      f"the other client left ({100 * in_span / left:.0f} %)")
' "$callers" "$seconds"
done
