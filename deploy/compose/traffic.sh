#!/bin/sh
# Demo traffic for the docker compose stack: a few callers calling through hubgate
# ($HUBGATE_URL) with the simulator's tokens, so the dashboard has something to show. One
# app gets more than its burst budget (it queues), searches press on the search window.
set -u
base=${HUBGATE_URL:?set HUBGATE_URL, e.g. http://hubgate:8080}

# caller token pause-seconds method path [priority]
load() {
  caller=$1 token=$2 pause=$3 method=$4 path=$5 priority=${6:-normal}
  data=""
  [ "$method" = POST ] && data="{}"
  while :; do
    curl -s -o /dev/null --max-time 60 -X "$method" \
      -H "Authorization: Bearer $token" \
      -H "X-Hubgate-Caller: $caller" \
      -H "X-Hubgate-Priority: $priority" \
      -H "Content-Type: application/json" \
      ${data:+--data "$data"} \
      "$base$path"
    sleep "$pause"
  done
}

load nightly-sync pat-na1-sim-1 0 GET "/crm/v3/objects/contacts?limit=10" low &
load nightly-sync pat-na1-sim-1 0 GET "/crm/v3/objects/companies?limit=10" low &
load web-app pat-na1-sim-1 0.5 GET "/crm/v3/objects/contacts?limit=1" high &
load reports pat-na1-sim-2 0.2 GET "/crm/v3/objects/deals?limit=10" &
load search-ui oauth-sim-3 0.1 POST "/crm/v3/objects/contacts/search" &
load search-ui oauth-sim-3 0.1 POST "/crm/v3/objects/companies/search" &
wait
