//! `dpo-lora bench` as a user runs it, on a tiny synthetic model: every mode reports positive
//! numbers and the files are written; bad input is a one-line error with exit code 2. No timing
//! is asserted (STYLE.md: timing belongs in benchmarks).

mod common;

use std::path::Path;

use common::{assert_user_error, bin, synth_model};
use dpo_lora::synth::SynthArch;

#[test]
fn every_mode_reports_positive_numbers_and_the_files_exist() {
    let dir = tempfile::tempdir().unwrap();
    let model = synth_model(dir.path(), SynthArch::Llama);
    let out = dir.path().join("bench");
    let o = bin()
        .args(["bench", "--model", model.to_str().unwrap()])
        .args(["--warmup", "1", "--steps", "1", "--quiet"])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout.contains("dpo-second-copy"), "{stdout}");
    for f in [
        "bench.json",
        "bench.md",
        "bench.png",
        "workload-long.jsonl",
        "workload-short.jsonl",
    ] {
        assert!(out.join(f).is_file(), "{f} is missing");
    }
    let rep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("bench.json")).unwrap()).unwrap();
    assert!(rep["matmul_peak_gflops"].as_f64().unwrap() > 0.0);
    let rows = rep["results"].as_array().unwrap();
    for w in ["long", "short"] {
        for m in [
            "policy-only",
            "dpo-adapters-off",
            "reference-precompute",
            "dpo-precomputed",
            "dpo-second-copy",
            "simpo",
            "orpo",
        ] {
            let r = rows
                .iter()
                .find(|r| r["workload"] == w && r["mode"] == m)
                .unwrap_or_else(|| panic!("no row for {w} / {m}"));
            for k in [
                "step_s_median",
                "tokens_per_step",
                "tokens_per_s",
                "peak_rss_mib",
                "gflop_per_step",
                "gflops",
                "peak_share",
            ] {
                let v = r[k].as_f64().unwrap_or(f64::NAN);
                assert!(v > 0.0 && v.is_finite(), "{w} / {m}: {k} = {}", r[k]);
            }
            // Training modes time the measured steps; the precompute covers every step's batch.
            let timed = if m == "reference-precompute" { 2 } else { 1 };
            assert_eq!(r["step_s"].as_array().unwrap().len(), timed, "{w} / {m}");
        }
    }
    // The workload file is standard JSONL that TRL reads as is.
    let line = std::fs::read_to_string(out.join("workload-long.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    for k in ["prompt", "chosen", "rejected"] {
        assert!(first[k].is_string(), "{k}");
    }
    let png = std::fs::read(out.join("bench.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG"));
}

#[test]
fn an_unknown_mode_or_a_missing_model_is_a_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = synth_model(dir.path(), SynthArch::Llama);
    let o = bin()
        .args(["bench", "--model", model.to_str().unwrap()])
        .args(["--modes", "dpo,simpo", "--quiet"])
        .output()
        .unwrap();
    assert_user_error(&o, &["--modes: unknown value `dpo`"]);
    let o = bin()
        .args(["bench", "--model", model.to_str().unwrap()])
        .args(["--workloads", "medium", "--quiet"])
        .output()
        .unwrap();
    assert_user_error(&o, &["--workloads: unknown value `medium`"]);
    let missing = dir.path().join("nope.gguf");
    let o = bin()
        .args(["bench", "--model", missing.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    assert_user_error(&o, &["nope.gguf"]);
    assert!(!Path::new("runs/bench/nope").exists());
}
