#!/usr/bin/env bash
# Where the server's CPU goes on the write paths: runs the scale benchmark's `writes`
# part and samples the release server with `perf record` (software clock, DWARF call
# graphs) while 32 clients call LogCommunication, then again during the
# ImportCommunications stream; prints each named part's inclusive share of the
# server's samples.
#
# Usage: tools/bench/profile-writes.sh [mysql|sqlite] [seconds]
# Needs perf (Debian: linux-perf) and python3; the benchmark's MariaDB is
# CRM_BENCH_MYSQL_URL (default mysql://root@127.0.0.1:3306). Shares from one run:
# repeat it before quoting a figure.
set -euo pipefail
db=${1:-mysql}
secs=${2:-8}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cd "$(dirname "$0")/../.."

cargo bench --bench scale --no-run
cargo bench --bench scale -- --communications 100000 --customers 1000 --only writes \
    --db "$db" --runs 1 --log-rows 1000 --import-rows 200000 >"$out/bench.log" 2>&1 &
bench=$!

# Samples the server for `secs` once `pattern` is in the benchmark's output.
sample() {
    local pattern=$1 name=$2
    until grep -q "$pattern" "$out/bench.log"; do
        kill -0 "$bench" 2>/dev/null || { cat "$out/bench.log"; exit 1; }
        sleep 0.2
    done
    sleep 1
    local pid
    pid=$(pgrep -n -f "crm-comms serve")
    perf record -q -F 499 -e cpu-clock --call-graph dwarf,16384 -p "$pid" \
        -o "$out/$name.data" -- sleep "$secs" >/dev/null 2>&1
}
sample "writes (scratch database)" log
sample "sentiment scoring" import
wait "$bench"
for name in log import; do
    perf script --no-inline -i "$out/$name.data" 2>/dev/null >"$out/$name.txt"
done
grep -E "writes:|CPU ms per row|import batch|ImportCommunications, one" "$out/bench.log" || true

for name in log import; do
    echo "== server CPU, $name (inclusive share of its samples) =="
    python3 - "$out/$name.txt" <<'EOF'
import re, sys
parts = [
    ("validating the request (communication_form)", "grpc::communication::communication_form"),
    ("  sentiment scoring", "analytics::sentiment::score"),
    ("  phone number parsing", "model::phone::normalize"),
    ("storing LogCommunication batches (log_batch)", "db::communications::log_batch"),
    ("storing import batches (insert_batch)", "db::communications::insert_batch"),
    ("  rollup statements (rollups::add)", "db::rollups::add"),
    ("  audit rows", "db::audit::record"),
    ("database drivers (mysql_async, diesel)", ("mysql_async", "mysql_common", "diesel")),
    ("HTTP/2 (h2, hyper)", ("h2::", "hyper::")),
    ("protobuf (prost)", "prost"),
    ("memory allocation", ("malloc", "_int_free", "cfree", "realloc")),
]
samples, cur = [], []
for line in open(sys.argv[1], errors="replace"):
    if not line.strip():
        if cur:
            samples.append(cur)
        cur = []
    elif line[0] in " \t":
        cur.append(line.strip().split(" ", 1)[-1])
if cur:
    samples.append(cur)
n = max(len(samples), 1)
print(f"{len(samples)} samples")
for label, needles in parts:
    needles = (needles,) if isinstance(needles, str) else needles
    hit = sum(1 for s in samples if any(k in f for f in s for k in needles))
    print(f"{100 * hit / n:6.1f}%  {label}")
EOF
done
