//! `pareto.svg`: every evaluated point and the Pareto front over the first two objectives.
//!
//! Drawn with plotters' SVG backend only. Without a font feature plotters sizes text with a
//! built-in estimate (0.45 × the font size per character) and the SVG backend writes each label as a
//! `<text>` element that the viewer renders with its own fonts, so labels need no font files.
//! An axis whose positive values span more than two decades is drawn in log10 scale, with
//! tick labels in the original units.

use std::path::Path;

/// One axis of the plot: the objective's metric and its direction.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotAxis {
    /// Metric name, used as the axis label.
    pub name: String,
    /// True when smaller is better (a `min:` objective).
    pub minimize: bool,
}

impl PlotAxis {
    pub fn new(name: impl Into<String>, minimize: bool) -> Self {
        PlotAxis { name: name.into(), minimize }
    }

    fn label(&self, log_scale: bool) -> String {
        let direction = if self.minimize { "lower is better" } else { "higher is better" };
        let scale = if log_scale { ", log scale" } else { "" };
        format!("{} ({direction}{scale})", self.name)
    }
}

/// The points to draw: `evaluated` contains every ok result, `front` the Pareto-optimal ones.
/// Points with a non-finite coordinate are skipped.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlotData {
    pub evaluated: Vec<(f64, f64)>,
    pub front: Vec<(f64, f64)>,
}

const WIDTH: u32 = 900;
const HEIGHT: u32 = 640;

/// Mapping from the values of one axis to plot coordinates.
#[derive(Debug, Clone, Copy)]
struct Scale {
    log: bool,
    low: f64,
    high: f64,
}

impl Scale {
    /// Chooses linear or log10 scale and a padded range for `values`.
    fn fit(values: impl Iterator<Item = f64> + Clone) -> Scale {
        let (min, max) = values.clone().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if !min.is_finite() {
            return Scale { log: false, low: 0.0, high: 1.0 };
        }
        let log = min > 0.0 && max / min > 100.0;
        let (lo, hi) = if log { (min.log10(), max.log10()) } else { (min, max) };
        let span = hi - lo;
        let pad = if span > 0.0 { span * 0.05 } else { lo.abs().max(1.0) * 0.05 };
        Scale { log, low: lo - pad, high: hi + pad }
    }

    fn to_plot(self, value: f64) -> f64 {
        if self.log {
            value.log10()
        } else {
            value
        }
    }

    fn to_value(self, plotted: f64) -> f64 {
        if self.log {
            10f64.powf(plotted)
        } else {
            plotted
        }
    }
}

/// Formats a tick value with about three significant digits and an SI-style suffix for large
/// magnitudes (`1.5M`, `320k`).
pub fn format_tick(value: f64) -> String {
    let magnitude = value.abs();
    let (scaled, suffix) = if magnitude >= 1e12 {
        (value / 1e12, "T")
    } else if magnitude >= 1e9 {
        (value / 1e9, "G")
    } else if magnitude >= 1e6 {
        (value / 1e6, "M")
    } else if magnitude >= 1e4 {
        (value / 1e3, "k")
    } else {
        (value, "")
    };
    let text = if scaled == 0.0 {
        "0".to_string()
    } else if scaled.abs() >= 100.0 {
        format!("{scaled:.0}")
    } else if scaled.abs() >= 10.0 {
        format!("{scaled:.1}")
    } else if scaled.abs() >= 0.01 {
        format!("{scaled:.2}")
    } else {
        format!("{scaled:.1e}")
    };
    let trimmed = if text.contains('.') && !text.contains('e') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    };
    format!("{trimmed}{suffix}")
}

/// Draws `data` on `x` and `y` and writes the SVG to `path`.
pub fn write_pareto_svg(path: &Path, x: &PlotAxis, y: &PlotAxis, data: &PlotData) -> crate::Result<()> {
    let svg = render_pareto_svg(x, y, data)?;
    std::fs::write(path, svg).map_err(|e| crate::Error::io(format!("cannot write {}", path.display()), e))
}

