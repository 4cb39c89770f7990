#!/usr/bin/env bash
# Regenerates the diesel schema from migrations/sqlite into a temporary file and compares
# it with src/db/schema.rs: exits non-zero on any difference. `--write` replaces the file
# instead. diesel_cli 2.3 (SQLite only, bundled) is installed when missing into a cache
# outside the work tree (${CRM_TOOLS_DIR:-~/.cache/crm-comms/tools}), so fresh clones on
# one machine build it once; DIESEL names another binary.
set -euo pipefail
cd "$(dirname "$0")/../.."

root="${CRM_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/crm-comms/tools}"
diesel="${DIESEL:-$root/bin/diesel}"
if [ -z "${DIESEL:-}" ] && ! "$diesel" --version 2>/dev/null | grep -q 'Version: 2\.3\.'; then
  echo "[schema] installing diesel_cli 2.3 into $root" >&2
  # A debug build: it compiles in about half the time, and print-schema is quick either way.
  cargo install diesel_cli --debug --version '~2.3' --no-default-features --features sqlite-bundled \
    --locked --root "$root" >&2
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# The project's settings, writing into the temporary directory.
sed "s|^file = .*|file = \"$tmp/schema.rs\"|" diesel.toml >"$tmp/diesel.toml"
"$diesel" migration run --config-file "$tmp/diesel.toml" \
  --database-url "$tmp/schema.db" --migration-dir "$PWD/migrations/sqlite" >/dev/null
"$diesel" print-schema --config-file "$tmp/diesel.toml" \
  --database-url "$tmp/schema.db" >"$tmp/printed.rs"

if [ "${1:-}" = "--write" ]; then
  cp "$tmp/printed.rs" src/db/schema.rs
  echo "[schema] wrote src/db/schema.rs" >&2
  exit 0
fi
if ! diff -u src/db/schema.rs "$tmp/printed.rs"; then
  echo "[schema] src/db/schema.rs differs from what diesel print-schema makes of" \
    "migrations/sqlite; run tools/schema/check.sh --write" >&2
  exit 1
fi
echo "[schema] src/db/schema.rs matches the migrations" >&2
