use super::*;

const OK: &str = "model:\n  path: m.gguf\ndata:\n  train: t.jsonl\ntrain:\n  lr: 1.0e-4\n  max_steps: 10\noutput:\n  dir: runs/x\n";

fn parse(text: &str, sets: &[&str]) -> Result<Recipe, String> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Recipe::parse(text, Path::new("r.yaml"), &sets).map_err(|e| e.to_string())
}

#[test]
fn defaults_fill_in() {
    let r = parse(OK, &[]).unwrap();
    assert_eq!(r.lora.rank, 8);
    assert_eq!(r.lora.target_modules.len(), 7);
    assert_eq!(r.loss.kind, LossType::Sigmoid);
    assert_eq!(r.reference.mode, ReferenceMode::AdaptersOff);
    assert_eq!(r.train.max_grad_norm, Some(1.0));
    assert_eq!(r.train.checkpoint_keep, CheckpointKeep::Auto);
    assert_eq!(r.backend, BackendChoice::Auto);
}

#[test]
fn backend_and_checkpoint_keep_take_their_names_only() {
    let r = parse(OK, &["backend=candle", "train.checkpoint_keep=mlp"]).unwrap();
    assert_eq!(r.backend, BackendChoice::Candle);
    assert_eq!(r.train.checkpoint_keep, CheckpointKeep::Mlp);
    let r = parse(OK, &["backend=cpu-kernels"]).unwrap();
    assert_eq!(r.backend, BackendChoice::CpuKernels);
    let e = parse(OK, &["train.checkpoint_keep=everything"]).unwrap_err();
    assert!(e.contains("train.checkpoint_keep"), "{e}");
    let e = parse(OK, &["backend=gpu"]).unwrap_err();
    assert!(e.contains("backend"), "{e}");
}

#[test]
fn typo_and_wrong_type_name_line_and_key() {
    let e = parse(
        &OK.replace("  lr: 1.0e-4", "  lr: 1.0e-4\n  batchsize: 2"),
        &[],
    )
    .unwrap_err();
    assert!(
        e.starts_with("r.yaml:7: train.batchsize: unknown field `batchsize`"),
        "{e}"
    );
    let e = parse(&OK.replace("max_steps: 10", "max_steps: ten"), &[]).unwrap_err();
    assert!(e.starts_with("r.yaml:7: train.max_steps:"), "{e}");
    let e = parse(&OK.replace("lr: 1.0e-4", "lr: -1"), &[]).unwrap_err();
    assert_eq!(e, "r.yaml:6: train.lr must be a positive number, got -1");
}

#[test]
fn overrides_set_any_key_and_reject_unknown_ones() {
    let r = parse(
        OK,
        &[
            "train.lr=0.5",
            "lora.target_modules=[q_proj, v_proj]",
            "loss.type=ipo",
        ],
    )
    .unwrap();
    assert_eq!(r.train.lr, 0.5);
    assert_eq!(r.lora.target_modules, vec![Target::QProj, Target::VProj]);
    assert_eq!(r.loss.kind, LossType::Ipo);
    let e = parse(OK, &["train.lrr=1"]).unwrap_err();
    assert!(e.contains("unknown key `train.lrr`"), "{e}");
    let e = parse(OK, &["train.batch_size=two"]).unwrap_err();
    assert!(
        e.starts_with("--set train.batch_size=two: train.batch_size:"),
        "{e}"
    );
}

#[test]
fn resolved_recipe_round_trips() {
    let r = parse(OK, &["lora.rank=4"]).unwrap();
    let back = parse(&r.to_yaml(), &[]).unwrap();
    assert_eq!(r, back);
}

