//! Charts of a results directory, each as SVG (for the published report) and
//! PNG (for looking at): per scenario, delivery latency and deliveries per
//! second over the load, every peer in one chart; and the server's memory
//! against idle connections.
//!
//! Text is drawn with the DejaVu Sans font shipped in `assets/`, so the
//! charts need no system fonts.

use std::{collections::BTreeMap, ops::Range, path::Path};

use anyhow::Context as _;
use plotters::{
    coord::{
        Shift,
        ranged1d::{AsRangedCoord, ValueFormatter},
    },
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use crate::results::{RunResult, Second};

const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const SIZE: (u32, u32) = (1000, 560);
/// Use a log latency axis when the largest value is this many times the
/// smallest.
const LOG_SPAN: f64 = 20.0;

/// What a chart shows, independent of the backend that draws it.
struct Chart {
    title: String,
    x_desc: String,
    y_desc: String,
    log_y: bool,
    series: Vec<Series>,
}

struct Series {
    label: String,
    color: RGBColor,
    line: Line,
    points: Vec<(f64, f64)>,
}

#[derive(Clone, Copy)]
enum Line {
    Bold,
    Dashed,
    Faint,
}

/// Writes `latency-<scenario>`, `throughput-<scenario>` and `rss-idle`, as
/// `.svg` and `.png`, skipping charts without data.
pub fn draw(results: &[RunResult], dir: &Path) -> anyhow::Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow::anyhow!("the shipped DejaVu Sans font does not load"))?;
    let mut by_scenario: BTreeMap<&str, Vec<&RunResult>> = BTreeMap::new();
    for r in results {
        by_scenario.entry(&r.scenario).or_default().push(r);
    }
    for (scenario, runs) in &by_scenario {
        save(dir, &format!("latency-{scenario}"), latency(scenario, runs))?;
        save(
            dir,
            &format!("throughput-{scenario}"),
            throughput(scenario, runs),
        )?;
    }
    if let Some(idle) = by_scenario.get("idle") {
        save(dir, "rss-idle", rss(idle))?;
    }
    Ok(())
}

/// A latency line: its name, its style and its value in a [`Second`].
type Percentile = (&'static str, Line, fn(&Second) -> f64);

const PERCENTILES: [Percentile; 3] = [
    ("p99", Line::Bold, |s| s.p99_ms),
    ("p50", Line::Dashed, |s| s.p50_ms),
    ("max", Line::Faint, |s| s.max_ms),
];

/// Delivery latency p50 / p99 / max per second (per step for `ramp`).
fn latency(scenario: &str, runs: &[&RunResult]) -> Chart {
    let mut series = Vec::new();
    for r in runs {
        let seconds = || r.timeline.iter().filter(|s| s.deliveries > 0);
        for (name, line, pick) in PERCENTILES {
            series.push(Series {
                label: format!("{} {name}", peer_name(&r.peer)),
                color: peer_color(&r.peer),
                line,
                points: seconds().map(|s| (f64::from(s.t), pick(s))).collect(),
            });
        }
    }
    let values = series.iter().flat_map(|s| &s.points).map(|p| p.1);
    let (min, max) = values.fold((f64::MAX, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let log_y = min > 0.0 && max / min >= LOG_SPAN;
    Chart {
        title: format!("{scenario}: delivery latency {}", per(scenario)),
        x_desc: x_desc(scenario, runs),
        y_desc: format!(
            "delivery latency (ms{})",
            if log_y { ", log scale" } else { "" }
        ),
        log_y,
        series,
    }
}

/// Deliveries per second over the load (each step's mean for `ramp`).
fn throughput(scenario: &str, runs: &[&RunResult]) -> Chart {
    let series = runs
        .iter()
        .map(|r| {
            // A ramp's timeline holds one entry per step of `step_seconds`.
            let span = match scenario {
                "ramp" => r.config["step_seconds"].as_f64().unwrap_or(1.0),
                _ => 1.0,
            };
            Series {
                label: peer_name(&r.peer).to_string(),
                color: peer_color(&r.peer),
                line: Line::Bold,
                points: r
                    .timeline
                    .iter()
                    .map(|s| (f64::from(s.t), s.deliveries as f64 / span))
                    .collect(),
            }
        })
        .collect();
    Chart {
        title: format!("{scenario}: deliveries per second {}", per(scenario)),
        x_desc: x_desc(scenario, runs),
        y_desc: "deliveries/s".to_string(),
        log_y: false,
        series,
    }
}

/// Server RSS against open idle connections.
fn rss(runs: &[&RunResult]) -> Chart {
    let series = runs
        .iter()
        .map(|r| Series {
            label: match r.rss_per_connection_bytes {
                Some(b) => format!(
                    "{} ({:.2} KiB per connection)",
                    peer_name(&r.peer),
                    b / 1024.0
                ),
                None => peer_name(&r.peer).to_string(),
            },
            color: peer_color(&r.peer),
            line: Line::Bold,
            points: r
                .rss_curve
                .iter()
                .map(|p| (p.connections as f64, p.rss_kib as f64 / 1024.0))
                .collect(),
        })
        .collect();
    Chart {
        title: "idle: server memory as connections open".to_string(),
        x_desc: "open connections".to_string(),
        y_desc: "server RSS (MiB)".to_string(),
        log_y: false,
        series,
    }
}

fn per(scenario: &str) -> &'static str {
    if scenario == "ramp" {
        "at each step"
    } else {
        "in each second"
    }
}

fn x_desc(scenario: &str, runs: &[&RunResult]) -> String {
    if scenario != "ramp" {
        return "seconds since the load started".to_string();
    }
    let config = runs.first().map(|r| &r.config);
    match config.map(|c| (c["start_rate"].as_f64(), c["factor"].as_f64())) {
        Some((Some(start), Some(factor))) => {
            format!("ramp step (sends/s = {start} × {factor}^step)")
        }
        _ => "ramp step".to_string(),
    }
}

fn peer_name(peer: &str) -> &str {
    match peer {
        "socketio" => "Socket.IO",
        other => other,
    }
}

fn peer_color(peer: &str) -> RGBColor {
    match peer {
        "natter" => RGBColor(31, 119, 180),
        "socketio" => RGBColor(230, 110, 0),
        _ => RGBColor(90, 90, 90),
    }
}

/// Draws `chart` to `<name>.svg` and `<name>.png` in `dir`, unless it has no
/// points.
fn save(dir: &Path, name: &str, chart: Chart) -> anyhow::Result<()> {
    if chart.series.iter().all(|s| s.points.is_empty()) {
        return Ok(());
    }
    let svg = dir.join(format!("{name}.svg"));
    render(SVGBackend::new(&svg, SIZE).into_drawing_area(), &chart)
        .with_context(|| format!("draw {}", svg.display()))?;
    let png = dir.join(format!("{name}.png"));
    render(BitMapBackend::new(&png, SIZE).into_drawing_area(), &chart)
        .with_context(|| format!("draw {}", png.display()))
}

fn render<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, chart: &Chart) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    let points = || chart.series.iter().flat_map(|s| &s.points);
    let x_max = points().map(|p| p.0).fold(1.0, f64::max);
    let y_max = points().map(|p| p.1).fold(0.0, f64::max);
    let x = 0.0..x_max;
    if chart.log_y {
        let y_min = points().map(|p| p.1).fold(f64::MAX, f64::min);
        let decade = |v: f64, round: fn(f64) -> f64| 10f64.powf(round(v.log10()));
        let y = (decade(y_min, f64::floor)..decade(y_max, f64::ceil)).log_scale();
        plot(&root, chart, x, y)?;
    } else {
        plot(&root, chart, x, 0.0..(y_max * 1.1).max(1e-3))?;
    }
    root.present()?;
    Ok(())
}

