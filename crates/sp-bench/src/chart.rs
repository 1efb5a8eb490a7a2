//! The chart beside the results: throughput against message size, log-log, one line per
//! transport, drawn as SVG with plotters (SVG backend only, text laid out without font files).

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

use crate::error::{Error, Result};
use crate::report::{Metric, Results};

/// Line colours: dark and far apart, so every line reads on white (plotters' `Palette99` has
/// pale yellows and pinks that vanish).
const LINE_COLORS: [(u8, u8, u8); 16] = [
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (148, 103, 189),
    (255, 127, 14),
    (23, 190, 207),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (0, 0, 0),
    (0, 63, 92),
    (122, 0, 60),
    (0, 104, 55),
    (166, 86, 40),
    (84, 39, 143),
];

/// Writes `results`' throughput records as an SVG chart to `path`.
///
/// # Errors
/// When there is nothing to draw or the file cannot be written.
pub fn write_svg(results: &Results, path: &Path) -> Result<()> {
    let mut lines: BTreeMap<&str, Vec<(f64, f64)>> = BTreeMap::new();
    for r in results
        .records
        .iter()
        .filter(|r| r.metric == Metric::Throughput)
    {
        if r.median > 0.0 {
            lines
                .entry(r.transport.as_str())
                .or_default()
                .push((r.size_bytes as f64, r.median));
        }
    }
    let points = lines.values().flatten();
    let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
        x_lo = x_lo.min(x);
        x_hi = x_hi.max(x);
        y_lo = y_lo.min(y);
        y_hi = y_hi.max(y);
    }
    if lines.is_empty() {
        return Err(Error::Unsupported("no throughput records to chart".into()));
    }
    let draw = || -> std::result::Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1040, 600)).into_drawing_area();
        root.fill(&WHITE)?;
        let (plot, legend) = root.split_horizontally(860);
        let caption = format!(
            "sp-bench throughput, {} run ({}; probe {:.0} ns)",
            results.profile.name, results.date, results.probe.median
        );
        let mut chart = ChartBuilder::on(&plot)
            .caption(caption, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(80)
            .build_cartesian_2d(
                (x_lo / 1.5..x_hi * 1.5).log_scale(),
                (y_lo / 2.0..y_hi * 2.0).log_scale(),
            )?;
        chart
            .configure_mesh()
            .x_desc("message size")
            .y_desc("bytes/s, one direction")
            .x_label_formatter(&|x| fmt_decimal(*x, "B"))
            .y_label_formatter(&|y| fmt_decimal(*y, "B/s"))
            .draw()?;
        for (i, (name, mut points)) in lines.into_iter().enumerate() {
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            let (r, g, b) = LINE_COLORS[i % LINE_COLORS.len()];
            let color = RGBColor(r, g, b).to_rgba();
            chart.draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            ))?;
            chart.draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))?;
            // The legend, in its own column right of the plot.
            let y = 50 + 22 * i as i32;
            legend.draw(&PathElement::new(
                vec![(8, y), (32, y)],
                color.stroke_width(3),
            ))?;
            legend.draw(&Text::new(
                name.to_owned(),
                (38, y - 7),
                ("sans-serif", 14).into_font(),
            ))?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|err| Error::Io(std::io::Error::other(err.to_string())))
}

/// Axis labels in decimal units: `100 B`, `10 kB`, `1 GB/s`.
fn fmt_decimal(v: f64, unit: &str) -> String {
    let (scaled, prefix) = if v >= 1e9 {
        (v / 1e9, "G")
    } else if v >= 1e6 {
        (v / 1e6, "M")
    } else if v >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    format!("{scaled:.0} {prefix}{unit}")
}
