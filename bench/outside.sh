#!/usr/bin/env bash
# Another client spends the budget hubgate paces, in three patterns, on HubSpot's real
# window (110 per rolling 10 s): steady (33 per window, evenly spaced), bursty (a block of
# 33 at once every 7 s) and a ramp (0 → 55 per window over a minute and back). For each,
# 20 callers (the official Node SDK, bench/steal.cjs) run first through hubgate (a plain
# SDK) and then straight to the simulator with the SDK's own limiter preset and 6 retries.
# Printed per row: hubgate's (or the SDK's) calls that reached HubSpot, the share of them
# HubSpot refused with 429, and the calls HubSpot accepted over what the other client left
# (110 per 10 s of the run, less the other client's accepted calls).
# Usage: bench/outside.sh [PATTERN...]   (default: steady bursty ramp)
source "$(dirname "$0")/lib.sh"
need node nodejs
need npm
sdk="$(pwd)/target/sdk/node"
[ -d "$sdk/node_modules/@hubspot/api-client" ] || npm install --silent --no-audit --no-fund --no-package-lock --prefix "$sdk" @hubspot/api-client@14.0.1
patterns=("$@")
[ ${#patterns[@]} -gt 0 ] || patterns=(steady bursty ramp)
echo "$(machine)"
cat >"$work/sim.toml" <<TOML
burst_limit = 110
burst_window_ms = 10000
daily_limit = 0
[[tokens]]
token = "pat-na1-outside"
app_id = 7
portal_id = 70
TOML
start_sim --config "$work/sim.toml"
start_gateway ""
sim="http://127.0.0.1:$sim_port"
outside() { curl -sf -X POST -H 'content-type: application/json' -d "$1" "$sim/__sim/outside" >/dev/null; }
owner() { curl -sf "$sim/__sim/stats" | python3 -c 'import json,sys; print(json.dumps([o for o in json.load(sys.stdin)["owners"] if o["app_id"] == 7][0]))'; }
for pattern in "${patterns[@]}"; do
  case $pattern in
    steady) body='{"app_id":7,"portal_id":70,"per_window":33}'; seconds=60 ;;
    bursty) body='{"app_id":7,"portal_id":70,"per_window":33,"pattern":"bursty","every_ms":7000}'; seconds=70 ;;
    # The ramp starts with the callers and lasts their whole run: 60 s up, 60 s down.
    ramp) body='{"app_id":7,"portal_id":70,"per_window":55,"pattern":"ramp","ramp_ms":60000}'; seconds=120 ;;
    *) echo "unknown pattern $pattern" >&2; exit 2 ;;
  esac
  for mode in hubgate sdk-presets; do
    curl -sf -X POST "$sim/__sim/reset" >/dev/null
    outside '{"app_id":7,"portal_id":70,"per_window":0}'
    sleep 11  # every earlier call has left HubSpot's window
    if [ "$pattern" != ramp ]; then
      outside "$body"
      sleep 10  # the other client is already spending when the callers start
    fi
    before=$(owner 2>/dev/null || echo '{}')
    [ "$pattern" = ramp ] && outside "$body"
    started=$(date +%s.%N)
    base=$([ "$mode" = hubgate ] && echo "http://127.0.0.1:$gw_port" || echo "$sim")
    callers=$(MODE=$mode BASE=$base TOKEN=pat-na1-outside SECONDS=$seconds CONCURRENCY=20 NODE_PATH="$sdk/node_modules" node bench/steal.cjs)
    ended=$(date +%s.%N)
    after=$(owner)
    outside '{"app_id":7,"portal_id":70,"per_window":0}'
    python3 - "$pattern" "$mode" "$before" "$after" "$started" "$ended" "$callers" <<'PY'
import json, sys
pattern, mode, before, after, started, ended, callers = sys.argv[1:]
b, a, c = json.loads(before), json.loads(after), json.loads(callers)
d = lambda k: a.get(k, 0) - b.get(k, 0)
seconds = float(ended) - float(started)
outside_accepted = d("outside") - d("outside_rate_limited")
ours_sent = d("arrivals") - d("outside")
rejected = a["rate_limited"]["TEN_SECONDLY_ROLLING"] - (b.get("rate_limited") or {}).get("TEN_SECONDLY_ROLLING", 0)
ours_accepted = d("accepted") - outside_accepted
left = 110 * seconds / 10 - outside_accepted
errors = sum(c["errors"].values())
print(f"{pattern:>7} {mode:>12}: {seconds:5.1f} s, sent {ours_sent}, 429 {rejected} "
      f"({100 * rejected / max(ours_sent, 1):.2f} %), accepted {ours_accepted} of {left:.0f} left "
      f"({100 * ours_accepted / left:.1f} %); other client accepted {outside_accepted}, "
      f"refused {d('outside_rate_limited')}; callers' errors {errors}")
PY
  done
done
