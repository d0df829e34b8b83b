//! `export::hub` against a stand-in Hub on 127.0.0.1: a std `TcpListener` in a thread that
//! implements the four endpoints (create repo, preupload, LFS batch + upload + verify, commit)
//! closely enough to check what the client sends, and records every request.
//!
//! The real Hub is never contacted. The environment test (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HOME`)
//! re-runs this test binary as a child process with those variables set, so no test mutates
//! its own process environment.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use dpo_lora::export::hub::{push_folder, push_folder_with, HubAccess, HubError, PushOptions};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const TOKEN: &str = "hf_test_token_5f2a";
const REPO: &str = "alice/tiny-dpo";

#[derive(Debug, Clone)]
struct Request {
    method: String,
    path: String,
    /// Names lower-cased.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// How the stand-in Hub answers.
#[derive(Default, Clone)]
struct Behaviour {
    repo_exists: bool,
    /// Answer the commit with 401 and a message that echoes the token.
    reject_commit: bool,
}

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    /// LFS objects received, by oid.
    objects: HashMap<String, Vec<u8>>,
}

struct FakeHub {
    base: String,
    state: Arc<Mutex<State>>,
}

impl FakeHub {
    fn start(behaviour: Behaviour) -> Self {
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

    fn access(&self, token: Option<&str>) -> HubAccess {
        HubAccess {
            endpoint: self.base.clone(),
            token: token.map(str::to_string),
        }
    }

    fn requests(&self) -> Vec<Request> {
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

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// 1.5 MB of xorshift bytes: over any small-file threshold and not compressible.
fn weights() -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..1_500_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

const CONFIG: &str = r#"{"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}"#;

/// An export folder: adapter config, weights, a nested file, and hidden things to skip.
fn export_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("adapter_config.json"), CONFIG).unwrap();
    std::fs::write(d.join("adapter_model.safetensors"), weights()).unwrap();
    std::fs::create_dir(d.join("extra")).unwrap();
    std::fs::write(d.join("extra/notes.txt"), "trained with dpo-lora\n").unwrap();
    std::fs::write(d.join(".DS_Store"), "x").unwrap();
    std::fs::create_dir(d.join(".tmp")).unwrap();
    std::fs::write(d.join(".tmp/partial.safetensors"), "x").unwrap();
    dir
}

/// Every path and content under `dir`, to show a push left it alone.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn route_of(r: &Request) -> String {
    format!("{} {}", r.method, r.path)
}

