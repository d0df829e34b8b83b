//! `dpo-lora run` as a user runs it: bad recipes and data give one-line errors with exit code 2
//! and leave nothing half-written; Ctrl-C checkpoints and --resume finishes; a NaN stops the run
//! and keeps the last good checkpoint.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{assert_fails_with, assert_user_error, bin, repo, score, synth_model, tiny_run_sets};
use dpo_lora::synth::SynthArch;

struct Setup {
    dir: tempfile::TempDir,
    model: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let model = synth_model(dir.path(), SynthArch::Llama);
    Setup { dir, model }
}

impl Setup {
    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// `dpo-lora run RECIPE --quiet` on the tiny model and data, writing into `out()` unless a
    /// `sets` entry names `output.dir`.
    fn run(&self, recipe: &Path, sets: &[String]) -> Output {
        let mut all = tiny_run_sets(&self.model, &self.out());
        if sets.iter().any(|s| s.starts_with("output.dir=")) {
            all.retain(|s| !s.starts_with("output.dir="));
        }
        all.extend(sets.iter().cloned());
        let mut c = bin();
        c.arg("run").arg(recipe).arg("--quiet");
        for s in &all {
            c.args(["--set", s]);
        }
        c.output().unwrap()
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        common::write(self.dir.path(), name, text)
    }
}

fn tiny_recipe() -> PathBuf {
    repo().join("recipes/tiny.yaml")
}

#[test]
fn recipe_typo_names_the_line_and_key() {
    let s = setup();
    let text = std::fs::read_to_string(tiny_recipe())
        .unwrap()
        .replace("  grad_accum: 1", "  grad_acum: 1");
    let r = s.write("typo.yaml", &text);
    assert_user_error(
        &s.run(&r, &[]),
        &["typo.yaml:", "train.grad_acum", "unknown field"],
    );
    assert!(!s.out().exists(), "nothing may be written for a bad recipe");
}

#[test]
fn recipe_wrong_type_names_the_line_and_key() {
    let s = setup();
    let text = std::fs::read_to_string(tiny_recipe())
        .unwrap()
        .replace("  rank: 4", "  rank: four");
    let r = s.write("type.yaml", &text);
    let o = s.run(&r, &[]);
    let line = text.lines().position(|l| l.contains("rank: four")).unwrap() + 1;
    assert_user_error(&o, &[&format!("type.yaml:{line}: lora.rank")]);
    assert_user_error(
        &s.run(&tiny_recipe(), &["train.lr=fast".into()]),
        &["--set train.lr=fast"],
    );
}

#[test]
fn missing_data_file() {
    let s = setup();
    let o = s.run(
        &tiny_recipe(),
        &["data.train=/nonexistent/prefs.jsonl".into()],
    );
    assert_user_error(
        &o,
        &[
            "data.train",
            "/nonexistent/prefs.jsonl",
            "no such file or folder",
        ],
    );
    assert!(!s.out().join("metrics.jsonl").exists());
}

#[test]
fn empty_data_set() {
    let s = setup();
    let p = s.write("empty.jsonl", "\n\n");
    assert_user_error(
        &s.run(&tiny_recipe(), &[format!("data.train={}", p.display())]),
        &["empty.jsonl", "no records"],
    );
}

#[test]
fn every_pair_too_long() {
    let s = setup();
    let o = s.run(&tiny_recipe(), &["data.max_length=4".into()]);
    // after the data was read (its `data:` line comes first)
    assert_fails_with(
        &o,
        &[
            "tiny-train.jsonl",
            "all 12 pairs are too long",
            "data.max_length",
        ],
    );
    assert!(!s.out().join("adapter").exists());
}

#[test]
fn output_folder_not_writable() {
    let s = setup();
    let file = s.write("a-file", "x");
    let o = s.run(
        &tiny_recipe(),
        &[format!("output.dir={}/run", file.display())],
    );
    assert_user_error(&o, &["output.dir", "a-file/run", "writable"]);
}

#[test]
fn an_existing_run_needs_resume() {
    let s = setup();
    assert!(s
        .run(&tiny_recipe(), &["train.max_steps=2".into()])
        .status
        .success());
    let before = std::fs::read(s.out().join("adapter/adapter_model.safetensors")).unwrap();
    assert_user_error(
        &s.run(&tiny_recipe(), &["train.max_steps=2".into()]),
        &["already holds a run", "--resume"],
    );
    assert_eq!(
        std::fs::read(s.out().join("adapter/adapter_model.safetensors")).unwrap(),
        before,
        "the good adapter must survive"
    );
}

