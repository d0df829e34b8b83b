//! The bench's fixed workloads: deterministic preference pairs of chosen token lengths, written as
//! standard JSONL (`{"prompt", "chosen", "rejected"}`) so that `scripts/bench_trl.py` trains on
//! the very same records.
//!
//! The text is made-up English from a fixed word list and a fixed seed; only its token lengths
//! matter. Each side is grown word by word (binary search over the word count) until it fills its
//! target, measured with the model's own tokenizer through the same tokenization contract
//! training uses (`data::encode_pair`: BOS + prompt, completion + EOS).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::data::{encode_pair, Field, PreferenceRecord};
use crate::rng::SplitMix64;
use crate::tokenizer::Tokenizer;

/// The two workloads of the issue; both use `max_length` 256 and 2 pairs per step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Workload {
    /// Prompts of 64 tokens, completions of 96-192 (sequences up to 256 tokens).
    Long,
    /// Sequences of about 30 tokens: prompts of 10-14, completions of 14-22.
    Short,
}

/// `max_length` of both workloads (TRL's `max_length`).
pub const MAX_LENGTH: usize = 256;

impl Workload {
    pub const ALL: [Workload; 2] = [Workload::Long, Workload::Short];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Long => "long",
            Workload::Short => "short",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == s)
    }

    /// One line for tables.
    pub fn describe(self) -> &'static str {
        match self {
            Workload::Long => "prompt 64 + completions 96-192 tokens (max_length 256)",
            Workload::Short => "prompt 10-14 + completions 14-22 tokens (~30 per sequence)",
        }
    }

    /// Target `(prompt, chosen, rejected)` token counts of pair `i`: prompt with BOS, each
    /// completion with EOS. Spread deterministically over the ranges above.
    fn lengths(self, i: usize) -> (usize, usize, usize) {
        match self {
            Workload::Long => (64, 96 + (i * 41) % 97, 96 + (i * 67 + 48) % 97),
            Workload::Short => (10 + (i * 3) % 5, 14 + (i * 5) % 9, 14 + (i * 7 + 4) % 9),
        }
    }
}

/// Token counts of a written pair, as training sees them.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct PairLengths {
    pub prompt: usize,
    pub chosen: usize,
    pub rejected: usize,
}

const WORDS: &[&str] = &[
    "the",
    "river",
    "walks",
    "slowly",
    "past",
    "a",
    "quiet",
    "town",
    "where",
    "people",
    "bake",
    "bread",
    "every",
    "morning",
    "and",
    "children",
    "learn",
    "to",
    "count",
    "stars",
    "over",
    "green",
    "hills",
    "with",
    "old",
    "maps",
    "that",
    "show",
    "roads",
    "nobody",
    "remembers",
    "while",
    "small",
    "boats",
    "carry",
    "apples",
    "from",
    "one",
    "market",
    "another",
    "because",
    "weather",
    "changes",
    "quickly",
    "in",
    "spring",
    "so",
    "farmers",
    "watch",
    "clouds",
    "near",
    "mountain",
    "before",
    "they",
    "plant",
    "seeds",
    "or",
    "repair",
    "fences",
    "after",
    "long",
    "winter",
    "nights",
    "when",
    "lamps",
    "burn",
    "until",
    "dawn",
    "teachers",
    "write",
    "letters",
    "about",
    "history",
    "music",
    "numbers",
    "gardens",
    "bridges",
    "trains",
    "clocks",
    "paper",
    "stone",
    "water",
    "light",
    "simple",
    "careful",
    "bright",
    "gentle",
    "strong",
    "useful",
    "answer",
    "question",
    "reason",
    "story",
    "window",
    "kitchen",
    "library",
    "garden",
    "forest",
    "ocean",
    "valley",
    "village",
    "city",
    "friend",
    "neighbour",
    "doctor",
    "builder",
    "painter",
    "is",
    "was",
    "will",
    "can",
    "should",
    "might",
    "often",
    "never",
    "always",
    "sometimes",
];

