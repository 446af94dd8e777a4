# Shared by the bench scripts: free loopback ports, starting release binaries, RSS reads.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Always built: a stale binary would measure old code (a no-op when up to date).
# HUBGATE_BIN names another build instead (another commit's, for a before-and-after).
if [ -n "${HUBGATE_BIN:-}" ]; then
  bin="$HUBGATE_BIN"
else
  bin="$(pwd)/target/release/hubgate"
  cargo build --release --quiet
fi
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# rss_kib PID [field]: VmRSS (or VmHWM, the peak) of a process in KiB.
rss_kib() { awk -v f="${2:-VmRSS}:" '$1 == f {print $2}' "/proc/$1/status"; }
wait_http() { for _ in $(seq 1 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not up: $1" >&2; return 1; }
# need COMMAND [DEBIAN_PACKAGE]: installs the package when the command is missing.
need() {
  command -v "$1" >/dev/null && return 0
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${2:-$1}" >/dev/null
}
# cpu_ns PID...: CPU time (user + system, ns) the processes' threads have run so far, from
# the scheduler's own accounting (finer than the 1/100 s ticks of /proc/PID/stat).
cpu_ns() {
  local total=0 pid task
  for pid in "$@"; do
    for task in /proc/"$pid"/task/*/schedstat; do
      total=$((total + $(cut -d' ' -f1 "$task")))
    done
  done
  echo "$total"
}
# nginx_workers NAME: the worker pids of the nginx started as NAME (the master does no I/O).
nginx_workers() { pgrep -P "$(cat "$work/nginx-$1/nginx.pid")" | tr '\n' ' '; }
# machine: one line naming the machine and its load, printed above every table.
machine() {
  local cpu; cpu=$(lscpu | sed -n 's/^Model name: *//p' | head -1)
  echo "Machine: $(nproc) × ${cpu:-unknown CPU}, $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, Linux $(uname -r); load average $(cut -d' ' -f1-3 /proc/loadavg) at the start; commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
}

# start_sim ARGS...: starts the simulator on a free port; sets sim_port and sim_pid.
start_sim() {
  sim_port=$(free_port)
  "$bin" sim --listen "127.0.0.1:$sim_port" "$@" >"$work/sim.log" 2>&1 &
  sim_pid=$!; pids+=("$sim_pid")
  wait_http "http://127.0.0.1:$sim_port/__sim/stats"
}

# start_gateway EXTRA_TOML: starts hubgate in front of the simulator (or of $gw_upstream
# when set), with $gw_server's lines in `[server]`; sets gw_port, gw_admin, gw_pid.
start_gateway() {
  gw_port=$(free_port); gw_admin=$(free_port)
  cat >"$work/hubgate.toml" <<TOML
[server]
listen = "127.0.0.1:$gw_port"
admin_listen = "127.0.0.1:$gw_admin"
${gw_server:-}
[upstream]
base_url = "${gw_upstream:-http://127.0.0.1:$sim_port}"
[log]
level = "warn"
$1
TOML
  "$bin" --config "$work/hubgate.toml" >"$work/hubgate.log" 2>&1 &
  gw_pid=$!; pids+=("$gw_pid")
  wait_http "http://127.0.0.1:$gw_admin/readyz"
}

# start_nginx NAME HTTP_BLOCK [WORKERS]: an nginx as a user would run it (a master and one
# worker per core, or WORKERS), its files under $work, with HTTP_BLOCK inside `http { }`;
# waits for nothing.
start_nginx() {
  need nginx
  local dir="$work/nginx-$1"
  mkdir -p "$dir"
  cat >"$dir/nginx.conf" <<CONF
worker_processes ${3:-auto};
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
$2
}
CONF
  nginx -p "$dir" -e "$dir/error.log" -c "$dir/nginx.conf" -g 'daemon off;' &
  pids+=("$!")
}

# start_fast_upstream [LIMIT] [INTERVAL_MS]: nginx answering every call at once with a
# small contacts page and HubSpot's rate-limit headers (so hubgate parses them as it would
# HubSpot's), for measuring what sits in front of it; sets up_port. The headers report
# LIMIT per INTERVAL_MS (65,536 per 1,000 ms): a lower `-Max` than hubgate's limit would
# read as a lower tier and bind the budget.
start_fast_upstream() {
  local limit=${1:-65536} interval=${2:-1000}
  up_port=$(free_port)
  start_nginx upstream "
  server {
    listen 127.0.0.1:$up_port;
    keepalive_requests 1000000;
    location / {
      default_type application/json;
      add_header X-HubSpot-RateLimit-Max $limit;
      add_header X-HubSpot-RateLimit-Remaining $((limit - 1));
      add_header X-HubSpot-RateLimit-Interval-Milliseconds $interval;
      return 200 '{\"results\":[{\"id\":\"1\",\"properties\":{\"email\":\"a@example.com\"}}]}';
    }
  }"
  wait_http "http://127.0.0.1:$up_port/"
}

# start_nginx_proxy [WORKERS]: nginx `proxy_pass` in front of the fast upstream, set up as a
# user would (upstream keepalive, HTTP/1.1); sets px_port. keepalive_requests is raised on
# both sides: nginx's default of 1000 per connection would make it reconnect where hubgate
# does not.
start_nginx_proxy() {
  px_port=$(free_port)
  start_nginx proxy "
  upstream hubspot {
    server 127.0.0.1:$up_port;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$px_port;
    keepalive_requests 1000000;
    location / {
      proxy_pass http://hubspot;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }
  }" "$@"
  wait_http "http://127.0.0.1:$px_port/"
}

# wrk_rounds ROUNDS SECONDS URL_PATH WRK_ARGS...: one 2 s warm-up pass (connection pools,
# caches, lanes), then ROUNDS rounds in which each of "${targets[@]}" takes its turn for
# SECONDS against "${base[$t]}URL_PATH", so all share the machine's noise alike. Writes
# $work/wrk-T-R.txt and $work/cpu-T-R.txt (the CPU ns the pids "${spender[$t]}" ran), which
# bench/wrk_rounds.py reads; stops at a non-2xx answer.
wrk_rounds() {
  local rounds=$1 seconds=$2 path=$3 r t before
  shift 3
  for t in "${targets[@]}"; do
    wrk "$@" -d2s "${base[$t]}$path" >/dev/null
  done
  for r in $(seq 1 "$rounds"); do
    for t in "${targets[@]}"; do
      # shellcheck disable=SC2086 # a list of pids
      before=$(cpu_ns ${spender[$t]})
      wrk "$@" --latency -d"${seconds}s" "${base[$t]}$path" >"$work/wrk-$t-$r.txt"
      # shellcheck disable=SC2086
      echo $(($(cpu_ns ${spender[$t]}) - before)) >"$work/cpu-$t-$r.txt"
      if grep -q 'Non-2xx' "$work/wrk-$t-$r.txt"; then
        echo "$t answered non-2xx:" >&2; cat "$work/wrk-$t-$r.txt" >&2; exit 1
      fi
      echo "round $r $t: $(awk '/Requests\/sec/ {print $2}' "$work/wrk-$t-$r.txt") req/s" >&2
    done
  done
}

# hubgate settings for measuring its overhead: a known token (no introspection) whose
# budgets never bind at these rates (65,536 per 1 s window).
bench_token="pat-na1-bench"
unbound_budgets="[budgets]
burst_limit = 65536
burst_window_ms = 1000
[[credentials]]
token = \"$bench_token\"
app_id = 1
portal_id = 1"
