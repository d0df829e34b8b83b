//! `dpo-lora export` on the real models with random (non-zero) adapters, alpha != rank:
//! PEFT round trip, merged GGUF against base + adapter, llama.cpp LoRA against the merged file,
//! and bad input (adapter that does not fit, existing output) leaving nothing half-written.

mod common;

use std::path::{Path, PathBuf};

use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use common::{
    assert_user_error, lora_on_every_target, max_pair_diff, run, score, stderr, tiny_gguf,
};
use dpo_lora::gguf::GgufFile;
use dpo_lora::model::peft::{self, BaseInfo};
use dpo_lora::rng::SplitMix64;
use dpo_lora::session::Loaded;

/// A PEFT adapter on every target with B drawn uniformly in ±`b`, saved at `dir`.
fn random_adapter(model: &Path, dir: &Path, rank: usize, alpha: f64, rslora: bool, b: f64) {
    let l = Loaded::open(model.to_str().unwrap()).unwrap();
    let m = &l.model;
    let lora = lora_on_every_target(m, rank, alpha, rslora, 3);
    let mut rng = SplitMix64::keyed(&[11, rank as u64]);
    for x in lora.layers.values() {
        let (o, r) = x.b.as_tensor().dims2().unwrap();
        let v: Vec<f32> = (0..o * r)
            .map(|_| ((rng.uniform() * 2.0 - 1.0) * b) as f32)
            .collect();
        x.b.set(&Tensor::from_vec(v, (o, r), &Device::Cpu).unwrap())
            .unwrap();
    }
    peft::save(&lora, dir, &BaseInfo::of(m, Some(model)), Some("test")).unwrap();
}

fn export(model: &Path, adapter: &Path, format: &str, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "export",
        "-m",
        model.to_str().unwrap(),
        "--adapter",
        adapter.to_str().unwrap(),
        "--format",
        format,
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend(extra);
    let o = run(&args);
    assert!(o.status.success(), "export {format}: {}", stderr(&o));
    stderr(&o)
}