#[test]
fn a_run_writes_the_peft_adapter_metrics_recipe_and_plot() {
    let s = setup();
    let o = s.run(&tiny_recipe(), &["train.max_steps=3".into()]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{e}");
    assert!(
        e.contains("checkpoint_keep: auto -> projections"),
        "the tiny model's kept outputs fit: {e}"
    );
    let out = s.out();
    for f in [
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "metrics.jsonl",
        "recipe.yaml",
        "plot.png",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("adapter/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        (
            cfg["peft_type"].as_str(),
            cfg["r"].as_u64(),
            cfg["lora_alpha"].as_f64()
        ),
        (Some("LORA"), Some(4), Some(8.0))
    );
    // the saved recipe is the resolved one and runs again as is
    let saved = std::fs::read_to_string(out.join("recipe.yaml")).unwrap();
    assert!(saved.contains("max_steps: 3"), "{saved}");
    // score and generate take the adapter
    let data = repo().join("recipes/data/tiny-eval.jsonl");
    let base = score(&s.model, None, &data);
    let tuned = score(&s.model, Some(&out.join("adapter")), &data);
    assert_ne!(base, tuned, "the trained adapter must move the scores");
    let g = bin()
        .args([
            "generate",
            "--model",
            s.model.to_str().unwrap(),
            "--adapter",
            out.join("adapter").to_str().unwrap(),
            "--max-tokens",
            "4",
            "Is it?",
        ])
        .output()
        .unwrap();
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
}

#[test]
fn a_run_exports_what_the_recipe_lists_and_export_reads_the_run() {
    let s = setup();
    let list =
        "output.export=[peft, gguf-lora, {format: gguf, quant: f32}, {format: hf, dtype: f32}]";
    let o = s.run(&tiny_recipe(), &["train.max_steps=3".into(), list.into()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let ex = s.out().join("export");
    for f in [
        "peft/adapter_config.json",
        "peft/adapter_model.safetensors",
        "gguf-lora/adapter.gguf",
        "gguf-f32/model.gguf",
        "hf-float32/config.json",
        "hf-float32/model.safetensors",
        "hf-float32/tokenizer.json",
        "hf-float32/generation_config.json",
    ] {
        assert!(ex.join(f).is_file(), "{f} missing");
    }
    // The model card names the run's recipe, final metrics and the command.
    let card = std::fs::read_to_string(ex.join("gguf-f32/README.md")).unwrap();
    for needle in [
        "base_model:",
        "## Final metrics",
        "rewards/accuracies",
        "dpo-lora run",
        "max_steps: 3",
    ] {
        assert!(card.contains(needle), "`{needle}` not in the card:\n{card}");
    }
    // The merged file scores as base + adapter.
    let data = repo().join("recipes/data/tiny-eval.jsonl");
    let want = score(&s.model, Some(&s.out().join("adapter")), &data);
    let got = score(&ex.join("gguf-f32/model.gguf"), None, &data);
    assert_eq!(want.len(), got.len());
    for (a, b) in want.iter().zip(&got) {
        assert!(
            (a.0 - b.0).abs() < 1e-3 && (a.1 - b.1).abs() < 1e-3,
            "merged {b:?} vs base + adapter {a:?}"
        );
    }
    // `export --run` finds the base and adapter from the run folder.
    let again = s.dir.path().join("again");
    let o = bin()
        .args([
            "export",
            "--run",
            s.out().to_str().unwrap(),
            "--format",
            "peft",
            "--out",
        ])
        .arg(&again)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(again.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(ex.join("peft/adapter_model.safetensors")).unwrap()
    );
}

/// A run of the tiny recipe long enough to be interrupted, with no periodic checkpoints.
fn long_run(s: &Setup) -> Command {
    let mut c = bin();
    c.arg("run").arg(tiny_recipe()).arg("--quiet");
    let mut sets = tiny_run_sets(&s.model, &s.out());
    sets.extend([
        "data.eval=null".to_string(),
        "train.max_steps=100000".into(),
        "train.save_every=null".into(),
        "train.eval_every=null".into(),
    ]);
    for set in sets {
        c.args(["--set", &set]);
    }
    c
}

#[test]
fn ctrl_c_checkpoints_and_resume_finishes() {
    let s = setup();
    let mut c = long_run(&s);
    let child = c.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let metrics = s.out().join("metrics.jsonl");
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&metrics)
        .map(|t| t.lines().count())
        .unwrap_or(0)
        < 3
    {
        assert!(t0.elapsed().as_secs() < 120, "training did not start");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let k = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(k.success());
    let o = child.wait_with_output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{e}");
    assert!(
        e.contains("interrupted after step") && e.contains("--resume"),
        "{e}"
    );
    let ck = std::fs::read_dir(s.out().join("checkpoints"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    assert_eq!(ck.len(), 1, "{ck:?}");
    let step: usize = ck[0].trim_start_matches("step-").parse().unwrap();
    // without --resume the folder is refused
    assert_eq!(
        s.run(&tiny_recipe(), &["data.eval=null".into()])
            .status
            .code(),
        Some(2)
    );
    let mut c = long_run(&s);
    c.arg("--resume");
    // The same recipe resumed continues from the checkpoint; stop it again a few steps later.
    let child = c.stderr(std::process::Stdio::piped()).spawn().unwrap();
    let t0 = std::time::Instant::now();
    while std::fs::read_to_string(&metrics)
        .map(|t| t.lines().count())
        .unwrap_or(0)
        < step + 2
    {
        assert!(t0.elapsed().as_secs() < 120, "resume did not continue");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let o = child.wait_with_output().unwrap();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("resuming from") && e.contains(&format!("(step {step})")),
        "{e}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&metrics)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let steps: Vec<u64> = lines.iter().map(|v| v["step"].as_u64().unwrap()).collect();
    assert!(
        steps.windows(2).all(|w| w[1] == w[0] + 1),
        "steps continue without gaps or repeats: {steps:?}"
    );
}

#[test]
fn a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint() {
    let s = setup();
    let o = s.run(
        &tiny_recipe(),
        &[
            "train.lr=1e30".into(),
            "train.max_grad_norm=null".into(),
            "train.save_every=1".into(),
            "train.warmup_steps=0".into(),
            "train.max_steps=20".into(),
        ],
    );
    let e = String::from_utf8_lossy(&o.stderr).to_string();
    assert_fails_with(&o, &["the loss is", "last good checkpoint", "train.lr"]);
    let ck = s.out().join("checkpoints");
    let dirs: Vec<String> = std::fs::read_dir(&ck)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !dirs.is_empty() && dirs.iter().all(|d| d.starts_with("step-")),
        "{dirs:?} {e}"
    );
    for d in dirs {
        let t = candle_core::safetensors::load(
            ck.join(&d).join("adapter/adapter_model.safetensors"),
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert!(!t.is_empty());
    }
}

/// A run whose memory plan does not fit stops before loading the model, with the predicted
/// peak, what is available and the changes that would fit; `--ignore-plan` trains anyway.
#[test]
fn a_plan_that_cannot_fit_stops_before_loading() {
    let s = setup();
    let limit = |m: &str| {
        let mut all = tiny_run_sets(&s.model, &s.out());
        all.push("train.gradient_checkpointing=false".into());
        let mut c = bin();
        c.arg("run")
            .arg(tiny_recipe())
            .arg("--quiet")
            .args(["--memory", m]);
        for x in &all {
            c.args(["--set", x]);
        }
        c
    };
    let started = std::time::Instant::now();
    let o = limit("1MB").output().unwrap();
    common::assert_user_error(&o, &["memory plan predicts", "1 MiB is available"]);
    assert!(started.elapsed().as_secs() < 10);
    assert!(!s.out().join("adapter").exists());
    // Between the plan without checkpointing and with it: the suggestion is to turn it on.
    let plan = |extra: &[&str]| -> serde_json::Value {
        let mut c = bin();
        c.arg("plan").arg(tiny_recipe()).arg("--json");
        for x in tiny_run_sets(&s.model, &s.out()) {
            c.args(["--set", &x]);
        }
        for x in extra {
            c.args(["--set", x]);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", common::stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let on = plan(&[])["predicted_peak_bytes"].as_u64().unwrap();
    let off = plan(&["train.gradient_checkpointing=false"])["predicted_peak_bytes"]
        .as_u64()
        .unwrap();
    assert!(off > on, "{off} {on}");
    let between = format!("{}B", (on + off) / 2);
    let o = limit(&between).output().unwrap();
    common::assert_user_error(&o, &["--set train.gradient_checkpointing=true"]);
    let o = limit(&between).arg("--ignore-plan").output().unwrap();
    assert!(o.status.success(), "{}", common::stderr(&o));
}

/// A checkpoint that cannot be written (the disk is full) stops the run with one line that names
/// the last good checkpoint and `--resume`, says the OS error once, and leaves the good checkpoint
/// as it was and no half-written one. The disk is a small tmpfs in a private mount namespace
/// (`unshare -m`, as root, as CI runs): a first run writes the step-6 checkpoint, a filler leaves
/// half a checkpoint of room, and the resumed run's step-12 checkpoint finds the disk full.
#[test]
fn a_full_disk_at_a_checkpoint_names_the_last_good_one() {
    if !Command::new("unshare")
        .args(["-m", "true"])
        .status()
        .is_ok_and(|s| s.success())
    {
        panic!("this test needs `unshare -m` (root, util-linux) to mount a small tmpfs");
    }
    let s = setup();
    let disk = s.dir.path().join("disk");
    std::fs::create_dir_all(&disk).unwrap();
    let out = disk.join("out");
    let mut sets = tiny_run_sets(&s.model, &out);
    // A rank-64 adapter makes the checkpoint (~8 MB with its AdamW moments) much larger than
    // anything else the run writes between checkpoints (metrics lines, the plot).
    sets.extend(
        [
            "lora.rank=64",
            "lora.alpha=128",
            "train.save_every=6",
            "train.eval_every=6",
        ]
        .map(String::from),
    );
    let set_args: String = sets.iter().map(|s| format!(" --set '{s}'")).collect();
    let bin = env!("CARGO_BIN_EXE_dpo-lora");
    let recipe = tiny_recipe();
    let log = s.dir.path().join("second.log");
    let script = format!(
        r#"set -e
mount -t tmpfs -o size=48m tmpfs '{disk}'
'{bin}' run '{recipe}' --quiet{set_args} --set train.max_steps=6
ck='{out}/checkpoints/step-000006'
size=$(du -sb "$ck" | cut -f1)
avail=$(df -B1 --output=avail '{disk}' | tail -1)
head -c $((avail - size / 2)) /dev/zero > '{disk}/filler'
sums() {{ sha256sum "$ck"/adapter/adapter_model.safetensors "$ck"/optimizer.safetensors | cut -d' ' -f1 | tr '\n' ' '; }}
echo "before: $(sums)"
set +e
'{bin}' run '{recipe}' --quiet --resume{set_args} --set train.max_steps=12 2> '{log}'
echo "rc=$?"
ls -a '{out}/checkpoints'
echo "after: $(sums)"
"#,
        disk = disk.display(),
        out = out.display(),
        recipe = recipe.display(),
        log = log.display(),
    );
    let o = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        o.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let e = std::fs::read_to_string(&log).unwrap();
    assert!(report.contains("rc=2"), "{report}\n{e}");
    let errors: Vec<&str> = e.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{e}");
    let line = errors[0];
    for needle in [
        "step-000012: writing the checkpoint failed",
        "last good checkpoint is",
        "step-000006 (step 6)",
        "--resume",
    ] {
        assert!(line.contains(needle), "`{needle}` not in: {line}");
    }
    assert_eq!(
        line.matches("No space left on device").count(),
        1,
        "the OS error once: {line}"
    );
    let listing: Vec<&str> = report.lines().collect();
    assert!(listing.contains(&"step-000006"), "{report}");
    assert!(
        !listing
            .iter()
            .any(|l| l.contains("step-000012") || l.contains("partial")),
        "nothing half-written is left: {report}"
    );
    assert!(!e.contains("panicked"), "{e}");
    let sums = |tag: &str| {
        report
            .lines()
            .find_map(|l| l.strip_prefix(tag))
            .map(str::to_string)
    };
    assert!(sums("before: ").is_some_and(|b| b.len() > 64), "{report}");
    assert_eq!(
        sums("before: "),
        sums("after: "),
        "the good checkpoint is untouched"
    );
}

/// Under a terminal (a pseudo-terminal from util-linux `script`), an evaluation draws its own
/// bar (pairs scored of the held-out set) instead of leaving the training bar standing still.
#[test]
fn an_evaluation_shows_its_own_progress() {
    let s = setup();
    let mut cmd = vec![bin().get_program().to_string_lossy().into_owned()];
    cmd.extend(["run".into(), tiny_recipe().display().to_string()]);
    for set in tiny_run_sets(&s.model, &s.out())
        .into_iter()
        .chain(["train.max_steps=2".to_string(), "train.eval_every=1".into()])
    {
        cmd.extend(["--set".into(), set]);
    }
    let line = cmd
        .iter()
        .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
        .collect::<Vec<_>>()
        .join(" ");
    let o = Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .output()
        .expect("util-linux `script` (a pseudo-terminal for the progress bars)");
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{shown}");
    let eval_pairs = std::fs::read_to_string(repo().join("recipes/data/tiny-eval.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .count();
    assert!(
        shown.contains(&format!("/{eval_pairs} eval pairs")),
        "no evaluation bar of {eval_pairs} pairs on the terminal:\n{shown}"
    );
}
