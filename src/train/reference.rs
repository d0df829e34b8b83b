//! π_ref's log-probs: from the same loaded base with adapters off (plus a frozen `init_from`
//! adapter) at every step, or precomputed once and cached on disk (which of them a run uses is
//! `recipe::Reference`, decided when the recipe is resolved).
//!
//! Owns: computing a micro-batch's values, a run's [`Precomputed`] values, and their cache.
//!
//! The cache key is a SHA-256 over everything the values depend on ([`KeyInputs`]): the model
//! file, the data files and how their records were read, the truncation settings and BOS rule, the held-out split, the
//! `init_from` adapter's bytes, the activation dtype, the device kind, the backend, and this format's and
//! build's version. A later run with the same key reuses the values and runs no reference
//! forward at all; a CPU f32 cache is never read by a CUDA bf16 run.

use std::path::{Path, PathBuf};

use candle_core::{DType, DeviceLocation, Result};
use sha2::{Digest, Sha256};

use crate::data::batch::{Limits, TrainPair};
pub use crate::digest::file_sha256;
use crate::model::{Adapters, Backend, Lora, Model, Scored};

/// Reference `(chosen, rejected)` sums, one per pair.
pub type PairValues = Vec<(f32, f32)>;

/// A run's precomputed reference values, per pair, indexed like the train / eval pair sets (a
/// run's reference is a `Reference<Precomputed>`).
pub struct Precomputed {
    pub train: PairValues,
    pub eval: PairValues,
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

/// Everything the reference values depend on, hashed into the cache key.
pub struct KeyInputs<'a> {
    /// The GGUF file: weights, tokenizer and chat template.
    pub model_file: &'a Path,
    /// The train (and eval) data files, as read.
    pub data_files: &'a [&'a Path],
    /// How their records were read: the sources (split, fraction), `data.format`, `data.columns`.
    pub reading: &'a str,
    /// Truncation settings and the BOS rule.
    pub limits: &'a Limits,
    /// The frozen starting adapter, when the reference is base + adapter.
    pub init_from: Option<&'a Path>,
    /// `(eval_fraction, seed)`: which pairs are held out when no eval file is given.
    pub eval_split: (f64, u64),
    /// The activation type of the forward.
    pub dtype: DType,
    /// The device kind the forward ran on (CPU, CUDA, Metal): their kernels round differently.
    pub device: DeviceLocation,
    /// Our CPU kernels or candle's ops: they round differently too.
    pub backend: Backend,
}

/// The cache key: a SHA-256 over every [`KeyInputs`] field, and over this format's and this
/// build's version (the tokenizer and the forward are ours, so a new version recomputes).
pub fn cache_key(k: &KeyInputs) -> std::io::Result<String> {
    let mut h = Sha256::new();
    h.update(b"dpo-lora reference v2\n");
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update(file_sha256(k.model_file)?.as_bytes());
    for f in k.data_files {
        h.update(file_sha256(f)?.as_bytes());
    }
    h.update(k.reading.as_bytes());
    h.update(b"\n");
    let l = k.limits;
    let device = match k.device {
        DeviceLocation::Cpu => "cpu",
        DeviceLocation::Cuda { .. } => "cuda",
        DeviceLocation::Metal { .. } => "metal",
    };
    h.update(
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {device} {:?}\n",
            l.max_length,
            l.max_prompt_length,
            l.truncation,
            l.bos,
            k.eval_split,
            k.dtype,
            k.backend
        )
        .as_bytes(),
    );
    if let Some(dir) = k.init_from {
        h.update(file_sha256(&dir.join("adapter_model.safetensors"))?.as_bytes());
        h.update(std::fs::read(dir.join("adapter_config.json")).unwrap_or_default());
    }
    Ok(format!("{:x}", h.finalize()))
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

/// Write the values under `key` (durably: see `atomic`).
pub fn store(
    dir: &Path,
    key: &str,
    train: &[(f32, f32)],
    eval: &[(f32, f32)],
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{key}.json"));
    let text = serde_json::to_string(&CacheFile {
        key: key.to_string(),
        train: train.to_vec(),
        eval: eval.to_vec(),
    })
    .map_err(std::io::Error::other)?;
    crate::atomic::write_file(&path, text.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::Truncation;

    /// A change of dtype, device kind or backend gives another key, so the other run's cache is
    /// missed;
    /// the same inputs give the same key, and a stored value is found under it.
    #[test]
    fn dtype_and_device_are_part_of_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let (model, data) = (dir.path().join("m.gguf"), dir.path().join("d.jsonl"));
        std::fs::write(&model, b"weights").unwrap();
        std::fs::write(&data, b"{}\n").unwrap();
        let limits = Limits {
            max_length: 64,
            max_prompt_length: None,
            truncation: Truncation::KeepEnd,
            bos: None,
        };
        let files = [data.as_path()];
        let key_with = |dtype, device, backend| {
            cache_key(&KeyInputs {
                model_file: &model,
                data_files: &files,
                reading: "",
                limits: &limits,
                init_from: None,
                eval_split: (0.0, 1),
                dtype,
                device,
                backend,
            })
            .unwrap()
        };
        let key = |dtype, device| key_with(dtype, device, Backend::Candle);
        let cpu_f32 = key_with(DType::F32, DeviceLocation::Cpu, Backend::CpuKernels);
        assert_eq!(
            cpu_f32,
            key_with(DType::F32, DeviceLocation::Cpu, Backend::CpuKernels)
        );
        let cache = dir.path().join("cache");
        store(&cache, &cpu_f32, &[(-1.0, -2.0)], &[]).unwrap();
        assert!(load_cached(&cache, &cpu_f32, 1, 0).is_some());
        for other in [
            key(DType::F32, DeviceLocation::Cpu),
            key(DType::BF16, DeviceLocation::Cpu),
            key(DType::F32, DeviceLocation::Cuda { gpu_id: 0 }),
            key(DType::BF16, DeviceLocation::Cuda { gpu_id: 0 }),
            key(DType::F32, DeviceLocation::Metal { gpu_id: 0 }),
        ] {
            assert_ne!(other, cpu_f32);
            assert!(load_cached(&cache, &other, 1, 0).is_none());
        }
        // The second GPU of a machine computes as the first: one cache for both.
        assert_eq!(
            key(DType::BF16, DeviceLocation::Cuda { gpu_id: 0 }),
            key(DType::BF16, DeviceLocation::Cuda { gpu_id: 1 })
        );
    }
}