/// Draws `data` on `x` and `y` and returns the SVG text.
pub fn render_pareto_svg(x: &PlotAxis, y: &PlotAxis, data: &PlotData) -> crate::Result<String> {
    use plotters::prelude::*;

    let finite = |points: &[(f64, f64)]| -> Vec<(f64, f64)> {
        points.iter().copied().filter(|(a, b)| a.is_finite() && b.is_finite()).collect()
    };
    let evaluated = finite(&data.evaluated);
    let mut front = finite(&data.front);
    front.sort_by(|a, b| a.0.total_cmp(&b.0));

    let all = evaluated.iter().chain(front.iter());
    let x_scale = Scale::fit(all.clone().map(|p| p.0));
    let y_scale = Scale::fit(all.map(|p| p.1));
    for (axis, scale) in [(x, x_scale), (y, y_scale)] {
        // A range wider than f64 (values near ±1.8e308) would make the tick search loop forever.
        if !(scale.high - scale.low).is_finite() {
            return Err(crate::Error::Invalid(format!(
                "cannot plot {}: its values span more than a floating-point number can hold",
                axis.name
            )));
        }
    }
    // Scale::fit picks log10 only when every value is positive, so to_plot never sees v <= 0.
    let plot = |points: &[(f64, f64)]| -> Vec<(f64, f64)> {
        points.iter().map(|&(a, b)| (x_scale.to_plot(a), y_scale.to_plot(b))).collect()
    };

    let mut svg = String::new();
    {
        let draw_error = |e: &dyn std::fmt::Display| crate::Error::Other(format!("cannot draw pareto.svg: {e}"));
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| draw_error(&e))?;

        let title = format!("Pareto front: {} vs {}", y.name, x.name);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(x_scale.low..x_scale.high, y_scale.low..y_scale.high)
            .map_err(|e| draw_error(&e))?;

        let x_ticks = |v: &f64| format_tick(x_scale.to_value(*v));
        let y_ticks = |v: &f64| format_tick(y_scale.to_value(*v));
        chart
            .configure_mesh()
            .x_desc(x.label(x_scale.log))
            .y_desc(y.label(y_scale.log))
            .x_label_formatter(&x_ticks)
            .y_label_formatter(&y_ticks)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| draw_error(&e))?;

        let grey = RGBColor(150, 150, 150);
        chart
            .draw_series(plot(&evaluated).into_iter().map(|p| Circle::new(p, 3, grey.filled())))
            .map_err(|e| draw_error(&e))?
            .label(format!("evaluated ({})", evaluated.len()))
            .legend(move |(px, py)| Circle::new((px + 10, py), 3, grey.filled()));

        let red = RGBColor(200, 30, 30);
        let front_points = plot(&front);
        chart
            .draw_series(LineSeries::new(staircase(&front_points, x.minimize), red.stroke_width(1)))
            .map_err(|e| draw_error(&e))?;
        chart
            .draw_series(front_points.iter().map(|&p| Circle::new(p, 5, red.filled())))
            .map_err(|e| draw_error(&e))?
            .label(format!("Pareto front ({})", front.len()))
            .legend(move |(px, py)| Circle::new((px + 10, py), 5, red.filled()));

        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(|e| draw_error(&e))?;

        if evaluated.is_empty() && front.is_empty() {
            root.draw(&Text::new("no ok results to plot", ((WIDTH / 2 - 90) as i32, (HEIGHT / 2) as i32), ("sans-serif", 18)))
                .map_err(|e| draw_error(&e))?;
        }
        root.present().map_err(|e| draw_error(&e))?;
    }
    Ok(svg)
}

