//! The real binary, run in a temp dir: outputs against the fixtures, and bad input giving a
//! one-line error that names the file/line/key, exit code 2, never a panic.

mod common;

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::Device;

use common::{assert_user_error, bin, run, stderr, tiny_gguf, write};

/// Rewrite a GGUF with one metadata value replaced.
fn with_metadata(src: &Path, dst: &Path, key: &str, value: Value) {
    rewrite(src, dst, key, value, None)
}

/// Rewrite a GGUF, replacing a metadata value and optionally re-encoding one tensor's type.
fn rewrite(
    src: &Path,
    dst: &Path,
    key: &str,
    value: Value,
    retype: Option<(&str, candle_core::quantized::GgmlDType)>,
) {
    let mut r = std::fs::File::open(src).unwrap();
    let c = gguf_file::Content::read(&mut r).unwrap();
    let mut md: Vec<(String, Value)> = c
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in md.iter_mut() {
        if k == key {
            *v = value.clone();
        }
    }
    let tensors: Vec<(String, candle_core::quantized::QTensor)> = c
        .tensor_infos
        .keys()
        .map(|n| {
            let t = c.tensor(&mut r, n, &Device::Cpu).unwrap();
            match retype {
                Some((name, dt)) if name == n => {
                    let f = t.dequantize(&Device::Cpu).unwrap();
                    (
                        n.clone(),
                        candle_core::quantized::QTensor::quantize(&f, dt).unwrap(),
                    )
                }
                _ => (n.clone(), t),
            }
        })
        .collect();
    let md_ref: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_ref: Vec<(&str, &candle_core::quantized::QTensor)> =
        tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut w = std::fs::File::create(dst).unwrap();
    gguf_file::write(&mut w, &md_ref, &t_ref).unwrap();
}

/// `score` through the CLI (tokenizer + model) reproduces the fixture sums and token counts.
fn check_score(model: &Path, logprobs: &Path, data: &Path) {
    let o = run(&[
        "score",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let fx = common::read_json(logprobs.to_path_buf());
    let recs = fx["records"].as_array().unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), recs.len());
    for (got, want) in lines.iter().zip(recs) {
        for side in ["chosen", "rejected"] {
            let w = want[side]["hf_f32"]["sum"].as_f64().unwrap();
            let g = got[side].as_f64().unwrap();
            assert!(
                (g - w).abs() < 5e-3,
                "{}: record {} {side}: {g} vs {w}",
                model.display(),
                want["index"]
            );
            let n = want[side]["completion_ids"].as_array().unwrap().len() as u64;
            assert_eq!(
                got[format!("{side}_tokens")].as_u64().unwrap(),
                n,
                "record {} {side} tokens",
                want["index"]
            );
        }
    }
}

#[test]
fn score_tiny_models_end_to_end() {
    for arch in ["llama", "qwen2", "qwen3"] {
        let dir = common::fixtures().join("tiny").join(arch);
        check_score(
            &tiny_gguf(arch),
            &dir.join("logprobs.json"),
            &common::fixtures().join("records.jsonl"),
        );
    }
}

#[test]
fn score_smollm2_end_to_end() {
    let fx = common::fixtures();
    check_score(
        &common::real_model("smollm2"),
        &fx.join("smollm2/logprobs.json"),
        &fx.join("records.jsonl"),
    );
}

#[test]
fn score_gemma3_plain_records_end_to_end() {
    // Gemma 3 270M has no chat template: only the plain-text records (the fixture's own subset).
    let fx = common::fixtures();
    let lp = common::read_json(fx.join("gemma3/logprobs.json"));
    let keep: Vec<u64> = lp["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect();
    let all = std::fs::read_to_string(fx.join("records.jsonl")).unwrap();
    let subset: String = all
        .lines()
        .enumerate()
        .filter(|(i, _)| keep.contains(&(*i as u64)))
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "plain.jsonl", &subset);
    check_score(
        &common::real_model("gemma3"),
        &fx.join("gemma3/logprobs.json"),
        &data,
    );
}

#[test]
fn conversational_records_need_a_chat_template() {
    let fx = common::fixtures();
    let o = run(&[
        "score",
        "--model",
        common::real_model("gemma3").to_str().unwrap(),
        "--data",
        fx.join("records.jsonl").to_str().unwrap(),
    ]);
    assert_user_error(&o, &["records.jsonl:7", "chat template"]);
}

