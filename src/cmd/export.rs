//! `dpo-lora export (--run DIR | --model PATH [--adapter DIR]) --format F --out DIR`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::cli::ExportArgs;
use crate::data::Sources;
use crate::export::{self, hub, HeldOut, Options, Provenance};
use crate::recipe::{DataSection, Recipe};
use crate::session::Loaded;
use crate::train::sets;

pub fn run(a: ExportArgs) -> Result<()> {
    let command = command_line();
    // A run's recipe may have trained with another chat template (`data.chat_template`).
    let mut template = None;
    let mut run_recipe = None;
    let (model, adapter, prov) = match &a.run {
        Some(dir) => {
            let recipe_path = dir.join("recipe.yaml");
            let recipe = Recipe::load(&recipe_path, &[])
                .with_context(|| format!("{}: is this a dpo-lora run folder?", dir.display()))?;
            let adapter = dir.join("adapter");
            if !adapter.is_dir() {
                anyhow::bail!(
                    "{}: no adapter/ yet (the run has not finished); export a checkpoint with --model {} --adapter {}/checkpoints/step-N/adapter",
                    dir.display(),
                    recipe.model.path,
                    dir.display()
                );
            }
            template = Some((
                recipe.data.chat_template.clone(),
                recipe.data.template_kwargs.clone(),
            ));
            run_recipe = Some((recipe.clone(), dir.clone()));
            (
                recipe.model.path.clone(),
                Some(adapter),
                Provenance::from_run(dir, command),
            )
        }
        None => (
            a.model
                .clone()
                .context("--model is required without --run")?,
            a.adapter.clone(),
            Provenance {
                command,
                ..Default::default()
            },
        ),
    };
    let opts = Options {
        format: a.format,
        dtype: a.dtype,
        quant: a.quant,
        base_only: a.base_only,
        force: a.force,
    };
    // A push that cannot work fails before the export, not after minutes of it.
    if let Some(repo) = &a.push_to_hub {
        hub::split_repo_id(repo)?;
        if hub::HubAccess::from_env().token.is_none() {
            return Err(hub::HubError::NoToken { dir: a.out.clone() }.into());
        }
    }
    let mut base = Loaded::open(&model)?;
    if let Some((t, kwargs)) = &template {
        use_run_template(&mut base, t.as_deref(), kwargs)?;
    }
    let lora = match (&adapter, a.base_only) {
        // `Loaded::open` loads on the CPU, so the adapter lands there too.
        (Some(d), false) => Some(base.adapter(d)?),
        _ => None,
    };
    let held = match &lora {
        Some(_) => held_out(
            run_recipe.as_ref().map(|(r, d)| (r, d.as_path())),
            a.eval_data.as_deref(),
            &base,
            a.fidelity_pairs,
        )?,
        None => None,
    };
    export_one(&base, lora.as_ref(), &prov, &opts, held.as_ref(), &a.out)?;
    if let Some(repo) = &a.push_to_hub {
        push(&a.out, repo, a.private)?;
    }
    Ok(())
}

/// The chat template the run trained with, for the exported tokenizer files and GGUF.
pub fn use_run_template(
    base: &mut Loaded,
    template: Option<&str>,
    kwargs: &serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    base.tok
        .set_chat_template(template, kwargs)
        .map_err(|e| anyhow::anyhow!("data.chat_template: {e}"))
}

/// The held-out pairs merged exports are scored on (at most `max`; 0: none): `eval_data` when
/// given (read as the run's recipe reads data, else with the defaults), else the run's own
/// held-out set; `None` when there is none (the export then says its fidelity is not measured).
pub fn held_out(
    run: Option<(&Recipe, &Path)>,
    eval_data: Option<&Path>,
    base: &Loaded,
    max: usize,
) -> Result<Option<HeldOut>> {
    if max == 0 {
        return Ok(None);
    }
    let data = match (eval_data, run) {
        (Some(f), Some((r, _))) => DataSection {
            eval: Some(Sources::one(f.to_string_lossy())),
            ..r.data.clone()
        },
        (Some(f), None) => DataSection {
            eval: Some(Sources::one(f.to_string_lossy())),
            ..DataSection::of(Sources::one(f.to_string_lossy()))
        },
        (None, Some((r, _))) => r.data.clone(),
        (None, None) => return Ok(None),
    };
    let seed = run.map_or(0, |(r, _)| r.train.seed);
    let progress = std::io::stderr().is_terminal();
    let key = if eval_data.is_some() {
        "--eval-data"
    } else {
        "data.eval"
    };
    let reader = sets::Reader {
        loaded: base,
        seed,
        cache_dir: run.map(|(_, d)| d),
        progress,
    };
    let Some(set) = reader.held_out(&data).context(key)? else {
        return Ok(None);
    };
    let total = set.pairs.len();
    let mut pairs = set.pairs;
    pairs.truncate(max);
    let what = data.eval.as_ref().map_or_else(
        || format!("{} (the data.eval_fraction split)", data.train),
        |e| e.to_string(),
    );
    Ok(Some(HeldOut {
        data: if pairs.len() < total {
            format!("{what}, first {} of {total}", pairs.len())
        } else {
            what
        },
        pairs,
        progress,
    }))
}

/// Export and print what was written (used by `export` and by `run` for `output.export`).
pub fn export_one(
    base: &Loaded,
    lora: Option<&crate::model::Lora>,
    prov: &Provenance,
    opts: &Options,
    held: Option<&HeldOut>,
    out: &std::path::Path,
) -> Result<()> {
    let report = export::export(base, lora, prov, opts, held, out)?;
    eprintln!("exported {} to {}", opts.format.name(), out.display());
    for n in &report.notes {
        eprintln!("  {n}");
    }
    for (f, size) in &report.files {
        eprintln!("  {f} ({:.1} MB)", *size as f64 / 1e6);
    }
    println!("{}", out.display());
    Ok(())
}

/// Upload an export folder; on failure the folder stays where it is.
pub fn push(dir: &std::path::Path, repo: &str, private: bool) -> Result<()> {
    let mut opts = hub::PushOptions::new(repo);
    opts.private = private;
    opts.commit_message = format!("Upload {} with dpo-lora", dir.display());
    let r = hub::push_folder(dir, &opts)?;
    eprintln!(
        "pushed {} files ({:.1} MB, {} large files uploaded) to {}",
        r.files,
        r.bytes as f64 / 1e6,
        r.lfs_uploaded,
        r.repo_url
    );
    if !r.commit_url.is_empty() {
        eprintln!("commit {}", r.commit_url);
    }
    Ok(())
}

pub fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect();
    let mut s = args.join(" ");
    if let Some(first) = args.first() {
        let exe = PathBuf::from(first);
        if let Some(name) = exe.file_name() {
            s = s.replacen(first.as_str(), &name.to_string_lossy(), 1);
        }
    }
    s
}