/// The shared styling: white background, title, labelled axes with compact
/// numbers, one line per series, and the legend right of the plot, where it
/// hides no data.
fn plot<DB, Y>(
    root: &DrawingArea<DB, Shift>,
    chart: &Chart,
    x: Range<f64>,
    y: Y,
) -> anyhow::Result<()>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    root.fill(&WHITE)?;
    let area = root
        .margin(10, 0, 0, 0)
        .titled(&chart.title, ("sans-serif", 24))?;
    let label_font =
        TextStyle::from(("sans-serif", 14).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let legend_width = chart
        .series
        .iter()
        .filter_map(|s| label_font.font.box_size(&s.label).ok())
        .map(|(w, _)| w)
        .max()
        .unwrap_or(0)
        + 64;
    let (plot_area, legend) =
        area.split_horizontally(area.dim_in_pixel().0.saturating_sub(legend_width));

    let x_labels = (x.end - x.start + 1.0).clamp(2.0, 12.0) as usize;
    let mut ctx = ChartBuilder::on(&plot_area)
        .margin(16)
        .x_label_area_size(52)
        .y_label_area_size(78)
        .build_cartesian_2d(x, y)?;
    ctx.configure_mesh()
        .x_desc(&chart.x_desc)
        .y_desc(&chart.y_desc)
        .axis_desc_style(("sans-serif", 17))
        .label_style(("sans-serif", 14))
        .x_labels(x_labels)
        .x_label_formatter(&compact)
        .y_label_formatter(&compact)
        .light_line_style(BLACK.mix(0.05))
        .draw()?;
    for (i, s) in chart.series.iter().enumerate() {
        let style = match s.line {
            Line::Bold => s.color.stroke_width(3),
            Line::Dashed => s.color.stroke_width(2),
            Line::Faint => s.color.mix(0.4).stroke_width(2),
        };
        let points = s.points.iter().copied();
        match s.line {
            Line::Dashed => ctx.draw_series(DashedLineSeries::new(points, 8, 5, style))?,
            Line::Bold => ctx.draw_series(LineSeries::new(points, style).point_size(3))?,
            Line::Faint => ctx.draw_series(LineSeries::new(points, style))?,
        };
        // The legend entry: a sample of the line (with a gap when dashed)
        // and the label.
        let gap = if matches!(s.line, Line::Dashed) { 6 } else { 0 };
        legend.draw(
            &(EmptyElement::at((8, 24 + 24 * i as i32))
                + PathElement::new(vec![(0, 0), (11, 0)], style)
                + PathElement::new(vec![(11 + gap, 0), (28, 0)], style)
                + Text::new(s.label.clone(), (38, 0), label_font.clone())),
        )?;
    }
    Ok(())
}

/// `0.25`, `1.5`, `2.5k`, `18k`, `1.2M`: tick labels without noise.
fn compact(v: &f64) -> String {
    let (n, suffix) = match v.abs() {
        a if a >= 1e6 => (v / 1e6, "M"),
        a if a >= 1e3 => (v / 1e3, "k"),
        _ => (*v, ""),
    };
    let text = format!("{n:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    format!("{text}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::compact;

    #[test]
    fn compact_labels() {
        let labels: Vec<String> = [0.0, 0.25, 1.5, 2500.0, 18_000.0, 150_000.0, 1_200_000.0]
            .iter()
            .map(compact)
            .collect();
        assert_eq!(labels, ["0", "0.25", "1.5", "2.5k", "18k", "150k", "1.2M"]);
    }
}
