#!/usr/bin/env bash
# The docs check: builds the debug binary (the Dockerfile's build command, in debug; not
# when CRM_COMMS_BIN names one), then
# runs every shell session of README.md and docs/*.md against it (tools/docs/check.py) and
# exercises the Dockerfile, the systemd unit and the Kubernetes manifests
# (tools/docs/deploy_check.py). Rules for writing sessions: docs/development.md.
# Arguments (files) go to check.py; with arguments the deploy check is skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."

log() { printf '[docs] %s\n' "$*"; }

# CRM_COMMS_BIN names a binary built already (.ci/run passes the one `cargo test` built).
if [ -z "${CRM_COMMS_BIN:-}" ]; then
  cargo build --locked --bin crm-comms
fi

# Tools the sessions use: buf (from npm, as .ci/run installs it), the sqlite3 shell, openssl,
# curl; PyYAML for the manifests.
if ! command -v buf >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  log "buf is missing; installing it with npm install -g @bufbuild/buf"
  npm install -g --no-audit --no-fund --loglevel=error @bufbuild/buf >/dev/null 2>&1 || true
fi
missing=()
for tool in sqlite3 openssl curl; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ "${#missing[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  log "installing ${missing[*]} with apt"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if ! python3 -c 'import yaml' 2>/dev/null; then
  log "PyYAML is missing; installing it"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-yaml >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-yaml >/dev/null; }
  else
    # A Debian Python refuses a plain user-wide pip install (PEP 668).
    python3 -m pip install --quiet --user pyyaml ||
      python3 -m pip install --quiet --user --break-system-packages pyyaml
  fi
fi

start=$SECONDS
# The check's own tests first: its matching rules, and a drifted page that must fail.
python3 tools/docs/test_check.py
python3 tools/docs/check.py "$@"
if [ "$#" -eq 0 ]; then
  python3 tools/docs/deploy_check.py
fi
log "docs check passed in $((SECONDS - start)) s"
