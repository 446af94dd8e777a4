#!/usr/bin/env bash
# Soak: MINUTES (default 10) of mixed load over many owners through hubgate (release) to the
# simulator, with faults injected in turn; hubgate's RSS and open file descriptors are
# sampled every 30 s and must not grow.
# Load: `hubgate load` open loop at RATE calls/s rotating over OWNERS private-app tokens
# (get/create/batch/search), plus 40 closed-loop callers saturating 4 other owners so queues
# stay busy. Faults rotate by the minute: clean, 5 % 5xx, slow answers (200-500 ms), 2 %
# dropped connections, clean, ...; the last minute is clean.
# Growth check: the last minute against the clean minute after the first round of faults
# (minute 4). The first minutes are a ramp, not a baseline: hundreds of new tokens are
# identified at hubgate's introspection pace, and the first round of faults sets the
# allocator's and connection pools' high-water marks. Both compared minutes are clean and
# follow no slow phase, whose extra pooled connections idle out only after 90 s.
# Usage: bench/soak.sh [MINUTES] [OWNERS] [RATE]
source "$(dirname "$0")/lib.sh"
minutes=${1:-10}
owners=${2:-500}
rate=${3:-300}
seconds=$((minutes * 60))
((minutes >= 6)) || { echo "bench/soak.sh: MINUTES must be at least 6 (a round of faults, a clean baseline minute, more faults, a clean last minute)" >&2; exit 2; }

start_sim --generate-tokens "$owners" --burst-limit 100 --burst-window-ms 10000 --daily-limit 0
start_gateway "[budgets]
burst_limit = 100
burst_window_ms = 10000"
sim="http://127.0.0.1:$sim_port"
gw="http://127.0.0.1:$gw_port"
admin="http://127.0.0.1:$gw_admin"

faults() { curl -sf -X POST -H 'content-type: application/json' -d "$1" "$sim/__sim/faults" >/dev/null; }
# Minute m (0-based) of the run: a 4-minute rotation, and a clean last minute that follows
# no slow minute.
phase_of() {
  local m=$1
  if ((m == minutes - 1 || (m == minutes - 2 && m % 4 == 2))); then echo none; return; fi
  case $((m % 4)) in
    0) echo none ;;
    1) echo 5xx ;;
    2) echo slow ;;
    3) echo drops ;;
  esac
}
apply_phase() {
  case $1 in
    none) faults '{}' ;;
    5xx) faults '{"error_rate":0.05}' ;;
    slow) faults '{"latency_ms":200,"latency_jitter_ms":300}' ;;
    drops) faults '{"drop_rate":0.02}' ;;
  esac
}

hot_tokens=oauth-sim-1,oauth-sim-2,oauth-sim-3,oauth-sim-4
# The broad load owns the simulator's counters (--sim resets them as it starts); the hot
# callers use other apps (oauth-sim-i is app 3000+i), so they stay out of its efficiency.
"$bin" load --target "$gw" --sim "$sim" --sim-tokens "$owners" --rate "$rate" \
  --duration "$seconds" --json --quiet >"$work/broad.json" 2>"$work/broad.err" &
broad_pid=$!; pids+=("$broad_pid")
sleep 1
"$bin" load --target "$gw" --token "$hot_tokens" --callers 40 --mix get=3,create=1 \
  --duration "$((seconds - 1))" --json --quiet >"$work/hot.json" 2>"$work/hot.err" &
hot_pid=$!; pids+=("$hot_pid")

echo "soak: $minutes min, $owners owners open loop at $rate/s + 40 callers on 4 hot owners; hubgate pid $gw_pid"
echo
# The machine may be shared: "CPU wait" is the share of the last 10 s in which some task was
# ready to run but had no CPU (/proc/pressure/cpu), so stalls that are not hubgate's show.
cpu_wait() { awk '/^some/ { sub("avg10=", "", $2); print $2 " %" }' /proc/pressure/cpu 2>/dev/null || echo "?"; }
echo "| t (s) | faults | hubgate RSS (MiB) | open fds | active owners | queued | CPU wait (10 s) |"
echo "|---:|---|---:|---:|---:|---:|---:|"
start=$(date +%s)
declare -a t_at rss_at fds_at
for ((t = 0; t < seconds; t += 30)); do
  sleep "$((start + t - $(date +%s)))" 2>/dev/null || true
  if ((t % 60 == 0)); then phase=$(phase_of $((t / 60))); apply_phase "$phase"; fi
  rss=$(rss_kib "$gw_pid")
  fds=$(ls "/proc/$gw_pid/fd" | wc -l)
  read -r active queued < <(curl -sf "$admin/admin/budgets" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d["owners_active"], sum(o["queue_depth"] for o in d["owners"]))' || echo "? ?")
  t_at+=("$t"); rss_at+=("$rss"); fds_at+=("$fds")
  printf '| %d | %s | %s | %d | %s | %s | %s |\n' "$t" "$phase" "$(awk -v k="$rss" 'BEGIN { printf "%.1f", k / 1024 }')" "$fds" "$active" "$queued" "$(cpu_wait)"
