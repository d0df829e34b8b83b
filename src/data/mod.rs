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
pub mod load;
pub mod parquet;
pub mod sources;
pub mod tokcache;

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

/// What was read from one source, for the log and the caches.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SourceSummary {
    /// The source as the recipe wrote it.
    pub source: String,
    /// The files read, in order (what the caches' keys hash).
    pub files: Vec<PathBuf>,
    /// `trl (conversations, implicit prompt)`.
    pub layout: String,
    /// Records kept (after a fraction).
    pub records: usize,
}

/// What `sources` will read: each source's files (fetched for a Hub data set, narrowed to its
/// split) and their row counts, found once before any row is read as a record.
pub struct Plan<'a> {
    sources: Vec<(&'a SourceSpec, Vec<(PathBuf, usize)>)>,
}

impl<'a> Plan<'a> {
    pub fn new(sources: &'a Sources) -> Result<Plan<'a>, DataError> {
        let mut out = Vec::new();
        for spec in &sources.0 {
            let (spec, files) = plan(spec)?;
            let mut counted = Vec::with_capacity(files.len());
            for f in files {
                let n = files::count_rows(&f)?;
                counted.push((f, n));
            }
            out.push((spec, counted));
        }
        Ok(Plan { sources: out })
    }

    /// Every file, in reading order.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.sources
            .iter()
            .flat_map(|(_, fs)| fs.iter().map(|(f, _)| f.as_path()))
    }

    /// Rows about to be read.
    pub fn rows(&self) -> usize {
        self.sources
            .iter()
            .flat_map(|(_, fs)| fs.iter().map(|(_, n)| n))
            .sum()
    }
}

/// Every record the plan reads, in order, one at a time, numbered across all its sources: each
/// source read with one layout, every row validated (also those a fraction leaves out), and
/// nothing kept here, so what `f` keeps is all that stays in memory.
pub fn for_each_record<E: From<DataError>>(
    plan: &Plan,
    how: &ReadSpec,
    mut f: impl FnMut(PreferenceRecord) -> Result<(), E>,
) -> Result<Vec<SourceSummary>, E> {
    let mut out = Vec::new();
    let mut next = 0;
    for (k, (spec, files)) in plan.sources.iter().enumerate() {
        out.push(read_source(spec, files, how, k as u64, &mut next, &mut f)?);
    }
    Ok(out)
}

/// Every record of `sources`, collected, with what was read from each.
pub fn read_sources(
    sources: &Sources,
    how: &ReadSpec,
) -> Result<(Vec<PreferenceRecord>, Vec<SourceSummary>), DataError> {
    let mut records = Vec::new();
    let summary = for_each_record(&Plan::new(sources)?, how, |r| {
        records.push(r);
        Ok::<(), DataError>(())
    })?;
    Ok((records, summary))
}

/// All records of `sources`, one list.
pub fn read_all(sources: &Sources, how: &ReadSpec) -> Result<Vec<PreferenceRecord>, DataError> {
    Ok(read_sources(sources, how)?.0)
}

/// A source's files (fetched for a Hub data set), narrowed to its split.
fn plan(spec: &SourceSpec) -> Result<(&SourceSpec, Vec<PathBuf>), DataError> {
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
    Ok((spec, files))
}

fn read_source<E: From<DataError>>(
    spec: &SourceSpec,
    files: &[(PathBuf, usize)],
    how: &ReadSpec,
    k: u64,
    next: &mut usize,
    f: &mut impl FnMut(PreferenceRecord) -> Result<(), E>,
) -> Result<SourceSummary, E> {
    // A fraction keeps a fixed sample of the source's rows, chosen before they are read.
    let keep: Option<Vec<bool>> = match spec.fraction {
        Some(x) => {
            let n: usize = files.iter().map(|(_, n)| n).sum();
            let take = ((n as f64 * x).ceil() as usize).clamp(1, n.max(1));
            let mut keep = vec![false; n];
            for i in SplitMix64::keyed(&[how.seed, 0xf4ac, k])
                .permutation(n)
                .into_iter()
                .take(take)
            {
                keep[i] = true;
            }
            Some(keep)
        }
        None => None,
    };
    let mut layout: Option<Layout> = None;
    let (mut row, mut kept) = (0usize, 0usize);
    let mut described = None;
    for (file, _) in files {
        files::for_each_row(file, |value, at| {
            let lay = match &layout {
                Some(l) => l,
                None => layout.insert(Layout::resolve(how.format, how.columns, &value).map_err(
                    |msg| DataError::At {
                        at: at.clone(),
                        msg,
                    },
                )?),
            };
            let (rec, implicit) = lay
                .record(&value, at.clone(), *next)
                .map_err(|msg| DataError::At { at, msg })?;
            if described.is_none() {
                described = Some(lay.describe(&rec, implicit));
            }
            let take = keep
                .as_ref()
                .is_none_or(|k| k.get(row).copied().unwrap_or(false));
            row += 1;
            if take {
                *next += 1;
                kept += 1;
                f(rec)?;
            }
            Ok::<(), E>(())
        })?;
    }
    let Some(layout) = described else {
        return Err(DataError::Source {
            what: spec.path.clone(),
            msg: "no records (the data is empty); each record needs a prompt, a chosen and a rejected completion".into(),
        }
        .into());
    };
    Ok(SourceSummary {
        source: spec.to_string(),
        files: files.iter().map(|(f, _)| f.clone()).collect(),
        layout,
        records: kept,
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
