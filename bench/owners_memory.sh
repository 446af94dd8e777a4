#!/usr/bin/env bash
# Memory and idle CPU of hubgate with 10,000 active owners: every one of 10,000 private-app
# tokens (each its own app and portal in the simulator) is resolved and spends budget, then
# the gateway idles. Usage: bench/owners_memory.sh [OWNERS] [SECONDS_OF_LOAD]
source "$(dirname "$0")/lib.sh"
owners=${1:-10000}
seconds=${2:-15}
need wrk
host=$(machine)
start_sim --generate-tokens "$owners" --daily-limit 0
start_gateway "[identity]
introspection_per_second = 100000"
cat >"$work/owners.lua" <<LUA
local i = 0
request = function()
  i = i + 1
  local n = (i - 1) % $owners + 1
  return wrk.format("GET", "/crm/v3/objects/contacts?limit=1", {["Authorization"] = "Bearer pat-na1-sim-" .. n})
end
LUA
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
before=$(rss_kib "$gw_pid")
wrk -t 2 -c 50 -d "${seconds}s" -s "$work/owners.lua" "http://127.0.0.1:$gw_port" >"$work/wrk.txt"
after=$(rss_kib "$gw_pid")
peak=$(rss_kib "$gw_pid" VmHWM)
metrics=$(curl -sf "http://127.0.0.1:$gw_admin/metrics")
resolved=$(echo "$metrics" | awk '/^hubgate_identity_lookups_total\{result="introspected"\}/ {print $2}')
sent=$(grep -Eo '^ +[0-9]+ requests' "$work/wrk.txt" | tr -dc 0-9)
idle_from=$(cpu_ticks "$gw_pid"); sleep 10; idle_to=$(cpu_ticks "$gw_pid")
hz=$(getconf CLK_TCK)
echo "$host"
echo
echo "\`bench/owners_memory.sh $owners $seconds\`: $resolved of $owners tokens resolved to owners by introspection; $sent calls in ${seconds} s (wrk, 2 threads, 50 connections)"
echo
echo "| state | hubgate RSS |"
echo "|---|---|"
echo "| started, no owners | $((before / 1024)) MiB |"
echo "| $owners active owners | **$((after / 1024)) MiB** (peak $((peak / 1024)) MiB) |"
echo
echo "Idle CPU after the load, over 10 s: **$((idle_to - idle_from)) ticks** of 1/$hz s. Targets: < 64 MiB, about 0 ticks."
