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
wrk_rounds "$rounds" "$seconds" "$path" \
  -t2 -c"$connections" -H "Authorization: Bearer $bench_token"
python3 bench/wrk_rounds.py "$work" "$rounds" "\`$command URL\`" \
  "direct=straight to the upstream (CPU: the upstream's)" \
  "nginx=through nginx \`proxy_pass\` (upstream keepalive)" \
  "hubgate=through hubgate"
