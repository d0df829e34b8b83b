//! Preference data as people have it: every layout and file type reads to the same pairs as TRL's
//! conversational JSONL and scores the same; implicit prompts follow TRL's rule; a Parquet file
//! written by `datasets` is read; splits, globs, folders and fractions pick the records they
//! say; bad rows give one line naming the file, the line or row, and the field.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};

use common::{
    assert_user_error, bin, read_json, real_model, repo, score, synth_model, tiny_run_sets,
};
use dpo_lora::data::{read_all, Field, Format, PreferenceRecord, ReadSpec, SourceSpec, Sources};
use dpo_lora::synth::SynthArch;
use serde_json::{json, Value};

/// The first `n` records of the quick-start eval set: TRL conversational, explicit prompt.
fn base_rows(n: usize) -> Vec<Value> {
    let text = std::fs::read_to_string(repo().join("recipes/data/quickstart-eval.jsonl")).unwrap();
    text.lines()
        .take(n)
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn write_jsonl(path: &Path, rows: &[Value]) -> PathBuf {
    let mut f = std::fs::File::create(path).unwrap();
    for r in rows {
        writeln!(f, "{r}").unwrap();
    }
    path.to_path_buf()
}

fn read(path: &Path) -> Vec<PreferenceRecord> {
    read_all(&Sources::one(path.to_string_lossy()), &ReadSpec::default()).unwrap()
}

/// The (prompt, chosen, rejected) of each record, where each came from left out.
fn fields(rs: &[PreferenceRecord]) -> Vec<(Field, Field, Field)> {
    rs.iter()
        .map(|r| (r.prompt.clone(), r.chosen.clone(), r.rejected.clone()))
        .collect()
}

fn msgs(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap()
}

/// The same pairs in each layout people download.
fn variants(rows: &[Value]) -> Vec<(&'static str, Vec<Value>)> {
    let implicit = rows
        .iter()
        .map(|r| {
            let p = msgs(&r["prompt"]).clone();
            let whole = |k: &str| Value::Array(p.iter().chain(msgs(&r[k])).cloned().collect());
            json!({"chosen": whole("chosen"), "rejected": whole("rejected"), "score": 1.0})
        })
        .collect();
    let openai = rows
        .iter()
        .map(|r| {
            json!({"input": {"messages": r["prompt"], "tools": []},
                   "preferred_output": r["chosen"], "non_preferred_output": r["rejected"]})
        })
        .collect();
    let from = |role: &str| {
        match role {
            "user" => "human",
            "assistant" => "gpt",
            other => other,
        }
        .to_string()
    };
    let sharegpt = rows
        .iter()
        .map(|r| {
            let turns: Vec<Value> = msgs(&r["prompt"])
                .iter()
                .map(|m| json!({"from": from(m["role"].as_str().unwrap()), "value": m["content"]}))
                .collect();
            let one = |k: &str| json!({"from": "gpt", "value": msgs(&r[k])[0]["content"]});
            json!({"conversations": turns, "chosen": one("chosen"), "rejected": one("rejected")})
        })
        .collect();
    let parts = rows
        .iter()
        .map(|r| {
            let split = |list: &Value| -> Value {
                Value::Array(
                    msgs(list)
                        .iter()
                        .map(|m| {
                            let c: Vec<char> = m["content"].as_str().unwrap().chars().collect();
                            let (a, b) = c.split_at(c.len() / 2);
                            json!({"role": m["role"], "content": [
                                {"type": "text", "text": a.iter().collect::<String>()},
                                {"type": "text", "text": b.iter().collect::<String>()}]})
                        })
                        .collect(),
                )
            };
            json!({"prompt": split(&r["prompt"]), "chosen": split(&r["chosen"]), "rejected": split(&r["rejected"])})
        })
        .collect();
    vec![
        ("trl-implicit", implicit),
        ("openai-preference", openai),
        ("sharegpt-ranking", sharegpt),
        ("content-parts", parts),
    ]
}

#[test]
fn every_layout_and_file_type_reads_to_the_same_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let rows = base_rows(6);
    let base = write_jsonl(&dir.path().join("base.jsonl"), &rows);
    let want = fields(&read(&base));
    for (name, vrows) in variants(&rows) {
        let p = write_jsonl(&dir.path().join(format!("{name}.jsonl")), &vrows);
        assert_eq!(fields(&read(&p)), want, "{name}");
    }
    // the same records as .jsonl.gz, a .json list, {"data": [...]} and Parquet
    let gz = dir.path().join("base.jsonl.gz");
    let mut e = flate2::write::GzEncoder::new(
        std::fs::File::create(&gz).unwrap(),
        flate2::Compression::default(),
    );
    e.write_all(&std::fs::read(&base).unwrap()).unwrap();
    e.finish().unwrap();
    let list = dir.path().join("list.json");
    std::fs::write(&list, Value::Array(rows.clone()).to_string()).unwrap();
    let wrapped = dir.path().join("wrapped.json");
    std::fs::write(&wrapped, json!({"data": rows}).to_string()).unwrap();
    let pq = dir.path().join("base.parquet");
    dpo_lora::data::parquet::write_records(&pq, &read(&base), parquet::basic::Compression::SNAPPY)
        .unwrap();
    for p in [&gz, &list, &wrapped, &pq] {
        assert_eq!(fields(&read(p)), want, "{}", p.display());
    }
    // and the layout can be named instead of told
    let openai = dir.path().join("openai-preference.jsonl");
    let named = read_all(
        &Sources::one(openai.to_string_lossy()),
        &ReadSpec {
            format: Format::OpenaiPreference,
            ..ReadSpec::default()
        },
    )
    .unwrap();
    assert_eq!(fields(&named), want);
}

