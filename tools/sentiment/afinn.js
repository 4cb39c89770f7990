// Scores groups of texts with the npm package `sentiment` (AFINN-165), for reference.py.
// Usage: node afinn.js PACKAGE_DIR < groups.json > results.json
// stdin: [[text, ...], ...]; stdout: [{"scores": [comparative, ...], "seconds": s}, ...],
// the seconds being the median time of RUNS (5) scoring loops over that group alone, timed
// after one untimed pass over every group (V8 compiles the hot code meanwhile: without it
// the groups scored first measured 2-3 times slower; a group takes ~2 ms, hence the runs).
'use strict';

const path = require('path');
const fs = require('fs');

const Sentiment = require(path.resolve(process.argv[2], 'lib', 'index.js'));
const sentiment = new Sentiment();
const groups = JSON.parse(fs.readFileSync(0, 'utf8'));

for (const texts of groups) {
  for (const text of texts) sentiment.analyze(text);
}
const RUNS = 5;
const results = groups.map((texts) => {
  const scores = new Array(texts.length);
  const times = [];
  for (let run = 0; run < RUNS; run++) {
    const start = process.hrtime.bigint();
    for (let i = 0; i < texts.length; i++) {
      scores[i] = sentiment.analyze(texts[i]).comparative;
    }
    times.push(Number(process.hrtime.bigint() - start) / 1e9);
  }
  times.sort((a, b) => a - b);
  return { scores, seconds: times[Math.floor(RUNS / 2)] };
});
process.stdout.write(JSON.stringify(results));
