#!/usr/bin/env bash
# Pins the MariaDB plan of every statement the service runs.
#
# 1. Starts a private MariaDB (its own datadir and port, general log on: nothing is
#    changed on any other server) and fills database `plans` with seed-demo
#    (PLANS_COMMUNICATIONS rows, default 1,000,000, over PLANS_CUSTOMERS customers).
# 2. Runs the MariaDB half of the integration suite against it: every RPC, every
#    statement, each test in its own database; the general log keeps each statement with
#    its bound values.
# 3. EXPLAINs one sample of every distinct statement on the seeded database and writes
#    the plan summary (tools/plans/plans.py): statement digest -> table, access type,
#    key, key_len, and flags for reads that grow with the table.
#
# Usage: tools/plans/explain.sh [--check]   (from the repository root)
#   --check    compare with the committed tests/plans/mariadb.txt; fail on any change
#   PLANS_DIR  where the private server lives (default /tmp/crm-plans); kept between runs,
#              so a second run reuses the seeded database (remove it to seed again)
#   PLANS_PORT its port (default 3407)
#   PLANS_TESTS the integration-test filter (default: every MySQL trial)
set -euo pipefail

cd "$(dirname "$0")/../.."
dir=${PLANS_DIR:-/tmp/crm-plans}
port=${PLANS_PORT:-3407}
customers=${PLANS_CUSTOMERS:-2000}
communications=${PLANS_COMMUNICATIONS:-1000000}
out=tests/plans/mariadb.txt
check=false
[[ ${1:-} == --check ]] && check=true

sock="$dir/mysqld.sock"
sql() { mariadb --no-defaults -uroot -S "$sock" "$@"; }

mkdir -p "$dir"
if [[ ! -d $dir/data/mysql ]]; then
  mariadb-install-db --no-defaults --datadir="$dir/data" --user="$(id -un)" \
    --auth-root-authentication-method=normal >"$dir/install.log" 2>&1
fi
if ! sql -e 'SELECT 1' >/dev/null 2>&1; then
  mariadbd --no-defaults --datadir="$dir/data" --port="$port" --bind-address=127.0.0.1 \
    --socket="$sock" --pid-file="$dir/mysqld.pid" --user="$(id -un)" \
    --innodb-buffer-pool-size=1G --innodb-flush-log-at-trx-commit=2 \
    --general-log=1 --log-output=TABLE --max-connections=500 \
    >"$dir/mysqld.log" 2>&1 &
  for _ in $(seq 60); do sql -e 'SELECT 1' >/dev/null 2>&1 && break; sleep 1; done
  # Anonymous accounts would shadow the accounts tests create for 'user'@'%'.
  sql -e "DROP USER IF EXISTS ''@'localhost', ''@'$(hostname)'"
fi
echo "private MariaDB at 127.0.0.1:$port (pid $(cat "$dir/mysqld.pid")); stop it with: kill \$(cat $dir/mysqld.pid)"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --quiet --bin crm-comms
bin=$CARGO_TARGET_DIR/debug/crm-comms
url="mysql://root@127.0.0.1:$port/plans"

if [[ -z $(sql -N -e "SHOW DATABASES LIKE 'plans'") ]]; then
  sql -e 'CREATE DATABASE plans'
  start=$(date +%s)
  DATABASE_URL=$url "$bin" migrate
  DATABASE_URL=$url "$bin" seed-demo --customers "$customers" \
    --communications "$communications" --end 2026-01-01T00:00:00Z 2>/dev/null
  sql plans -e 'ANALYZE TABLE communications, customers, transactions, service_tickets,
    audit_records, customer_tags, customer_merges, deleted_communications' >/dev/null
  echo "seeded $communications communications in $(($(date +%s) - start)) s"
fi

# The statements of this test run, and seed-demo's on the seeded database (samples
# naming rows that exist there), are explained.
since=$(sql -N -e 'SELECT NOW(6)')
CRM_TEST_MYSQL_URL="mysql://root@127.0.0.1:$port" CRM_REQUIRE_MYSQL=1 \
  cargo test --quiet --test integration -- "${PLANS_TESTS:-mysql}" >"$dir/tests.log" 2>&1 \
  || echo "some tests failed (see $dir/tests.log); their statements are explained all the same"

python3 tools/plans/plans.py --socket "$sock" --database plans --since "$since" >"$dir/mariadb.txt"
if $check; then
  if diff -u "$out" "$dir/mariadb.txt"; then
    echo "plans unchanged ($out)"
  else
    echo "plans changed: review, then cp $dir/mariadb.txt $out" >&2
    exit 1
  fi
else
  mkdir -p "$(dirname "$out")"
  cp "$dir/mariadb.txt" "$out"
  echo "wrote $out"
fi
grep -c '^  ' "$out" | xargs echo "plan rows:"
grep -E '^  .*!' "$out" || echo "no flagged reads"
