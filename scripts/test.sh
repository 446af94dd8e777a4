#!/usr/bin/env bash
# The one test command (README "Test it"): installs what the tests need on a fresh machine,
# then runs formatting and lint checks, every Rust test, the official HubSpot SDKs
# (Python and Node) through hubgate against the simulator, and the observability checks
# (promtool on the Prometheus config, alert rules and their unit tests, and a real
# Prometheus scraping hubgate under load).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

say() { printf '\n==> %s\n' "$*"; }

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3 python3-venv)
command -v node >/dev/null || need_apt+=(nodejs npm)
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || need_apt+=(prometheus)
# tests/gateway/redis/ starts its own redis-server instances on loopback ports.
command -v redis-server >/dev/null || need_apt+=(redis-server)
# tests/gateway/redis/cluster.rs builds its cluster with redis-cli --cluster create.
command -v redis-cli >/dev/null || need_apt+=(redis-tools)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi

say "cargo fmt --check"
cargo fmt --all --check
say "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "cargo test --workspace"
cargo test --workspace

say "official SDKs through hubgate against the simulator"
scripts/sdk-test.sh

say "promtool: Prometheus config, alert rules, alert unit tests"
promtool check config prometheus/prometheus.yml
promtool check rules prometheus/alerts.yml
(cd prometheus && promtool test rules alerts_test.yml)

say "Prometheus end to end: every dashboard and alert expression returns data"
scripts/prometheus-e2e.sh