#[test]
fn push_commits_small_files_inline_and_safetensors_through_lfs() {
    let hub = FakeHub::start(Behaviour::default());
    let dir = export_dir();
    let before = snapshot(dir.path());
    let opts = PushOptions {
        commit_message: "DPO adapter".into(),
        private: true,
        ..PushOptions::new(REPO)
    };

    let report = push_folder_with(dir.path(), &opts, &hub.access(Some(TOKEN))).unwrap();

    let weights = weights();
    let oid = sha256_hex(&weights);
    assert_eq!(
        report.commit_url,
        format!("{}/{REPO}/commit/c0ffee", hub.base)
    );
    assert_eq!(report.commit_oid, "c0ffee");
    assert_eq!(report.repo_url, format!("{}/{REPO}", hub.base));
    assert_eq!(report.files, 3);
    assert_eq!(
        report.bytes,
        (CONFIG.len() + weights.len() + "trained with dpo-lora\n".len()) as u64
    );
    assert_eq!(report.lfs_uploaded, 1);

    let reqs = hub.requests();
    let routes: Vec<_> = reqs.iter().map(route_of).collect();
    assert_eq!(
        routes,
        [
            "POST /api/repos/create".to_string(),
            format!("POST /api/models/{REPO}/preupload/main"),
            format!("POST /{REPO}.git/info/lfs/objects/batch"),
            format!("PUT /storage/{oid}"),
            format!("POST /{REPO}.git/info/lfs/objects/verify"),
            format!("POST /api/models/{REPO}/commit/main"),
        ]
    );
    let [create, preupload, batch, put, verify, commit] = &reqs[..] else {
        unreachable!()
    };

    // The token goes to the Hub, never to the storage URL.
    let bearer = format!("Bearer {TOKEN}");
    for r in [create, preupload, batch, verify, commit] {
        assert_eq!(
            r.header("authorization"),
            Some(bearer.as_str()),
            "{}",
            route_of(r)
        );
    }
    assert_eq!(put.header("authorization"), None);

    assert_eq!(
        create.json(),
        json!({"name": "tiny-dpo", "organization": "alice", "private": true, "type": "model"})
    );

    let listed = preupload.json()["files"].as_array().unwrap().clone();
    let paths: Vec<_> = listed.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(
        paths,
        [
            "adapter_config.json",
            "adapter_model.safetensors",
            "extra/notes.txt"
        ]
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    assert_eq!(listed[1]["size"], weights.len());
    assert_eq!(
        b64.decode(listed[1]["sample"].as_str().unwrap()).unwrap(),
        &weights[..512]
    );
    assert_eq!(
        b64.decode(listed[0]["sample"].as_str().unwrap()).unwrap(),
        CONFIG.as_bytes()
    );

    assert_eq!(
        batch.header("content-type"),
        Some("application/vnd.git-lfs+json")
    );
    assert_eq!(batch.header("accept"), Some("application/vnd.git-lfs+json"));
    let b = batch.json();
    assert_eq!(b["operation"], "upload");
    assert_eq!(b["transfers"], json!(["basic"]));
    assert_eq!(b["hash_algo"], "sha256");
    assert_eq!(b["objects"], json!([{"oid": oid, "size": weights.len()}]));

    // The bytes that arrived are the file's, with a Content-Length and the action's header.
    assert_eq!(put.body, weights);
    assert_eq!(
        put.header("content-length"),
        Some(weights.len().to_string().as_str())
    );
    assert_eq!(put.header("x-fake-signature"), Some("sig-1"));
    assert_eq!(verify.json(), json!({"oid": oid, "size": weights.len()}));

    assert_eq!(commit.header("content-type"), Some("application/x-ndjson"));
    let lines: Vec<Value> = std::str::from_utf8(&commit.body)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines[0],
        json!({"key": "header", "value": {"summary": "DPO adapter", "description": ""}})
    );
    let mut inline = HashMap::new();
    let mut lfs = Vec::new();
    for l in &lines[1..] {
        let v = &l["value"];
        match l["key"].as_str().unwrap() {
            "file" => {
                assert_eq!(v["encoding"], "base64");
                let content = b64.decode(v["content"].as_str().unwrap()).unwrap();
                inline.insert(v["path"].as_str().unwrap().to_string(), content);
            }
            "lfsFile" => lfs.push(v.clone()),
            other => panic!("unexpected line kind {other}"),
        }
    }
    assert_eq!(inline.len(), 2);
    assert_eq!(inline["adapter_config.json"], CONFIG.as_bytes());
    assert_eq!(inline["extra/notes.txt"], b"trained with dpo-lora\n");
    assert_eq!(
        lfs,
        [
            json!({"path": "adapter_model.safetensors", "algo": "sha256", "oid": oid, "size": weights.len()})
        ]
    );

    assert_eq!(
        snapshot(dir.path()),
        before,
        "the export folder was modified"
    );
}

#[test]
fn existing_repo_and_objects_are_not_sent_again() {
    let hub = FakeHub::start(Behaviour {
        repo_exists: true,
        ..Behaviour::default()
    });
    let dir = export_dir();
    let opts = PushOptions::new(REPO);
    let first = push_folder_with(dir.path(), &opts, &hub.access(Some(TOKEN))).unwrap();
    let second = push_folder_with(dir.path(), &opts, &hub.access(Some(TOKEN))).unwrap();
    assert_eq!((first.lfs_uploaded, second.lfs_uploaded), (1, 0));
    let puts = hub.requests().iter().filter(|r| r.method == "PUT").count();
    assert_eq!(puts, 1, "the second push uploaded the object again");
    let commits: Vec<_> = hub
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/commit/"))
        .collect();
    assert_eq!(commits.len(), 2);
    // The default summary when none is given.
    let header: Value = serde_json::from_str(
        std::str::from_utf8(&commits[1].body)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["value"]["summary"], "Upload with dpo-lora");
}