/// Made-up sentences, `n` words from `seed`.
fn words(seed: u64, n: usize) -> Vec<String> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(n);
    let mut since_stop = 0;
    for _ in 0..n {
        let w = WORDS[(rng.next_u64() % WORDS.len() as u64) as usize];
        let mut w = if since_stop == 0 {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect())
                .unwrap_or_default()
        } else {
            w.to_string()
        };
        since_stop += 1;
        if since_stop >= 6 && rng.next_u64().is_multiple_of(4) {
            w.push('.');
            since_stop = 0;
        }
        out.push(w);
    }
    out
}

fn record(prompt: &str, chosen: &str, rejected: &str) -> PreferenceRecord {
    PreferenceRecord {
        index: 0,
        at: crate::data::Origin {
            file: std::sync::Arc::from(Path::new("(bench workload)")),
            pos: crate::data::Pos::Line(1),
        },
        prompt: Field::Text(prompt.to_string()),
        chosen: Field::Text(chosen.to_string()),
        rejected: Field::Text(rejected.to_string()),
    }
}

/// The largest `k` in `1..=max` with `len(k) <= target` (`len` grows with `k`), or 1.
fn fit(max: usize, target: usize, len: impl Fn(usize) -> Result<usize>) -> Result<usize> {
    let (mut lo, mut hi) = (1, max);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if len(mid)? <= target {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Ok(lo)
}

/// `n_pairs` pairs of `w`, tokenized with `tok` to their target lengths.
pub fn generate(
    w: Workload,
    tok: &Tokenizer,
    n_pairs: usize,
) -> Result<Vec<(PreferenceRecord, PairLengths)>> {
    let mut out = Vec::with_capacity(n_pairs);
    for i in 0..n_pairs {
        let (tp, tc, tr) = w.lengths(i);
        let seed = 0xbe4c_u64 ^ ((i as u64) << 8) ^ (w as u64);
        let pw = words(seed, tp + 8);
        let text = |ws: &[String], k: usize| ws[..k].join(" ");
        let enc = |p: &str, c: &str, r: &str| {
            encode_pair(tok, &record(p, c, r)).context("bench workload: tokenizing a made-up pair")
        };
        let prompt_of = |k: usize| format!("{}\nAnswer:", text(&pw, k));
        let kp = fit(pw.len(), tp, |k| {
            Ok(enc(&prompt_of(k), " x", " x")?.prompt_ids.len())
        })?;
        let prompt = prompt_of(kp);
        let side_len = |s: &crate::data::EncodedSide| s.ids.len() - s.prompt_len;
        let cw = words(seed ^ 0xc0, tc + 8);
        let rw = words(seed ^ 0xee, tr + 8);
        let kc = fit(cw.len(), tc, |k| {
            Ok(side_len(
                &enc(&prompt, &format!(" {}", text(&cw, k)), " x")?.chosen,
            ))
        })?;
        let kr = fit(rw.len(), tr, |k| {
            Ok(side_len(
                &enc(&prompt, " x", &format!(" {}", text(&rw, k)))?.rejected,
            ))
        })?;
        let rec = record(
            &prompt,
            &format!(" {}", text(&cw, kc)),
            &format!(" {}", text(&rw, kr)),
        );
        let p = enc_lengths(tok, &rec)?;
        out.push((rec, p));
    }
    Ok(out)
}

/// Token counts of `rec` as training tokenizes it.
fn enc_lengths(tok: &Tokenizer, rec: &PreferenceRecord) -> Result<PairLengths> {
    let e = encode_pair(tok, rec).context("bench workload: tokenizing a made-up pair")?;
    Ok(PairLengths {
        prompt: e.prompt_ids.len(),
        chosen: e.chosen.ids.len() - e.chosen.prompt_len,
        rejected: e.rejected.ids.len() - e.rejected.prompt_len,
    })
}

/// Write the records as TRL's standard JSONL.
pub fn write_jsonl(path: &Path, pairs: &[(PreferenceRecord, PairLengths)]) -> Result<()> {
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path)
            .with_context(|| format!("{}: cannot create", path.display()))?,
    );
    let text = |f: &Field| match f {
        Field::Text(s) => s.clone(),
        Field::Messages(_) => String::new(),
    };
    for (r, _) in pairs {
        let line = serde_json::json!({
            "prompt": text(&r.prompt),
            "chosen": text(&r.chosen),
            "rejected": text(&r.rejected),
        });
        writeln!(f, "{line}")?;
    }
    f.flush()
        .with_context(|| format!("{}: cannot write", path.display()))
}
