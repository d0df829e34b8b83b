//! Preference data: records from the files people have, in the layouts they download,
//! tokenized into (prompt, completion) ids.
//!
//! Owns: turning `data.train` / `data.eval` ([`Sources`]) into [`PreferenceRecord`]s: each
//! source's files (`files`, `parquet`), its layout told from the first record (`layout`), a
//! split and a fraction; errors that name the file, the line or row, and the field. Also the
//! TRL 1.x tokenization contract (`encode`). Does not: batch or truncate for training (see
//! `batch`).

pub mod batch;
pub mod encode;
pub mod files;
pub mod hub;
pub mod layout;
pub mod parquet;
pub mod sources;

use std::path::{Path, PathBuf};

use crate::rng::SplitMix64;
use crate::tokenizer::Message;

pub use encode::{encode_pair, EncodedPair, EncodedSide};
pub use files::{Origin, Pos};
pub use layout::{Columns, Format, Layout};
pub use sources::{SourceSpec, Sources};

/// One field of a record: plain text (TRL "standard") or chat messages ("conversational").
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    Text(String),
    Messages(Vec<Message>),
}

/// A preference pair as read from one row of a data file.
#[derive(Debug, Clone)]
pub struct PreferenceRecord {
    /// 0-based position among all the records of its `data.train` (or `data.eval`) sources.
    pub index: usize,
    /// Where it was read from.
    pub at: Origin,
    pub prompt: Field,
    pub chosen: Field,
    pub rejected: Field,
}

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: cannot read: {err}")]
    Read { path: PathBuf, err: std::io::Error },
    #[error("{at}: {msg}")]
    At { at: Origin, msg: String },
    #[error("{what}: {msg}")]
    Source { what: String, msg: String },
}

/// How records are read, from the recipe's `data` section.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReadSpec<'a> {
    pub format: Format,
    pub columns: Option<&'a Columns>,
    /// Draws `fraction` samples.
    pub seed: u64,
}

/// The records of one source, and what the log says about them.
#[derive(Debug, Clone)]
pub struct SourceRecords {
    /// The source as the recipe wrote it.
    pub source: String,
    pub records: Vec<PreferenceRecord>,
    /// The files read, in order (what the reference cache key hashes).
    pub files: Vec<PathBuf>,
    /// `trl (conversations, implicit prompt)`.
    pub layout: String,
}

/// Every source of `sources` in order, each read with one layout; records are numbered across
/// all of them.
pub fn read_sources(sources: &Sources, how: &ReadSpec) -> Result<Vec<SourceRecords>, DataError> {
    let mut out: Vec<SourceRecords> = Vec::new();
    let mut next = 0;
    for (k, spec) in sources.0.iter().enumerate() {
        let mut src = read_source(spec, how, k as u64)?;
        for r in &mut src.records {
            r.index = next;
            next += 1;
        }
        out.push(src);
    }
    Ok(out)
}

/// All records of `sources`, one list.
pub fn read_all(sources: &Sources, how: &ReadSpec) -> Result<Vec<PreferenceRecord>, DataError> {
    Ok(read_sources(sources, how)?
        .into_iter()
        .flat_map(|s| s.records)
        .collect())
}

fn read_source(spec: &SourceSpec, how: &ReadSpec, k: u64) -> Result<SourceRecords, DataError> {
    let root = Path::new(&spec.path);
    let hub = hub::HubDataset::parse(&spec.path).transpose()?;
    if hub.is_none() && spec.config.is_some() {
        return Err(DataError::Source {
            what: spec.path.clone(),
            msg: "config: names a Hub data set's config; a local source takes a folder or a glob instead".into(),
        });
    }
    let mut files = match &hub {
        Some(h) => h.fetch(spec.config.as_deref(), spec.split.as_deref())?,
        None => files::expand(root)?,
    };
    if let (Some(split), None) = (&spec.split, &hub) {
        let base = glob_root(root);
        let all = files.len();
        files.retain(|f| sources::in_split(&base, f, split));
        if files.is_empty() {
            return Err(DataError::Source {
                what: spec.path.clone(),
                msg: format!("none of its {all} data files belongs to split \"{split}\" (a split's files are named {split}-*.parquet, {split}.jsonl or sit in a {split}/ folder); check the split's name"),
            });
        }
    }
    let mut layout: Option<Layout> = None;
    let mut records = Vec::new();
    let mut implicit = false;
    for f in &files {
        files::for_each_row(f, |row, at| {
            let lay = match &layout {
                Some(l) => l,
                None => layout.insert(Layout::resolve(how.format, how.columns, &row).map_err(
                    |msg| DataError::At {
                        at: at.clone(),
                        msg,
                    },
                )?),
            };
            let (rec, imp) = lay
                .record(&row, at.clone(), records.len())
                .map_err(|msg| DataError::At { at, msg })?;
            implicit |= imp;
            records.push(rec);
            Ok(())
        })?;
    }
    let (Some(layout), Some(first)) = (layout, records.first()) else {
        return Err(DataError::Source {
            what: spec.path.clone(),
            msg: "no records (the data is empty); each record needs a prompt, a chosen and a rejected completion".into(),
        });
    };
    let described = layout.describe(first, implicit);
    if let Some(x) = spec.fraction {
        let n = records.len();
        let take = ((n as f64 * x).ceil() as usize).clamp(1, n);
        let mut keep = SplitMix64::keyed(&[how.seed, 0xf4ac, k]).permutation(n);
        keep.truncate(take);
        keep.sort_unstable();
        let mut all: Vec<Option<PreferenceRecord>> = records.into_iter().map(Some).collect();
        records = keep.into_iter().filter_map(|i| all[i].take()).collect();
    }
    Ok(SourceRecords {
        source: spec.to_string(),
        records,
        files,
        layout: described,
    })
}

/// The folder a split's names are read below: the path itself, or a glob's fixed leading part.
fn glob_root(path: &Path) -> PathBuf {
    let mut root = PathBuf::new();
    for c in path.components() {
        if c.as_os_str().to_string_lossy().contains(['*', '?', '[']) {
            return root;
        }
        root.push(c);
    }
    if path.is_file() {
        path.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        root
    }
}
