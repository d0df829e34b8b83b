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

use std::fmt;
use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

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

/// Check `OWNER/NAME` against the Hub's rules (those of `huggingface_hub.validate_repo_id`,
/// ASCII only): letters, digits, `-`, `_`, `.`; no `--` or `..`; no leading or trailing `-`
/// or `.`; at most 96 characters per part; the name not ending in `.git`.
pub fn split_repo_id(repo_id: &str) -> Result<(&str, &str), HubError> {
    let bad = |reason: &str| HubError::InvalidRepoId {
        repo_id: repo_id.to_string(),
        reason: reason.to_string(),
    };
    let (owner, name) = repo_id
        .split_once('/')
        .ok_or_else(|| bad("missing the OWNER/ part"))?;
    if name.contains('/') {
        return Err(bad("more than one '/'"));
    }
    for (what, part) in [("owner", owner), ("name", name)] {
        if part.is_empty() {
            return Err(bad(&format!("the {what} is empty")));
        }
        if part.len() > 96 {
            return Err(bad(&format!("the {what} is longer than 96 characters")));
        }
        if let Some(c) = part
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c)))
        {
            return Err(bad(&format!(
                "{c:?} is not allowed (letters, digits, '-', '_', '.')"
            )));
        }
        if part.contains("--") || part.contains("..") {
            return Err(bad("'--' and '..' are not allowed"));
        }
        if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
            return Err(bad(&format!(
                "the {what} cannot start or end with '-' or '.'"
            )));
        }
    }
    if name.ends_with(".git") {
        return Err(bad("the name cannot end with .git"));
    }
    Ok((owner, name))
}

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
fn local(path: &Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
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
struct LfsFile<'a> {
    file: &'a LocalFile,
    /// Lower-case hex sha256 of the content.
    oid: String,
}