/// End to end through `dpo-lora score` on the real SmolLM2 (its chat template): every layout
/// gives the very same sums as the TRL conversational file.
#[test]
fn every_layout_scores_as_trl_conversational() {
    let dir = tempfile::tempdir().unwrap();
    let model = real_model("smollm2");
    let rows = base_rows(4);
    let base = write_jsonl(&dir.path().join("base.jsonl"), &rows);
    let want = score(&model, None, &base);
    for (name, vrows) in variants(&rows) {
        let p = write_jsonl(&dir.path().join(format!("{name}.jsonl")), &vrows);
        assert_eq!(score(&model, None, &p), want, "{name}");
    }
    let pq = dir.path().join("base.parquet");
    dpo_lora::data::parquet::write_records(
        &pq,
        &read(&base),
        parquet::basic::Compression::ZSTD(Default::default()),
    )
    .unwrap();
    assert_eq!(score(&model, None, &pq), want, "parquet");
}

#[test]
fn a_parquet_file_written_by_datasets_scores_as_its_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let model = real_model("smollm2");
    let pq = repo().join("tests/data/h4-layout.parquet");
    let recs = read_all(&Sources::one(pq.to_string_lossy()), &ReadSpec::default()).unwrap();
    assert_eq!(recs.len(), 8);
    let base = write_jsonl(&dir.path().join("base.jsonl"), &base_rows(8));
    assert_eq!(fields(&recs), fields(&read(&base)));
    assert_eq!(score(&model, None, &pq), score(&model, None, &base));
}

fn field_of(v: &Value) -> Field {
    match v {
        Value::String(s) => Field::Text(s.clone()),
        Value::Array(ms) => Field::Messages(
            ms.iter()
                .map(|m| dpo_lora::tokenizer::Message {
                    role: m["role"].as_str().unwrap().into(),
                    content: m["content"].as_str().unwrap().into(),
                })
                .collect(),
        ),
        other => panic!("unexpected {other}"),
    }
}

/// TRL's `extract_prompt` and `maybe_extract_prompt` outputs, recorded by TRL itself
/// (tests/data/README.md), against ours on the same inputs.
#[test]
fn implicit_prompts_match_trl() {
    let dir = tempfile::tempdir().unwrap();
    let fx = read_json(repo().join("tests/data/trl-extract-prompt.json"));
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 8);
    let inputs: Vec<Value> = cases.iter().map(|c| c["input"].clone()).collect();
    let p = write_jsonl(&dir.path().join("implicit.jsonl"), &inputs);
    let got = read(&p);
    for (c, r) in cases.iter().zip(&got) {
        let o = &c["output"];
        assert_eq!(
            (r.prompt.clone(), r.chosen.clone(), r.rejected.clone()),
            (
                field_of(&o["prompt"]),
                field_of(&o["chosen"]),
                field_of(&o["rejected"])
            ),
            "{}",
            c["input"]
        );
    }
}

