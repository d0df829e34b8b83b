//! Grouped bar charts (`dpo-lora bench`'s `bench.png`): one panel per quantity, one group of bars
//! per label (a bench mode), one colour per series (a workload), the value written above each bar.
//! A missing or non-finite value leaves a gap. Written atomically like the training curves.

use std::error::Error;
use std::path::Path;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{register_fonts, PlotError, FONT, TITLE_H, WIDTH};

/// One panel: a y-axis caption and, per series, one value per label.
pub struct BarPanel {
    pub caption: String,
    pub series: Vec<(String, Vec<Option<f64>>)>,
}

const PALETTE: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(230, 97, 0),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];
const PANEL_H: u32 = 300;

/// Draw `panels` stacked, sharing the x labels `labels`, as a PNG at `out`.
pub fn plot_bars(
    title: &str,
    labels: &[String],
    panels: &[BarPanel],
    out: &Path,
) -> Result<(), PlotError> {
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
    draw(title, labels, panels, tmp).map_err(|e| draw_err(e.to_string()))?;
    staged.commit().map_err(|source| PlotError::Write {
        path: out.to_path_buf(),
        source,
    })
}

fn fmt_value(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn draw(
    title: &str,
    labels: &[String],
    panels: &[BarPanel],
    path: &Path,
) -> Result<(), Box<dyn Error>> {
    let height = TITLE_H + PANEL_H * panels.len().max(1) as u32;
    let root = BitMapBackend::new(path, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(TITLE_H);
    let centered = Pos::new(HPos::Center, VPos::Center);
    let title_style = TextStyle::from((FONT, 22).into_font().style(FontStyle::Bold)).pos(centered);
    header.draw_text(title, &title_style, (WIDTH as i32 / 2, TITLE_H as i32 / 2))?;
    let n = labels.len().max(1);
    for (panel, area) in panels
        .iter()
        .zip(body.split_evenly((panels.len().max(1), 1)))
    {
        let max = panel
            .series
            .iter()
            .flat_map(|(_, v)| v.iter().flatten())
            .copied()
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max);
        // Headroom for the value labels and the legend in the upper right.
        let y_top = if max > 0.0 { max * 1.3 } else { 1.0 };
        let mut chart = ChartBuilder::on(&area)
            .margin(8)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..n as f64, 0.0..y_top)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_label_formatter(&|v| fmt_value(*v))
            .y_desc(panel.caption.as_str())
            .label_style((FONT, 13))
            .axis_desc_style((FONT, 15))
            .light_line_style(RGBColor(240, 240, 240))
            .draw()?;
        // Group labels under the axis, centred on each group (plotters' own x labels sit on
        // "nice" numbers, not on the groups).
        let (px, py) = chart.plotting_area().get_pixel_range();
        let (ax, ay) = area.get_pixel_range();
        let label_style =
            TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
        for (i, l) in labels.iter().enumerate() {
            let x = px.start + ((i as f64 + 0.5) / n as f64 * (px.end - px.start) as f64) as i32;
            area.draw_text(l, &label_style, (x - ax.start, py.end - ay.start + 8))?;
        }
        let k = panel.series.len().max(1);
        let w = 0.8 / k as f64;
        let above =
            TextStyle::from((FONT, 11).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
        for (j, (name, values)) in panel.series.iter().enumerate() {
            let colour = PALETTE[j % PALETTE.len()];
            let bars = values.iter().enumerate().filter_map(|(i, v)| {
                let v = (*v).filter(|v| v.is_finite())?;
                let x0 = i as f64 + 0.1 + j as f64 * w;
                Some((x0, v))
            });
            chart
                .draw_series(bars.clone().map(|(x0, v)| {
                    Rectangle::new([(x0, 0.0), (x0 + w * 0.92, v)], colour.filled())
                }))?
                .label(name.as_str())
                .legend(move |(px, py)| {
                    Rectangle::new([(px, py - 5), (px + 14, py + 5)], colour.filled())
                });
            chart.draw_series(
                bars.map(|(x0, v)| Text::new(fmt_value(v), (x0 + w * 0.46, v), above.clone())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font((FONT, 13))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
