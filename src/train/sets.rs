//! The run's pair sets: `data.train` and `data.eval` (or the `data.eval_fraction` split of
//! `data.train`), read, tokenized and truncated as the recipe says, through the run folder's
//! token cache. Training reads both; an export's fidelity check reads the held-out set again
//! the same way (the cache makes that a file read).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::data::batch::{split_eval, Limits, PairSet};
use crate::data::load::{load_set, LoadSpec};
use crate::data::{ReadSpec, Sources};
use crate::recipe::DataSection;
use crate::session::Loaded;

/// The pairs a run trains and evaluates on.
pub struct RunData {
    pub train: PairSet,
    pub eval: Option<PairSet>,
    /// The data files read, train then eval (what the reference cache key hashes).
    pub files: Vec<PathBuf>,
}

/// How a data section is read: with whose tokenizer, the split's seed, where the cache lives.
#[derive(Clone, Copy)]
pub struct Reader<'a> {
    /// The model whose tokenizer (its chat template already set) encodes the pairs.
    pub loaded: &'a Loaded,
    /// `train.seed`: the `eval_fraction` split and any `fraction` sample.
    pub seed: u64,
    /// The run folder holding the token cache (`None`: no cache).
    pub cache_dir: Option<&'a Path>,
    pub progress: bool,
}

impl Reader<'_> {
    /// `sources` (the data section's `key`) read, encoded and truncated as `data` says; the files
    /// read are added to `files`.
    fn read(
        &self,
        data: &DataSection,
        key: &str,
        sources: &Sources,
        files: &mut Vec<PathBuf>,
    ) -> Result<PairSet> {
        let limits = Limits::from_recipe(data, &self.loaded.tok);
        let tokenizer_id = tokenizer_id(self.loaded, &data.template_kwargs);
        let spec = LoadSpec {
            sources,
            how: ReadSpec {
                format: data.format,
                columns: data.columns.as_ref(),
                seed: self.seed,
            },
            tok: &self.loaded.tok,
            tokenizer_id: &tokenizer_id,
            limits: &limits,
            cache_dir: self.cache_dir,
            progress: self.progress,
        };
        let got = load_set(&spec).context(key.to_string())?;
        for s in &got.summary {
            eprintln!(
                "data: {key} {} read as {}: {} records from {} file{}{}",
                s.source,
                s.layout,
                s.records,
                s.files.len(),
                if s.files.len() == 1 { "" } else { "s" },
                if got.cached.is_some() {
                    " (tokenized before: the run's token cache)"
                } else {
                    ""
                }
            );
        }
        files.extend(got.summary.iter().flat_map(|s| s.files.iter().cloned()));
        Ok(got.set)
    }

    /// The training and held-out pairs of `data`.
    pub fn load(&self, data: &DataSection) -> Result<RunData> {
        let mut files = Vec::new();
        let train_all = self.read(data, "data.train", &data.train, &mut files)?;
        let eval_set = match &data.eval {
            Some(e) => Some(self.read(data, "data.eval", e, &mut files)?),
            None => None,
        };
        let (train, eval) = match eval_set {
            Some(e) => (train_all, Some(e)),
            None if data.eval_fraction > 0.0 => {
                let (t, e) = split_eval(train_all, data.eval_fraction, self.seed);
                (t, (!e.pairs.is_empty()).then_some(e))
            }
            None => (train_all, None),
        };
        eprintln!(
            "data: {} training pairs ({} truncated, {} dropped: completion emptied by max_length {}){}",
            train.pairs.len(),
            train.truncated,
            train.dropped,
            data.max_length,
            eval.as_ref()
                .map(|e| format!(", {} held-out pairs ({} dropped)", e.pairs.len(), e.dropped))
                .unwrap_or_default()
        );
        Ok(RunData { train, eval, files })
    }

    /// The held-out pairs of `data` only (`train` is read only when they are a split of it).
    pub fn held_out(&self, data: &DataSection) -> Result<Option<PairSet>> {
        match &data.eval {
            Some(e) => Ok(Some(self.read(data, "data.eval", e, &mut Vec::new())?)),
            None if data.eval_fraction > 0.0 => Ok(self.load(data)?.eval),
            None => Ok(None),
        }
    }
}

/// What besides the data decides the token ids, for the token cache's key: the tokenizer's
/// GGUF metadata, the chat template in use (the model's or `data.chat_template`) and
/// `data.template_kwargs`.
pub fn tokenizer_id(
    loaded: &Loaded,
    kwargs: &serde_json::Map<String, serde_json::Value>,
) -> String {
    use sha2::{Digest, Sha256};
    let md = loaded.file.metadata();
    let mut keys: Vec<&String> = md.keys().filter(|k| k.starts_with("tokenizer.")).collect();
    keys.sort();
    let mut h = Sha256::new();
    for k in keys {
        h.update(format!("{k}={:?}\n", md[k]).as_bytes());
    }
    h.update(
        loaded
            .tok
            .chat_template()
            .map_or("", |t| t.source())
            .as_bytes(),
    );
    h.update(
        serde_json::Value::Object(kwargs.clone())
            .to_string()
            .as_bytes(),
    );
    format!("{:x}", h.finalize())
}