#[test]
fn missing_token_fails_before_any_request() {
    let hub = FakeHub::start(Behaviour::default());
    let dir = export_dir();
    for token in [None, Some(""), Some("  \n")] {
        let err =
            push_folder_with(dir.path(), &PushOptions::new(REPO), &hub.access(token)).unwrap_err();
        assert!(matches!(err, HubError::NoToken { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "pushing to the Hub needs a token: set HF_TOKEN or run `huggingface-cli login` (the export stays in {})",
                dir.path().display()
            )
        );
    }
    assert!(
        hub.requests().is_empty(),
        "requests were made: {:?}",
        hub.requests()
    );
}

#[test]
fn unauthorized_commit_names_the_status_and_hides_the_token() {
    let hub = FakeHub::start(Behaviour {
        reject_commit: true,
        ..Behaviour::default()
    });
    let dir = export_dir();
    let err = push_folder_with(
        dir.path(),
        &PushOptions::new(REPO),
        &hub.access(Some(TOKEN)),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, HubError::Http { status: 401, .. }), "{msg}");
    // The server echoed the token on its first line; only that line is kept, masked.
    assert_eq!(
        msg,
        "Hub commit failed: 401 Unauthorized: Invalid credentials: <token>"
    );
    assert!(!msg.contains(TOKEN));
    assert!(!format!("{err:?}").contains(TOKEN));
}

#[test]
fn unreachable_endpoint_is_reported_as_offline() {
    // A port that was just free: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let dir = export_dir();
    let access = HubAccess {
        endpoint: endpoint.clone(),
        token: Some(TOKEN.into()),
    };
    let err = push_folder_with(dir.path(), &PushOptions::new(REPO), &access).unwrap_err();
    assert!(matches!(err, HubError::Offline { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "cannot reach the Hugging Face Hub at {endpoint} (offline?); the export is kept in {}",
            dir.path().display()
        )
    );
}

#[test]
fn bad_repo_id_fails_before_any_request() {
    let hub = FakeHub::start(Behaviour::default());
    let dir = export_dir();
    for repo in ["tiny-dpo", "alice/tiny dpo", "alice/tiny/dpo", "alice/-x"] {
        let err = push_folder_with(
            dir.path(),
            &PushOptions::new(repo),
            &hub.access(Some(TOKEN)),
        )
        .unwrap_err();
        assert!(
            matches!(err, HubError::InvalidRepoId { .. }),
            "{repo}: {err}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("invalid Hub repo id {repo:?}")),
            "{err}"
        );
    }
    assert!(hub.requests().is_empty());
}

/// The environment child: does nothing unless `push_folder_reads_the_environment` runs this
/// binary with `DPO_LORA_HUB_CHILD` set to the export folder.
#[test]
fn child_push_from_env() {
    let Ok(dir) = std::env::var("DPO_LORA_HUB_CHILD") else {
        return;
    };
    let result = push_folder(Path::new(&dir), &PushOptions::new(REPO));
    match std::env::var("DPO_LORA_HUB_EXPECT").as_deref() {
        Ok("no-token") => assert!(
            matches!(result, Err(HubError::NoToken { .. })),
            "{result:?}"
        ),
        _ => assert_eq!(result.unwrap().lfs_uploaded, 1),
    }
}

#[test]
fn push_folder_reads_the_environment() {
    let hub = FakeHub::start(Behaviour::default());
    let dir = export_dir();
    let hf_home = tempfile::tempdir().unwrap();
    let run = |envs: &[(&str, &str)], expect: &str| {
        let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
        cmd.args(["child_push_from_env", "--exact", "--nocapture"])
            .env("DPO_LORA_HUB_CHILD", dir.path())
            .env("DPO_LORA_HUB_EXPECT", expect)
            .env("HF_ENDPOINT", &hub.base)
            .env("HF_HOME", hf_home.path())
            .env_remove("HF_TOKEN");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child failed:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("1 passed"),
            "the child test did not run:\n{stdout}"
        );
    };
    let auth_of_last_commit = || {
        let reqs = hub.requests();
        let commit = reqs
            .iter()
            .rev()
            .find(|r| r.path.contains("/commit/"))
            .expect("no commit");
        commit.header("authorization").map(str::to_string)
    };

    // No HF_TOKEN and an HF_HOME without a token file.
    run(&[], "no-token");
    assert!(hub.requests().is_empty());

    // HF_TOKEN wins over the token file.
    std::fs::write(hf_home.path().join("token"), "hf_from_file\n").unwrap();
    run(&[("HF_TOKEN", "hf_from_env")], "ok");
    assert_eq!(auth_of_last_commit().as_deref(), Some("Bearer hf_from_env"));

    // Without HF_TOKEN, $HF_HOME/token (what `huggingface-cli login` writes), trimmed.
    hub.state.lock().unwrap().objects.clear();
    run(&[], "ok");
    assert_eq!(
        auth_of_last_commit().as_deref(),
        Some("Bearer hf_from_file")
    );
}