impl<'a> LfsFile<'a> {
    fn hash(file: &'a LocalFile) -> Result<Self, HubError> {
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

/// One push's HTTP side: the agent, where to send, the token, and the folder (for messages).
struct Client<'a> {
    agent: ureq::Agent,
    endpoint: &'a str,
    token: &'a str,
    dir: &'a Path,
}

impl<'a> Client<'a> {
    fn new(endpoint: &'a str, token: &'a str, dir: &'a Path) -> Self {
        let loopback = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
            .iter()
            .any(|p| endpoint.starts_with(p));
        let agent = ureq::AgentBuilder::new()
            .user_agent(concat!("dpo-lora/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Duration::from_secs(30))
            // Per read, not per request: a stalled server fails instead of hanging the push.
            .timeout_read(Duration::from_secs(600))
            // Proxies as hf-hub does; ureq 2 has no NO_PROXY, so a loopback endpoint (a local
            // mirror, the tests' stand-in Hub) is never sent through one.
            .try_proxy_from_env(!loopback)
            .build();
        Self {
            agent,
            endpoint,
            token,
            dir,
        }
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.token)
    }

    /// Turn a request's failure into a one-line [`HubError`] for `step`.
    fn check(
        &self,
        step: Step,
        url: &str,
        sent: Result<ureq::Response, ureq::Error>,
    ) -> Result<ureq::Response, HubError> {
        sent.map_err(|e| self.error(step, url, e))
    }

    fn error(&self, step: Step, url: &str, e: ureq::Error) -> HubError {
        match e {
            ureq::Error::Status(status, resp) => {
                let status_text = resp.status_text().to_string();
                let header = resp.header("X-Error-Message").map(str::to_string);
                let body = resp.into_string().unwrap_or_default();
                let message = header.unwrap_or_else(|| server_message(&body));
                HubError::Http {
                    step,
                    status,
                    status_text,
                    message: self.mask(&message),
                }
            }
            ureq::Error::Transport(t) => match t.kind() {
                ureq::ErrorKind::Dns | ureq::ErrorKind::ConnectionFailed => HubError::Offline {
                    endpoint: origin(url).to_string(),
                    dir: self.dir.to_path_buf(),
                },
                _ => HubError::Transport {
                    step,
                    message: self.mask(&t.to_string()),
                },
            },
        }
    }

    fn mask(&self, text: &str) -> String {
        text.replace(self.token, "<token>")
    }

    fn json(&self, step: Step, resp: ureq::Response) -> Result<Value, HubError> {
        resp.into_json::<Value>().map_err(|e| HubError::Protocol {
            step,
            message: format!("response is not JSON: {e}"),
        })
    }

    /// `POST /api/repos/create`; an existing repo (409) is fine.
    fn create_repo(&self, owner: &str, name: &str, private: bool) -> Result<(), HubError> {
        let url = format!("{}/api/repos/create", self.endpoint);
        let body =
            json!({"name": name, "organization": owner, "private": private, "type": "model"});
        let sent = self
            .agent
            .post(&url)
            .set("Authorization", &self.bearer())
            .send_json(body);
        match sent {
            Ok(_) | Err(ureq::Error::Status(409, _)) => Ok(()),
            Err(e) => Err(self.error(Step::CreateRepo, &url, e)),
        }
    }

    /// `POST /api/models/{repo}/preupload/{rev}`: the upload mode of each file, `None` for
    /// files the Hub says to ignore. Same order as `files`.
    fn preupload(
        &self,
        repo_id: &str,
        revision: &str,
        files: &[LocalFile],
    ) -> Result<Vec<Option<UploadMode>>, HubError> {
        let step = Step::Preupload;
        let url = format!(
            "{}/api/models/{repo_id}/preupload/{}",
            self.endpoint,
            encode(revision)
        );
        let mut modes = Vec::with_capacity(files.len());
        for chunk in files.chunks(FILES_PER_REQUEST) {
            let mut entries = Vec::with_capacity(chunk.len());
            for f in chunk {
                entries.push(json!({"path": f.path_in_repo, "size": f.size, "sample": sample(f)?}));
            }
            let body = json!({"files": entries});
            let resp = self.check(
                step,
                &url,
                self.agent
                    .post(&url)
                    .set("Authorization", &self.bearer())
                    .send_json(body),
            )?;
            let answer = self.json(step, resp)?;
            let listed = answer["files"]
                .as_array()
                .ok_or_else(|| HubError::Protocol {
                    step,
                    message: "no \"files\" list".into(),
                })?;
            for f in chunk {
                let entry = listed.iter().find(|e| e["path"] == f.path_in_repo.as_str());
                let Some(entry) = entry else {
                    let message = format!("no upload mode for {}", f.path_in_repo);
                    return Err(HubError::Protocol { step, message });
                };
                let mode = match entry["uploadMode"].as_str() {
                    _ if entry["shouldIgnore"] == true => None,
                    Some("lfs") => Some(UploadMode::Lfs),
                    Some("regular") => Some(UploadMode::Regular),
                    other => {
                        let message = format!("upload mode {other:?} for {}", f.path_in_repo);
                        return Err(HubError::Protocol { step, message });
                    }
                };
                modes.push(mode);
            }
        }
        Ok(modes)
    }

    /// The Git LFS batch API, then a PUT (and verify) for each object the Hub lacks.
    /// Returns how many objects were sent.
    fn upload_lfs(
        &self,
        repo_id: &str,
        revision: &str,
        files: &[LfsFile],
    ) -> Result<usize, HubError> {
        let step = Step::LfsBatch;
        let url = format!("{}/{repo_id}.git/info/lfs/objects/batch", self.endpoint);
        // The same content under two paths is one object.
        let mut unique: Vec<&LfsFile> = Vec::new();
        for f in files {
            if !unique.iter().any(|u| u.oid == f.oid) {
                unique.push(f);
            }
        }
        let mut todo = Vec::new();
        for chunk in unique.chunks(FILES_PER_REQUEST) {
            let objects: Vec<Value> = chunk
                .iter()
                .map(|f| json!({"oid": f.oid, "size": f.file.size}))
                .collect();
            let body = json!({
                "operation": "upload",
                "transfers": ["basic"],
                "objects": objects,
                "hash_algo": "sha256",
                "ref": {"name": revision},
            });
            let resp = self.check(
                step,
                &url,
                self.agent
                    .post(&url)
                    .set("Authorization", &self.bearer())
                    .set("Accept", "application/vnd.git-lfs+json")
                    .set("Content-Type", "application/vnd.git-lfs+json")
                    .send_string(&body.to_string()),
            )?;
            let answer = self.json(step, resp)?;
            for f in chunk {
                let object = answer["objects"]
                    .as_array()
                    .and_then(|objs| objs.iter().find(|o| o["oid"] == f.oid.as_str()));
                let Some(object) = object else {
                    let message = format!("no entry for {} ({})", f.file.path_in_repo, f.oid);
                    return Err(HubError::Protocol { step, message });
                };
                if let Some(err) = object.get("error") {
                    let message = format!(
                        "{}: {} {}",
                        f.file.path_in_repo,
                        err["code"],
                        err["message"].as_str().unwrap_or("")
                    );
                    return Err(HubError::Protocol { step, message });
                }
                if let Some(upload) = object["actions"].get("upload") {
                    todo.push((*f, upload.clone(), object["actions"].get("verify").cloned()));
                }
            }
        }
        if todo.is_empty() {
            return Ok(0);
        }
        let bar = progress_bar(todo.iter().map(|(f, _, _)| f.file.size).sum());
        for (f, upload, verify) in &todo {
            self.put_object(f, upload, &bar)?;
            if let Some(verify) = verify {
                self.verify_object(f, verify)?;
            }
        }
        bar.finish_and_clear();
        Ok(todo.len())
    }

    /// PUT the file's bytes to the storage URL, streamed from disk with an explicit
    /// Content-Length (S3-style presigned URLs refuse chunked bodies). No Hub token here.
    fn put_object(&self, f: &LfsFile, action: &Value, bar: &ProgressBar) -> Result<(), HubError> {
        let step = Step::LfsUpload;
        let (href, headers) = self.action(step, action, f)?;
        if headers.iter().any(|(k, _)| k == "chunk_size") {
            let message = format!(
                "the Hub asked for a multipart upload of {} ({} bytes), which dpo-lora does not do",
                f.file.path_in_repo, f.file.size
            );
            return Err(HubError::Protocol { step, message });
        }
        let file = File::open(&f.file.path).map_err(local(&f.file.path))?;
        let mut req = self.agent.put(&href);
        for (k, v) in &headers {
            req = req.set(k, v);
        }
        // No Content-Type, as the Python client: a presigned URL may have signed it empty.
        let req = req.set("Content-Length", &f.file.size.to_string());
        self.check(step, &href, req.send(bar.wrap_read(file.take(f.file.size))))?;
        Ok(())
    }

    /// POST `{oid, size}` to the verify action; the Hub token goes along only when the URL is
    /// on the endpoint.
    fn verify_object(&self, f: &LfsFile, action: &Value) -> Result<(), HubError> {
        let step = Step::LfsVerify;
        let (href, headers) = self.action(step, action, f)?;
        let mut req = self.agent.post(&href);
        for (k, v) in &headers {
            req = req.set(k, v);
        }
        if href.starts_with(&format!("{}/", self.endpoint)) {
            req = req.set("Authorization", &self.bearer());
        }
        let req = req
            .set("Accept", "application/vnd.git-lfs+json")
            .set("Content-Type", "application/vnd.git-lfs+json");
        let body = json!({"oid": f.oid, "size": f.file.size}).to_string();
        self.check(step, &href, req.send_string(&body))?;
        Ok(())
    }

    /// An LFS action's `href` (moved onto a mirror endpoint when it names the Hub, as the
    /// Python client does) and its string `header` pairs.
    fn action(
        &self,
        step: Step,
        action: &Value,
        f: &LfsFile,
    ) -> Result<(String, Vec<(String, String)>), HubError> {
        let Some(href) = action["href"].as_str() else {
            let message = format!("LFS action without href for {}", f.file.path_in_repo);
            return Err(HubError::Protocol { step, message });
        };
        let href = match href.strip_prefix(DEFAULT_ENDPOINT) {
            Some(rest) if self.endpoint != DEFAULT_ENDPOINT => format!("{}{rest}", self.endpoint),
            _ => href.to_string(),
        };
        let headers = action["header"]
            .as_object()
            .map(|h| {
                h.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Ok((href, headers))
    }

    /// `POST /api/models/{repo}/commit/{rev}` as NDJSON. Returns (commitUrl, commitOid).
    fn commit(
        &self,
        repo_id: &str,
        revision: &str,
        summary: &str,
        regular: &[&LocalFile],
        lfs: &[LfsFile],
    ) -> Result<(String, String), HubError> {
        let step = Step::Commit;
        let url = format!(
            "{}/api/models/{repo_id}/commit/{}",
            self.endpoint,
            encode(revision)
        );
        let mut lines =
            vec![json!({"key": "header", "value": {"summary": summary, "description": ""}})];
        for f in regular {
            let bytes = std::fs::read(&f.path).map_err(local(&f.path))?;
            let content = base64::engine::general_purpose::STANDARD.encode(bytes);
            lines.push(json!({"key": "file", "value":
                {"content": content, "path": f.path_in_repo, "encoding": "base64"}}));
        }
        for f in lfs {
            lines.push(json!({"key": "lfsFile", "value":
                {"path": f.file.path_in_repo, "algo": "sha256", "oid": f.oid, "size": f.file.size}}));
        }
        let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
        let resp = self.check(
            step,
            &url,
            self.agent
                .post(&url)
                .set("Authorization", &self.bearer())
                .set("Content-Type", "application/x-ndjson")
                .send_string(&body),
        )?;
        let answer = self.json(step, resp)?;
        let field = |k: &str| answer[k].as_str().unwrap_or_default().to_string();
        Ok((field("commitUrl"), field("commitOid")))
    }
}

/// Base64 of the first [`SAMPLE_BYTES`] bytes.
fn sample(f: &LocalFile) -> Result<String, HubError> {
    let mut head = Vec::with_capacity(SAMPLE_BYTES);
    File::open(&f.path)
        .map_err(local(&f.path))?
        .take(SAMPLE_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(local(&f.path))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(head))
}

/// A byte-count bar on stderr when it is a terminal, hidden otherwise (logs, tests).
fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "uploading [{bar:30}] {bytes}/{total_bytes}  {bytes_per_sec}  eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    )
}

/// The server's explanation: the Hub's JSON `{"error": ...}`, else the first non-empty line,
/// cut at 200 characters.
fn server_message(body: &str) -> String {
    let from_json = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string));
    let text = from_json.unwrap_or_else(|| body.to_string());
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    line.chars().take(200).collect()
}

/// `scheme://host[:port]` of a URL, for the offline message.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// Percent-encode a path segment (a revision may contain `/`), keeping RFC 3986 unreserved.
fn encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
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

    #[test]
    fn server_messages_are_one_line() {
        assert_eq!(
            server_message(r#"{"error":"Invalid credentials in Authorization header"}"#),
            "Invalid credentials in Authorization header"
        );
        assert_eq!(server_message("\n  first line\nsecond"), "first line");
        assert_eq!(server_message(&"y".repeat(500)).len(), 200);
        assert_eq!(server_message(""), "");
    }

    #[test]
    fn urls_and_hashes() {
        assert_eq!(
            origin("https://huggingface.co/api/x"),
            "https://huggingface.co"
        );
        assert_eq!(origin("http://127.0.0.1:9/a"), "http://127.0.0.1:9");
        assert_eq!(encode("main"), "main");
        assert_eq!(encode("refs/pr/1"), "refs%2Fpr%2F1");
        // sha256("abc"), FIPS 180-2 appendix B.1.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        let file = LocalFile {
            path_in_repo: "abc".into(),
            path,
            size: 3,
        };
        assert_eq!(
            LfsFile::hash(&file).unwrap().oid,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
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
