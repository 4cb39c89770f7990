#!/usr/bin/env bash
# The grpcio client suite: tests the server the way grpc-core (Python grpcio) clients
# use it, on SQLite and MariaDB. Creates (and reuses) a venv under the cargo target
# directory, installs tests/grpcio/requirements.txt into it, builds the server if its
# binary is missing, and runs pytest; the stubs are generated from proto/ at run time.
#
#   bash tests/grpcio/run.sh [pytest args...]     e.g. -k import_of_100k
#
# CRM_COMMS_BIN picks another server binary; CRM_REQUIRE_MYSQL=1 makes an unreachable
# MariaDB a failure instead of a skip.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { printf '[grpcio] %s\n' "$*"; }

target="${CARGO_TARGET_DIR:-$PWD/target}"
venv="$target/grpcio-venv"
req=tests/grpcio/requirements.txt

if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
  log "python3 venv support is missing; installing python3-venv with apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq python3 python3-venv >/dev/null
fi

# Reuse the venv while the requirements are unchanged.
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$venv/.requirements.txt"; then
  log "creating $venv"
  rm -rf "$venv"
  mkdir -p "$target"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
  cp "$req" "$venv/.requirements.txt"
fi

if [ -z "${CRM_COMMS_BIN:-}" ]; then
  export CRM_COMMS_BIN="$target/debug/crm-comms"
  # Always (a no-op when fresh): a stale binary would test yesterday's server.
  log "building the server (cargo build --bin crm-comms)"
  cargo build --quiet --bin crm-comms
fi
log "server: $CRM_COMMS_BIN"

cd tests/grpcio
exec "$venv/bin/python" -m pytest "$@"
