#!/usr/bin/env bash
# Proxy cost per call with many owners, budgets far from binding: wrk with a Lua script
# that sends each request with the next of OWNERS bearer tokens (one owner each, from
# `[[credentials]]`, so nothing is introspected and the upstream stays a fast static
# server), 64 connections and one wrk thread, straight to the fast upstream, through nginx
# `proxy_pass` (one worker, upstream keepalive) and through hubgate (release, its default
# runtime), in rounds so they take turns with the machine's noise. The floor beside them is
# `examples/bare_proxy.rs`: hyper 1.x forwarding each connection's calls on an upstream
# connection of its own with nothing else done, on one thread, which is what the hyper
# stack itself costs. Prints a markdown
# table: median requests/s, latency and CPU per call. hubgate runs twice, as configured by
# default (a worker thread per core) and with `[server] workers = WORKERS` (default: 0, no
# worker threads: connections on the main multi-threaded runtime). With
# HUBGATE_BEFORE naming another hubgate build (an earlier commit's), it takes its turn too,
# for a before-and-after.
# Usage: bench/owners_overhead.sh [SECONDS] [ROUNDS] [OWNERS] [CONNECTIONS]
source "$(dirname "$0")/lib.sh"
seconds=${1:-10}
rounds=${2:-3}
owners=${3:-200}
connections=${4:-64}
need wrk
echo "$(machine)"
start_fast_upstream
# One worker: nginx's per-call cost on one core is what hubgate is measured against.
start_nginx_proxy 1

# Each token its own (app, portal): OWNERS owners, each far below 65,536 calls per 1 s.
credentials=""
for i in $(seq 1 "$owners"); do
  credentials+="[[credentials]]
token = \"pat-na1-owner-$i\"
app_id = $i
portal_id = $((100000 + i))
"
done
owners_toml="[budgets]
burst_limit = 65536
burst_window_ms = 1000
$credentials"
cargo build --release --quiet --example bare_proxy
bare_port=$(free_port)
target/release/examples/bare_proxy "127.0.0.1:$bare_port" "127.0.0.1:$up_port" 1 \
  2>"$work/bare_proxy.log" &
bare_pid=$!; pids+=("$bare_pid")
wait_http "http://127.0.0.1:$bare_port/"
targets=(direct nginx bare)
declare -A base=(
  [direct]="http://127.0.0.1:$up_port"
  [nginx]="http://127.0.0.1:$px_port"
  [bare]="http://127.0.0.1:$bare_port"
)
# Whose CPU each path spends, besides wrk's: the upstream answers every path, so a proxy's
# own cost per call is its CPU time over the calls it carried (see bench/overhead.sh).
declare -A spender=(
  [direct]="$(nginx_workers upstream)"
  [nginx]="$(nginx_workers proxy)"
  [bare]="$bare_pid"
)
if [ -n "${HUBGATE_BEFORE:-}" ]; then
  built="$bin"; bin="$HUBGATE_BEFORE"
  gw_upstream="http://127.0.0.1:$up_port" start_gateway "$owners_toml"
  bin="$built"
  targets+=(before); base[before]="http://127.0.0.1:$gw_port"; spender[before]="$gw_pid"
  before_admin=$gw_admin
fi
gw_upstream="http://127.0.0.1:$up_port" start_gateway "$owners_toml"
targets+=(hubgate); base[hubgate]="http://127.0.0.1:$gw_port"; spender[hubgate]="$gw_pid"
workers=${WORKERS:-0}
gw_server="workers = $workers" gw_upstream="http://127.0.0.1:$up_port" start_gateway "$owners_toml"
targets+=(workers); base[workers]="http://127.0.0.1:$gw_port"; spender[workers]="$gw_pid"

cat >"$work/rotate.lua" <<LUA
-- The next owner's token on every request, in turn.
local tokens = {}
for i = 1, $owners do tokens[i] = "Bearer pat-na1-owner-" .. i end
local turn = 0
request = function()
  turn = turn % $owners + 1
  return wrk.format(nil, nil, { ["Authorization"] = tokens[turn] })
end
LUA

path="/crm/v3/objects/contacts?limit=1"
wrk_rounds "$rounds" "$seconds" "$path" -t1 -c"$connections" -s "$work/rotate.lua"
# Every token was paced as an owner of its own.
owners_active=$(curl -sf "http://127.0.0.1:$gw_admin/metrics" | awk '$1 == "hubgate_owners_active" {print $2}')
echo "hubgate_owners_active after the rounds: $owners_active" >&2
command="wrk -t1 -c$connections -d${seconds}s --latency -s rotate.lua"
declare -A names=(
  [direct]="straight to the upstream (CPU: the upstream's)"
  [nginx]="through nginx \`proxy_pass\` (1 worker, upstream keepalive)"
  [bare]="through a bare hyper forwarder, 1 thread (\`examples/bare_proxy.rs\`)"
  [before]="through hubgate, before (HUBGATE_BEFORE)"
  [hubgate]="through hubgate (default: a worker thread per core)"
  [workers]="through hubgate, \`[server] workers = $workers\`"
)
named=()
for t in "${targets[@]}"; do named+=("$t=${names[$t]}"); done
python3 bench/wrk_rounds.py "$work" "$rounds" \
  "\`$command URL\`, $owners tokens in turn" "${named[@]}"
