//! Training curves: a run's `metrics.jsonl` drawn as one PNG (and, in [`bars`], the grouped bar
//! charts of `dpo-lora bench`, which share the fonts and the atomic write).
//!
//! Owns: drawing three stacked panels (loss, rewards/accuracies with y fixed to 0..1,
//! rewards/margins) against `step`, from [`MetricPoint`]s read by [`metrics`]. Train is a thin
//! line, eval a thicker line with round markers; each panel's legend (kind and latest value) sits
//! in a strip to the right of its plot so it never covers a curve. Does not: write metrics or
//! decide when to redraw.
//!
//! Drawing rules: non-finite values are skipped; a single point draws as a dot (train) or a
//! marker (eval) mid-axis; a panel with no points says "no data yet", so an empty run still
//! gives a valid picture that a later call replaces. The PNG is written to a temporary file in
//! the output's folder and renamed over `out`, so a reader never sees a half-written plot.

pub mod bars;
pub mod metrics;

use std::error::Error;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

pub use bars::{plot_bars, BarPanel};
pub use metrics::{read_metrics, Kind, MetricPoint};

#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {msg}")]
    Line {
        path: PathBuf,
        line: usize,
        msg: String,
    },
    #[error("{path}: cannot draw the plot: {msg}")]
    Draw { path: PathBuf, msg: String },
    #[error("{path}: cannot write the plot: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The three panels, top to bottom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Panel {
    Loss,
    Accuracies,
    Margins,
}

impl Panel {
    const ALL: [Panel; 3] = [Panel::Loss, Panel::Accuracies, Panel::Margins];

    fn key(self) -> &'static str {
        match self {
            Panel::Loss => "loss",
            Panel::Accuracies => "rewards/accuracies",
            Panel::Margins => "rewards/margins",
        }
    }

    fn value(self, p: &MetricPoint) -> Option<f64> {
        match self {
            Panel::Loss => p.loss,
            Panel::Accuracies => p.rewards_accuracies,
            Panel::Margins => p.rewards_margins,
        }
    }

    /// Finite `(step, value)` pairs of one kind, in input order.
    fn series(self, metrics: &[MetricPoint], kind: Kind) -> Vec<(i64, f64)> {
        metrics
            .iter()
            .filter(|p| p.kind == kind)
            .filter_map(|p| Some((x_of(p.step), self.value(p).filter(|v| v.is_finite())?)))
            .collect()
    }

    fn y_range(self, values: impl Iterator<Item = f64>) -> Range<f64> {
        match self {
            // A fraction: a fixed axis makes runs comparable at a glance; the sliver past 0
            // and 1 keeps a curve sitting at 1.0 off the frame.
            Panel::Accuracies => -0.02..1.02,
            Panel::Loss | Panel::Margins => padded_range(values),
        }
    }
}

/// min..max of finite values with 5% headroom; a flat or empty series gets a visible band.
fn padded_range(values: impl Iterator<Item = f64>) -> Range<f64> {
    // Beyond this the span (hi - lo) overflows to inf and plotters' tick search never ends.
    const LIMIT: f64 = 1e300;
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .map(|v| v.clamp(-LIMIT, LIMIT))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return 0.0..1.0;
    }
    let pad = if hi > lo {
        (hi - lo) * 0.05
    } else {
        (lo.abs() * 0.05).max(0.05)
    };
    lo - pad..hi + pad
}

/// x coordinate of a step: signed so that a lone step 0 can sit mid-axis (-1..1). Capped at
/// 2^53 (no run gets there) because plotters' integer tick search overflows near i64::MAX.
fn x_of(step: u64) -> i64 {
    const CAP: u64 = 1 << 53;
    step.min(CAP) as i64
}

/// The shared x axis: every step of either kind, padded by one step when there is only one.
fn step_range(metrics: &[MetricPoint]) -> Range<i64> {
    let steps = || metrics.iter().map(|p| x_of(p.step));
    match (steps().min(), steps().max()) {
        (Some(lo), Some(hi)) if lo < hi => lo..hi,
        (Some(x), _) => x - 1..x.saturating_add(1),
        (None, _) => 0..1,
    }
}