fn f32_tensor(f: &GgufFile, name: &str) -> Vec<f32> {
    let shape = f.tensor_shape(name).unwrap().to_vec();
    f.tensor(name, &shape, &Device::Cpu)
        .unwrap()
        .dequantize(&Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The llama.cpp LoRA file's `scale · B · A` for `blk.0.<linear>` must equal what the merged f32
/// GGUF added to the base there (both in llama.cpp's row order; the merged file is checked
/// against base + adapter by score, so this pins the LoRA file's layout, Q/K order included).
fn check_lora_gguf_against_merged(base: &Path, merged: &Path, lora: &Path, linear: &str) {
    let (b, m, l) = (
        GgufFile::open(base).unwrap(),
        GgufFile::open(merged).unwrap(),
        GgufFile::open(lora).unwrap(),
    );
    assert_eq!(l.get_str("general.type").unwrap(), "adapter");
    assert_eq!(l.get_str("adapter.type").unwrap(), "lora");
    assert_eq!(
        l.get_str("general.architecture").unwrap(),
        b.get_str("general.architecture").unwrap()
    );
    let alpha = l.get_f64("adapter.lora.alpha").unwrap();
    let name = format!("blk.0.{linear}.weight");
    let (a_name, b_name) = (format!("{name}.lora_a"), format!("{name}.lora_b"));
    let (r, cols) = (
        l.tensor_shape(&a_name).unwrap()[0],
        l.tensor_shape(&a_name).unwrap()[1],
    );
    let rows = l.tensor_shape(&b_name).unwrap()[0];
    assert_eq!(l.tensor_shape(&b_name).unwrap()[1], r);
    assert_eq!(b.tensor_shape(&name).unwrap(), [rows, cols]);
    let a = Tensor::from_vec(f32_tensor(&l, &a_name), (r, cols), &Device::Cpu).unwrap();
    let bb = Tensor::from_vec(f32_tensor(&l, &b_name), (rows, r), &Device::Cpu).unwrap();
    let delta: Vec<f32> = (bb.matmul(&a).unwrap() * (alpha / r as f64))
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let (w, mw) = (f32_tensor(&b, &name), f32_tensor(&m, &name));
    let mut worst = 0f32;
    let mut size = 0f32;
    for i in 0..w.len() {
        worst = worst.max((mw[i] - w[i] - delta[i]).abs());
        size = size.max(delta[i].abs());
    }
    assert!(size > 1e-3, "{name}: the adapter is ~zero ({size})");
    assert!(
        worst < 1e-5 * size.max(1.0) + 1e-6,
        "{name}: LoRA GGUF vs merged differ by {worst}"
    );
}

/// Every export of one model, checked against `score` of base + adapter.
fn exports_match(model: &Path, data: &Path, rank: usize, alpha: f64, rslora: bool) {
    let t = tempfile::tempdir().unwrap();
    let adapter = t.path().join("adapter");
    random_adapter(model, &adapter, rank, alpha, rslora, 0.02);
    let with = score(model, Some(&adapter), data);
    let without = score(model, None, data);
    let shift = max_pair_diff(&with, &without);
    assert!(
        shift > 0.5,
        "the random adapter barely moves the scores ({shift})"
    );

    // PEFT: export, load back, identical scores.
    let p = t.path().join("peft");
    export(model, &adapter, "peft", &p, &[]);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["peft_type"], "LORA");
    assert_eq!(cfg["task_type"], "CAUSAL_LM");
    assert_eq!(cfg["r"], rank);
    assert_eq!(cfg["lora_alpha"], alpha);
    assert_eq!(cfg["use_rslora"], rslora);
    assert!(p.join("README.md").is_file());
    assert_eq!(
        score(model, Some(&p), data),
        with,
        "PEFT round trip changed the scores"
    );

    // Merged GGUF in f32: base + adapter within 0.01 nats per sequence, and its own fidelity
    // report says so: the trained change kept, the same preferences.
    let g = t.path().join("gguf-f32");
    let eval = ["--eval-data", data.to_str().unwrap()];
    export(
        model,
        &adapter,
        "gguf",
        &g,
        &[&["--quant", "f32"][..], &eval].concat(),
    );
    let merged = score(&g.join("model.gguf"), None, data);
    let d = max_pair_diff(&merged, &with);
    eprintln!(
        "{}: merged f32 vs base + adapter: max |Δ| {d:.2e} nats",
        model.display()
    );
    assert!(
        d < 0.01,
        "merged f32 GGUF differs from base + adapter by {d}"
    );
    let f32_fidelity = fidelity(&g);
    eprintln!("f32 fidelity {f32_fidelity}");
    assert_eq!(f32_fidelity["pairs"], with.len());
    assert!(
        (f32_fidelity["kept"].as_f64().unwrap() - 1.0).abs() < 1e-3,
        "an f32 merge keeps the trained change: {f32_fidelity}"
    );
    assert_eq!(f32_fidelity["agreement"], 1.0);
    let card = front_matter(&g.join("README.md"));
    assert_eq!(card["library_name"], "gguf");
    assert_eq!(card["base_model_relation"], "finetune");
    assert!(card["base_model"].as_str().is_some_and(|s| !s.is_empty()));
    for tag in ["dpo", "lora", "gguf"] {
        assert!(
            card["tags"].as_array().unwrap().iter().any(|t| t == tag),
            "tag {tag} missing: {card}"
        );
    }
    let text = std::fs::read_to_string(g.join("README.md")).unwrap();
    assert!(text.contains("trained change kept"), "{text}");
    assert!(text.contains("llama-cli -m"), "{text}");

    // The merged Hugging Face folder in f32, read back from its safetensors (the layout
    // conversions undone): the same fidelity.
    let h = t.path().join("hf-f32");
    export(
        model,
        &adapter,
        "hf",
        &h,
        &[&["--dtype", "f32"][..], &eval].concat(),
    );
    let hf_fidelity = fidelity(&h);
    assert!(
        (hf_fidelity["kept"].as_f64().unwrap() - 1.0).abs() < 1e-3,
        "an f32 hf merge keeps the trained change: {hf_fidelity}"
    );
    assert_eq!(hf_fidelity["agreement"], 1.0);
    assert_eq!(
        front_matter(&h.join("README.md"))["library_name"],
        "transformers"
    );
    assert!(!h.join(".read-back.gguf").exists());

    // Merged GGUF re-quantized to the base's types: the shift is measured and reported.
    let gb = t.path().join("gguf-base");
    let log = export(model, &adapter, "gguf", &gb, &["--quant", "base"]);
    assert!(
        log.contains("along its direction"),
        "no re-quantization report: {log}"
    );
    let requant = score(&gb.join("model.gguf"), None, data);
    eprintln!(
        "{}: merged at base types vs base + adapter: max |Δ| {:.3} nats (adapter's own shift {shift:.3}); {}",
        model.display(),
        max_pair_diff(&requant, &with),
        log.lines().find(|l| l.contains("along its direction")).unwrap_or("").trim()
    );
    assert_eq!(
        types(&gb.join("model.gguf")),
        types(model),
        "--quant base changed tensor types"
    );

    // --quant keep (the default): what the adapter does not touch is the base byte for byte;
    // what it touches never drops below its base type.
    let gk = t.path().join("gguf-keep");
    let log = export(model, &adapter, "gguf", &gk, &eval);
    assert!(log.contains("quant keep"), "{log}");
    let (b, k) = (
        GgufFile::open(model).unwrap(),
        GgufFile::open(gk.join("model.gguf")).unwrap(),
    );
    let n_layer = b
        .get_usize(&format!(
            "{}.block_count",
            b.get_str("general.architecture").unwrap()
        ))
        .unwrap();
    let (mut same, mut raised) = (0, 0);
    for (name, base_type) in types(model) {
        let kept_type = k.content.tensor_infos[&name].ggml_dtype;
        if dpo_lora::export::gguf::linear_of(&name, n_layer).is_some() {
            assert!(
                bits(kept_type) >= bits(base_type),
                "{name}: keep chose {kept_type:?} below the base's {base_type:?}"
            );
            raised += usize::from(kept_type != base_type);
        } else {
            assert_eq!(kept_type, base_type, "{name}: untouched but retyped");
            assert_eq!(
                raw(&k, &name),
                raw(&b, &name),
                "{name}: untouched but changed"
            );
            same += 1;
        }
    }
    eprintln!(
        "keep: {same} tensors copied, {raised} merged tensors raised; {}",
        fidelity(&gk)
    );
    assert!(same > 0);
    // (How much of the behaviour keep holds is measured on trained adapters, README: a random
    // adapter's change is too small beside re-quantization noise to be read here.)

    // A deliberately lossy export: a small adapter re-quantized to q4_0 is mostly rounding
    // noise, and the report says so.
    let small = t.path().join("small-adapter");
    random_adapter(model, &small, rank, alpha, rslora, 0.002);
    let gq = t.path().join("gguf-q4_0");
    let log = export(
        model,
        &small,
        "gguf",
        &gq,
        &[&["--quant", "q4_0"][..], &eval].concat(),
    );
    let lossy = fidelity(&gq);
    eprintln!("small adapter at q4_0: {lossy}");
    assert!(
        log.contains("warning: this export does not do what training taught"),
        "no warning: {log}"
    );
    assert!(
        lossy["mean_abs_delta"].as_f64().unwrap()
            > 10.0 * f32_fidelity["mean_abs_delta"].as_f64().unwrap(),
        "{lossy}"
    );

    // llama.cpp LoRA: its B·A equals what the merged file added.
    let gl = t.path().join("gguf-lora");
    export(model, &adapter, "gguf-lora", &gl, &[]);
    for linear in ["attn_q", "attn_k", "ffn_down"] {
        check_lora_gguf_against_merged(
            model,
            &g.join("model.gguf"),
            &gl.join("adapter.gguf"),
            linear,
        );
    }
}

/// Each tensor's name and stored type, sorted by name.
fn types(f: &Path) -> Vec<(String, GgmlDType)> {
    let g = GgufFile::open(f).unwrap();
    let mut v: Vec<_> = g
        .content
        .tensor_infos
        .iter()
        .map(|(n, i)| (n.clone(), i.ggml_dtype))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

fn bits(t: GgmlDType) -> f64 {
    dpo_lora::export::quant::bits_per_weight(t)
}

/// A tensor's bytes as stored.
fn raw(f: &GgufFile, name: &str) -> Vec<u8> {
    let shape = f.tensor_shape(name).unwrap().to_vec();
    f.tensor(name, &shape, &Device::Cpu)
        .unwrap()
        .data()
        .unwrap()
        .into_owned()
}

/// An export's fidelity.json.
fn fidelity(dir: &Path) -> serde_json::Value {
    let p = dir.join("fidelity.json");
    serde_json::from_str(
        &std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
    )
    .unwrap()
}

/// The YAML front matter of a model card, parsed.
fn front_matter(card: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(card).unwrap();
    let body = text.strip_prefix("---\n").expect("a card starts with ---");
    let (yaml, _) = body
        .split_once("\n---\n")
        .expect("front matter ends with ---");
    serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("front matter is not YAML: {e}\n{yaml}"))
}

fn plain_records(dir: &Path) -> PathBuf {
    // Gemma has no chat template: the 6 plain-text fixture records.
    let text = std::fs::read_to_string(common::fixtures().join("records.jsonl")).unwrap();
    let p = dir.join("plain.jsonl");
    let lines: Vec<&str> = text.lines().take(6).collect();
    std::fs::write(&p, lines.join("\n") + "\n").unwrap();
    p
}

#[test]
fn smollm2_llama_exports_match_base_plus_adapter() {
    let t = tempfile::tempdir().unwrap();
    exports_match(
        &common::real_model("smollm2"),
        &plain_records(t.path()),
        4,
        12.0,
        false,
    );
}

#[test]
fn gemma3_exports_match_base_plus_adapter() {
    let t = tempfile::tempdir().unwrap();
    exports_match(
        &common::real_model("gemma3"),
        &plain_records(t.path()),
        8,
        4.0,
        true,
    );
}

#[test]
fn adapter_that_does_not_fit_is_refused_and_nothing_is_written() {
    let t = tempfile::tempdir().unwrap();
    let adapter = t.path().join("adapter");
    random_adapter(&tiny_gguf("llama"), &adapter, 4, 8.0, false, 0.02);
    let out = t.path().join("out");
    let o = |model: &Path, adapter: &Path| {
        run(&[
            "export",
            "-m",
            model.to_str().unwrap(),
            "--adapter",
            adapter.to_str().unwrap(),
            "--format",
            "gguf",
            "--out",
            out.to_str().unwrap(),
        ])
    };
    // Architecture.
    assert_user_error(
        &o(&tiny_gguf("qwen2"), &adapter),
        &["does not fit", "llama"],
    );
    assert!(!out.exists());
    // Rank: the config says 8, the tensors are rank 4.
    let cfg = adapter.join("adapter_config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, text.replace("\"r\": 4", "\"r\": 8")).unwrap();
    assert_user_error(
        &o(&tiny_gguf("llama"), &adapter),
        &["does not fit", "rank 8"],
    );
    // Targets: one that dpo-lora cannot adapt.
    std::fs::write(&cfg, text.replace("\"q_proj\"", "\"lm_head\"")).unwrap();
    assert_user_error(&o(&tiny_gguf("llama"), &adapter), &["lm_head"]);
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary folders left: {leftovers:?}"
    );
}

