#!/usr/bin/env bash
# Peak memory of hubgate while a 200 MiB upload streams through it to the simulator's
# echo, which hashes the body as it arrives. Bodies stream: the peak must stay far below
# the body size. Usage: bench/upload_memory.sh [MiB]
source "$(dirname "$0")/lib.sh"
mib=${1:-200}
start_sim
start_gateway ""
head -c $((mib * 1024 * 1024)) /dev/urandom >"$work/upload.bin"
expected=$(sha256sum "$work/upload.bin" | cut -d' ' -f1)
before=$(rss_kib "$gw_pid")
answer=$(curl -sf -X POST -H 'Content-Type: application/octet-stream' -H 'Expect:' \
  --data-binary @"$work/upload.bin" "http://127.0.0.1:$gw_port/__sim/echo/files/v3/files")
peak=$(rss_kib "$gw_pid" VmHWM)
echo "$answer" | grep -q "\"body_sha256\":\"$expected\"" || { echo "digest mismatch: $answer" >&2; exit 1; }
echo "upload of $mib MiB through hubgate: digest matches; hubgate RSS before $((before / 1024)) MiB, peak during the upload $((peak / 1024)) MiB"
