//! The one harness of the integration tests (ripgrep's `tests/util.rs`): where things are (the
//! repository, its fixtures, the real models), the binary and the one-line-error assertion, the
//! tiny models, JSON readers, the largest-difference helpers, and the loopback Hub stand-in
//! (`hub`). Every test file reaches these through `mod common;`; none keeps a copy.
//!
//! Nothing here reads outside the repository except the real models, which
//! `scripts/fetch-models.sh` puts in `$DPO_LORA_MODELS` (default `~/.cache/dpo-lora/models`).
#![allow(dead_code)]

pub mod hub;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{Device, Tensor};
use dpo_lora::model::{Lora, LoraConfig, Model, Target};
use dpo_lora::synth::{SynthArch, SynthSpec};

// --- where things are ----------------------------------------------------------------------

/// The checkout's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/fixtures`: reference numbers from llama.cpp and transformers, copied unchanged (its
/// README says how they were made; `parity.rs` checks them against `summary.json`).
pub fn fixtures() -> PathBuf {
    let p = repo().join("tests/fixtures");
    assert!(p.is_dir(), "fixtures not found at {}", p.display());
    p
}

/// A file under `tests/fixtures`.
pub fn fixture(rel: &str) -> PathBuf {
    fixtures().join(rel)
}

/// The llama.cpp-converted tiny model `tiny/ARCH/tiny-ARCH-f32.gguf` (arch: llama, qwen2, qwen3).
pub fn tiny_gguf(arch: &str) -> PathBuf {
    fixture(&format!("tiny/{arch}/tiny-{arch}-f32.gguf"))
}

pub fn models_dir() -> PathBuf {
    match std::env::var_os("DPO_LORA_MODELS") {
        Some(d) => PathBuf::from(d),
        None => {
            PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/dpo-lora/models")
        }
    }
}

/// A real model file ("smollm2" or "gemma3"); fails (never skips) when it is missing.
pub fn real_model(name: &str) -> PathBuf {
    let file = match name {
        "smollm2" => "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma3" => "gemma-3-270m-q4_k_m.gguf",
        other => panic!("unknown real model {other}"),
    };
    let p = models_dir().join(file);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-models.sh first (or set DPO_LORA_MODELS)",
        p.display()
    );
    p
}

/// `SynthSpec::tiny(arch)` written to `dir/tiny-ARCH.gguf` (our own writer, fixed seed).
pub fn synth_model(dir: &Path, arch: SynthArch) -> PathBuf {
    let p = dir.join(format!("tiny-{}.gguf", arch.gguf_name()));
    SynthSpec::tiny(arch).write(&p).unwrap();
    p
}

/// PEFT-initialised adapters (A Kaiming-uniform from `seed`, B zero) on every target of every
/// layer of `m`, no dropout, on the CPU.
pub fn lora_on_every_target(m: &Model, rank: usize, alpha: f64, rslora: bool, seed: u64) -> Lora {
    let cfg = LoraConfig {
        rank,
        alpha,
        dropout: 0.0,
        targets: Target::ALL.to_vec(),
        use_rslora: rslora,
    };
    Lora::init(
        cfg,
        m.config.n_layer,
        |il, t| m.linear_dims(il, t),
        seed,
        &Device::Cpu,
    )
    .unwrap()
}

