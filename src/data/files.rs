//! The rows of local data files, as JSON values, each with where it came from.
//!
//! Owns: what a local `data.train` / `data.eval` path may be (a file, a folder of data files, a
//! glob of shards), and reading `.jsonl`, `.jsonl.gz`, `.json` (an array, or `{"data": [...]}`)
//! and `.parquet` (list and struct columns included) one row at a time. Does not: know what a
//! row means (see `layout`) or fetch anything (see `hub`).

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use super::DataError;

/// Where a row sits in its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pos {
    /// 1-based line of a JSONL file.
    Line(usize),
    /// 0-based item of a JSON array or Parquet row (as `dataset[i]` in Python).
    Row(usize),
}

/// A row's file and position, for messages: `data.jsonl:3`, `train.parquet: row 12`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: Arc<Path>,
    pub pos: Pos,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.pos {
            Pos::Line(n) => write!(f, "{}:{n}", self.file.display()),
            Pos::Row(n) => write!(f, "{}: row {n}", self.file.display()),
        }
    }
}

/// The file types a data source may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Jsonl,
    JsonlGz,
    Json,
    Parquet,
}

impl FileKind {
    pub const NAMES: &'static str = ".jsonl, .jsonl.gz, .json or .parquet";

    pub fn of(path: &Path) -> Option<FileKind> {
        let name = path.file_name()?.to_str()?.to_ascii_lowercase();
        [
            (".jsonl.gz", FileKind::JsonlGz),
            (".ndjson.gz", FileKind::JsonlGz),
            (".json.gz", FileKind::JsonlGz),
            (".jsonl", FileKind::Jsonl),
            (".ndjson", FileKind::Jsonl),
            (".json", FileKind::Json),
            (".parquet", FileKind::Parquet),
        ]
        .into_iter()
        .find(|(ext, _)| name.ends_with(ext))
        .map(|(_, k)| k)
    }
}

/// The data files `path` stands for, in a stable order: the file itself; a folder's data files
/// (recursively, sorted by path); or the files a glob (`data/train-*.parquet`) matches, sorted.
pub fn expand(path: &Path) -> Result<Vec<PathBuf>, DataError> {
    let text = path.to_string_lossy();
    if text.contains(['*', '?', '[']) {
        let pattern_err = |e: String| DataError::Source {
            what: text.to_string(),
            msg: format!("not a valid glob pattern ({e})"),
        };
        let paths = glob::glob(&text).map_err(|e| pattern_err(e.to_string()))?;
        let mut files = Vec::new();
        for p in paths {
            let p = p.map_err(|e| pattern_err(e.to_string()))?;
            if p.is_file() && FileKind::of(&p).is_some() {
                files.push(p);
            }
        }
        files.sort();
        if files.is_empty() {
            return Err(DataError::Source {
                what: text.to_string(),
                msg: format!("the pattern matches no {} file", FileKind::NAMES),
            });
        }
        return Ok(files);
    }
    if path.is_dir() {
        let mut files = Vec::new();
        walk(path, &mut files).map_err(|err| DataError::Read {
            path: path.to_path_buf(),
            err,
        })?;
        files.sort();
        if files.is_empty() {
            return Err(DataError::Source {
                what: text.to_string(),
                msg: format!("the folder holds no {} file", FileKind::NAMES),
            });
        }
        return Ok(files);
    }
    if !path.exists() {
        return Err(DataError::Source {
            what: text.to_string(),
            msg: "no such file or folder; give a local file, a folder, a glob (data/*.parquet) or hf:datasets/OWNER/NAME".into(),
        });
    }
    if FileKind::of(path).is_none() {
        return Err(DataError::Source {
            what: text.to_string(),
            msg: format!("not a data file: the name must end in {}", FileKind::NAMES),
        });
    }
    Ok(vec![path.to_path_buf()])
}