/// A data set laid out as the Hub lays it out: shards per split in `data/`.
fn hub_like(dir: &Path) -> (PathBuf, Vec<PreferenceRecord>) {
    let base = write_jsonl(&dir.join("base.jsonl"), &base_rows(9));
    let recs = read(&base);
    let root = dir.join("ds");
    std::fs::create_dir_all(root.join("data")).unwrap();
    let shard = |name: &str, rs: &[PreferenceRecord]| {
        dpo_lora::data::parquet::write_records(
            &root.join("data").join(name),
            rs,
            parquet::basic::Compression::SNAPPY,
        )
        .unwrap()
    };
    shard("train-00000-of-00002.parquet", &recs[..3]);
    shard("train-00001-of-00002.parquet", &recs[3..6]);
    shard("test-00000-of-00001.parquet", &recs[6..]);
    (root, recs)
}

#[test]
fn folders_globs_splits_and_fractions_pick_their_records() {
    let dir = tempfile::tempdir().unwrap();
    let (root, recs) = hub_like(dir.path());
    let read_spec =
        |spec: SourceSpec| fields(&read_all(&Sources(vec![spec]), &ReadSpec::default()).unwrap());
    let train = SourceSpec {
        split: Some("train".into()),
        ..SourceSpec::path(root.to_string_lossy())
    };
    assert_eq!(read_spec(train.clone()), fields(&recs[..6]));
    let test = SourceSpec {
        split: Some("test".into()),
        ..SourceSpec::path(root.to_string_lossy())
    };
    assert_eq!(read_spec(test), fields(&recs[6..]));
    let glob = root.join("data/train-*.parquet");
    assert_eq!(
        read_spec(SourceSpec::path(glob.to_string_lossy())),
        fields(&recs[..6])
    );
    // the whole folder, in name order: test's shard sorts first
    let all = read_spec(SourceSpec::path(root.to_string_lossy()));
    assert_eq!(all.len(), 9);
    assert_eq!(all[..3], fields(&recs[6..])[..]);
    // a fraction is a fixed sample of the source, in its order
    let half = SourceSpec {
        fraction: Some(0.5),
        ..train.clone()
    };
    let a = read_spec(half.clone());
    assert_eq!(a.len(), 3);
    assert_eq!(a, read_spec(half));
    let six = fields(&recs[..6]);
    let mut at = 0;
    for r in &a {
        at += six[at..]
            .iter()
            .position(|x| x == r)
            .expect("in order, from the source")
            + 1;
    }
    // several sources are read in turn and numbered across
    let two = read_all(
        &Sources(vec![train, SourceSpec::path(glob.to_string_lossy())]),
        &ReadSpec::default(),
    )
    .unwrap();
    assert_eq!(two.len(), 12);
    assert_eq!(
        two.iter().map(|r| r.index).collect::<Vec<_>>(),
        (0..12).collect::<Vec<_>>()
    );
}

/// `dpo-lora run` on Parquet trains exactly as on the same records in JSONL.
#[test]
fn a_run_on_parquet_matches_the_run_on_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let model = synth_model(dir.path(), SynthArch::Llama);
    let train = repo().join("recipes/data/tiny-train.jsonl");
    let pq = dir.path().join("tiny-train.parquet");
    dpo_lora::data::parquet::write_records(&pq, &read(&train), parquet::basic::Compression::SNAPPY)
        .unwrap();
    let metrics = |data: &Path, out: &str| -> Vec<Value> {
        let out = dir.path().join(out);
        let mut c = bin();
        c.arg("run")
            .arg(repo().join("recipes/tiny.yaml"))
            .arg("--quiet");
        for s in tiny_run_sets(&model, &out) {
            c.args(["--set", &s]);
        }
        c.args(["--set", &format!("data.train={}", data.display())]);
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        common::read_jsonl(&out.join("metrics.jsonl"))
            .into_iter()
            .map(|mut v| {
                v.as_object_mut().unwrap().remove("tokens/s");
                v
            })
            .collect()
    };
    let (a, b) = (metrics(&train, "jsonl"), metrics(&pq, "parquet"));
    assert!(a.len() >= 12);
    assert_eq!(a, b);
}

