//! Data sets on the Hugging Face Hub: `hf:datasets/OWNER/NAME[@REVISION]`, fetched with hf-hub
//! into the usual cache (`HF_HOME`, `HF_ENDPOINT` and `HF_TOKEN` are honoured).
//!
//! Owns: choosing a data set's files for a config and a split, and fetching them. The repo's
//! own data files are used where it has them (`data/train-00000-of-00001.parquet`, a config's
//! folder); otherwise the Hub's Parquet conversion (revision `refs/convert/parquet`,
//! `{config}/{split}/0000.parquet`). Offline, the cached copy is used when there is one; with
//! none, one line names the cache and the local alternative. Does not: read rows (see `files`).

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{Api, ApiBuilder};
use hf_hub::{Repo, RepoType};

use super::files::FileKind;
use super::sources::in_split;
use super::DataError;
use crate::source::first_line;

/// The revision the Hub keeps its Parquet conversion of every data set under.
pub const PARQUET_REVISION: &str = "refs/convert/parquet";

/// A parsed `hf:datasets/OWNER/NAME[@REVISION]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubDataset {
    pub repo: String,
    pub revision: Option<String>,
}

impl HubDataset {
    /// `None` when `path` is not a Hub name; `Some(Err)` when it is one, badly written.
    pub fn parse(path: &str) -> Option<Result<HubDataset, DataError>> {
        let rest = path.strip_prefix("hf:")?;
        let bad = || {
            DataError::Source {
            what: path.to_string(),
            msg: "a Hub data set is written hf:datasets/OWNER/NAME (or hf:datasets/OWNER/NAME@REVISION), e.g. hf:datasets/trl-lib/ultrafeedback_binarized".into(),
        }
        };
        let Some(id) = rest.strip_prefix("datasets/") else {
            return Some(Err(bad()));
        };
        let (id, revision) = match id.split_once('@') {
            Some((i, r)) if !r.is_empty() => (i, Some(r.to_string())),
            Some(_) => return Some(Err(bad())),
            None => (id, None),
        };
        let parts: Vec<&str> = id.split('/').collect();
        if parts.len() != 2 || parts.iter().any(|p| p.is_empty()) {
            return Some(Err(bad()));
        }
        Some(Ok(HubDataset {
            repo: id.to_string(),
            revision,
        }))
    }

    fn name(&self) -> String {
        match &self.revision {
            Some(r) => format!("hf:datasets/{}@{r}", self.repo),
            None => format!("hf:datasets/{}", self.repo),
        }
    }

    /// The local paths of the files of `config` / `split`, fetched if not cached.
    pub fn fetch(
        &self,
        config: Option<&str>,
        split: Option<&str>,
    ) -> Result<Vec<PathBuf>, DataError> {
        let fail = |msg: String| DataError::Source {
            what: self.name(),
            msg,
        };
        let api = ApiBuilder::from_env()
            .with_progress(true)
            .build()
            .map_err(|e| fail(format!("cannot set up the Hub client ({e})")))?;
        let rev = self.revision.clone().unwrap_or_else(|| "main".into());
        let (files, revision) = match self.list(&api, &rev) {
            Ok(all) => {
                let own = choose(&all, config, split);
                if !own.is_empty() {
                    (own, rev)
                } else {
                    let converted = self.list(&api, PARQUET_REVISION).map_err(|e| {
                        fail(format!(
                            "its files at {rev} hold no {} data file{}, and its Parquet conversion ({PARQUET_REVISION}) cannot be listed ({e})",
                            FileKind::NAMES,
                            narrowed(config, split)
                        ))
                    })?;
                    let config = match config {
                        Some(c) => c.to_string(),
                        None => default_config(&converted).map_err(&fail)?,
                    };
                    let chosen = choose(&converted, Some(&config), split);
                    if chosen.is_empty() {
                        return Err(fail(format!(
                            "neither its files nor its Parquet conversion hold data{}; check the config and split names",
                            narrowed(Some(&config), split)
                        )));
                    }
                    (chosen, PARQUET_REVISION.to_string())
                }
            }
            Err(reason) => return self.cached(&rev, config, split, &reason),
        };
        let repo = api.repo(Repo::with_revision(
            self.repo.clone(),
            RepoType::Dataset,
            revision,
        ));
        files
            .iter()
            .map(|f| {
                repo.get(f)
                    .map_err(|e| fail(format!("cannot fetch {f} ({})", first_line(&e.to_string()))))
            })
            .collect()
    }

    /// The repo's file list at `revision`.
    fn list(&self, api: &Api, revision: &str) -> Result<Vec<String>, String> {
        let repo = Repo::with_revision(self.repo.clone(), RepoType::Dataset, revision.into());
        let info = api
            .repo(repo)
            .info()
            .map_err(|e| first_line(&e.to_string()))?;
        Ok(info.siblings.into_iter().map(|s| s.rfilename).collect())
    }

