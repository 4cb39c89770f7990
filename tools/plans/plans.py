#!/usr/bin/env python3
"""The plan summary of every distinct statement in a MariaDB general log (see explain.sh).

Reads mysql.general_log (each statement with its bound values), groups the statements by
digest (literals and value lists folded), EXPLAINs one sample of each on the seeded
database and prints, per digest, one line per table read:

    table  access-type  key  key_len  [! flags]

Flags mark reads whose cost grows with the table: `!full` (type ALL, or index without
an ordered LIMIT walk, on a table of 10,000 rows or more), `!filesort` (a sort over 10,000 rows or more), `!rows` (an
estimate of 10,000 rows or more, for reads without LIMIT). Estimates themselves are not
pinned: they move with the data. Only the mysql CLI is needed (no driver).
"""

import argparse
import hashlib
import re
import subprocess
import sys

BIG = 10_000

# Statements with a plan worth pinning: reads and writes that find rows.
EXPLAINED = re.compile(r"^\s*(SELECT|UPDATE|DELETE|WITH|INSERT\s+(IGNORE\s+)?INTO\s+\S+\s*(\([^)]*\))?\s*SELECT)\b", re.I)
# Reads that touch no table of the service, or the server's own tables.
SKIPPED = re.compile(
    r"information_schema|performance_schema|mysql\.|@@|GET_LOCK|RELEASE_LOCK|"
    r"^\s*SELECT\s+(1|LAST_INSERT_ID|VERSION|DATABASE|NOW|UTC_TIMESTAMP|CAST\(@@)",
    re.I,
)


def run(args, sql, database=None):
    """Runs `sql` with the mysql CLI; rows as lists of strings (tab-separated, batch)."""
    cmd = ["mariadb", "--no-defaults", "-uroot", "-S", args.socket, "-N", "-B"]
    if database:
        cmd.append(database)
    done = subprocess.run(cmd + ["-e", sql], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip())
    return [line.split("\t") for line in done.stdout.splitlines()]


def digest(sql):
    """The statement with literals as ?, value lists folded, spaces collapsed."""
    s = re.sub(r"'(?:[^'\\]|\\.|'')*'", "?", sql)
    s = re.sub(r"(?<![\w`])-?\d+(\.\d+)?(?![\w`])", "?", s)
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"\(\s*\?(\s*,\s*\?)*\s*\)", "(?+)", s)
    s = re.sub(r"\(\?\+\)(\s*,\s*\(\?\+\))+", "(?+)...", s)
    s = re.sub(r"\(\s*\(\?\+\)(\.\.\.)?\s*\)", "((?+)...)", s)
    return s


def plan_lines(sql, rows, sizes):
    """One line per table an EXPLAIN reads, with flags."""
    limited = re.search(r"\bLIMIT\b", sql, re.I) is not None
    lines = []
    for row in rows:
        # id select_type table type possible_keys key key_len ref rows Extra
        table, access, key, key_len, est, extra = row[2], row[3], row[5], row[6], row[8], row[9]
        if table == "NULL":
            continue
        size = sizes.get(table, 0)
        est = int(est) if est.isdigit() else 0
        flags = []
        # An index walked in order under a LIMIT stops after LIMIT matches.
        walk = access == "index" and limited and "filesort" not in extra
        if access in ("ALL", "index") and size >= BIG and not walk:
            flags.append("!full")
        if "filesort" in extra and est >= BIG:
            flags.append("!filesort")
        if est >= BIG and not limited and access not in ("ALL", "index"):
            flags.append("!rows")
        lines.append(f"{table} {access} {key} {key_len}" + (" " + " ".join(flags) if flags else ""))
    return lines


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--since", default="1970-01-01",
                        help="statements of other databases logged before this are left out")
    args = parser.parse_args()

    sizes = {
        name: int(rows)
        for name, rows in run(
            args,
            "SELECT table_name, table_rows FROM information_schema.tables "
            f"WHERE table_schema = '{args.database}'",
        )
    }
    # Connections to the seeded database (seed-demo's): their statements name rows that
    # exist there, so they are the preferred samples.
    seeded = {
        t for (t,) in run(
            args,
            "SELECT DISTINCT thread_id FROM mysql.general_log WHERE command_type = 'Connect' "
            f"AND argument LIKE '% on {args.database} using %'",
        )
    }
    log = run(
        args,
        "SELECT thread_id, HEX(argument) FROM mysql.general_log "
        # The service runs every statement prepared (Execute); tests' own checks and
        # setup go as text (Query) and are left out.
        "WHERE command_type = 'Execute' "
        # Multi-row INSERT ... VALUES statements (imports) have no plan and are large.
        r"AND argument NOT REGEXP '^INSERT [^(]+\\([^)]*\\) ?VALUES' "
        f"AND (event_time >= '{args.since}' OR thread_id IN ({','.join(seeded) or 0}))",
    )
    samples = {}
    for thread, hexed in log:
        sql = bytes.fromhex(hexed).decode("utf-8", "replace")
        if not EXPLAINED.match(sql) or SKIPPED.search(sql):
            continue
        samples.setdefault(digest(sql), set()).add((thread in seeded, sql))

    def about(n):
        return round(n, 1 - len(str(n)))  # one significant digit: estimates move

    print(f"# MariaDB plans of {len(samples)} distinct statements, on a database of about "
          f"{about(sizes.get('communications', 0))} communications and "
          f"{about(sizes.get('customers', 0))} customers; written by tools/plans/explain.sh.")
    print("# [digest] statement / table access key key_len [! flags]")
    for text in sorted(samples):
        name = hashlib.sha1(text.encode()).hexdigest()[:10]
        shown = text if len(text) <= 400 else text[:400] + " ..."
        print(f"\n[{name}] {shown}")
        # The seeded database's own samples first, the longest first (the largest value
        # list: a full batch), then others, until one reads a table (a sample naming no
        # existing row may read none).
        tried = [q for _, q in sorted(samples[text], key=lambda s: (not s[0], -len(s[1]), s[1]))][:5]
        lines, note = [], ""
        for sql in tried:
            try:
                rows = run(args, "EXPLAIN " + sql, args.database)
            except RuntimeError as e:
                note = f"error: {str(e).splitlines()[-1][:200]}"
                continue
            lines = plan_lines(sql, rows, sizes)
            if lines:
                break
            note = "no table read: " + "; ".join(sorted({r[9] for r in rows}))
        for line in lines or [note]:
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