/// The data files under `dir`, recursively (hidden entries skipped), unsorted.
pub(crate) fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            walk(&p, out)?;
        } else if FileKind::of(&p).is_some() {
            out.push(p);
        }
    }
    Ok(())
}

/// How many rows `path` holds (Parquet: from its footer; JSONL: non-blank lines; JSON: items),
/// before any is read as a record: for a progress bar and a fraction's sample.
pub fn count_rows(path: &Path) -> Result<usize, DataError> {
    let read_err = |err| DataError::Read {
        path: path.to_path_buf(),
        err,
    };
    match FileKind::of(path) {
        Some(FileKind::Parquet) => super::parquet::count_rows(path),
        Some(kind @ (FileKind::Jsonl | FileKind::JsonlGz)) => {
            let raw = File::open(path).map_err(read_err)?;
            let reader: Box<dyn Read> = if kind == FileKind::JsonlGz {
                Box::new(flate2::read::MultiGzDecoder::new(raw))
            } else {
                Box::new(raw)
            };
            let mut n = 0;
            for line in BufReader::new(reader).lines() {
                if !line.map_err(read_err)?.trim().is_empty() {
                    n += 1;
                }
            }
            Ok(n)
        }
        _ => {
            let mut n = 0;
            for_each_row(path, |_, _| {
                n += 1;
                Ok(())
            })?;
            Ok(n)
        }
    }
}

/// Call `f` with every row of `path` in order (blank JSONL lines skipped), stopping at the
/// first error.
pub fn for_each_row<E: From<DataError>>(
    path: &Path,
    mut f: impl FnMut(Value, Origin) -> Result<(), E>,
) -> Result<(), E> {
    let file: Arc<Path> = Arc::from(path);
    let at = |pos| Origin {
        file: file.clone(),
        pos,
    };
    let read_err = |err| DataError::Read {
        path: path.to_path_buf(),
        err,
    };
    let kind = FileKind::of(path).ok_or_else(|| DataError::Source {
        what: path.display().to_string(),
        msg: format!("not a data file: the name must end in {}", FileKind::NAMES),
    })?;
    match kind {
        FileKind::Jsonl | FileKind::JsonlGz => {
            let raw = File::open(path).map_err(read_err)?;
            let reader: Box<dyn Read> = if kind == FileKind::JsonlGz {
                Box::new(flate2::read::MultiGzDecoder::new(raw))
            } else {
                Box::new(raw)
            };
            for (i, line) in BufReader::new(reader).lines().enumerate() {
                let line = line.map_err(read_err)?;
                if line.trim().is_empty() {
                    continue;
                }
                let origin = at(Pos::Line(i + 1));
                let v: Value = serde_json::from_str(&line).map_err(|e| DataError::At {
                    at: origin.clone(),
                    msg: format!("invalid JSON: {e}"),
                })?;
                f(v, origin)?;
            }
            Ok(())
        }
        FileKind::Json => {
            let text = std::fs::read_to_string(path).map_err(read_err)?;
            let v: Value = serde_json::from_str(&text).map_err(|e| DataError::At {
                at: at(Pos::Line(e.line())),
                msg: format!("invalid JSON: {e}"),
            })?;
            let items = match v {
                Value::Array(items) => items,
                Value::Object(mut o) if matches!(o.get("data"), Some(Value::Array(_))) => {
                    match o.remove("data") {
                        Some(Value::Array(items)) => items,
                        _ => unreachable!("checked above"),
                    }
                }
                _ => {
                    return Err(DataError::Source {
                        what: path.display().to_string(),
                        msg: "a .json data file must be a list of records, or an object whose \"data\" is that list (one record per line: name it .jsonl)".into(),
                    }
                    .into())
                }
            };
            for (i, v) in items.into_iter().enumerate() {
                f(v, at(Pos::Row(i)))?;
            }
            Ok(())
        }
        FileKind::Parquet => super::parquet::for_each_row(path, |i, v| f(v, at(Pos::Row(i)))),
    }
}
