#!/usr/bin/env bash
# Observability end to end: hubgate + the simulator (with an outside consumer provoking
# HubSpot 429s) under load, scraped by a real Prometheus every second; every PromQL
# expression of grafana/dashboards/hubgate.json and prometheus/alerts.yml must return data.
# Needs prometheus + promtool (Debian: apt-get install prometheus) and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-target}
cargo build --quiet --bin hubgate
exec python3 scripts/prometheus_e2e.py "$target/debug/hubgate" "$(pwd)"