/// Every B of `lora` drawn uniformly in ±`scale` from `seed` (B = 0 at init gives A no
/// gradient and the policy no difference from the base).
pub fn randomize_b(lora: &Lora, seed: u64, scale: f32) {
    for (i, l) in lora.layers.values().enumerate() {
        let t = l.b.as_tensor();
        let v = dpo_lora::synth::uniform_values(t.elem_count(), seed + i as u64, scale);
        l.b.set(&Tensor::from_vec(v, t.shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
}

/// The `--set` overrides that point `recipes/tiny.yaml` at `model` and the repository's tiny
/// train/eval data, writing into `out`. Later overrides win, so a test appends its own.
pub fn tiny_run_sets(model: &Path, out: &Path) -> Vec<String> {
    let data = repo().join("recipes/data");
    vec![
        format!("model.path={}", model.display()),
        format!("data.train={}", data.join("tiny-train.jsonl").display()),
        format!("data.eval={}", data.join("tiny-eval.jsonl").display()),
        format!("output.dir={}", out.display()),
    ]
}

/// Write `text` to `dir/name` and return the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

// --- the binary ----------------------------------------------------------------------------

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_dpo-lora"))
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run dpo-lora")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// Bad input refused before any work: exit code 2, no panic, and stderr is one line starting
/// with `error:` that contains every `needle` (besides the `device: ...` line a command prints
/// once it has picked its device).
pub fn assert_user_error(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    let lines: Vec<&str> = e
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("device: "))
        .collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {e}");
    assert_fails_with(o, needles);
}

/// A failure after work began (progress lines may come first): exit code 2, no panic, one line
/// starting with `error:`, the last, containing every `needle`.
pub fn assert_fails_with(o: &Output, needles: &[&str]) {
    let e = stderr(o);
    assert_eq!(o.status.code(), Some(2), "exit code; stderr: {e}");
    assert!(!e.contains("panicked"), "panic: {e}");
    let errors: Vec<&str> = e.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "expected one error line, got: {e}");
    let last = e.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    assert_eq!(last, errors[0], "the error must be the last line: {e}");
    for n in needles {
        assert!(errors[0].contains(n), "`{n}` not in: {e}");
    }
}

/// `dpo-lora score` of `data` on `model` (with `adapter` when given): the summed log-probs
/// `(chosen, rejected)` of each record, in file order.
pub fn score(model: &Path, adapter: Option<&Path>, data: &Path) -> Vec<(f64, f64)> {
    score_with(model, adapter, data, &[])
}

/// [`score`] with more arguments (`--backend candle`, ...).
pub fn score_with(
    model: &Path,
    adapter: Option<&Path>,
    data: &Path,
    extra: &[&str],
) -> Vec<(f64, f64)> {
    let mut args = vec![
        "score",
        "--model",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
    ];
    if let Some(a) = adapter {
        args.extend(["--adapter", a.to_str().unwrap()]);
    }
    args.extend(extra);
    let o = run(&args);
    assert!(o.status.success(), "score: {}", stderr(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["chosen"].as_f64().unwrap(),
                v["rejected"].as_f64().unwrap(),
            )
        })
        .collect()
}

// --- JSON ----------------------------------------------------------------------------------

pub fn read_json(p: PathBuf) -> serde_json::Value {
    let s = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&s).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A JSON array of token ids.
pub fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap_or_else(|| panic!("expected an id list, got {v}"))
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

/// Every non-blank line of a JSONL file.
pub fn read_jsonl(p: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{}: {e}: {l}", p.display())))
        .collect()
}

/// Lower-case hex SHA-256, as the Hub's LFS oids and `summary.json` write it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

// --- differences ---------------------------------------------------------------------------

/// `max |a - b|` over two equally long lists (f32 or f64), in f64.
pub fn max_abs_diff<T: Copy + Into<f64>>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| ((*x).into() - (*y).into()).abs())
        .fold(0.0, f64::max)
}

/// The largest difference between two lists of `(chosen, rejected)` scores.
pub fn max_pair_diff(a: &[(f64, f64)], b: &[(f64, f64)]) -> f64 {
    let flat = |x: &[(f64, f64)]| x.iter().flat_map(|p| [p.0, p.1]).collect::<Vec<f64>>();
    max_abs_diff(&flat(a), &flat(b))
}

/// `max |a|`: the scale a difference is read against.
pub fn max_abs<T: Copy + Into<f64>>(a: &[T]) -> f64 {
    a.iter().map(|x| (*x).into().abs()).fold(0.0, f64::max)
}

/// Equal lengths and `|a - b| <= tol · (1 + |b|)` everywhere.
pub fn all_close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}

/// A tensor's values, flattened, as f32.
pub fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all()
        .unwrap()
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// `max |a - b|` over two tensors of one shape.
pub fn tensor_max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    max_abs_diff(&values(a), &values(b))
}
