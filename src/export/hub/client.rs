//! The HTTP side of a push: one ureq agent speaking the Hub's repo, preupload, Git LFS and
//! commit endpoints, with one-line errors that never carry the token.

use std::fs::File;
use std::io::{IsTerminal, Read};
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use super::files::{local, sample, LfsFile, LocalFile};
use super::{HubError, Step, UploadMode, DEFAULT_ENDPOINT, FILES_PER_REQUEST};

/// One push's HTTP side: the agent, where to send, the token, and the folder (for messages).
pub(super) struct Client<'a> {
    agent: ureq::Agent,
    pub(super) endpoint: &'a str,
    token: &'a str,
    dir: &'a Path,
}

impl<'a> Client<'a> {
    pub(super) fn new(endpoint: &'a str, token: &'a str, dir: &'a Path) -> Self {
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
    pub(super) fn create_repo(
        &self,
        owner: &str,
        name: &str,
        private: bool,
    ) -> Result<(), HubError> {
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
    pub(super) fn preupload(
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
    pub(super) fn upload_lfs(
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
    pub(super) fn commit(
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
}
