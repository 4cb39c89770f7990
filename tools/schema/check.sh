#!/usr/bin/env bash
# Regenerates the diesel schema from migrations/sqlite into a temporary file and compares
# it with src/db/schema.rs: exits non-zero on any difference. `--write` replaces the file
# instead. diesel_cli (SQLite only, bundled) is installed under the target directory when
# it is missing, so CI builds it once.
set -euo pipefail
cd "$(dirname "$0")/../.."

target="${CARGO_TARGET_DIR:-target}"
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
root="$target/tools"
diesel="${DIESEL:-$root/bin/diesel}"
if [ ! -x "$diesel" ]; then
  echo "[schema] installing diesel_cli into $root" >&2
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