#[test]
fn tokenize_prints_ids_and_pieces() {
    let o = run(&[
        "tokenize",
        "--model",
        tiny_gguf("qwen2").to_str().unwrap(),
        "<|im_start|>hi",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ids"][0], 1, "<|im_start|> is one control token");
    assert_eq!(v["pieces"][0], "<|im_start|>");
    let o = run(&[
        "tokenize",
        "--model",
        tiny_gguf("qwen2").to_str().unwrap(),
        "--no-parse-special",
        "<|im_start|>hi",
    ]);
    let w: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(w["ids"].as_array().unwrap().len() > 2);
}

#[test]
fn missing_model_file() {
    let o = run(&["inspect", "/nonexistent/model.gguf"]);
    assert_user_error(&o, &["/nonexistent/model.gguf", "no such file"]);
}

#[test]
fn truncated_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(tiny_gguf("llama")).unwrap();
    for (name, cut) in [("header.gguf", 100), ("tensors.gguf", bytes.len() / 2)] {
        let p = dir.path().join(name);
        std::fs::write(&p, &bytes[..cut]).unwrap();
        let o = run(&["inspect", p.to_str().unwrap()]);
        assert_user_error(&o, &[name]);
    }
}

#[test]
fn corrupt_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("noise.gguf");
    std::fs::write(
        &p,
        (0..4096u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    assert_user_error(
        &run(&["inspect", p.to_str().unwrap()]),
        &["noise.gguf", "not a readable GGUF"],
    );
}

#[test]
fn unknown_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("mamba.gguf");
    with_metadata(
        &tiny_gguf("llama"),
        &p,
        "general.architecture",
        Value::String("mamba".into()),
    );
    assert_user_error(
        &run(&["inspect", p.to_str().unwrap()]),
        &[
            "mamba.gguf",
            "unknown architecture `mamba`",
            "llama, qwen2, qwen3, gemma3",
        ],
    );
}

#[test]
fn tensor_shape_disagrees_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("shape.gguf");
    with_metadata(
        &tiny_gguf("qwen2"),
        &p,
        "qwen2.feed_forward_length",
        Value::U32(96),
    );
    assert_user_error(
        &run(&["inspect", p.to_str().unwrap()]),
        &["shape.gguf", "ffn_gate.weight", "[128, 64]", "[96, 64]"],
    );
}

#[test]
fn unsupported_tensor_type() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("q8_1.gguf");
    let q8_1 = candle_core::quantized::GgmlDType::Q8_1;
    rewrite(
        &tiny_gguf("llama"),
        &p,
        "general.name",
        Value::String("q8_1".into()),
        Some(("blk.0.ffn_up.weight", q8_1)),
    );
    assert_user_error(
        &run(&["inspect", p.to_str().unwrap()]),
        &["q8_1.gguf", "blk.0.ffn_up.weight", "Q8_1", "supported: F32"],
    );
}

#[test]
fn invalid_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_gguf("qwen3");
    let ok = r#"{"prompt": "a", "chosen": "b", "rejected": "c"}"#;
    let cases: [(&str, String, &[&str]); 6] = [
        (
            "badjson.jsonl",
            format!("{ok}\n{{\"prompt\": \"a\",\n"),
            &["badjson.jsonl:2", "invalid JSON"],
        ),
        (
            "missing.jsonl",
            format!("{ok}\n{ok}\n{{\"prompt\": \"a\", \"chosen\": \"b\"}}\n"),
            &["missing.jsonl:3", "\"rejected\" is missing"],
        ),
        (
            "type.jsonl",
            r#"{"prompt": "a", "chosen": 5, "rejected": "c"}"#.to_string(),
            &["type.jsonl:1", "\"chosen\"", "a number"],
        ),
        (
            "empty.jsonl",
            r#"{"prompt": "a", "chosen": "b", "rejected": ""}"#.to_string(),
            &["empty.jsonl:1", "\"rejected\" is empty"],
        ),
        (
            "msg.jsonl",
            r#"{"prompt": [{"role": "user"}], "chosen": [], "rejected": []}"#.to_string(),
            &["msg.jsonl:1", "\"prompt\"", "message 0"],
        ),
        (
            "nothing.jsonl",
            "\n".to_string(),
            &["nothing.jsonl", "no records"],
        ),
    ];
    for (name, text, needles) in cases {
        let p = write(dir.path(), name, &text);
        let o = run(&[
            "score",
            "--model",
            model.to_str().unwrap(),
            "--data",
            p.to_str().unwrap(),
        ]);
        assert_user_error(&o, needles);
    }
    let o = run(&[
        "score",
        "--model",
        model.to_str().unwrap(),
        "--data",
        "/nonexistent/prefs.jsonl",
    ]);
    assert_user_error(&o, &["/nonexistent/prefs.jsonl", "no such file or folder"]);
}