done
wait "$broad_pid" "$hot_pid"
peak=$(rss_kib "$gw_pid" VmHWM)
echo
echo "hubgate peak RSS (VmHWM): $((peak / 1024)) MiB"
curl -sf "$admin/metrics" | grep -E '^hubgate_retries_total|^hubgate_requests_total' | sed 's/^/  /'

for run in broad hot; do
  python3 - "$run" "$work/$run.json" <<'PY'
import json, sys
name, path = sys.argv[1], sys.argv[2]
s = json.load(open(path))
o, l, v = s["outcomes"], s["latency_ms"], s.get("simulator")
pace = f"open loop at {s['rate_per_second']}/s" if s["mode"] == "open" else f"closed loop, {s['callers']} callers"
print(f"\n{name}: {pace} over {s['tokens']} tokens, {s['duration_seconds']:.0f} s: "
      f"sent {s['sent']}, answered {s['answered']}, not sent {s['skipped']}, unfinished {s['unfinished']}")
print(f"  outcomes: {o}")
print(f"  latency ms: p50 {l['p50']}, p90 {l['p90']}, p99 {l['p99']}, max {l['max']}; "
      f"{s['throughput_per_second']['answered']:.1f} answers/s")
if v:
    eff = "-" if v["efficiency"] is None else f"{100 * v['efficiency']:.1f} %"
    print(f"  simulator: accepted {v['accepted']} / allowed {v['allowed']} ({eff}), 429s it sent {v['upstream_429s']} "
          f"{v['upstream_429s_by_policy']}, most in one window {v['max_accepted_in_window']} (limit {v['burst_limit']}), "
          f"faults: {v['fault_errors']} 5xx answers, {v['fault_drops']} dropped connections")
PY
done

# Growth: the last minute against minute 4 (see the top); the first minute is printed for
# reference. RSS compares the largest samples. Open fds compare the smallest: connections
# follow the calls in flight at the sampled instant (a stall of a shared machine piles them
# up for a moment), while a leak raises the floor.
python3 - "${t_at[*]}" "${rss_at[*]}" "${fds_at[*]}" "$seconds" <<'PY'
import sys
t = [int(x) for x in sys.argv[1].split()]
rss = [int(x) for x in sys.argv[2].split()]
fds = [int(x) for x in sys.argv[3].split()]
end = int(sys.argv[4])
def peak(values, lo, hi):
    return max(v for s, v in zip(t, values) if lo <= s < hi)
first_rss, first_fds = peak(rss, 0, 60), peak(fds, 0, 60)
def floor(values, lo, hi):
    return min(v for s, v in zip(t, values) if lo <= s < hi)
r0, f0 = peak(rss, 240, 300), floor(fds, 240, 300)
r1, f1 = peak(rss, end - 60, end), floor(fds, end - 60, end)
rss_ok = r1 <= r0 * 1.10 + 2048
fds_ok = f1 <= f0 * 1.25 + 16
print(f"\nfirst minute (ramp): RSS {first_rss / 1024:.1f} MiB, {first_fds} open fds")
print(f"RSS minute 4 {r0 / 1024:.1f} MiB -> last minute {r1 / 1024:.1f} MiB ({100 * (r1 - r0) / r0:+.1f} %): "
      f"{'stable' if rss_ok else 'GREW'} (allowed: +10 % + 2 MiB)")
print(f"open fds (floor) minute 4 {f0} -> last minute {f1}: {'stable' if fds_ok else 'GREW'} (allowed: +25 % + 16)")
sys.exit(0 if rss_ok and fds_ok else 1)
PY
