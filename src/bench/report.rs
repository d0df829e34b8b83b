//! The bench report: a plain-text table (stdout), `bench.json` ([`Report`]), `bench.md` (the same
//! table plus the checks the issue asks for) and `bench.png` (step time, tokens/s and peak RSS
//! per mode, one colour per workload).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::{Mode, Report, Row};
use crate::plot::{plot_bars, BarPanel};

fn opt(v: Option<f64>, prec: usize) -> String {
    v.filter(|x| x.is_finite())
        .map_or("-".into(), |x| format!("{x:.prec$}"))
}

const HEADER: [&str; 11] = [
    "workload",
    "mode",
    "keep",
    "step s (median)",
    "tokens/s",
    "peak RSS MiB",
    "planned MiB",
    "measured / planned",
    "GFLOP/step",
    "GFLOP/s",
    "% of matmul peak",
];

fn cells(r: &Row) -> [String; 11] {
    [
        r.workload.clone(),
        r.mode.clone(),
        r.keep.clone().unwrap_or_else(|| "-".into()),
        format!("{:.3}", r.step_s_median),
        format!("{:.1}", r.tokens_per_s),
        format!("{:.0}", r.peak_rss_mib),
        opt(r.predicted_peak_mib, 0),
        opt(r.predicted_peak_mib.map(|p| r.peak_rss_mib / p), 2),
        opt(r.gflop_per_step, 1),
        opt(r.gflops, 1),
        opt(r.peak_share.map(|s| s * 100.0), 1),
    ]
}