#[test]
fn bad_rows_name_the_file_the_row_and_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let model = common::tiny_gguf("llama");
    let score_err = |data: &Path, needles: &[&str]| {
        let o = bin()
            .args(["score", "--model"])
            .arg(&model)
            .arg("--data")
            .arg(data)
            .output()
            .unwrap();
        assert_user_error(&o, needles);
    };
    let rows = base_rows(3);
    let mut openai: Vec<Value> = variants(&rows).remove(1).1;
    openai[1]
        .as_object_mut()
        .unwrap()
        .remove("preferred_output");
    let p = write_jsonl(&dir.path().join("openai.jsonl"), &openai);
    score_err(&p, &["openai.jsonl:2:", "\"preferred_output\" is missing"]);

    let mut parts: Vec<Value> = variants(&rows).remove(3).1;
    parts[2]["prompt"][0]["content"][1] = json!({"type": "image_url", "image_url": {"url": "x"}});
    let p = write_jsonl(&dir.path().join("parts.jsonl"), &parts);
    score_err(
        &p,
        &["parts.jsonl:3:", "\"prompt\" message 0", "\"image_url\""],
    );

    let mut sg: Vec<Value> = variants(&rows).remove(2).1;
    sg[0]["conversations"][0]["from"] = json!("narrator");
    let p = write_jsonl(&dir.path().join("sharegpt.jsonl"), &sg);
    score_err(
        &p,
        &["sharegpt.jsonl:1:", "conversations[0]", "\"narrator\""],
    );

    let p = write_jsonl(
        &dir.path().join("odd.jsonl"),
        &[json!({"question": "q", "answer": "a"})],
    );
    score_err(
        &p,
        &[
            "odd.jsonl:1:",
            "[answer, question]",
            "data.format",
            "openai-preference",
        ],
    );

    // a Parquet row: the row number (0-based, as dataset[i])
    let mut recs = read(&write_jsonl(&dir.path().join("b.jsonl"), &rows));
    recs[2].chosen = Field::Messages(vec![]);
    let pq = dir.path().join("bad.parquet");
    dpo_lora::data::parquet::write_records(&pq, &recs, parquet::basic::Compression::SNAPPY)
        .unwrap();
    score_err(&pq, &["bad.parquet: row 2:", "\"chosen\" is empty"]);

    let junk = dir.path().join("junk.parquet");
    std::fs::write(&junk, b"PAR1 this is not parquet").unwrap();
    score_err(&junk, &["junk.parquet", "cannot read it as Parquet"]);

    let txt = dir.path().join("data.txt");
    std::fs::write(&txt, "x").unwrap();
    score_err(&txt, &["data.txt", ".jsonl, .jsonl.gz, .json or .parquet"]);

    let json_obj = dir.path().join("obj.json");
    std::fs::write(&json_obj, "{\"rows\": []}").unwrap();
    score_err(&json_obj, &["obj.json", "list of records"]);
}

fn parquet_bytes(dir: &Path, name: &str, recs: &[PreferenceRecord]) -> Vec<u8> {
    let p = dir.join(name);
    dpo_lora::data::parquet::write_records(&p, recs, parquet::basic::Compression::SNAPPY).unwrap();
    std::fs::read(p).unwrap()
}