    /// Offline: the files of the cached snapshot of `revision` (or of its Parquet conversion).
    fn cached(
        &self,
        rev: &str,
        config: Option<&str>,
        split: Option<&str>,
        reason: &str,
    ) -> Result<Vec<PathBuf>, DataError> {
        let cache = hf_hub::Cache::from_env();
        for revision in [rev, PARQUET_REVISION] {
            let repo = Repo::with_revision(self.repo.clone(), RepoType::Dataset, revision.into());
            let root = cache.path().join(repo.folder_name());
            let Ok(commit) = std::fs::read_to_string(root.join("refs").join(revision)) else {
                continue;
            };
            let snap = root.join("snapshots").join(commit.trim());
            let mut found = Vec::new();
            let _ = super::files::walk(&snap, &mut found);
            let all: Vec<String> = found
                .iter()
                .filter_map(|p| p.strip_prefix(&snap).ok())
                .map(|p| p.to_string_lossy().replace('\\', "/"))
                .collect();
            let config = match (config, revision == PARQUET_REVISION) {
                (Some(c), _) => Some(c.to_string()),
                (None, true) => default_config(&all).ok(),
                (None, false) => None,
            };
            let chosen = choose(&all, config.as_deref(), split);
            if !chosen.is_empty() {
                return Ok(chosen.iter().map(|f| snap.join(f)).collect());
            }
        }
        Err(DataError::Source {
            what: self.name(),
            msg: format!(
                "cannot reach the Hugging Face Hub ({reason}) and the cache ({}) has no copy{}; download it on a connected machine (huggingface-cli download --repo-type dataset {} --local-dir DIR) and give DIR as the path",
                cache.path().display(),
                narrowed(config, split),
                self.repo
            ),
        })
    }
}

/// The data files among `all` (repo paths) for `config` (a folder) and `split`, sorted.
fn choose(all: &[String], config: Option<&str>, split: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = all
        .iter()
        .filter(|f| FileKind::of(Path::new(f)).is_some())
        .filter(|f| config.is_none_or(|c| f.starts_with(&format!("{c}/"))))
        .filter(|f| split.is_none_or(|s| in_split(Path::new(""), Path::new(f), s)))
        .cloned()
        .collect();
    out.sort();
    out
}

/// The Parquet conversion's config when none is named: `default`, or the only one.
fn default_config(files: &[String]) -> Result<String, String> {
    let mut configs: Vec<&str> = files
        .iter()
        .filter_map(|f| f.split_once('/').map(|(c, _)| c))
        .collect();
    configs.sort_unstable();
    configs.dedup();
    match configs.as_slice() {
        [] => Err("its Parquet conversion holds no config folder".into()),
        [one] => Ok(one.to_string()),
        many if many.contains(&"default") => Ok("default".into()),
        many => Err(format!(
            "it has several configs ({}); name one with `config:` in the source entry",
            many.join(", ")
        )),
    }
}

fn narrowed(config: Option<&str>, split: Option<&str>) -> String {
    match (config, split) {
        (None, None) => String::new(),
        (Some(c), None) => format!(" for config {c}"),
        (None, Some(s)) => format!(" for split {s}"),
        (Some(c), Some(s)) => format!(" for config {c}, split {s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_file_choice() {
        assert_eq!(
            HubDataset::parse("hf:datasets/trl-lib/ultrafeedback_binarized@v2")
                .unwrap()
                .unwrap(),
            HubDataset {
                repo: "trl-lib/ultrafeedback_binarized".into(),
                revision: Some("v2".into())
            }
        );
        assert!(HubDataset::parse("data/x.parquet").is_none());
        assert!(HubDataset::parse("hf:trl-lib/x").unwrap().is_err());
        let files: Vec<String> = [
            "README.md",
            "data/train-00000-of-00002.parquet",
            "data/train-00001-of-00002.parquet",
            "data/test-00000-of-00001.parquet",
            "harmless-base/train.jsonl.gz",
            "helpful-base/train.jsonl.gz",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            choose(&files, None, Some("test")),
            ["data/test-00000-of-00001.parquet"]
        );
        assert_eq!(
            choose(&files, Some("helpful-base"), Some("train")),
            ["helpful-base/train.jsonl.gz"]
        );
        assert_eq!(choose(&files, None, Some("train")).len(), 4);
        let converted: Vec<String> = ["default/train/0000.parquet", "default/test/0000.parquet"]
            .map(String::from)
            .to_vec();
        assert_eq!(default_config(&converted).unwrap(), "default");
        let two: Vec<String> = ["a/train/0000.parquet", "b/train/0000.parquet"]
            .map(String::from)
            .to_vec();
        assert!(default_config(&two).unwrap_err().contains("a, b"));
    }
}
