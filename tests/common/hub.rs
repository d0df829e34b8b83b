//! The loopback Hub stand-in: a std `TcpListener` on 127.0.0.1 in a thread that implements the
//! four endpoints of an upload (create repo, preupload, LFS batch + upload + verify, commit)
//! closely enough to check what the client sends, and records every request. The real Hub is
//! never contacted; a test points the client at `FakeHub::base` (or `HF_ENDPOINT` for a child).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use super::sha256_hex;
use dpo_lora::export::hub::HubAccess;
use serde_json::{json, Value};

pub const TOKEN: &str = "hf_test_token_5f2a";
pub const REPO: &str = "alice/tiny-dpo";

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// How the stand-in Hub answers.
#[derive(Default, Clone)]
pub struct Behaviour {
    pub repo_exists: bool,
    /// Answer the commit with 401 and a message that echoes the token.
    pub reject_commit: bool,
}

#[derive(Default)]
pub struct State {
    pub requests: Vec<Request>,
    /// LFS objects received, by oid.
    pub objects: HashMap<String, Vec<u8>>,
}

pub struct FakeHub {
    pub base: String,
    pub state: Arc<Mutex<State>>,
}

impl FakeHub {
    pub fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let (b, s) = (base.clone(), state.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                serve(stream, &b, &behaviour, &s);
            }
        });
        Self { base, state }
    }

    pub fn access(&self, token: Option<&str>) -> HubAccess {
        HubAccess {
            endpoint: self.base.clone(),
            token: token.map(str::to_string),
        }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }
}