pub(crate) const WIDTH: u32 = 1200;
const HEIGHT: u32 = 900;
pub(crate) const TITLE_H: u32 = 50;
const LEGEND_W: u32 = 160;
const TRAIN_COLOR: RGBColor = RGBColor(31, 119, 180);
const EVAL_COLOR: RGBColor = RGBColor(230, 97, 0);
pub(crate) const FONT: &str = "sans-serif";

/// Register DejaVu Sans as `sans-serif` once: the ab_glyph backend has no system font lookup,
/// and a machine may have no fonts installed.
pub(crate) fn register_fonts() -> Result<(), String> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let fonts = [
            (FontStyle::Normal, dejavu::sans::regular()),
            (FontStyle::Bold, dejavu::sans::bold()),
        ];
        for (style, bytes) in fonts {
            plotters::style::register_font(FONT, style, bytes).map_err(|_| {
                format!(
                    "embedded DejaVu Sans {} is not a valid font",
                    style.as_str()
                )
            })?;
        }
        Ok(())
    })
    .clone()
}

/// Draw `metrics` (any number, any order) as a `WIDTH`x`HEIGHT` PNG at `out`, titled `title`.
/// The file is always PNG-encoded whatever `out`'s extension; it replaces `out` atomically.
pub fn plot_run(metrics: &[MetricPoint], title: &str, out: &Path) -> Result<(), PlotError> {
    let draw_err = |msg: String| PlotError::Draw {
        path: out.to_path_buf(),
        msg,
    };
    register_fonts().map_err(draw_err)?;
    let staged = crate::atomic::StagedPath::new(out).map_err(|source| PlotError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let tmp = staged.path();
    draw(metrics, title, tmp).map_err(|e| draw_err(e.to_string()))?;
    staged.commit().map_err(|source| PlotError::Write {
        path: out.to_path_buf(),
        source,
    })
}

fn draw(metrics: &[MetricPoint], title: &str, path: &Path) -> Result<(), Box<dyn Error>> {
    let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(TITLE_H);
    let centered = Pos::new(HPos::Center, VPos::Center);
    let title_style = TextStyle::from((FONT, 26).into_font().style(FontStyle::Bold)).pos(centered);
    header.draw_text(title, &title_style, (WIDTH as i32 / 2, TITLE_H as i32 / 2))?;
    let x = step_range(metrics);
    for (panel, area) in Panel::ALL.into_iter().zip(body.split_evenly((3, 1))) {
        draw_panel(panel, metrics, x.clone(), &area)?;
    }
    root.present()?;
    Ok(())
}

fn draw_panel(
    panel: Panel,
    metrics: &[MetricPoint],
    x: Range<i64>,
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
) -> Result<(), Box<dyn Error>> {
    let (plot_area, legend_area) = area.split_horizontally(WIDTH - LEGEND_W);
    let mut train = panel.series(metrics, Kind::Train);
    let mut eval = panel.series(metrics, Kind::Eval);
    let y = panel.y_range(train.iter().chain(&eval).map(|&(_, v)| v));
    let last = |s: &[(i64, f64)]| s.last().map(|&(_, v)| v);
    let (last_train, last_eval) = (last(&train), last(&eval));
    // Out-of-range values (an accuracy of 7, or beyond padded_range's limit) sit on the frame:
    // plotters maps a far-off value to a pixel offset that overflows i32.
    for (_, v) in train.iter_mut().chain(eval.iter_mut()) {
        *v = v.clamp(y.start, y.end);
    }

    let mut chart = ChartBuilder::on(&plot_area)
        .margin(8)
        .x_label_area_size(38)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)?;
    chart
        .configure_mesh()
        .x_desc("step")
        .y_desc(panel.key())
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 16))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;

    if train.is_empty() && eval.is_empty() {
        let inside = chart.plotting_area().strip_coord_spec();
        let (w, h) = inside.dim_in_pixel();
        let style = (FONT, 22).into_font().color(&RGBColor(120, 120, 120));
        inside.draw_text(
            "no data yet",
            &style.pos(Pos::new(HPos::Center, VPos::Center)),
            (w as i32 / 2, h as i32 / 2),
        )?;
    }
    chart.draw_series(LineSeries::new(train.iter().copied(), TRAIN_COLOR))?;
    if let [only] = train[..] {
        // A one-point line draws nothing.
        chart.draw_series([Circle::new(only, 3, TRAIN_COLOR.filled())])?;
    }
    chart.draw_series(LineSeries::new(
        eval.iter().copied(),
        EVAL_COLOR.stroke_width(2),
    ))?;
    chart.draw_series(eval.iter().map(|&p| Circle::new(p, 4, EVAL_COLOR.filled())))?;

    draw_legend(&legend_area, last_train, last_eval)?;
    Ok(())
}

