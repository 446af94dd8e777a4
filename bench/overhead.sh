#!/usr/bin/env bash
# Proxy overhead with budgets far from binding: the same wrk load straight to a fast
# upstream (nginx answering at once), through nginx `proxy_pass` (upstream keepalive, as a
# user would set it up) and through hubgate (release), in rounds so the three take turns
# with the machine's noise. Prints a markdown table: median requests/s and latency.
# Usage: bench/overhead.sh [SECONDS] [CONNECTIONS] [ROUNDS]
source "$(dirname "$0")/lib.sh"
seconds=${1:-10}
connections=${2:-50}
rounds=${3:-3}
need wrk
echo "$(machine)"
start_fast_upstream
start_nginx_proxy
gw_upstream="http://127.0.0.1:$up_port" start_gateway "$unbound_budgets"

path="/crm/v3/objects/contacts?limit=1"
declare -A base=(
  [direct]="http://127.0.0.1:$up_port"
  [nginx]="http://127.0.0.1:$px_port"
  [hubgate]="http://127.0.0.1:$gw_port"
)
# Whose CPU each path spends, besides wrk's: the upstream answers every path, so the
# proxies' own cost per call is their CPU time over the calls they carried. This figure
# does not depend on how the scheduler shares 2 cores among wrk, the upstream and the
# proxy, which requests/s does.
declare -A spender=(
  [direct]="$(nginx_workers upstream)"
  [nginx]="$(nginx_workers proxy)"
  [hubgate]="$gw_pid"
)
targets=(direct nginx hubgate)
command="wrk -t2 -c$connections -d${seconds}s --latency -H 'Authorization: Bearer $bench_token'"
# One warm-up pass fills connection pools and caches on every path.
for t in "${targets[@]}"; do
  wrk -t2 -c"$connections" -d2s -H "Authorization: Bearer $bench_token" "${base[$t]}$path" >/dev/null
done
for r in $(seq 1 "$rounds"); do
  for t in "${targets[@]}"; do
    # shellcheck disable=SC2086 # a list of pids
    before=$(cpu_ns ${spender[$t]})
    wrk -t2 -c"$connections" -d"${seconds}s" --latency -H "Authorization: Bearer $bench_token" \
      "${base[$t]}$path" >"$work/wrk-$t-$r.txt"
    # shellcheck disable=SC2086
    echo $(($(cpu_ns ${spender[$t]}) - before)) >"$work/cpu-$t-$r.txt"
    if grep -q 'Non-2xx' "$work/wrk-$t-$r.txt"; then
      echo "$t answered non-2xx:" >&2; cat "$work/wrk-$t-$r.txt" >&2; exit 1
    fi
    echo "round $r $t: $(awk '/Requests\/sec/ {print $2}' "$work/wrk-$t-$r.txt") req/s" >&2
  done
done
python3 - "$work" "$rounds" "$command" <<'PY'
import re, statistics, sys
work, rounds, command = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def ms(text):
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

def run(target, r):
    text = open(f"{work}/wrk-{target}-{r}.txt").read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p50 = ms(re.search(r"\s50%\s+(\S+)", text).group(1))
    p99 = ms(re.search(r"\s99%\s+(\S+)", text).group(1))
    calls = int(re.search(r"(\d+) requests in", text).group(1))
    cpu_us = int(open(f"{work}/cpu-{target}-{r}.txt").read()) / 1000 / calls
    return rps, p50, p99, cpu_us

rows = {}
for target in ["direct", "nginx", "hubgate"]:
    runs = [run(target, r) for r in range(1, rounds + 1)]
    rows[target] = [statistics.median(x[i] for x in runs) for i in range(4)] + [
        ", ".join(f"{x[0]:,.0f}" for x in runs)
    ]
print(f"\n`{command} URL` (each target {rounds} times, taking turns; medians)\n")
print("| path | requests/s | each round | latency p50 | latency p99 | CPU per call |")
print("|---|---|---|---|---|---|")
names = {
    "direct": "straight to the upstream (CPU: the upstream's)",
    "nginx": "through nginx `proxy_pass` (upstream keepalive)",
    "hubgate": "through hubgate",
}
for target, (rps, p50, p99, cpu_us, each) in rows.items():
    print(f"| {names[target]} | **{rps:,.0f}** | {each} | {p50:.2f} ms | {p99:.2f} ms "
          f"| {cpu_us:.1f} µs |")
ratio = rows["hubgate"][0] / rows["nginx"][0]
verdict = "met" if ratio >= 1 else "missed"
print(f"\nhubgate / nginx requests/s: **{ratio:.2f}** (target >= 1.00: {verdict}); "
      f"hubgate / direct: {rows['hubgate'][0] / rows['direct'][0]:.2f}; "
      f"CPU per call, hubgate / nginx: {rows['hubgate'][3] / rows['nginx'][3]:.2f}")
PY