/// The results as an aligned text table.
pub fn table(rep: &Report) -> String {
    let rows: Vec<[String; 11]> = rep.results.iter().map(cells).collect();
    let mut w = HEADER.map(str::len);
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |c: &[String]| {
        c.iter()
            .enumerate()
            .map(|(i, s)| {
                if i < 3 {
                    format!("{s:<width$}", width = w[i])
                } else {
                    format!("{s:>width$}", width = w[i])
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = line(&HEADER.map(String::from));
    out.push('\n');
    for r in &rows {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

/// A mode's row on a workload at a keep level (`None`: without checkpointing).
fn find<'a>(rep: &'a Report, workload: &str, keep: Option<&str>, mode: &str) -> Option<&'a Row> {
    rep.results
        .iter()
        .find(|r| r.workload == workload && r.keep.as_deref() == keep && r.mode == mode)
}

/// The distinct values of `f` over the rows, in order of first appearance.
fn distinct<T: PartialEq>(rep: &Report, f: impl Fn(&Row) -> T) -> Vec<T> {
    let mut v = Vec::new();
    for r in &rep.results {
        let x = f(r);
        if !v.contains(&x) {
            v.push(x);
        }
    }
    v
}

/// The design checks, per workload and keep level: b's peak RSS <= 1.05 x a's, c's step <= 1.1 x
/// a's, what a second copy costs, and the plan against the measured peaks.
pub fn checks(rep: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let keeps = distinct(rep, |r| r.keep.clone());
    for w in distinct(rep, |r| r.workload.clone()) {
        for keep in &keeps {
            let k = keep.as_deref();
            let at = keep
                .as_ref()
                .filter(|_| keeps.len() > 1)
                .map(|k| format!(" (keep {k})"))
                .unwrap_or_default();
            let a = find(rep, &w, k, Mode::PolicyOnly.name());
            if let (Some(a), Some(b)) = (a, find(rep, &w, k, Mode::AdaptersOff.name())) {
                let r = b.peak_rss_mib / a.peak_rss_mib;
                out.push(format!(
                    "{w}{at}: peak RSS dpo-adapters-off / policy-only = {r:.3} (target <= 1.05: {})",
                    if r <= 1.05 { "holds" } else { "does not hold" }
                ));
            }
            if let (Some(a), Some(c)) = (a, find(rep, &w, k, Mode::Precomputed.name())) {
                let r = c.step_s_median / a.step_s_median;
                out.push(format!(
                    "{w}{at}: step time dpo-precomputed / policy-only = {r:.3} (target <= 1.1: {})",
                    if r <= 1.1 { "holds" } else { "does not hold" }
                ));
            }
            if let (Some(b), Some(d)) = (
                find(rep, &w, k, Mode::AdaptersOff.name()),
                find(rep, &w, k, Mode::SecondCopy.name()),
            ) {
                out.push(format!(
                    "{w}{at}: a second copy of the base as reference costs {:+.0} MiB peak RSS over adapters-off",
                    d.peak_rss_mib - b.peak_rss_mib
                ));
            }
        }
    }
    let ratios: Vec<f64> = rep
        .results
        .iter()
        .filter_map(|r| r.predicted_peak_mib.map(|p| r.peak_rss_mib / p))
        .filter(|x| x.is_finite())
        .collect();
    if let (Some(lo), Some(hi)) = (
        ratios.iter().copied().reduce(f64::min),
        ratios.iter().copied().reduce(f64::max),
    ) {
        let within = ratios.iter().all(|r| (r - 1.0).abs() <= 0.15);
        out.push(format!(
            "memory plan: measured / planned peak from {lo:.2} to {hi:.2} over {} rows (target within 15 %: {})",
            ratios.len(),
            if within { "holds" } else { "does not hold" }
        ));
    }
    out
}

fn markdown(rep: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# dpo-lora bench: {}\n", rep.model);
    let _ = writeln!(
        s,
        "{} threads; f32 matrix-product peak {:.1} GFLOP/s (the best of m x n x k: {}); settings `{}`.\n",
        rep.threads,
        rep.matmul_peak_gflops,
        rep.matmul
            .iter()
            .map(|p| format!("{}x{}x{}: {:.1}", p.m, p.n, p.k, p.gflops))
            .collect::<Vec<_>>()
            .join(", "),
        rep.settings
    );
    let _ = writeln!(s, "| {} |", HEADER.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(HEADER.len()));
    for r in &rep.results {
        let _ = writeln!(s, "| {} |", cells(r).join(" | "));
    }
    let _ = writeln!(s);
    for c in checks(rep) {
        let _ = writeln!(s, "- {c}");
    }
    let _ = writeln!(s, "\nModes:\n");
    let mut seen: Vec<&str> = Vec::new();
    for r in &rep.results {
        if !seen.contains(&r.mode.as_str()) {
            seen.push(&r.mode);
            let _ = writeln!(s, "- `{}`: {}", r.mode, r.what);
        }
    }
    if let Some(w) = rep.workloads.as_object() {
        let _ = writeln!(s, "\nWorkloads:\n");
        for (name, v) in w {
            let _ = writeln!(s, "- `{name}`: {}", v["describe"].as_str().unwrap_or(""));
        }
    }
    s
}

fn chart(rep: &Report, out: &Path) -> Result<()> {
    let several_keeps = distinct(rep, |r| r.keep.clone()).len() > 1;
    let labels = distinct(rep, |r| r.label(several_keeps));
    let workloads = distinct(rep, |r| r.workload.clone());
    let panel = |caption: &str, f: fn(&Row) -> f64| BarPanel {
        caption: caption.to_string(),
        series: workloads
            .iter()
            .map(|w| {
                let vals = labels
                    .iter()
                    .map(|l| {
                        rep.results
                            .iter()
                            .find(|r| &r.workload == w && &r.label(several_keeps) == l)
                            .map(f)
                    })
                    .collect::<Vec<_>>();
                (w.clone(), vals)
            })
            .collect(),
    };
    let panels = [
        panel("step time, s (median)", |r| r.step_s_median),
        panel("tokens/s", |r| r.tokens_per_s),
        panel("peak RSS, MiB", |r| r.peak_rss_mib),
    ];
    plot_bars(
        &format!("dpo-lora bench: {} ({} threads)", rep.model, rep.threads),
        &labels,
        &panels,
        out,
    )?;
    Ok(())
}

/// `bench.json`, `bench.md` and `bench.png` in `dir`.
pub fn write_all(rep: &Report, dir: &Path) -> Result<()> {
    let json = dir.join("bench.json");
    crate::atomic::write_file(
        &json,
        (serde_json::to_string_pretty(rep)? + "\n").as_bytes(),
    )
    .with_context(|| format!("{}: cannot write", json.display()))?;
    let md = dir.join("bench.md");
    crate::atomic::write_file(&md, markdown(rep).as_bytes())
        .with_context(|| format!("{}: cannot write", md.display()))?;
    chart(rep, &dir.join("bench.png"))
}