/// Hub data sets through the loopback stand-in (`HF_ENDPOINT`): a split of the repo's own
/// files, the Parquet conversion when the repo has no data files, the cached copy offline,
/// and one line when offline with nothing cached. One test, as it sets the process's
/// environment.
#[test]
fn hub_data_sets_are_fetched_with_the_parquet_fallback_and_the_cache() {
    use common::hub::{DataHub, DataRev};
    let dir = tempfile::tempdir().unwrap();
    let recs = read(&write_jsonl(&dir.path().join("base.jsonl"), &base_rows(9)));
    let hub = DataHub::start(vec![
        DataRev {
            repo: "alice/prefs".into(),
            revision: "main".into(),
            files: vec![
                ("README.md".into(), b"# prefs".to_vec()),
                (
                    "data/train-00000-of-00001.parquet".into(),
                    parquet_bytes(dir.path(), "a", &recs[..6]),
                ),
                (
                    "data/test-00000-of-00001.parquet".into(),
                    parquet_bytes(dir.path(), "b", &recs[6..]),
                ),
            ],
        },
        DataRev {
            repo: "bob/scripted".into(),
            revision: "main".into(),
            files: vec![("scripted.py".into(), b"# a loading script".to_vec())],
        },
        DataRev {
            repo: "bob/scripted".into(),
            revision: "refs/convert/parquet".into(),
            files: vec![
                (
                    "default/train/0000.parquet".into(),
                    parquet_bytes(dir.path(), "c", &recs[..4]),
                ),
                (
                    "default/test/0000.parquet".into(),
                    parquet_bytes(dir.path(), "d", &recs[4..]),
                ),
            ],
        },
    ]);
    let cache = dir.path().join("hf");
    std::env::set_var("HF_HOME", &cache);
    std::env::set_var("HF_ENDPOINT", &hub.base);
    std::env::remove_var("HF_HUB_OFFLINE");
    let source = |path: &str, split: &str| {
        Sources(vec![SourceSpec {
            split: Some(split.into()),
            ..SourceSpec::path(path)
        }])
    };
    let got = |s: &Sources| read_all(s, &ReadSpec::default()).map(|r| fields(&r));

    assert_eq!(
        got(&source("hf:datasets/alice/prefs", "train")).unwrap(),
        fields(&recs[..6])
    );
    assert_eq!(
        got(&source("hf:datasets/alice/prefs", "test")).unwrap(),
        fields(&recs[6..])
    );
    let asked = |needle: &str| hub.requests().iter().any(|p| p.contains(needle));
    assert!(
        asked("/api/datasets/alice/prefs/revision/main"),
        "{:?}",
        hub.requests()
    );
    assert!(!asked("convert"), "{:?}", hub.requests());

    assert_eq!(
        got(&source("hf:datasets/bob/scripted", "test")).unwrap(),
        fields(&recs[4..])
    );
    assert!(
        asked("/api/datasets/bob/scripted/revision/refs%2Fconvert%2Fparquet"),
        "{:?}",
        hub.requests()
    );

    // offline: what is cached is read from the cache, with no request
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
    let before = hub.requests().len();
    assert_eq!(
        got(&source("hf:datasets/alice/prefs", "train")).unwrap(),
        fields(&recs[..6])
    );
    assert_eq!(
        got(&source("hf:datasets/bob/scripted", "test")).unwrap(),
        fields(&recs[4..])
    );
    assert_eq!(hub.requests().len(), before);
    // and what is not cached is one line naming the cache and the local alternative
    let e = got(&source("hf:datasets/carol/other", "train"))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("hf:datasets/carol/other: cannot reach the Hugging Face Hub")
            && e.contains(&cache.join("hub").display().to_string())
            && e.contains("--local-dir")
            && !e.contains('\n'),
        "{e}"
    );
    std::env::remove_var("HF_ENDPOINT");
}

