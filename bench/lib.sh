# Shared by the bench scripts: free loopback ports, starting release binaries, RSS reads.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="$(pwd)/target/release/hubgate"
[ -x "$bin" ] || cargo build --release --quiet
work=$(mktemp -d)
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# rss_kib PID [field]: VmRSS (or VmHWM, the peak) of a process in KiB.
rss_kib() { awk -v f="${2:-VmRSS}:" '$1 == f {print $2}' "/proc/$1/status"; }
wait_http() { for _ in $(seq 1 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done; echo "not up: $1" >&2; return 1; }

# start_sim ARGS...: starts the simulator on a free port; sets sim_port and sim_pid.
start_sim() {
  sim_port=$(free_port)
  "$bin" sim --listen "127.0.0.1:$sim_port" "$@" >"$work/sim.log" 2>&1 &
  sim_pid=$!; pids+=("$sim_pid")
  wait_http "http://127.0.0.1:$sim_port/__sim/stats"
}

# start_gateway EXTRA_TOML: starts hubgate in front of the simulator; sets gw_port, gw_admin, gw_pid.
start_gateway() {
  gw_port=$(free_port); gw_admin=$(free_port)
  cat >"$work/hubgate.toml" <<TOML
[server]
listen = "127.0.0.1:$gw_port"
admin_listen = "127.0.0.1:$gw_admin"
[upstream]
base_url = "http://127.0.0.1:$sim_port"
[log]
level = "warn"
$1
TOML
  "$bin" --config "$work/hubgate.toml" >"$work/hubgate.log" 2>&1 &
  gw_pid=$!; pids+=("$gw_pid")
  wait_http "http://127.0.0.1:$gw_admin/readyz"
}
