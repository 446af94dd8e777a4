#!/usr/bin/env bash
# Per-call cost against the window's length: one owner whose budget never binds, through
# two hubgates (release) that differ only in `burst_window_ms` (1,000 and 10,000), the same
# wrk load on each in alternating rounds. A 10 s window holds ten times the sends of a 1 s
# one at the same rate; the per-call cost must not grow with them. Prints req/s and CPU per
# call for each window and the 10 s / 1 s ratio (target >= 0.90).
# Usage: bench/window_ratio.sh [SECONDS] [CONNECTIONS] [ROUNDS]; HUBGATE_BIN=PATH measures
# another build of hubgate (an earlier commit's) instead of this checkout's.
# CALLGRIND_CALLS=N counts instead of timing: each hubgate runs under valgrind's callgrind,
# takes 500 calls, then N more one after another on one connection, and the instructions
# per call of those N are printed per window (exact and repeatable on a loaded machine;
# blind to cache misses, which only the timed runs see).
source "$(dirname "$0")/lib.sh"
bin=${HUBGATE_BIN:-$bin}
seconds=${1:-10}
connections=${2:-50}
rounds=${3:-3}
need wrk
echo "$(machine)"
[ -n "${HUBGATE_BIN:-}" ] && echo "hubgate binary: $HUBGATE_BIN"
# Far above what either window sees at these rates (10,000 per 10 s window per 1,000
# req/s): neither binds, so both measure hubgate's own cost per call. BURST_LIMIT=N sets
# another (65536, the engine's largest before it was raised, binds a 10 s window at 6,554
# req/s).
limit=${BURST_LIMIT:-1000000}
# The upstream reports HubSpot's count with the same limit, as HubSpot would.
start_fast_upstream "$limit" 10000

# start_window_gateway WINDOW_MS: a hubgate whose one owner has a `limit` per WINDOW_MS
# burst window; sets port[WINDOW_MS] and pid[WINDOW_MS].
declare -A port pid
start_window_gateway() {
  local listen admin
  listen=$(free_port); admin=$(free_port)
  cat >"$work/hubgate-$1.toml" <<TOML
[server]
listen = "127.0.0.1:$listen"
admin_listen = "127.0.0.1:$admin"
[upstream]
base_url = "http://127.0.0.1:$up_port"
[log]
level = "warn"
[budgets]
burst_limit = $limit
burst_window_ms = $1
[[credentials]]
token = "$bench_token"
app_id = 1
portal_id = 1
TOML
  if [ -n "${CALLGRIND_CALLS:-}" ]; then
    valgrind --tool=callgrind --callgrind-out-file="$work/callgrind-$1.%p" \
      "$bin" --config "$work/hubgate-$1.toml" >"$work/hubgate-$1.log" 2>&1 &
  else
    "$bin" --config "$work/hubgate-$1.toml" >"$work/hubgate-$1.log" 2>&1 &
  fi
  pid[$1]=$!; pids+=("$!")
  port[$1]=$listen
  for _ in $(seq 1 600); do curl -sf -o /dev/null "http://127.0.0.1:$admin/readyz" && return 0; sleep 0.1; done
  echo "not up: hubgate with a $1 ms window" >&2; return 1
}
windows=(1000 10000)
[ -n "${CALLGRIND_CALLS:-}" ] && need valgrind
for w in "${windows[@]}"; do start_window_gateway "$w"; done

path="/crm/v3/objects/contacts?limit=1"
if [ -n "${CALLGRIND_CALLS:-}" ]; then
  # send PORT N: N sequential calls on one keep-alive connection.
  send() {
    python3 - "$1" "$2" "$bench_token" "$path" <<'PY'
import http.client, sys
port, n, token, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
conn = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(n):
    conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
    response = conn.getresponse()
    response.read()
    assert response.status == 200, response.status
PY
  }
  echo
  echo "\`CALLGRIND_CALLS=$CALLGRIND_CALLS bench/window_ratio.sh\`: burst_limit $limit, $CALLGRIND_CALLS sequential calls after 500"
  echo
  echo "| burst window | instructions per call |"
  echo "|---|---|"
  declare -A per_call
  for w in "${windows[@]}"; do
    send "${port[$w]}" 500
    callgrind_control --zero "${pid[$w]}" >/dev/null 2>&1
    send "${port[$w]}" "$CALLGRIND_CALLS"
    callgrind_control --dump="calls" "${pid[$w]}" >/dev/null 2>&1
    dump=$(ls -t "$work"/callgrind-"$w".*.* | head -1)
    total=$(callgrind_annotate "$dump" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}')
    per_call[$w]=$((total / CALLGRIND_CALLS))
    echo "| $((w / 1000)) s | ${per_call[$w]} |"
  done
  echo
  echo "10 s / 1 s instructions per call: $(python3 -c "print(f'{${per_call[10000]} / ${per_call[1000]}:.3f}')")"
  exit 0
fi

command="wrk -t2 -c$connections -d${seconds}s --latency -H 'Authorization: Bearer $bench_token'"
for w in "${windows[@]}"; do
  wrk -t2 -c"$connections" -d2s -H "Authorization: Bearer $bench_token" \
    "http://127.0.0.1:${port[$w]}$path" >/dev/null
done
for r in $(seq 1 "$rounds"); do
  for w in "${windows[@]}"; do
    before=$(cpu_ns "${pid[$w]}")
    wrk -t2 -c"$connections" -d"${seconds}s" --latency -H "Authorization: Bearer $bench_token" \
      "http://127.0.0.1:${port[$w]}$path" >"$work/wrk-$w-$r.txt"
    echo $(($(cpu_ns "${pid[$w]}") - before)) >"$work/cpu-$w-$r.txt"
    if grep -q 'Non-2xx' "$work/wrk-$w-$r.txt"; then
      echo "window $w ms answered non-2xx:" >&2; cat "$work/wrk-$w-$r.txt" >&2; exit 1
    fi
    echo "round $r window $w ms: $(awk '/Requests\/sec/ {print $2}' "$work/wrk-$w-$r.txt") req/s" >&2
  done
done
python3 - "$work" "$rounds" "$command" "$limit" <<'PY'
import re, statistics, sys
work, rounds, command, limit = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])

def run(window, r):
    text = open(f"{work}/wrk-{window}-{r}.txt").read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    calls = int(re.search(r"(\d+) requests in", text).group(1))
    cpu_us = int(open(f"{work}/cpu-{window}-{r}.txt").read()) / 1000 / calls
    return rps, cpu_us

rows = {}
for window in [1000, 10000]:
    runs = [run(window, r) for r in range(1, rounds + 1)]
    rows[window] = (statistics.median(x[0] for x in runs), statistics.median(x[1] for x in runs),
                    ", ".join(f"{x[0]:,.0f}" for x in runs))
print(f"\n`{command} URL` (each window {rounds} times, taking turns; medians; "
      f"burst_limit {limit:,})\n")
print("| burst window | requests/s | each round | hubgate CPU per call |")
print("|---|---|---|---|")
for window, (rps, cpu_us, each) in rows.items():
    print(f"| {window // 1000} s | **{rps:,.0f}** | {each} | {cpu_us:.1f} µs |")
ratio = rows[10000][0] / rows[1000][0]
verdict = "met" if ratio >= 0.9 else "missed"
print(f"\n10 s / 1 s requests/s: **{ratio:.3f}** (target >= 0.90: {verdict}); "
      f"CPU per call, 10 s / 1 s: {rows[10000][1] / rows[1000][1]:.2f}")
PY