#[test]
fn existing_output_is_kept_unless_forced() {
    let t = tempfile::tempdir().unwrap();
    let model = tiny_gguf("llama");
    let adapter = t.path().join("adapter");
    random_adapter(&model, &adapter, 4, 8.0, false, 0.02);
    let out = t.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("keep.txt"), "mine").unwrap();
    let args = |force: bool| {
        let mut a = vec![
            "export".to_string(),
            "-m".into(),
            model.display().to_string(),
            "--adapter".into(),
            adapter.display().to_string(),
            "--format".into(),
            "gguf-lora".into(),
            "--out".into(),
            out.display().to_string(),
        ];
        if force {
            a.push("--force".into());
        }
        a
    };
    let call = |force: bool| {
        let v = args(force);
        run(&v.iter().map(String::as_str).collect::<Vec<_>>())
    };
    assert_user_error(&call(false), &["already exists", "--force"]);
    assert_eq!(
        std::fs::read_to_string(out.join("keep.txt")).unwrap(),
        "mine"
    );
    let o = call(true);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!out.join("keep.txt").exists());
    assert!(out.join("adapter.gguf").is_file());
}

#[test]
fn formats_that_carry_an_adapter_need_one() {
    let t = tempfile::tempdir().unwrap();
    let out = t.path().join("out");
    let o = run(&[
        "export",
        "-m",
        tiny_gguf("llama").to_str().unwrap(),
        "--format",
        "gguf-lora",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_user_error(&o, &["needs an adapter", "--adapter"]);
    assert!(!out.exists());
}