/// Builds the front's step line, which traces the boundary of the region the front dominates.
fn staircase(sorted_by_x: &[(f64, f64)], x_minimize: bool) -> Vec<(f64, f64)> {
    let mut line = Vec::with_capacity(sorted_by_x.len() * 2);
    for window in sorted_by_x.windows(2) {
        let (a, b) = (window[0], window[1]);
        line.push(a);
        // With x minimised the dominated region lies to the right of each point, so the step
        // runs right at a's height first. With x maximised it lies to the left, so the step
        // runs vertically at a's x first. The y direction does not change the corner.
        let corner = if x_minimize { (b.0, a.1) } else { (a.0, b.1) };
        line.push(corner);
    }
    if let Some(last) = sorted_by_x.last() {
        line.push(*last);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PlotData {
        PlotData {
            evaluated: vec![(1.0, 1.0e6), (2.0, 4.0e7), (3.0, 1.0e9), (2.5, 2.0e6), (f64::NAN, 1.0)],
            front: vec![(3.0, 1.0e9), (1.0, 1.0e6), (2.0, 4.0e7)],
        }
    }

    #[test]
    fn svg_has_text_labels() {
        let svg = render_pareto_svg(&PlotAxis::new("latency_decode_ms", true), &PlotAxis::new("decoder_params", false), &sample()).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..50.min(svg.len())]);
        assert!(svg.contains("<text"));
        assert!(svg.contains("latency_decode_ms (lower is better)"));
        assert!(svg.contains("decoder_params (higher is better, log scale)"));
        assert!(svg.contains("Pareto front (3)"));
        assert!(svg.contains("evaluated (4)"));
        // Tick labels show original units on the log axis (plotters puts each text on its own line).
        assert!(svg.contains("M\n</text>"), "no tick label in millions");
    }

    #[test]
    fn svg_draws_every_point() {
        let svg = render_pareto_svg(&PlotAxis::new("a", true), &PlotAxis::new("b", true), &sample()).unwrap();
        // 4 finite evaluated points, 3 front points, and one circle per legend entry.
        assert_eq!(svg.matches("<circle").count(), 4 + 3 + 2);
    }

    #[test]
    fn svg_without_points() {
        let svg = render_pareto_svg(&PlotAxis::new("a", true), &PlotAxis::new("b", true), &PlotData::default()).unwrap();
        assert!(svg.contains("no ok results to plot"));
    }

    /// Values near ±f64::MAX give a range of infinite width, which plotters' tick search never
    /// leaves; the chart is rejected instead.
    #[test]
    fn svg_rejects_overflowing_range() {
        let data = PlotData { evaluated: vec![(1.7e308, 1.0), (-1.7e308, 2.0)], front: vec![(-1.7e308, 2.0)] };
        let error = render_pareto_svg(&PlotAxis::new("loss", true), &PlotAxis::new("lat", true), &data).unwrap_err();
        assert!(error.to_string().contains("cannot plot loss"), "{error}");
    }

    #[test]
    fn svg_single_point() {
        let data = PlotData { evaluated: vec![(0.0, 0.0)], front: vec![(0.0, 0.0)] };
        assert!(render_pareto_svg(&PlotAxis::new("a", true), &PlotAxis::new("b", false), &data).is_ok());
    }

    #[test]
    fn staircase_corners() {
        // min x, min y: the front falls, and the step goes right, then down.
        let falling = [(1.0, 3.0), (2.0, 1.0)];
        assert_eq!(staircase(&falling, true), vec![(1.0, 3.0), (2.0, 3.0), (2.0, 1.0)]);
        // min x, max y: the front rises, and the step goes right, then up.
        let rising = [(1.0, 1.0), (2.0, 3.0)];
        assert_eq!(staircase(&rising, true), vec![(1.0, 1.0), (2.0, 1.0), (2.0, 3.0)]);
        // max x, max y: the front falls, and the step goes down, then right.
        assert_eq!(staircase(&falling, false), vec![(1.0, 3.0), (1.0, 1.0), (2.0, 1.0)]);
    }

    #[test]
    fn tick_formats() {
        assert_eq!(format_tick(0.0), "0");
        assert_eq!(format_tick(1.5e6), "1.5M");
        assert_eq!(format_tick(320_000.0), "320k");
        assert_eq!(format_tick(12.34), "12.3");
        assert_eq!(format_tick(0.5), "0.5");
        assert_eq!(format_tick(2.0e9), "2G");
    }
}
