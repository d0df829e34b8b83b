//! Which files of a source belong to its `split` (the recipe's `data.train` / `data.eval` value
//! itself, [`Sources`], is defined in `recipe::sources`).
//!
//! Owns: the split rule for file names, the Hugging Face Hub's naming. Does not: read rows (see
//! `files`) or fetch (see `hub`).

use std::path::Path;

pub use crate::recipe::sources::{SourceSpec, Sources};

/// Whether `file` (found under `root`) belongs to `split`.
pub fn in_split(root: &Path, file: &Path, split: &str) -> bool {
    let rel = file.strip_prefix(root).unwrap_or(file);
    rel.components().any(|c| {
        let name = c.as_os_str().to_string_lossy();
        let stem = name.split('.').next().unwrap_or(&name);
        name == split
            || name
                .strip_prefix(split)
                .is_some_and(|rest| rest.starts_with(['-', '.']))
            || stem.ends_with(&format!("-{split}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_follows_the_hub_file_names() {
        let root = Path::new("/d");
        for (file, split, yes) in [
            ("/d/data/train-00000-of-00002.parquet", "train", true),
            ("/d/data/test-00000-of-00001.parquet", "train", false),
            ("/d/train.jsonl", "train", true),
            ("/d/train_prefs/0000.parquet", "train_prefs", true),
            ("/d/train_prefs/0000.parquet", "train", false),
            ("/d/training.jsonl", "train", false),
            ("/d/default/test/0000.parquet", "test", true),
            ("/d/default/hh-rlhf-test.parquet", "test", true),
            ("/d/default/hh-rlhf-test.parquet", "train", false),
        ] {
            assert_eq!(
                in_split(root, Path::new(file), split),
                yes,
                "{file} in {split}"
            );
        }
    }
}
