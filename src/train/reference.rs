//! π_ref's log-probs: from the same loaded base with adapters off (plus a frozen `init_from`
//! adapter) at every step, or precomputed once and cached on disk.
//!
//! The cache key is a SHA-256 over everything the values depend on: the model file, the data
//! files, the truncation settings, the `init_from` adapter's bytes, and this format's version. A
//! later run with the same key reuses the values and runs no reference forward at all.

use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::Result;
use sha2::{Digest, Sha256};

use crate::data::batch::{Limits, TrainPair};
use crate::model::{Adapters, Lora, Model, Scored};

/// Reference `(chosen, rejected)` sums, one per pair.
pub type PairValues = Vec<(f32, f32)>;

/// Where the reference values of a batch come from.
pub enum Reference {
    /// Computed at each step; `Some(frozen)` when the run started from an adapter.
    AdaptersOff(Option<Lora>),
    /// Values per pair, indexed like the train / eval pair sets.
    Precomputed {
        train: Vec<(f32, f32)>,
        eval: Vec<(f32, f32)>,
    },
    /// The loss needs none (SimPO, ORPO).
    None,
}

/// Reference `(chosen, rejected)` log-prob sums of `pairs`, batched, no gradient graph.
pub fn compute(
    model: &Model,
    frozen: Option<&Lora>,
    pairs: &[&TrainPair],
) -> Result<Vec<(f32, f32)>> {
    let adapters = match frozen {
        Some(l) => Adapters::On(l),
        None => Adapters::Off,
    };
    let seqs = pair_sequences(pairs);
    let sums = model.pair_logps(&seqs, adapters)?.sums.to_vec1::<f32>()?;
    let n = pairs.len();
    Ok((0..n).map(|i| (sums[i], sums[n + i])).collect())
}

/// The `(chosen, rejected)` scored sequences of a micro-batch, for [`Model::pair_logps`] (which
/// returns every chosen sum, then every rejected sum).
pub fn pair_sequences<'a>(pairs: &[&'a TrainPair]) -> Vec<(Scored<'a>, Scored<'a>)> {
    let side = |s: &'a crate::data::EncodedSide| Scored {
        ids: &s.ids,
        score_from: s.prompt_len,
    };
    pairs
        .iter()
        .map(|p| (side(&p.chosen), side(&p.rejected)))
        .collect()
}

/// SHA-256 of a file, streamed.
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The cache key: every input the reference values depend on.
pub fn cache_key(
    model_file: &Path,
    data_files: &[&Path],
    limits: &Limits,
    init_from: Option<&Path>,
    eval_split: (f64, u64),
) -> std::io::Result<String> {
    let mut h = Sha256::new();
    h.update(b"dpo-lora reference v1\n");
    h.update(file_sha256(model_file)?.as_bytes());
    for f in data_files {
        h.update(file_sha256(f)?.as_bytes());
    }
    h.update(
        format!(
            "{:?} {:?} {:?} {:?}\n",
            limits.max_length, limits.max_prompt_length, limits.truncation, eval_split
        )
        .as_bytes(),
    );
    if let Some(dir) = init_from {
        h.update(file_sha256(&dir.join("adapter_model.safetensors"))?.as_bytes());
        h.update(std::fs::read(dir.join("adapter_config.json")).unwrap_or_default());
    }
    Ok(format!("{:x}", h.finalize()))
}

pub fn default_cache_dir() -> PathBuf {
    match std::env::var_os("DPO_LORA_CACHE") {
        Some(d) => PathBuf::from(d).join("reference"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
            .join(".cache/dpo-lora/reference"),
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct CacheFile {
    key: String,
    train: Vec<(f32, f32)>,
    eval: Vec<(f32, f32)>,
}

/// Cached values for `key`, if present and well-formed with the expected counts.
pub fn load_cached(
    dir: &Path,
    key: &str,
    n_train: usize,
    n_eval: usize,
) -> Option<(PairValues, PairValues)> {
    let text = std::fs::read_to_string(dir.join(format!("{key}.json"))).ok()?;
    let c: CacheFile = serde_json::from_str(&text).ok()?;
    (c.key == key && c.train.len() == n_train && c.eval.len() == n_eval)
        .then_some((c.train, c.eval))
}

/// Write the values under `key` (temp file + rename).
pub fn store(
    dir: &Path,
    key: &str,
    train: &[(f32, f32)],
    eval: &[(f32, f32)],
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{key}.json"));
    let tmp = dir.join(format!(".{key}.json.tmp-{}", std::process::id()));
    let text = serde_json::to_string(&CacheFile {
        key: key.to_string(),
        train: train.to_vec(),
        eval: eval.to_vec(),
    })
    .map_err(std::io::Error::other)?;
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}