/// One request per connection (`Connection: close`), so the client never reuses a socket.
fn serve(stream: TcpStream, base: &str, behaviour: &Behaviour, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map(|(_, v)| v.parse::<usize>().unwrap());
    let (status, body) = match length {
        // Presigned storage URLs refuse chunked bodies; so does the stand-in.
        None if method != "GET" => (411, json!({"error": "Content-Length required"})),
        _ => {
            let mut body = vec![0u8; length.unwrap_or(0)];
            reader.read_exact(&mut body).unwrap();
            let req = Request {
                method,
                path,
                headers,
                body,
            };
            let mut st = state.lock().unwrap();
            st.requests.push(req.clone());
            route(&req, base, behaviour, &mut st)
        }
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        411 => "Length Required",
        _ => "Other",
    };
    let body = body.to_string();
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

fn route(req: &Request, base: &str, behaviour: &Behaviour, st: &mut State) -> (u16, Value) {
    let p = req.path.as_str();
    let repo_api = format!("/api/models/{REPO}/");
    match req.method.as_str() {
        "POST" if p == "/api/repos/create" => match behaviour.repo_exists {
            true => (409, json!({"error": "You already created this model repo"})),
            false => (200, json!({"url": format!("{base}/{REPO}")})),
        },
        "POST" if p == format!("{repo_api}preupload/main") => {
            let files: Vec<Value> = req.json()["files"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| {
                    let path = f["path"].as_str().unwrap();
                    let mode = if path.ends_with(".safetensors") {
                        "lfs"
                    } else {
                        "regular"
                    };
                    json!({"path": path, "uploadMode": mode, "shouldIgnore": false})
                })
                .collect();
            (200, json!({"files": files}))
        }
        "POST" if p == format!("/{REPO}.git/info/lfs/objects/batch") => {
            let objects: Vec<Value> = req.json()["objects"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| {
                    let oid = o["oid"].as_str().unwrap();
                    if st.objects.contains_key(oid) {
                        return json!({"oid": oid, "size": o["size"]});
                    }
                    json!({"oid": oid, "size": o["size"], "actions": {
                        "upload": {"href": format!("{base}/storage/{oid}"), "header": {"x-fake-signature": "sig-1"}},
                        "verify": {"href": format!("{base}/{REPO}.git/info/lfs/objects/verify"), "header": {}},
                    }})
                })
                .collect();
            (200, json!({"transfer": "basic", "objects": objects}))
        }
        "PUT" if p.starts_with("/storage/") => {
            st.objects
                .insert(p["/storage/".len()..].to_string(), req.body.clone());
            (200, json!({}))
        }
        "POST" if p == format!("/{REPO}.git/info/lfs/objects/verify") => {
            let v = req.json();
            let ok = st
                .objects
                .get(v["oid"].as_str().unwrap())
                .is_some_and(|bytes| {
                    Some(bytes.len() as u64) == v["size"].as_u64() && sha256_hex(bytes) == v["oid"]
                });
            if ok {
                (200, json!({}))
            } else {
                (404, json!({"error": "object not found"}))
            }
        }
        "POST" if p == format!("{repo_api}commit/main") => {
            if behaviour.reject_commit {
                return (
                    401,
                    json!({"error": format!("Invalid credentials: {TOKEN}\nmore detail")}),
                );
            }
            // Like the Hub: an LFS pointer to an object it does not have is refused.
            let body = String::from_utf8(req.body.clone()).unwrap();
            for line in body.lines().skip(1) {
                let v: Value = serde_json::from_str(line).unwrap();
                if v["key"] == "lfsFile"
                    && !st.objects.contains_key(v["value"]["oid"].as_str().unwrap())
                {
                    return (400, json!({"error": "LFS object missing"}));
                }
            }
            (
                200,
                json!({"commitUrl": format!("{base}/{REPO}/commit/c0ffee"), "commitOid": "c0ffee"}),
            )
        }
        _ => (
            404,
            json!({"error": format!("no route {} {p}", req.method)}),
        ),
    }
}

/// A loopback stand-in for the Hub's download side, enough for hf-hub 0.4: a data set's file
/// list (`/api/datasets/OWNER/NAME/revision/REV`) and its files
/// (`/datasets/OWNER/NAME/resolve/REV/PATH`, with the `Range`, `ETag` and `X-Repo-Commit` the
/// client reads). Revisions in URLs come `%2F`-escaped (`refs%2Fconvert%2Fparquet`). Every
/// request's path is recorded.
pub struct DataHub {
    pub base: String,
    requests: Arc<Mutex<Vec<String>>>,
}

/// One revision of a data set repo: its files.
pub struct DataRev {
    pub repo: String,
    pub revision: String,
    pub files: Vec<(String, Vec<u8>)>,
}

impl DataHub {
    pub fn start(revs: Vec<DataRev>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let revs = Arc::new(revs);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                serve_data(stream, &revs, &log);
            }
        });
        Self { base, requests }
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve_data(stream: TcpStream, revs: &[DataRev], log: &Mutex<Vec<String>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 {
            break;
        }
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = v.trim().strip_prefix("bytes=").map(str::to_string);
            }
        }
    }
    log.lock().unwrap().push(path.clone());
    let decode = |s: &str| s.replace("%2F", "/");
    let commit =
        |r: &DataRev| sha256_hex(format!("{}@{}", r.repo, r.revision).as_bytes())[..40].to_string();
    let mut stream = stream;
    let mut reply = |status: u16, headers: Vec<(String, String)>, body: Vec<u8>| {
        let mut head = format!(
            "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&body);
    };
    let not_found = json!({"error": "Repository Not Found"})
        .to_string()
        .into_bytes();
    if let Some(rest) = path.strip_prefix("/api/datasets/") {
        // OWNER/NAME/revision/REV
        let parts: Vec<&str> = rest.splitn(4, '/').collect();
        if let [owner, name, "revision", rev] = parts.as_slice() {
            let repo = format!("{owner}/{name}");
            let rev = decode(rev);
            if let Some(r) = revs.iter().find(|r| r.repo == repo && r.revision == rev) {
                let siblings: Vec<Value> = r
                    .files
                    .iter()
                    .map(|(p, _)| json!({"rfilename": p}))
                    .collect();
                let body = json!({"sha": commit(r), "siblings": siblings}).to_string();
                return reply(
                    200,
                    vec![("Content-Type".into(), "application/json".into())],
                    body.into_bytes(),
                );
            }
        }
        return reply(404, vec![], not_found);
    }
    if let Some(rest) = path.strip_prefix("/datasets/") {
        // OWNER/NAME/resolve/REV/PATH, REV escaped
        let parts: Vec<&str> = rest.splitn(5, '/').collect();
        if let [owner, name, "resolve", rev, file] = parts.as_slice() {
            let (repo, rev) = (format!("{owner}/{name}"), decode(rev));
            let found = revs
                .iter()
                .find(|r| r.repo == repo && r.revision == rev)
                .and_then(|r| r.files.iter().find(|(p, _)| p == file).map(|(_, b)| (r, b)));
            if let Some((r, bytes)) = found {
                let size = bytes.len();
                let (a, b) = match &range {
                    Some(spec) => {
                        let (a, b) = spec.split_once('-').unwrap_or((spec, ""));
                        let a: usize = a.parse().unwrap_or(0);
                        let b: usize = b.parse().unwrap_or(size.saturating_sub(1));
                        (a.min(size), (b + 1).min(size))
                    }
                    None => (0, size),
                };
                let headers = vec![
                    ("X-Repo-Commit".into(), commit(r)),
                    ("ETag".into(), format!("\"{}\"", sha256_hex(bytes))),
                    (
                        "Content-Range".into(),
                        format!("bytes {a}-{}/{size}", b.saturating_sub(1)),
                    ),
                ];
                let status = if range.is_some() { 206 } else { 200 };
                return reply(status, headers, bytes[a..b].to_vec());
            }
        }
    }
    reply(404, vec![], not_found)
}