/// TRL's names work in a recipe and in `--set` (flat or in their section), print back as
/// ours, and clash with ours when both are given.
#[test]
fn trl_names_are_aliases_of_ours() {
    let trl = OK.replace("  lr: 1.0e-4\n", "  learning_rate: 2.0e-4\n  gradient_accumulation_steps: 4\n  lr_scheduler_type: constant_with_warmup\n  save_total_limit: 3\n")
        + "lora:\n  lora_r: 16\n  lora_alpha: 32\n  lora_target_modules: [q_proj, v_proj]\n";
    let r = parse(&trl, &[]).unwrap();
    assert_eq!(
        (
            r.train.lr,
            r.train.grad_accum,
            r.train.schedule,
            r.train.keep_checkpoints
        ),
        (2e-4, 4, Schedule::Constant, 3)
    );
    assert_eq!(
        (r.lora.rank, r.lora.alpha, r.lora.target_modules.len()),
        (16, 32.0, 2)
    );
    let yaml = r.to_yaml();
    assert!(
        yaml.contains("lr: ") && !yaml.contains("learning_rate"),
        "{yaml}"
    );
    assert!(
        yaml.contains("rank: 16") && !yaml.contains("lora_r"),
        "{yaml}"
    );

    let r = parse(
        OK,
        &[
            "learning_rate=3e-4",
            "train.per_device_train_batch_size=8",
            "num_train_epochs=2",
            "warmup_ratio=0.1",
            "truncation_mode=keep_start",
            "lora_dropout=0.05",
            "eval_steps=5",
        ],
    )
    .unwrap();
    assert_eq!(
        (r.train.lr, r.train.batch_size, r.train.epochs),
        (3e-4, 8, Some(2.0))
    );
    assert_eq!(r.train.warmup_ratio, Some(0.1));
    assert_eq!(r.data.truncation, Truncation::KeepStart);
    assert_eq!((r.lora.dropout, r.train.eval_every), (0.05, Some(5)));

    let both = OK.replace("  lr: 1.0e-4\n", "  lr: 1.0e-4\n  learning_rate: 2.0e-4\n");
    let e = parse(&both, &[]).unwrap_err();
    assert!(
        e.contains("r.yaml:7") && e.contains("train.learning_rate") && e.contains("train.lr"),
        "{e}"
    );
    let e = parse(OK, &["warmup_ratio=0.1", "warmup_steps=5"]).unwrap_err();
    assert!(
        e.contains("train.warmup_ratio") && e.contains("train.warmup_steps"),
        "{e}"
    );
}

/// Each loss type takes its own parameters (issue 18): one that belongs to another type is an
/// error naming its line and key (it used to be ignored), unless it holds its default (what a
/// resolved recipe prints); `rpo_alpha` goes with any type; the tagged enum reads the same YAML.
#[test]
fn a_loss_parameter_of_another_type_is_an_error() {
    let with = |loss: &str, sets: &[&str]| parse(&format!("{OK}loss:\n{loss}"), sets);
    let e = with("  type: sigmoid\n  gamma: 1.0\n", &[]).unwrap_err();
    assert!(
        e.starts_with(
            "r.yaml:12: loss.gamma is 1 but loss.type sigmoid does not use it (gamma is for simpo)"
        ),
        "{e}"
    );
    let e = with("  type: orpo\n  beta: 0.5\n", &[]).unwrap_err();
    assert!(e.starts_with("r.yaml:12: loss.beta"), "{e}");
    let e = parse(OK, &["loss.type=ipo", "loss.label_smoothing=0.1"]).unwrap_err();
    assert!(
        e.contains("loss.label_smoothing") && e.contains("sigmoid"),
        "{e}"
    );

    let r = with("  type: simpo\n  beta: 2\n  gamma: 0.5\n", &[]).unwrap();
    let simpo = PreferenceLoss::Simpo {
        beta: 2.0,
        gamma: 0.5,
    };
    assert_eq!(r.loss.resolve().unwrap().kind, simpo);
    let tagged: PreferenceLoss =
        serde_saphyr::from_str("{type: simpo, beta: 2, gamma: 0.5}").unwrap();
    assert_eq!(tagged, simpo);
    assert!(serde_saphyr::from_str::<PreferenceLoss>("{type: orpo, beta: 0.5}").is_err());

    // A recipe that spells out sigmoid's defaults switches type with --set alone.
    let r = with(
        "  type: sigmoid\n  beta: 0.1\n",
        &["loss.type=orpo", "loss.lambda=0.2", "loss.rpo_alpha=0.5"],
    )
    .unwrap();
    assert_eq!(
        r.loss.resolve().unwrap(),
        Loss {
            kind: PreferenceLoss::Orpo { lambda: 0.2 },
            rpo_alpha: Some(0.5)
        }
    );
    let back = parse(&r.to_yaml(), &[]).unwrap();
    assert_eq!(back.loss.resolve(), r.loss.resolve());
}

/// The reference is decided once, with the loss: none for a reference-free loss whatever
/// `reference.mode` says, else the mode, precomputed values cached in `reference.cache_dir`.
#[test]
fn the_spec_resolves_the_reference_with_the_loss() {
    let spec = |sets: &[&str]| {
        let r = parse(OK, sets).unwrap();
        let s = r.spec().unwrap();
        (s.loss, s.reference)
    };
    let (loss, reference) = spec(&[]);
    assert_eq!(
        loss.kind,
        PreferenceLoss::Sigmoid {
            beta: 0.1,
            label_smoothing: 0.0
        }
    );
    assert_eq!(reference, Reference::AdaptersOff);
    assert_eq!(spec(&["loss.type=simpo"]).1, Reference::None);
    assert_eq!(
        spec(&["reference.mode=precomputed", "reference.cache_dir=/c"]).1,
        Reference::Precomputed(PathBuf::from("/c"))
    );
}
