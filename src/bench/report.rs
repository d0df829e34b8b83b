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

const HEADER: [&str; 8] = [
    "workload",
    "mode",
    "step s (median)",
    "tokens/s",
    "peak RSS MiB",
    "GFLOP/step",
    "GFLOP/s",
    "% of matmul peak",
];

fn cells(r: &Row) -> [String; 8] {
    [
        r.workload.clone(),
        r.mode.clone(),
        format!("{:.3}", r.step_s_median),
        format!("{:.1}", r.tokens_per_s),
        format!("{:.0}", r.peak_rss_mib),
        opt(r.gflop_per_step, 1),
        opt(r.gflops, 1),
        opt(r.peak_share.map(|s| s * 100.0), 1),
    ]
}

/// The results as an aligned text table.
pub fn table(rep: &Report) -> String {
    let rows: Vec<[String; 8]> = rep.results.iter().map(cells).collect();
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
                if i < 2 {
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

/// A mode's row on a workload.
fn find<'a>(rep: &'a Report, workload: &str, mode: &str) -> Option<&'a Row> {
    rep.results
        .iter()
        .find(|r| r.workload == workload && r.mode == mode)
}

/// The two design checks, per workload: b's peak RSS <= 1.05 x a's, c's step <= 1.1 x a's.
pub fn checks(rep: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let mut workloads: Vec<&str> = rep.results.iter().map(|r| r.workload.as_str()).collect();
    workloads.dedup();
    for w in workloads {
        let a = find(rep, w, Mode::PolicyOnly.name());
        if let (Some(a), Some(b)) = (a, find(rep, w, Mode::AdaptersOff.name())) {
            let r = b.peak_rss_mib / a.peak_rss_mib;
            out.push(format!(
                "{w}: peak RSS dpo-adapters-off / policy-only = {r:.3} (target <= 1.05: {})",
                if r <= 1.05 { "holds" } else { "does not hold" }
            ));
        }
        if let (Some(a), Some(c)) = (a, find(rep, w, Mode::Precomputed.name())) {
            let r = c.step_s_median / a.step_s_median;
            out.push(format!(
                "{w}: step time dpo-precomputed / policy-only = {r:.3} (target <= 1.1: {})",
                if r <= 1.1 { "holds" } else { "does not hold" }
            ));
        }
        if let (Some(b), Some(d)) = (
            find(rep, w, Mode::AdaptersOff.name()),
            find(rep, w, Mode::SecondCopy.name()),
        ) {
            out.push(format!(
                "{w}: a second copy of the base as reference costs {:+.0} MiB peak RSS over adapters-off",
                d.peak_rss_mib - b.peak_rss_mib
            ));
        }
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
    let mut labels: Vec<String> = Vec::new();
    let mut workloads: Vec<String> = Vec::new();
    for r in &rep.results {
        if !labels.contains(&r.mode) {
            labels.push(r.mode.clone());
        }
        if !workloads.contains(&r.workload) {
            workloads.push(r.workload.clone());
        }
    }
    let panel = |caption: &str, f: fn(&Row) -> f64| BarPanel {
        caption: caption.to_string(),
        series: workloads
            .iter()
            .map(|w| {
                let vals = labels
                    .iter()
                    .map(|m| find(rep, w, m).map(f))
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