#[test]
fn hub_name_offline_names_the_local_alternative() {
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["inspect", "hf:someone/some-model-GGUF/model.Q4_0.gguf"])
        .env("HF_ENDPOINT", "http://127.0.0.1:9")
        .env("HF_HOME", dir.path())
        .output()
        .unwrap();
    assert_user_error(&o, &["someone/some-model-GGUF/model.Q4_0.gguf", "--model"]);
}

#[test]
fn device_auto_picks_the_cpu_here_and_cuda_needs_a_cuda_build() {
    let model = tiny_gguf("llama");
    let data = common::fixtures().join("records.jsonl");
    let score = |extra: &[&str]| {
        let mut args = vec!["score", "-m", model.to_str().unwrap()];
        args.extend(["--data", data.to_str().unwrap()]);
        args.extend(extra);
        run(&args)
    };
    let o = score(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.lines()
            .any(|l| l.starts_with("device: cpu") && l.contains("(auto)")),
        "{e}"
    );
    let cpu = score(&["--device", "cpu"]);
    assert_eq!(
        cpu.stdout, o.stdout,
        "auto and cpu must score the same here"
    );
    if !cfg!(feature = "cuda") {
        assert_user_error(
            &score(&["--device", "cuda"]),
            &["--device cuda:0", "without CUDA", "scripts/build-cuda.sh"],
        );
    }
    assert_user_error(
        &score(&["--dtype", "bf16"]),
        &["--dtype Bf16", "the CPU runs f32"],
    );
    // The Candle backend forced on the CPU scores as the CPU kernels do; the kernels refuse bf16.
    let k = common::score(&model, None, &data);
    let c = common::score_with(&model, None, &data, &["--backend", "candle"]);
    assert!(
        !k.is_empty() && common::max_pair_diff(&k, &c) < 1e-3,
        "{k:?} vs {c:?}"
    );
    assert_user_error(
        &score(&["--backend", "cpu-kernels", "--dtype", "bf16"]),
        &["--backend cpu-kernels", "f32 on the CPU only"],
    );
    let o = score(&["--device", "tpu"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unknown device `tpu`"),
        "{}",
        stderr(&o)
    );
}

/// `dpo-lora synth` writes what the library's `SynthSpec::tiny` writes (the other tests build
/// their tiny models through the library), and refuses an unknown architecture.
#[test]
fn synth_writes_the_library_model() {
    use dpo_lora::synth::{SynthArch, SynthSpec};
    let dir = tempfile::tempdir().unwrap();
    for arch in [SynthArch::Llama, SynthArch::Gemma3] {
        let cli = dir.path().join(format!("cli-{}.gguf", arch.gguf_name()));
        let seed = SynthSpec::tiny(arch).seed.to_string();
        let o = run(&[
            "synth",
            "--arch",
            arch.gguf_name(),
            "--seed",
            &seed,
            "--out",
            cli.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let lib = common::synth_model(dir.path(), arch);
        assert!(
            std::fs::read(&cli).unwrap() == std::fs::read(&lib).unwrap(),
            "{arch:?}: the binary and the library wrote different files"
        );
    }
    let out = dir.path().join("x.gguf");
    assert_user_error(
        &run(&["synth", "--arch", "mamba", "--out", out.to_str().unwrap()]),
        &["--arch mamba", "llama, qwen2, qwen3, gemma3"],
    );
    // Sizes of another model (what scripts/gpu-check.sh uses for an 8B-shaped stack), checked
    // before anything is drawn.
    let sized = [
        "--hidden",
        "512",
        "--ffn",
        "768",
        "--n-layer",
        "3",
        "--n-head",
        "8",
        "--n-kv-head",
        "2",
        "--head-dim",
        "64",
    ];
    let o = run(&[&["synth", "--out", out.to_str().unwrap()][..], &sized].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let f = dpo_lora::gguf::GgufFile::open(&out).unwrap();
    for (key, want) in [
        ("llama.embedding_length", 512),
        ("llama.feed_forward_length", 768),
        ("llama.block_count", 3),
        ("llama.attention.head_count", 8),
        ("llama.attention.head_count_kv", 2),
    ] {
        assert_eq!(f.get_usize(key).unwrap(), want, "{key}");
    }
    let huge = dir.path().join("huge.gguf");
    assert_user_error(
        &run(&[
            "synth",
            "--hidden",
            "70000",
            "--out",
            huge.to_str().unwrap(),
        ]),
        &["hidden 70000 is over 65536"],
    );
    assert!(!huge.exists());
}

/// Inputs that would once exhaust memory stop with one line naming what to change: a record
/// longer than the model's context (or --max-length) in score, a prompt longer than the context
/// in generate, and a LoRA rank larger than a target's smaller side in run.
#[test]
fn oversized_inputs_are_refused_before_they_allocate() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_gguf("llama");
    // The tiny model's context is 2048: a 3000-word completion is over it.
    let long = vec!["the"; 3000].join(" ");
    let data = dir.path().join("long.jsonl");
    std::fs::write(
        &data,
        format!("{{\"prompt\": \"Question: what sat?\", \"chosen\": \" The cat.\", \"rejected\": \" A dog.\"}}\n{{\"prompt\": \"Question: what sat?\", \"chosen\": \" {long}\", \"rejected\": \" A dog.\"}}\n"),
    )
    .unwrap();
    let m = model.to_str().unwrap();
    let d = data.to_str().unwrap();
    let o = run(&["score", "-m", m, "--data", d]);
    assert_user_error(
        &o,
        &[
            "long.jsonl:2",
            "chosen sequence",
            "context length",
            "--max-length",
        ],
    );
    let short = dir.path().join("short.jsonl");
    std::fs::write(
        &short,
        "{\"prompt\": \"Question: what sat?\", \"chosen\": \" The cat sat on the mat.\", \"rejected\": \" A dog.\"}\n",
    )
    .unwrap();
    let o = run(&[
        "score",
        "-m",
        m,
        "--data",
        short.to_str().unwrap(),
        "--max-length",
        "3",
    ]);
    assert_user_error(&o, &["short.jsonl:1", "over 3 (--max-length)"]);
    let o = run(&["generate", "-m", m, "--max-tokens", "1", &long]);
    assert_user_error(&o, &["the prompt has", "context is 2048"]);
    // lora.rank over the tiny model's 128-wide k/v projections (2 kv heads of 64).
    let out = dir.path().join("run");
    let o = run(&[
        "run",
        common::repo().join("recipes/tiny.yaml").to_str().unwrap(),
        "--quiet",
        "--set",
        &format!("model.path={m}"),
        "--set",
        &format!("output.dir={}", out.display()),
        "--set",
        "lora.rank=100000",
    ]);
    assert_user_error(&o, &["lora.rank: 100000", "use 1 to"]);
}

/// The error `Model::load` gives on a GGUF the fuzzer found (`tests/data/fuzz/NAME`;
/// tests/data/README.md), which must not load.
fn fuzz_gguf_load_error(name: &str) -> String {
    use dpo_lora::model::{Execution, Model};
    let path = common::repo().join("tests/data/fuzz").join(name);
    let f = dpo_lora::gguf::GgufFile::open(&path).unwrap();
    Model::load(&f, &Execution::cpu())
        .err()
        .unwrap_or_else(|| panic!("{name} must not load"))
        .to_string()
}

/// A GGUF the fuzzer found (`fuzz/`, target `gguf`): a tensor whose dimensions multiply past
/// `usize`. candle's reader overflowed on it (a panic with overflow checks, a wrong size and a
/// garbage read without); loading now stops at that tensor.
#[test]
fn a_tensor_whose_size_overflows_is_refused_before_it_is_read() {
    let e = fuzz_gguf_load_error("gguf-shape-overflow.gguf");
    assert!(e.contains("runs past the end"), "{e}");
}

/// A GGUF the fuzzer found: `block_count` ~10^11, which sized the block list before any block
/// was read and aborted the process on the failed allocation. It is now refused from the
/// tensor count, before anything is allocated from it.
#[test]
fn an_impossible_block_count_is_refused_before_allocating() {
    let e = fuzz_gguf_load_error("gguf-block-count.gguf");
    assert!(e.contains("block_count") && e.contains("impossible"), "{e}");
    let path = common::repo().join("tests/data/fuzz/gguf-block-count.gguf");
    let o = run(&["inspect", path.to_str().unwrap()]);
    assert_user_error(&o, &["gguf-block-count.gguf", "block_count"]);
}
