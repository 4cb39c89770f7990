#!/usr/bin/env bash
# Times the content index's start on an existing dataset: a first start reads every row
# (memory, bytes per row, seconds) and writes the snapshot at shutdown; a second start
# reads the snapshot (seconds to ready). Prints the servers' own log lines and VmHWM.
#
#   cargo build --release
#   URL=mysql://root@127.0.0.1:3306/crm_bench_scale_10000000_100000 tools/bench/content-index-start.sh
#
# BIN (target/release/crm-comms) is the server; SNAP (target/bench-snap) the snapshot
# directory; PORT (50991) where the servers listen.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${URL:?URL=<database url of a seeded dataset>}"
BIN=${BIN:-target/release/crm-comms}
SNAP=${SNAP:-target/bench-snap}
PORT=${PORT:-50991}
mkdir -p "$SNAP"
rm -f "$SNAP"/content-index-*.snapshot  # the first start reads every row
plain() { sed 's/\x1b\[[0-9;]*m//g'; }
for life in first second; do
  log=$(mktemp)
  CRM_INDEX_SNAPSHOT_DIR=$SNAP "$BIN" serve --database-url "$URL" --listen "127.0.0.1:$PORT" >"$log" 2>&1 &
  pid=$!
  for _ in $(seq 1 1800); do
    grep -q 'content index ready' "$log" && break
    kill -0 "$pid" 2>/dev/null || { plain <"$log"; exit 1; }
    sleep 1
  done
  echo "== $life start"
  grep -E 'content index ready|snapshot ignored' "$log" | plain
  grep -E 'VmHWM' "/proc/$pid/status"
  kill -TERM "$pid"
  wait "$pid" || true
  grep -E 'snapshot written' "$log" | plain || true  # none after a start from the snapshot
  rm -f "$log"
done