/// `dpo-lora export --push-to-hub` through the binary, with HF_ENDPOINT / HF_TOKEN / HF_HOME set
/// for the child only.
fn export_and_push(endpoint: &str, token: Option<&str>, out: &Path) -> std::process::Output {
    let t = tempfile::tempdir().unwrap();
    let home = t.path().join("hf-home");
    std::fs::create_dir(&home).unwrap();
    let model = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/tiny/llama/tiny-llama-f32.gguf");
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_dpo-lora"));
    c.args([
        "export",
        "-m",
        model.to_str().unwrap(),
        "--format",
        "hf",
        "--base-only",
    ])
    .args([
        "--out",
        out.to_str().unwrap(),
        "--push-to-hub",
        REPO,
        "--private",
    ])
    .env("HF_ENDPOINT", endpoint)
    .env("HF_HOME", &home)
    .env_remove("HF_TOKEN");
    if let Some(tok) = token {
        c.env("HF_TOKEN", tok);
    }
    c.output().unwrap()
}

#[test]
fn export_pushes_the_folder_it_wrote() {
    let hub = FakeHub::start(Behaviour::default());
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("base");
    let o = export_and_push(&hub.base, Some(TOKEN), &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(!err.contains(TOKEN), "token printed: {err}");
    let reqs = hub.requests();
    let create = reqs
        .iter()
        .find(|r| r.path == "/api/repos/create")
        .expect("repo created");
    assert_eq!(create.json()["private"], true);
    let commit = reqs
        .iter()
        .find(|r| r.path.contains("/commit/"))
        .expect("commit");
    let body = String::from_utf8_lossy(&commit.body);
    let mut committed: Vec<String> = body
        .lines()
        .skip(1)
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["value"]["path"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    committed.sort();
    let mut local: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    local.sort();
    assert_eq!(committed, local);
    assert!(local.contains(&"model.safetensors".to_string()));
}

#[test]
fn export_without_a_token_fails_before_exporting() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("base");
    let o = export_and_push("http://127.0.0.1:9", None, &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("needs a token") && err.contains("HF_TOKEN"),
        "{err}"
    );
    assert!(!out.exists(), "nothing should be written");
}

#[test]
fn export_offline_keeps_the_local_folder() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("base");
    let o = export_and_push(&format!("http://127.0.0.1:{port}"), Some(TOKEN), &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("cannot reach the Hugging Face Hub"), "{err}");
    assert!(out.join("config.json").is_file(), "the export must stay");
}
