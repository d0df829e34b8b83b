//! `export::hub` against the loopback Hub stand-in (`common::hub`): what the client sends, what
//! it skips, and the one-line errors when the token, the repo id or the network is wrong.
//!
//! The real Hub is never contacted. The environment test (`HF_ENDPOINT`, `HF_TOKEN`, `HF_HOME`)
//! re-runs this test binary as a child process with those variables set, so no test mutates
//! its own process environment.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;

use base64::Engine as _;
use common::hub::{Behaviour, FakeHub, Request, REPO, TOKEN};
use common::sha256_hex;
use dpo_lora::export::hub::{push_folder, push_folder_with, HubAccess, HubError, PushOptions};
use serde_json::{json, Value};

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

/// The environment child: run only by `push_folder_reads_the_environment`, which starts this
/// binary with `--ignored --exact child_push_from_env` and `DPO_LORA_HUB_CHILD` set to the export
/// folder. Ignored in a plain run, so the count of passed tests claims no check that did not run.
#[test]
#[ignore = "a child process of push_folder_reads_the_environment"]
fn child_push_from_env() {
    let dir = std::env::var("DPO_LORA_HUB_CHILD")
        .expect("run by push_folder_reads_the_environment, which sets DPO_LORA_HUB_CHILD");
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
        cmd.args(["child_push_from_env", "--exact", "--ignored", "--nocapture"])
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
    let model = common::tiny_gguf("llama");
    let mut c = common::bin();
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
