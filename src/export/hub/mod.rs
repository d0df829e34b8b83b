//! Push an export folder to the Hugging Face Hub: create the repo, upload large files through
//! Git LFS, and write every file in one commit.
//!
//! hf-hub 0.4 only downloads, so this speaks the Hub's HTTP API itself, in the order the
//! `huggingface_hub` Python client uses for `upload_folder`:
//!
//! ```text
//! POST /api/repos/create                         409 (exists) is fine
//! POST /api/models/{repo}/preupload/{rev}        which files go through LFS ("lfs" | "regular")
//! POST /{repo}.git/info/lfs/objects/batch        Git LFS batch API, "basic" transfer, sha256 oids
//! PUT  actions.upload.href  (+ POST actions.verify.href)   objects the Hub does not have yet
//! POST /api/models/{repo}/commit/{rev}           NDJSON: a header line, then one line per file
//! ```
//!
//! It owns: repo-id checks, the file listing (hidden names skipped), hashing, the requests and
//! the error messages. It does not own: writing the export (the other `export` modules) or the
//! command line. The local folder is only read, never modified.
//!
//! The token never appears in a message: it is sent only as `Authorization: Bearer` to the
//! endpoint (not to the LFS storage URLs, which carry their own signature), and any echo of it
//! in a server message is masked.
//!
//! Not implemented: multipart LFS uploads (the Hub offers them for very large files; we ask for
//! the "basic" transfer only), pull requests, deleting remote files that are gone locally.

mod client;
mod files;

use std::fmt;
use std::path::{Path, PathBuf};

use client::Client;
use files::LfsFile;
pub use files::{list_files, LocalFile};

/// The Hub itself; `HF_ENDPOINT` overrides it, as in hf-hub's `ApiBuilder::from_env`.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// What the preupload check gets to see of each file (the Hub sniffs it for binary content).
const SAMPLE_BYTES: usize = 512;
/// Files per preupload / LFS batch request, the chunk size the Python client uses.
const FILES_PER_REQUEST: usize = 256;

/// Where and how to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushOptions {
    /// `OWNER/NAME`, e.g. `alice/qwen2-dpo-lora`.
    pub repo_id: String,
    /// Only used when the repo has to be created; an existing repo keeps its visibility.
    pub private: bool,
    /// Branch to commit on, usually `main`.
    pub revision: String,
    /// Commit summary; an empty one becomes "Upload with dpo-lora".
    pub commit_message: String,
}

impl PushOptions {
    /// A public repo, branch `main`, the default commit message.
    pub fn new(repo_id: impl Into<String>) -> Self {
        Self {
            repo_id: repo_id.into(),
            private: false,
            revision: "main".into(),
            commit_message: String::new(),
        }
    }
}

/// The endpoint and token to use. [`HubAccess::from_env`] is what [`push_folder`] uses; tests
/// and mirrors build one by hand.
#[derive(Clone)]
pub struct HubAccess {
    /// e.g. `https://huggingface.co`, no trailing slash needed.
    pub endpoint: String,
    pub token: Option<String>,
}

impl HubAccess {
    /// `HF_ENDPOINT` or [`DEFAULT_ENDPOINT`]; `HF_TOKEN`, else the token file hf-hub reads
    /// (`$HF_HOME/token` or `~/.cache/huggingface/token`, written by `huggingface-cli login`).
    pub fn from_env() -> Self {
        let non_empty = |s: String| {
            let s = s.trim().to_string();
            (!s.is_empty()).then_some(s)
        };
        let endpoint = std::env::var("HF_ENDPOINT")
            .ok()
            .and_then(non_empty)
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
        let token = std::env::var("HF_TOKEN")
            .ok()
            .and_then(non_empty)
            .or_else(|| hf_hub::Cache::from_env().token());
        Self { endpoint, token }
    }
}

// Hand-written so that `{:?}` of a HubAccess can never print the token.
impl fmt::Debug for HubAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubAccess")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

/// What a successful push did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    /// `{endpoint}/{repo_id}`.
    pub repo_url: String,
    /// The Hub's `commitUrl`.
    pub commit_url: String,
    /// The Hub's `commitOid`.
    pub commit_oid: String,
    /// Files in the commit.
    pub files: usize,
    /// Their total size.
    pub bytes: u64,
    /// LFS objects actually sent; the others were already on the Hub.
    pub lfs_uploaded: usize,
}

/// The request that failed, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    CreateRepo,
    Preupload,
    LfsBatch,
    LfsUpload,
    LfsVerify,
    Commit,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::CreateRepo => "create repo",
            Step::Preupload => "preupload",
            Step::LfsBatch => "LFS batch",
            Step::LfsUpload => "LFS upload",
            Step::LfsVerify => "LFS verify",
            Step::Commit => "commit",
        })
    }
}