/// Qwen3's own chat template (tests/data) in a tiny Qwen3 GGUF: `template_kwargs`
/// (`enable_thinking` unset, true, false) render exactly as transformers renders them, and
/// `score --template-kwargs` trains on what they render.
#[test]
fn qwen3_thinking_on_and_off_render_as_transformers() {
    use dpo_lora::gguf::GgufFile;
    use dpo_lora::synth::SynthSpec;
    use dpo_lora::tokenizer::{Message, Tokenizer};
    let dir = tempfile::tempdir().unwrap();
    let template =
        std::fs::read_to_string(repo().join("tests/data/qwen3-0.6b-chat-template.jinja")).unwrap();
    let mut spec = SynthSpec::tiny(SynthArch::Qwen3);
    spec.chat_template = Some(template);
    let model = dir.path().join("tiny-qwen3-real-template.gguf");
    spec.write(&model).unwrap();
    let f = GgufFile::open(&model).unwrap();
    let fx = read_json(repo().join("tests/data/qwen3-renders.json"));
    let cases = fx["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 12);
    for c in cases {
        let mut tok = Tokenizer::from_gguf(&f).unwrap();
        tok.set_chat_template(None, c["kwargs"].as_object().unwrap())
            .unwrap();
        let msgs: Vec<Message> = c["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let gen = c["add_generation_prompt"].as_bool().unwrap();
        let got = tok.chat_template().unwrap().render(&msgs, gen).unwrap();
        assert_eq!(got, c["text"].as_str().unwrap(), "{}", c["kwargs"]);
    }
    // end to end: thinking off puts the empty think block in the prompt, not the completion
    let rows = base_rows(3);
    let data = write_jsonl(&dir.path().join("d.jsonl"), &rows);
    let run = |extra: &[&str]| {
        let o = bin()
            .args(["score", "--model"])
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .args(extra)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let (on, off) = (
        run(&[]),
        run(&["--template-kwargs", r#"{"enable_thinking": false}"#]),
    );
    assert_ne!(on, off);
    assert_eq!(
        on,
        run(&["--template-kwargs", r#"{"enable_thinking": true}"#])
    );
}

/// A built-in template renders as the model's own where they are the same format.
#[test]
fn builtin_templates_replace_the_models() {
    let dir = tempfile::tempdir().unwrap();
    let rows = base_rows(3);
    let data = write_jsonl(&dir.path().join("d.jsonl"), &rows);
    for (arch, name) in [(SynthArch::Qwen2, "chatml"), (SynthArch::Gemma3, "gemma")] {
        let model = synth_model(dir.path(), arch);
        let own = score(&model, None, &data);
        let builtin = common::score_with(&model, None, &data, &["--chat-template", name]);
        assert_eq!(own, builtin, "{name}");
    }
    let model = synth_model(dir.path(), SynthArch::Qwen2);
    let o = bin()
        .args(["score", "--model"])
        .arg(&model)
        .args(["--data"])
        .arg(&data)
        .args(["--chat-template", "no-such-template"])
        .output()
        .unwrap();
    assert_user_error(&o, &["no-such-template", "chatml, llama3, gemma"]);
}

/// A resumed run reads its pairs from the run's token cache (no tokenization); a changed data
/// file misses it. (That a resume trains exactly as the uninterrupted run is
/// `train resume_after_k_steps_equals_the_uninterrupted_run_bit_for_bit`, which now runs through
/// the cache too.)
#[test]
fn a_resume_reads_the_token_cache_and_a_changed_file_misses_it() {
    let dir = tempfile::tempdir().unwrap();
    let model = synth_model(dir.path(), SynthArch::Llama);
    let train = dir.path().join("train.jsonl");
    std::fs::copy(repo().join("recipes/data/tiny-train.jsonl"), &train).unwrap();
    let out = dir.path().join("out");
    let go = |extra: &[&str]| -> String {
        let mut c = bin();
        c.arg("run")
            .arg(repo().join("recipes/tiny.yaml"))
            .arg("--quiet");
        for s in tiny_run_sets(&model, &out) {
            c.args(["--set", &s]);
        }
        c.args(["--set", &format!("data.train={}", train.display())]);
        c.args(extra);
        let o = c.output().unwrap();
        let e = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(o.status.success(), "{e}");
        e
    };
    let first = go(&[]);
    assert!(!first.contains("tokenized before"), "{first}");
    assert_eq!(
        std::fs::read_dir(out.join("tokens")).unwrap().count(),
        2,
        "train and eval"
    );
    let resumed = go(&["--resume", "--set", "train.max_steps=13"]);
    assert_eq!(resumed.matches("tokenized before").count(), 2, "{resumed}");
    // one more pair in the file: a new key, tokenized again
    let mut text = std::fs::read_to_string(&train).unwrap();
    let first_line = text.lines().next().unwrap().to_string();
    text.push_str(&first_line);
    text.push('\n');
    std::fs::write(&train, text).unwrap();
    let again = go(&["--resume", "--set", "train.max_steps=14"]);
    assert_eq!(
        again.matches("tokenized before").count(),
        1,
        "only eval hits: {again}"
    );
    assert!(again.contains("13 records"), "{again}");
}

/// `data.columns` for a data set with its own names (Intel/orca_dpo_pairs: system, question,
/// chosen, rejected strings): the system column makes it the conversational pairs it means.
#[test]
fn columns_name_the_fields_of_other_layouts() {
    use dpo_lora::data::Columns;
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<Value> = base_rows(4)
        .iter()
        .map(|r| {
            json!({"system": "You are terse.", "question": msgs(&r["prompt"])[0]["content"],
                   "chosen": msgs(&r["chosen"])[0]["content"], "rejected": msgs(&r["rejected"])[0]["content"]})
        })
        .collect();
    let with_system: Vec<Value> = base_rows(4)
        .iter()
        .map(|r| {
            let mut p = vec![json!({"role": "system", "content": "You are terse."})];
            p.extend(msgs(&r["prompt"]).iter().cloned());
            json!({"prompt": p, "chosen": r["chosen"], "rejected": r["rejected"]})
        })
        .collect();
    let want = fields(&read(&write_jsonl(
        &dir.path().join("want.jsonl"),
        &with_system,
    )));
    let p = write_jsonl(&dir.path().join("orca.jsonl"), &rows);
    let cols = Columns {
        prompt: Some("question".into()),
        chosen: "chosen".into(),
        rejected: "rejected".into(),
        system: Some("system".into()),
    };
    let how = ReadSpec {
        columns: Some(&cols),
        ..ReadSpec::default()
    };
    let got = read_all(&Sources::one(p.to_string_lossy()), &how).unwrap();
    assert_eq!(fields(&got), want);
    // without data.columns they read as TRL with an implicit prompt, which they do not share
    let e = read_all(&Sources::one(p.to_string_lossy()), &ReadSpec::default())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("orca.jsonl:") && e.contains("no prompt"), "{e}");
}

/// A run trained with `data.chat_template` exports that template (merged GGUF and Hugging Face
/// folder), so the deployed model renders as training did.
#[test]
fn exports_carry_the_chat_template_the_run_used() {
    use dpo_lora::gguf::GgufFile;
    let dir = tempfile::tempdir().unwrap();
    let model = synth_model(dir.path(), SynthArch::Llama);
    let out = dir.path().join("out");
    let mut c = bin();
    c.arg("run")
        .arg(repo().join("recipes/tiny.yaml"))
        .arg("--quiet");
    for s in tiny_run_sets(&model, &out) {
        c.args(["--set", &s]);
    }
    c.args([
        "--set",
        "data.chat_template=gemma",
        "--set",
        "train.max_steps=2",
    ]);
    c.args([
        "--set",
        "output.export=[{format: gguf, quant: f32}, {format: hf}]",
    ]);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let gemma = dpo_lora::tokenizer::BUILTIN_TEMPLATES
        .iter()
        .find(|(n, _)| *n == "gemma")
        .unwrap()
        .1;
    let mut seen = 0;
    for e in std::fs::read_dir(out.join("export")).unwrap() {
        let d = e.unwrap().path();
        if d.join("model.gguf").exists() {
            let f = GgufFile::open(d.join("model.gguf")).unwrap();
            assert_eq!(f.opt_str("tokenizer.chat_template").unwrap(), Some(gemma));
            seen += 1;
        }
        if d.join("tokenizer_config.json").exists() {
            let v = read_json(d.join("tokenizer_config.json"));
            assert_eq!(v["chat_template"].as_str(), Some(gemma));
            seen += 1;
        }
    }
    assert_eq!(seen, 2);
    // and `dpo-lora export --run` reads it from the run's recipe
    let later = dir.path().join("later");
    let o = bin()
        .args(["export", "--run"])
        .arg(&out)
        .args(["--format", "gguf", "--quant", "f32", "--out"])
        .arg(&later)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let f = GgufFile::open(later.join("model.gguf")).unwrap();
    assert_eq!(f.opt_str("tokenizer.chat_template").unwrap(), Some(gemma));
}

/// Parquet files the fuzzer (`fuzz/`, target `record_parquet`) found to panic inside the
/// `parquet` crate: each is now a one-line error naming the file, exit 2, no panic report.
#[test]
fn corrupt_parquet_files_found_by_fuzzing_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let model = synth_model(dir.path(), SynthArch::Llama);
    for name in [
        "parquet-capacity-overflow.parquet",
        "parquet-thrift-unwrap.parquet",
    ] {
        let data = repo().join("tests/data/fuzz").join(name);
        let o = bin()
            .args(["score", "--model", model.to_str().unwrap(), "--data"])
            .arg(&data)
            .output()
            .unwrap();
        assert_user_error(&o, &[name, "cannot read it as Parquet"]);
    }
}
