#!/usr/bin/env bash
# Runs the official HubSpot SDKs (Python hubspot-api-client, Node @hubspot/api-client)
# unchanged through a real hubgate process in front of a real simulator process, all on
# 127.0.0.1. Installs the SDKs into target/sdk on first use. Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
sdk="$root/target/sdk"
mkdir -p "$sdk"

PYTHON_SDK="hubspot-api-client==12.0.0"
NODE_SDK="@hubspot/api-client@14.0.1"

if ! "$sdk/venv/bin/python" -c "import hubspot" 2>/dev/null; then
  python3 -m venv "$sdk/venv"
  "$sdk/venv/bin/pip" install --quiet --disable-pip-version-check "$PYTHON_SDK"
fi
if [ ! -d "$sdk/node/node_modules/@hubspot/api-client" ]; then
  mkdir -p "$sdk/node"
  npm install --silent --no-audit --no-fund --no-package-lock --prefix "$sdk/node" "$NODE_SDK"
fi

cargo build --quiet
bin="$root/target/debug/hubgate"
free_port() { "$sdk/venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
sim_port=$(free_port); proxy_port=$(free_port); admin_port=$(free_port)
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

"$bin" sim --listen "127.0.0.1:$sim_port" --generate-tokens 2 >"$work/sim.log" 2>&1 &
pids+=($!)
cat >"$work/hubgate.toml" <<TOML
[server]
listen = "127.0.0.1:$proxy_port"
admin_listen = "127.0.0.1:$admin_port"
[upstream]
base_url = "http://127.0.0.1:$sim_port"
# The token broker, for the brokered runs: the simulator's generated app 3001.
[[apps]]
app_id = 3001
client_id = "sim-client-3001"
client_secret_env = "SIM_APP_SECRET"
redirect_uri = "http://127.0.0.1/oauth/callback"
[oauth]
store_path = "$work/installs.redb"
key_file = "$work/secret.key"
TOML
"$sdk/venv/bin/python" -c 'import secrets; print(secrets.token_hex(32))' >"$work/secret.key"
export SIM_APP_SECRET=sim-secret-3001
"$bin" --config "$work/hubgate.toml" >"$work/hubgate.log" 2>&1 &
pids+=($!)

fetch() { "$sdk/venv/bin/python" -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())' "$1"; }
for _ in $(seq 1 100); do
  if fetch "http://127.0.0.1:$admin_port/readyz" >/dev/null 2>&1 && fetch "http://127.0.0.1:$sim_port/__sim/stats" >/dev/null 2>&1; then break; fi
  sleep 0.1
done

passed=0; failed=0
run() {
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "sdk: $name FAILED" >&2; fi
}
export HUBGATE_URL="http://127.0.0.1:$proxy_port"
run python env HUBSPOT_TOKEN=pat-na1-sim-1 "$sdk/venv/bin/python" tests/sdk/python_sdk.py
run node env HUBSPOT_TOKEN=pat-na1-sim-2 NODE_PATH="$sdk/node/node_modules" node tests/sdk/node_sdk.cjs

# Brokered: an install imported with a refresh token the simulator mints, then both SDKs
# with no token at all and X-Hubgate-Portal as their one extra header.
"$sdk/venv/bin/python" - "$sim_port" "$admin_port" <<'PY'
import json, sys, urllib.request
sim, admin = sys.argv[1], sys.argv[2]
def post(url, body):
    request = urllib.request.Request(url, json.dumps(body).encode(), {"content-type": "application/json"})
    return json.load(urllib.request.urlopen(request, timeout=10))
grant = post(f"http://127.0.0.1:{sim}/__sim/oauth/install", {"app_id": 3001, "hub_id": 4242})
post(f"http://127.0.0.1:{admin}/admin/installs", {"app_id": 3001, "refresh_token": grant["refresh_token"]})
PY
export HUBGATE_PORTAL=4242
run python-brokered "$sdk/venv/bin/python" tests/sdk/python_brokered.py
run node-brokered env NODE_PATH="$sdk/node/node_modules" node tests/sdk/node_brokered.cjs

# The calls must really have gone caller -> hubgate -> simulator (not counting hubgate's own
# token lookups and refreshes).
forwarded=$(fetch "http://127.0.0.1:$admin_port/metrics" | awk '/^hubgate_requests_total\{outcome="forwarded"\}/ {print $2}')
received=$(fetch "http://127.0.0.1:$sim_port/__sim/stats" | "$sdk/venv/bin/python" -c 'import json,sys; s = json.load(sys.stdin); print(s["totals"]["requests"] - s["introspection"]["total"] - sum(s["oauth"]["token_calls"].values()))')
echo "hubgate forwarded ${forwarded:-0} calls; the simulator received $received API calls"
if [ "${forwarded:-0}" -lt 20 ] || [ "${forwarded:-0}" != "$received" ]; then
  failed=$((failed + 1)); echo "sdk: traffic did not flow through hubgate to the simulator" >&2
  cat "$work/hubgate.log" "$work/sim.log" >&2
fi
echo "sdk: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
