//! `dpo-lora bench --model MODEL.gguf [--workloads long,short] [--modes ...] [--steps N]`.

use anyhow::{Context, Result};

use crate::bench::{self, Mode, Workload};
use crate::cli::BenchArgs;
use crate::train::memory::KeepName;

pub fn run(a: BenchArgs) -> Result<()> {
    let workloads = bench::parse_list(
        "workloads",
        &a.workloads,
        &Workload::ALL,
        Workload::parse,
        Workload::name,
    )?;
    let modes = bench::parse_list("modes", &a.modes, &Mode::ALL, Mode::parse, Mode::name)?;
    let keeps = bench::parse_list(
        "keep",
        &a.keep,
        &KeepName::FASTEST_FIRST,
        KeepName::parse,
        KeepName::name,
    )?;
    if let Some(child) = &a.child {
        let mode =
            Mode::parse(child).with_context(|| format!("--child: unknown mode `{child}`"))?;
        let data = a
            .child_data
            .as_deref()
            .context("--child needs --child-data")?;
        return bench::child(&bench::measure::Job {
            model: &a.model,
            device: a.device,
            dtype: a.dtype,
            backend: a.backend,
            gradient_checkpointing: !a.no_gradient_checkpointing,
            prefix_sharing: !a.no_prefix_sharing,
            mode,
            keep: keeps[0],
            workload: workloads[0],
            data,
            warmup: a.warmup,
            steps: a.steps,
        });
    }
    a.device.open_and_report()?;
    let opts = bench::Options {
        model: a.model,
        device: a.device,
        dtype: a.dtype,
        backend: a.backend,
        gradient_checkpointing: !a.no_gradient_checkpointing,
        prefix_sharing: !a.no_prefix_sharing,
        workloads,
        modes,
        keeps,
        warmup: a.warmup,
        steps: a.steps,
        out: a.out,
        progress: !a.quiet,
    };
    let (report, out) = bench::run(&opts)?;
    print!("{}", bench::report::table(&report));
    println!(
        "matrix-product peak (f32, {} threads): {:.1} GFLOP/s",
        report.threads, report.matmul_peak_gflops
    );
    for c in bench::report::checks(&report) {
        println!("{c}");
    }
    eprintln!(
        "bench: {} written in {}",
        ["bench.json", "bench.md", "bench.png"].join(", "),
        out.display()
    );
    Ok(())
}