/// Legend in its own strip: a line sample, the kind, and its latest (unclamped) value.
fn draw_legend(
    area: &DrawingArea<BitMapBackend, plotters::coord::Shift>,
    last_train: Option<f64>,
    last_eval: Option<f64>,
) -> Result<(), Box<dyn Error>> {
    let text = TextStyle::from((FONT, 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let label = |name: &str, last: Option<f64>| match last {
        Some(v) if v == 0.0 || (1e-3..1e4).contains(&v.abs()) => format!("{name} {v:.3}"),
        Some(v) => format!("{name} {v:.2e}"),
        None => name.to_string(),
    };
    let (y_train, y_eval) = (30, 56);
    area.draw(&PathElement::new(
        [(8, y_train), (38, y_train)],
        TRAIN_COLOR,
    ))?;
    area.draw_text(&label("train", last_train), &text, (46, y_train))?;
    area.draw(&PathElement::new(
        [(8, y_eval), (38, y_eval)],
        EVAL_COLOR.stroke_width(2),
    ))?;
    area.draw(&Circle::new((23, y_eval), 4, EVAL_COLOR.filled()))?;
    area.draw_text(&label("eval", last_eval), &text, (46, y_eval))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decode `path` and count, per panel, plot-area pixels (legend strip excluded) of the train
    /// hue (blue) and of the eval hue (orange); axes, grid and text are grey or black.
    fn colour_counts(path: &Path) -> Vec<(usize, usize)> {
        let decoder = png::Decoder::new(std::fs::File::open(path).unwrap());
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!((info.width, info.height), (WIDTH, HEIGHT));
        assert_eq!(info.color_type, png::ColorType::Rgb);
        let panel_h = (HEIGHT - TITLE_H) / 3;
        (0..3)
            .map(|i| {
                let rows = TITLE_H + i * panel_h..TITLE_H + (i + 1) * panel_h;
                let mut n = (0, 0);
                for y in rows {
                    for x in 0..WIDTH - LEGEND_W {
                        let o = ((y * WIDTH + x) * 3) as usize;
                        let [r, g, b] = [buf[o], buf[o + 1], buf[o + 2]].map(i32::from);
                        // By hue, not exact colour: small markers are all anti-aliased edge.
                        n.0 += usize::from(b > r + 40 && b > g);
                        n.1 += usize::from(r > b + 80 && r > g + 40);
                    }
                }
                n
            })
            .collect()
    }

    /// A plausible run: loss falls from ln 2, accuracy and margin rise; eval every 25 steps.
    fn run(n_steps: u64) -> Vec<MetricPoint> {
        let mut out = Vec::new();
        for step in 1..=n_steps {
            let t = step as f64 / n_steps as f64;
            let wiggle = 0.05 * (step as f64 * 0.7).sin();
            let mut p = MetricPoint::new(Kind::Train, step);
            p.loss = Some(0.693 * (1.0 - 0.6 * t) + wiggle);
            p.rewards_accuracies = Some((0.5 + 0.45 * t + wiggle).clamp(0.0, 1.0));
            p.rewards_margins = Some(2.0 * t + wiggle);
            out.push(p);
            if step % 25 == 0 {
                let mut e = MetricPoint::new(Kind::Eval, step);
                e.loss = Some(0.693 * (1.0 - 0.5 * t));
                e.rewards_accuracies = Some(0.5 + 0.4 * t);
                e.rewards_margins = Some(1.7 * t);
                out.push(e);
            }
        }
        out
    }

    #[test]
    fn every_panel_draws_train_and_eval() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("plot.png");
        plot_run(&run(200), "tiny-llama / dpo / β=0.1", &out).unwrap();
        for (i, (train, eval)) in colour_counts(&out).into_iter().enumerate() {
            assert!(
                train > 200 && eval > 100,
                "panel {i}: {train} train, {eval} eval px"
            );
        }
        // Only the plot is left: the temporary file was renamed, not copied.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn empty_run_draws_empty_panels() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("plot.png");
        plot_run(&[], "no steps yet", &out).unwrap();
        assert_eq!(colour_counts(&out), vec![(0, 0); 3]);
    }

    #[test]
    fn a_single_point_is_visible() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("plot.png");
        let mut train = MetricPoint::new(Kind::Train, 0);
        (train.loss, train.rewards_accuracies, train.rewards_margins) =
            (Some(0.69), Some(1.0), Some(0.0));
        let mut eval = MetricPoint::new(Kind::Eval, 0);
        // Apart from the train point: an eval marker drawn on top would hide it.
        (eval.loss, eval.rewards_accuracies, eval.rewards_margins) =
            (Some(0.5), Some(0.5), Some(1.0));
        for metrics in [vec![train], vec![train, eval]] {
            plot_run(&metrics, "one step", &out).unwrap();
            for (i, (t, e)) in colour_counts(&out).into_iter().enumerate() {
                assert!(t > 0, "panel {i}: the train point is missing");
                assert_eq!(e > 0, metrics.len() == 2, "panel {i}: {e} eval px");
            }
        }
    }

    #[test]
    fn non_finite_and_extreme_values_do_not_panic() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("plot.png");
        let values = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY];
        let mut metrics: Vec<_> = (0..3)
            .map(|i| {
                let mut p = MetricPoint::new(Kind::Train, i);
                (p.loss, p.rewards_accuracies, p.rewards_margins) =
                    (Some(values[i as usize]), Some(f64::NAN), None);
                p
            })
            .collect();
        plot_run(&metrics, "nothing finite", &out).unwrap();
        assert_eq!(colour_counts(&out), vec![(0, 0); 3]);

        for (i, v) in [f64::MAX, -f64::MAX, 1e-300].into_iter().enumerate() {
            let mut p = MetricPoint::new(Kind::Eval, u64::MAX - i as u64);
            (p.loss, p.rewards_accuracies, p.rewards_margins) = (Some(v), Some(v), Some(v));
            metrics.push(p);
        }
        plot_run(&metrics, "extremes", &out).unwrap();
    }

    #[test]
    fn thousands_of_points_and_redraws_replace_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("plot.png");
        plot_run(&run(10), "short", &out).unwrap();
        let small = std::fs::metadata(&out).unwrap().len();
        plot_run(&run(5000), "long", &out).unwrap();
        let large = std::fs::metadata(&out).unwrap().len();
        assert_ne!(small, large, "the second plot did not replace the first");
        assert!(colour_counts(&out).iter().all(|&(t, e)| t > 0 && e > 0));
    }

    #[test]
    fn a_folder_that_does_not_exist_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("missing").join("plot.png");
        let err = plot_run(&run(5), "x", &out).unwrap_err();
        assert!(
            err.to_string().starts_with(&out.display().to_string()),
            "{err}"
        );
    }
}
