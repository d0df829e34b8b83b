//! How reading preference data scales: N conversational pairs of UltraFeedback's size (a prompt
//! of ~120 words, completions of ~180 and ~140) written as Parquet and JSONL, then read,
//! validated, tokenized (SmolLM2's tokenizer and chat template) and truncated to 1,024 tokens
//! through `data::load::load_set`, as `dpo-lora run` does: time, records/s and peak memory
//! against the tokens kept, for 15k, 30k and 60k pairs; then the same set read back from the
//! token cache (what a resume does).
//!
//!   cargo bench --bench data_read            # needs scripts/fetch-models.sh's SmolLM2
//!
//! Each measurement runs in a child process of its own, so its peak RSS (`VmHWM`) is its own.

use std::path::{Path, PathBuf};
use std::time::Instant;

use dpo_lora::data::batch::Limits;
use dpo_lora::data::load::{load_set, LoadSpec};
use dpo_lora::data::{Field, Origin, Pos, PreferenceRecord, ReadSpec, Sources};
use dpo_lora::gguf::GgufFile;
use dpo_lora::recipe::Truncation;
use dpo_lora::rng::SplitMix64;
use dpo_lora::tokenizer::{Message, Tokenizer};

const WORDS: &[&str] = &[
    "the", "model", "answer", "question", "because", "data", "should", "would", "people",
    "careful", "explain", "simple", "example", "however", "result", "water", "energy", "light",
    "number", "value", "first", "second", "better", "worse", "reason", "think", "about", "which",
    "their", "there", "could", "other", "after", "before", "write", "story", "code", "function",
];

fn words(rng: &mut SplitMix64, n: usize) -> String {
    let mut s = String::new();
    for i in 0..n {
        if i > 0 {
            s.push(if rng.below(12) == 0 { '\n' } else { ' ' });
        }
        s.push_str(WORDS[rng.below(WORDS.len())]);
        if rng.below(9) == 0 {
            s.push(',');
        }
    }
    s.push('.');
    s
}

fn records(n: usize) -> Vec<PreferenceRecord> {
    let mut rng = SplitMix64::new(60_000);
    let at = Origin {
        file: std::sync::Arc::from(Path::new("(bench)")),
        pos: Pos::Row(0),
    };
    (0..n)
        .map(|i| {
            let msg = |role: &str, text: String| Message::new(role, text);
            let (p, c, r) = (
                60 + rng.below(120),
                90 + rng.below(180),
                70 + rng.below(140),
            );
            PreferenceRecord {
                index: i,
                at: at.clone(),
                prompt: Field::Messages(vec![msg("user", words(&mut rng, p))]),
                chosen: Field::Messages(vec![msg("assistant", words(&mut rng, c))]),
                rejected: Field::Messages(vec![msg("assistant", words(&mut rng, r))]),
            }
        })
        .collect()
}

fn vm_hwm_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The child: load one file (or the cache) and print one line of figures.
fn child(model: &Path, data: &Path, cache: Option<&Path>) {
    let f = GgufFile::open(model).unwrap();
    let tok = Tokenizer::from_gguf(&f).unwrap();
    drop(f);
    let base = vm_hwm_mib();
    let limits = Limits {
        max_length: 1024,
        max_prompt_length: None,
        truncation: Truncation::KeepEnd,
        bos: None,
    };
    let sources = Sources::one(data.to_string_lossy());
    let spec = LoadSpec {
        sources: &sources,
        how: ReadSpec::default(),
        tok: &tok,
        tokenizer_id: "bench",
        limits: &limits,
        cache_dir: cache,
        progress: false,
    };
    let t0 = Instant::now();
    let got = load_set(&spec).unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let ids: usize = got
        .set
        .pairs
        .iter()
        .map(|p| p.chosen.ids.len() + p.rejected.ids.len())
        .sum();
    let kept_mib = (ids * 4) as f64 / (1 << 20) as f64;
    println!(
        "{:>7} pairs  {:>7.2} s  {:>8.0} records/s  peak {:>7.1} MiB above the tokenizer  kept ids {:>7.1} MiB  ratio {:.2}{}",
        got.set.pairs.len(),
        secs,
        got.set.pairs.len() as f64 / secs,
        vm_hwm_mib() - base,
        kept_mib,
        (vm_hwm_mib() - base) / kept_mib,
        if got.cached.is_some() { "  (token cache)" } else { "" }
    );
}

fn main() {
    let models = std::env::var_os("DPO_LORA_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/dpo-lora/models")
        });
    let model = models.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let cache = args.get(i + 2).map(PathBuf::from);
        return child(&model, Path::new(&args[i + 1]), cache.as_deref());
    }
    // `cargo test --all-targets` runs this binary too, without `--bench`: nothing to measure.
    if !args.iter().any(|a| a == "--bench") {
        return;
    }
    if !model.exists() {
        eprintln!(
            "data_read: {} is missing; run scripts/fetch-models.sh",
            model.display()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let all = records(60_000);
    let me = std::env::current_exe().unwrap();
    let run = |data: &Path, cache: Option<&Path>| {
        let mut c = std::process::Command::new(&me);
        c.arg("--child").arg(data);
        if let Some(d) = cache {
            c.arg(d);
        }
        let o = c.output().unwrap();
        print!("{}", String::from_utf8_lossy(&o.stdout));
        if !o.status.success() {
            eprint!("{}", String::from_utf8_lossy(&o.stderr));
        }
    };
    for n in [15_000, 30_000, 60_000] {
        let pq = dir.path().join(format!("prefs-{n}.parquet"));
        dpo_lora::data::parquet::write_records(&pq, &all[..n], parquet::basic::Compression::SNAPPY)
            .unwrap();
        let jl = dir.path().join(format!("prefs-{n}.jsonl"));
        let mut text = String::new();
        for r in &all[..n] {
            let m = |f: &Field| match f {
                Field::Messages(ms) => serde_json::to_value(ms).unwrap(),
                Field::Text(t) => serde_json::Value::String(t.clone()),
            };
            text.push_str(
                &serde_json::json!({"prompt": m(&r.prompt), "chosen": m(&r.chosen), "rejected": m(&r.rejected)})
                    .to_string(),
            );
            text.push('\n');
        }
        std::fs::write(&jl, text).unwrap();
        let size = |p: &Path| std::fs::metadata(p).unwrap().len() as f64 / (1 << 20) as f64;
        println!(
            "== {n} pairs: parquet {:.1} MiB, jsonl {:.1} MiB",
            size(&pq),
            size(&jl)
        );
        print!("parquet  ");
        run(&pq, None);
        print!("jsonl    ");
        run(&jl, None);
        if n == 60_000 {
            let cache = dir.path().join("run");
            print!("parquet, writing the token cache  ");
            run(&pq, Some(&cache));
            print!("parquet, from the token cache     ");
            run(&pq, Some(&cache));
        }
    }
}
