//! The folder side of a push: which files go (hidden names skipped), their sizes, sha256 object
//! ids and the preupload sample.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{HubError, SAMPLE_BYTES};

/// One file to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalFile {
    /// Relative to the pushed folder, `/`-separated: the path in the repo.
    pub path_in_repo: String,
    pub path: PathBuf,
    pub size: u64,
}

/// Every regular file under `dir`, recursively, sorted by repo path. Names starting with `.`
/// (files and folders: `.git`, the exporters' hidden temp folders) and symlinks are skipped.
pub fn list_files(dir: &Path) -> Result<Vec<LocalFile>, HubError> {
    let mut out = Vec::new();
    walk(dir, "", &mut out)?;
    if out.is_empty() {
        return Err(HubError::NoFiles {
            dir: dir.to_path_buf(),
        });
    }
    out.sort_by(|a, b| a.path_in_repo.cmp(&b.path_in_repo));
    Ok(out)
}

/// `map_err` for reading `path`: the io error with the path it was about.
pub(super) fn local(path: &Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
    move |source| HubError::Local {
        path: path.to_path_buf(),
        source,
    }
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<LocalFile>) -> Result<(), HubError> {
    for entry in std::fs::read_dir(dir).map_err(local(dir))? {
        let entry = entry.map_err(local(dir))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            let e = std::io::Error::other("file name is not UTF-8; the Hub needs UTF-8 paths");
            return Err(local(&path)(e));
        };
        if name.starts_with('.') {
            continue;
        }
        let file_type = entry.file_type().map_err(local(&path))?;
        let path_in_repo = format!("{prefix}{name}");
        if file_type.is_dir() {
            walk(&path, &format!("{path_in_repo}/"), out)?;
        } else if file_type.is_file() {
            let size = entry.metadata().map_err(local(&path))?.len();
            out.push(LocalFile {
                path_in_repo,
                path,
                size,
            });
        }
    }
    Ok(())
}

/// A file going through LFS, with its Git LFS object id.
pub(super) struct LfsFile<'a> {
    pub(super) file: &'a LocalFile,
    /// Lower-case hex sha256 of the content.
    pub(super) oid: String,
}

impl<'a> LfsFile<'a> {
    pub(super) fn hash(file: &'a LocalFile) -> Result<Self, HubError> {
        let mut reader = File::open(&file.path).map_err(local(&file.path))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = reader.read(&mut buf).map_err(local(&file.path))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
        Ok(Self {
            file,
            oid: hex(&hasher.finalize()),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Base64 of the first [`SAMPLE_BYTES`] bytes.
pub(super) fn sample(f: &LocalFile) -> Result<String, HubError> {
    let mut head = Vec::with_capacity(SAMPLE_BYTES);
    File::open(&f.path)
        .map_err(local(&f.path))?
        .take(SAMPLE_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(local(&f.path))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_is_recursive_sorted_and_skips_hidden_names() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir_all(d.join("sub/deeper")).unwrap();
        std::fs::create_dir_all(d.join(".tmp-export")).unwrap();
        std::fs::write(d.join("config.json"), b"{}").unwrap();
        std::fs::write(d.join("sub/deeper/w.bin"), [0u8; 10]).unwrap();
        std::fs::write(d.join(".hidden"), b"x").unwrap();
        std::fs::write(d.join(".tmp-export/partial.safetensors"), b"x").unwrap();
        let files = list_files(d).unwrap();
        let paths: Vec<_> = files.iter().map(|f| f.path_in_repo.as_str()).collect();
        assert_eq!(paths, ["config.json", "sub/deeper/w.bin"]);
        assert_eq!(files[1].size, 10);

        let empty = tempfile::tempdir().unwrap();
        std::fs::write(empty.path().join(".only-hidden"), b"x").unwrap();
        assert!(matches!(
            list_files(empty.path()),
            Err(HubError::NoFiles { .. })
        ));
    }
}
