#!/usr/bin/env bash
# Runs the example clients (examples/python, examples/typescript) against a real server:
#   1. a Python venv under the cargo target directory (target/examples-venv) with the
#      grpcio, grpcio-tools and protobuf versions pinned in tests/grpcio/requirements.txt;
#   2. `npm ci` in examples/typescript (Connect-ES, protoc-gen-es, buf, tsx, tsc: all
#      pinned in its package-lock.json);
#   3. `buf generate` (buf.gen.yaml: gen/python, gen/ts), with that pinned buf;
#   4. the debug server (`cargo build --bin crm-comms`, a no-op when fresh), started on a
#      free loopback port over a fresh SQLite file, no tokens, --rate-limit 0;
#   5. the Python example, then the TypeScript one (type-checked with tsc, run by tsx);
#   6. the server stopped with SIGTERM, which must exit cleanly.
# Exits non-zero on any failure. Installs nothing outside the work tree: without node/npm
# or python3's venv module it says so and fails. Needs the package registries (PyPI, npm)
# only while the venv or node_modules are first made; later runs reuse the venv and
# npm's cache.
#
#   bash examples/run.sh
#
# CRM_COMMS_BIN runs another server binary instead of building the debug one.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

log() { printf '[examples +%ss] %s\n' "$SECONDS" "$*"; }
die() { printf '[examples] ERROR: %s\n' "$*" >&2; exit 1; }

target="${CARGO_TARGET_DIR:-$repo/target}"
venv="$target/examples-venv"
ts_dir=examples/typescript

# -- tools --------------------------------------------------------------------------
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 ||
  die "node and npm are needed for the TypeScript example (Node.js 20 or later, e.g. apt-get install nodejs npm); not installing them from here"
node_major=$(node -p 'process.versions.node.split(".")[0]')
[ "$node_major" -ge 20 ] || die "Node.js $(node --version) is too old: the TypeScript example needs 20 or later"
python3 -m venv --help >/dev/null 2>&1 && python3 -c 'import ensurepip' >/dev/null 2>&1 ||
  die "python3 with the venv module is needed for the Python example (e.g. apt-get install python3-venv); not installing it from here"

# -- 1. Python venv: the client pins of the grpcio suite ----------------------------
req="$target/examples-requirements.txt"
mkdir -p "$target"
grep -E '^(grpcio|grpcio-tools|protobuf)==' tests/grpcio/requirements.txt >"$req"
[ "$(wc -l <"$req")" -eq 3 ] || die "tests/grpcio/requirements.txt no longer pins grpcio, grpcio-tools and protobuf"
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$venv/.requirements.txt"; then
  log "creating $venv ($(tr '\n' ' ' <"$req"))"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$req"
  cp "$req" "$venv/.requirements.txt"
fi

# -- 2. node_modules ----------------------------------------------------------------
log "npm ci in $ts_dir"
(cd "$ts_dir" && npm ci --prefer-offline --no-audit --no-fund --loglevel=error)

# -- 3. code generation ---------------------------------------------------------------
# buf.gen.yaml names the venv's python and node_modules' protoc-gen-es by their paths
# under the repository root; with another CARGO_TARGET_DIR, point it at this venv.
template=buf.gen.yaml
if [ "$venv" != "$repo/target/examples-venv" ]; then
  template="$target/examples-buf.gen.yaml"
  sed "s#target/examples-venv/#$venv/#g" buf.gen.yaml >"$template"
fi
log "buf generate ($("$ts_dir/node_modules/.bin/buf" --version)): gen/python, gen/ts"
"$ts_dir/node_modules/.bin/buf" generate --template "$template"
# Node resolves @bufbuild/protobuf from the importing file's directory, so the
# TypeScript example keeps its copy of the generated code inside its package.
rm -rf "$ts_dir/src/gen"
cp -R gen/ts "$ts_dir/src/gen"

# -- 4. the server --------------------------------------------------------------------
if [ -z "${CRM_COMMS_BIN:-}" ]; then
  log "building the server (cargo build --bin crm-comms)"
  cargo build --quiet --bin crm-comms
  CRM_COMMS_BIN="$target/debug/crm-comms"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/crm-examples.XXXXXX")
server_pid=""
stop_server() {
  # SIGTERM, then SIGKILL after 20 s; sets server_status to the exit code.
  server_status=""
  [ -n "$server_pid" ] || return 0
  kill -TERM "$server_pid" 2>/dev/null || true
  for _ in $(seq 1 200); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$server_pid" 2>/dev/null; then
    log "the server did not stop within 20 s of SIGTERM; killing it"
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  server_status=0
  wait "$server_pid" || server_status=$?
  server_pid=""
}
cleanup() {
  local status=$?
  stop_server
  if [ "$status" -ne 0 ] && [ -f "$tmp/server.log" ]; then
    echo "--- last lines of the server's log ($tmp/server.log) ---" >&2
    tail -n 40 "$tmp/server.log" >&2
  fi
  rm -rf "$tmp"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Health: grpc.health.v1.Health/Check answering SERVING, asked with raw bytes (no
# health stubs needed) until the deadline or until the server exits.
wait_healthy() {
  "$venv/bin/python" - "$1" "$2" <<'PY'
import os, sys, time
import grpc
addr, pid, deadline = sys.argv[1], int(sys.argv[2]), time.monotonic() + 60
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        sys.exit(1)  # exited: port taken, bad flags
    with grpc.insecure_channel(addr) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check",
                                    request_serializer=lambda _: b"", response_deserializer=lambda b: b)
        try:
            if check(None, timeout=2) == b"\x08\x01":  # HealthCheckResponse { status: SERVING }
                sys.exit(0)
        except grpc.RpcError:
            pass
    time.sleep(0.2)
sys.exit(1)
PY
}

addr=""
for attempt in 1 2 3; do
  port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # Loopback and no tokens: no --insecure needed. No rate limit for the examples.
  "$CRM_COMMS_BIN" --listen "127.0.0.1:$port" --database-url "sqlite://$tmp/crm.db" \
    --rate-limit 0 --log info >>"$tmp/server.log" 2>&1 </dev/null &
  server_pid=$!
  if wait_healthy "127.0.0.1:$port" "$server_pid"; then
    addr="127.0.0.1:$port"
    break
  fi
  log "the server did not become healthy on port $port (attempt $attempt)"
  stop_server
done
[ -n "$addr" ] || die "crm-comms did not answer health checks"
log "server $CRM_COMMS_BIN is up on $addr (SQLite $tmp/crm.db)"

# -- 5. the examples ------------------------------------------------------------------
log "python example (grpcio, stubs from gen/python)"
"$venv/bin/python" examples/python/client.py --addr "$addr" --stubs gen/python

log "typescript example (Connect-ES over gRPC/HTTP2, code from protoc-gen-es): tsc --noEmit, then tsx"
(cd "$ts_dir" && ./node_modules/.bin/tsc --noEmit && ./node_modules/.bin/tsx src/client.ts "http://$addr")

# -- 6. a clean stop ---------------------------------------------------------------------
stop_server
[ "$server_status" -eq 0 ] || die "the server exited with status $server_status after SIGTERM"
log "server stopped cleanly; all examples passed"