/// How the Hub wants a file: inline in the commit, or as a Git LFS object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMode {
    Regular,
    Lfs,
}

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("invalid Hub repo id {repo_id:?}: {reason} (expected OWNER/NAME, e.g. alice/my-dpo-adapter)")]
    InvalidRepoId { repo_id: String, reason: String },
    #[error("invalid revision {0:?}: give a branch name such as main")]
    InvalidRevision(String),
    #[error("pushing to the Hub needs a token: set HF_TOKEN or run `huggingface-cli login` (the export stays in {})", .dir.display())]
    NoToken { dir: PathBuf },
    #[error("{}: {source}", .path.display())]
    Local {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} has no files to push (hidden files are skipped)", .dir.display())]
    NoFiles { dir: PathBuf },
    #[error("cannot reach the Hugging Face Hub at {endpoint} (offline?); the export is kept in {}", .dir.display())]
    Offline { endpoint: String, dir: PathBuf },
    #[error("Hub {step} failed: {status} {status_text}{}", colon(.message))]
    Http {
        step: Step,
        status: u16,
        status_text: String,
        message: String,
    },
    #[error("Hub {step} failed: {message}")]
    Transport { step: Step, message: String },
    #[error("Hub {step} gave an unexpected answer: {message}")]
    Protocol { step: Step, message: String },
}

fn colon(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// Push every non-hidden file under `dir` to `opts.repo_id`, with the endpoint and token from
/// the environment ([`HubAccess::from_env`]).
pub fn push_folder(dir: &Path, opts: &PushOptions) -> Result<PushReport, HubError> {
    push_folder_with(dir, opts, &HubAccess::from_env())
}

/// [`push_folder`] with an explicit endpoint and token. Everything local (repo id, revision,
/// file listing, token) is checked before the first request.
pub fn push_folder_with(
    dir: &Path,
    opts: &PushOptions,
    hub: &HubAccess,
) -> Result<PushReport, HubError> {
    let (owner, name) = split_repo_id(&opts.repo_id)?;
    if opts.revision.is_empty()
        || opts
            .revision
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(HubError::InvalidRevision(opts.revision.clone()));
    }
    let files = list_files(dir)?;
    let token = hub
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return Err(HubError::NoToken {
            dir: dir.to_path_buf(),
        });
    };
    let client = Client::new(hub.endpoint.trim_end_matches('/'), token, dir);

    client.create_repo(owner, name, opts.private)?;
    let modes = client.preupload(&opts.repo_id, &opts.revision, &files)?;
    // Files the Hub says to ignore (its .gitignore) are left out of the commit, as in Python.
    let mut regular = Vec::new();
    let mut lfs = Vec::new();
    for (file, mode) in files.iter().zip(modes) {
        match mode {
            Some(UploadMode::Regular) => regular.push(file),
            Some(UploadMode::Lfs) => lfs.push(LfsFile::hash(file)?),
            None => {}
        }
    }
    let lfs_uploaded = client.upload_lfs(&opts.repo_id, &opts.revision, &lfs)?;
    let summary = match opts.commit_message.trim() {
        "" => "Upload with dpo-lora",
        s => s,
    };
    let (commit_url, commit_oid) =
        client.commit(&opts.repo_id, &opts.revision, summary, &regular, &lfs)?;
    Ok(PushReport {
        repo_url: format!("{}/{}", client.endpoint, opts.repo_id),
        commit_url,
        commit_oid,
        files: regular.len() + lfs.len(),
        bytes: regular.iter().map(|f| f.size).sum::<u64>()
            + lfs.iter().map(|f| f.file.size).sum::<u64>(),
        lfs_uploaded,
    })
}

/// Check `OWNER/NAME` against the Hub's rules (see `recipe::export::split_repo_id`).
pub fn split_repo_id(repo_id: &str) -> Result<(&str, &str), HubError> {
    crate::recipe::export::split_repo_id(repo_id).map_err(|reason| HubError::InvalidRepoId {
        repo_id: repo_id.to_string(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids_follow_the_hub_rules() {
        assert_eq!(
            split_repo_id("alice/my-dpo_adapter.v2").unwrap(),
            ("alice", "my-dpo_adapter.v2")
        );
        for bad in [
            "noslash", "/name", "owner/", "a/b/c", "a/b c", "a/b--c", "a/b..c", "a/-b", "a/b.",
            "a/b.git", "ä/b", "a/b?",
        ] {
            let err = split_repo_id(bad).unwrap_err();
            assert!(
                matches!(err, HubError::InvalidRepoId { .. }),
                "{bad}: {err}"
            );
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(split_repo_id(&format!("a/{}", "x".repeat(97))).is_err());
        assert!(split_repo_id(&format!("a/{}", "x".repeat(96))).is_ok());
    }

    #[test]
    fn debug_never_shows_the_token() {
        let hub = HubAccess {
            endpoint: DEFAULT_ENDPOINT.into(),
            token: Some("hf_secret".into()),
        };
        assert!(!format!("{hub:?}").contains("hf_secret"));
    }
}
