//! One of `data.train` / `data.eval` read, tokenized and truncated, through the run's token
//! cache: the stage between the recipe's data section and the training loop.
//!
//! Owns: streaming records into encoded, truncated pairs with a progress bar (records are
//! encoded 512 at a time over the cores and dropped once encoded, so what stays in memory is
//! the kept tokens), and using
//! or writing the token cache (`tokcache`). Does not: read files (see `files`) or tokenize
//! (see `encode`).

use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;

use super::batch::{encode_record, BatchError, Encoded, Limits, PairSet, PairSetBuilder};
use super::{for_each_record, tokcache, Plan, PreferenceRecord, ReadSpec, SourceSummary, Sources};

/// Records encoded together, one per core at a time: enough to keep the cores busy, few enough
/// that their text is a small part of memory.
const ENCODE_CHUNK: usize = 512;
use crate::tokenizer::Tokenizer;

/// What to load and how.
pub struct LoadSpec<'a> {
    pub sources: &'a Sources,
    pub how: ReadSpec<'a>,
    pub tok: &'a Tokenizer,
    /// Everything besides the data that changes the token ids: the tokenizer, its template and
    /// the template's arguments (see `train`).
    pub tokenizer_id: &'a str,
    pub limits: &'a Limits,
    /// The run folder whose `tokens/` holds the cache; `None`: no cache.
    pub cache_dir: Option<&'a Path>,
    pub progress: bool,
}

pub struct LoadedSet {
    pub set: PairSet,
    /// What was read from each source, its files included (what the reference cache key hashes).
    pub summary: Vec<SourceSummary>,
    /// The cache file the pairs came from, when they did.
    pub cached: Option<PathBuf>,
}

pub fn load_set(s: &LoadSpec) -> Result<LoadedSet, BatchError> {
    let what = s.sources.to_string();
    let plan = Plan::new(s.sources)?;
    let cache = match s.cache_dir {
        Some(dir) => {
            let mut parts = vec![
                what.clone(),
                format!("{:?} {:?}", s.how.format, s.how.columns),
                s.how.seed.to_string(),
                s.tokenizer_id.to_string(),
            ];
            for f in plan.files() {
                parts.push(crate::digest::file_sha256(f).map_err(|err| {
                    BatchError::Data(super::DataError::Read {
                        path: f.to_path_buf(),
                        err,
                    })
                })?);
            }
            Some(tokcache::path(dir, &tokcache::key(&parts)))
        }
        None => None,
    };
    if let Some(path) = &cache {
        let mut b = PairSetBuilder::new(s.limits);
        if let Some(summary) = tokcache::read(path, |e| {
            b.push(&e);
            true
        }) {
            return Ok(LoadedSet {
                set: b.finish(&what)?,
                summary,
                cached: Some(path.clone()),
            });
        }
    }
    let bar = if s.progress {
        ProgressBar::new(0).with_style(
            ProgressStyle::with_template(
                "tokenizing {bar:30} {pos}/{len} records  {per_sec}  eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    } else {
        ProgressBar::hidden()
    };
    let mut writer = cache
        .as_ref()
        .and_then(|p| tokcache::Writer::create(p).ok());
    let mut b = PairSetBuilder::new(s.limits);
    // Records are encoded a chunk at a time over every core, and pushed in order.
    let mut chunk: Vec<PreferenceRecord> = Vec::with_capacity(ENCODE_CHUNK);
    let mut flush = |chunk: &mut Vec<PreferenceRecord>| -> Result<(), BatchError> {
        let encoded: Vec<Encoded> = chunk
            .par_iter()
            .map(|r| encode_record(s.tok, r))
            .collect::<Result<_, _>>()?;
        for e in &encoded {
            if writer.as_mut().is_some_and(|w| w.push(e).is_err()) {
                writer = None;
            }
            b.push(e);
        }
        bar.inc(chunk.len() as u64);
        chunk.clear();
        Ok(())
    };
    bar.set_length(plan.rows() as u64);
    let summary = for_each_record(&plan, &s.how, |r| {
        chunk.push(r);
        if chunk.len() == ENCODE_CHUNK {
            flush(&mut chunk)?;
        }
        Ok::<(), BatchError>(())
    })?;
    flush(&mut chunk)?;
    bar.finish_and_clear();
    if let Some(w) = writer {
        // A cache that cannot be written costs the next run a tokenization, nothing else.
        let _ = w.finish(&summary);
    }
    Ok(LoadedSet {
        set: b.finish(&what)?,
        summary,
        cached: None,
    })
}
