#!/usr/bin/env bash
# Instructions hubgate spends per forwarded call, counted by valgrind's callgrind (exact
# and repeatable on a noisy machine, unlike times): hubgate (release) runs under callgrind
# in front of a fast upstream (nginx), a client sends WARMUP calls, the counters are zeroed,
# then CALLS calls one after another on one keep-alive connection, and the counters are
# dumped. Prints instructions per call and the functions they go to; the full annotated
# profile is kept in target/bench-profile/. With OWNERS, the calls take OWNERS tokens in
# turn, each its own owner from `[[credentials]]` (the case of bench/owners_overhead.sh).
# Usage: bench/profile.sh [CALLS] [WARMUP] [OWNERS]
source "$(dirname "$0")/lib.sh"
calls=${1:-20000}
warmup=${2:-1000}
owners=${3:-0}
need valgrind
need python3
echo "$(machine)"
# Named before the run: the binary was built from the tree as it is now.
commit=$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo "+changes")
start_fast_upstream
gw_port=$(free_port); gw_admin=$(free_port)
cat >"$work/hubgate.toml" <<TOML
[server]
listen = "127.0.0.1:$gw_port"
admin_listen = "127.0.0.1:$gw_admin"
[upstream]
base_url = "http://127.0.0.1:$up_port"
[log]
level = "warn"
$unbound_budgets
TOML
for i in $(seq 1 "$owners"); do
  printf '[[credentials]]\ntoken = "pat-na1-owner-%d"\napp_id = %d\nportal_id = %d\n' \
    "$i" "$((i + 1))" "$((100000 + i))" >>"$work/hubgate.toml"
done
out="$(pwd)/target/bench-profile"
mkdir -p "$out"
rm -f "$out"/callgrind.out.*
valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.%p" \
  "$bin" --config "$work/hubgate.toml" >"$work/hubgate.log" 2>&1 &
gw_pid=$!; pids+=("$gw_pid")
for _ in $(seq 1 600); do curl -sf -o /dev/null "http://127.0.0.1:$gw_admin/readyz" && break; sleep 0.1; done
send() {
  python3 - "$gw_port" "$1" "$bench_token" "$owners" <<'PY'
import http.client, sys
port, n, token, owners = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
conn = http.client.HTTPConnection("127.0.0.1", port)
tokens = [f"pat-na1-owner-{i}" for i in range(1, owners + 1)] or [token]
for i in range(n):
    headers = {"Authorization": f"Bearer {tokens[i % len(tokens)]}"}
    conn.request("GET", "/crm/v3/objects/contacts?limit=1", headers=headers)
    response = conn.getresponse()
    response.read()
    assert response.status == 200, response.status
PY
}
send "$warmup"
callgrind_control --zero "$gw_pid" >/dev/null
send "$calls"
callgrind_control --dump="$calls calls" "$gw_pid" >/dev/null
dump=$(ls -t "$out"/callgrind.out.*.* 2>/dev/null | head -1)
[ -n "$dump" ] || { echo "no callgrind dump in $out" >&2; exit 1; }
callgrind_annotate --threshold=100 --inclusive=yes "$dump" >"$out/inclusive.txt"
callgrind_annotate --threshold=100 "$dump" >"$out/exclusive.txt"
callgrind_annotate --threshold=100 --inclusive=yes --tree=caller "$dump" >"$out/callers.txt"
total=$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}' "$out/exclusive.txt")
# table TITLE FILE FILTER N: the N costliest functions matching FILTER, per call. Frames
# that merely hold the call (a thread's start, the runtime's poll loop: over half of all
# instructions) are left out of the exclusive table; a dump taken mid-run counts them whole.
table() {
  echo
  echo "| share | instructions per call | $1 |"
  echo "|---|---|---|"
  awk -v calls="$calls" -v total="$total" -v filter="$3" -v want="$4" '
    $1 ~ /^[0-9,]+$/ && $2 ~ /^\(/ && $0 ~ filter && n < want {
      ir = $1; gsub(",", "", ir)
      fn = $0; sub(/^ *[0-9,]+ \([^)]*\) +/, "", fn); sub(/ \[[^]]*\]$/, "", fn); sub(/^\?\?\?:/, "", fn)
      if (fn !~ /^<?hubgate::/ && ir + 0 > total / 2) next
      gsub(/\|/, "\\|", fn)
      printf "| %.1f %% | %d | `%s` |\n", 100 * ir / total, ir / calls, substr(fn, 1, 100)
      n++
    }' "$2"
}
echo
echo "\`bench/profile.sh $calls $warmup${3:+ $owners}\` at $commit: $calls sequential GETs through hubgate${3:+, $owners owners in turn}"
echo
echo "**$((total / calls)) instructions per call** ($total in all)"
table "function, exclusive (top 25)" "$out/exclusive.txt" "." 25
table "hubgate function, inclusive (top 25)" "$out/inclusive.txt" ":<?hubgate::" 25
echo
echo "Full profiles: $out/{exclusive,inclusive,callers}.txt"
