//! SVG line charts of a suite's series, drawn with plotters' SVG backend. Text is emitted
//! as SVG `<text>` elements, so no system font is needed to draw or to view them.

use collector::Series;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;

/// Chart size in pixels.
pub const SIZE: (u32, u32) = (800, 420);

/// Colours for successive lines (colour-blind-safe Okabe–Ito palette).
const PALETTE: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(230, 159, 0),
    RGBColor(86, 180, 233),
    RGBColor(0, 0, 0),
];

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("chart `{id}`: {message}")]
pub struct ChartError {
    /// The series id.
    pub id: String,
    /// What went wrong.
    pub message: String,
}

/// Draws `series` as an SVG document.
pub fn render_svg(series: &Series) -> Result<String, ChartError> {
    let err = |message: String| ChartError {
        id: series.id.clone(),
        message,
    };
    let points = series.lines.iter().flat_map(|l| l.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for [x, y] in points {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
        y1 = y1.max(*y);
    }
    if x0 > x1 {
        // No points at all: draw empty axes over a unit square.
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let log_y = series.log_y
        && series
            .lines
            .iter()
            .flat_map(|l| &l.points)
            .all(|[_, y]| *y > 0.0);
    let y_range = if log_y {
        // Log axes need positive bounds: pad by a factor instead of starting at zero.
        let (lo, hi) = if y0 == y1 {
            (y0 / 2.0, y1 * 2.0)
        } else {
            (y0 / 1.5, y1 * 1.5)
        };
        lo..hi
    } else {
        // Start the y axis at zero when all values are positive: readers compare heights.
        let lo = y0.min(0.0);
        let hi = if y1 - lo == 0.0 { lo + 1.0 } else { y1 };
        lo..hi + (hi - lo) * 0.05
    };
    if x1 - x0 == 0.0 {
        x1 = x0 + 1.0;
    }

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        if log_y {
            draw(&root, series, x0..x1, y_range.log_scale()).map_err(err)?;
        } else {
            draw(&root, series, x0..x1, y_range).map_err(err)?;
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    Ok(svg)
}

fn draw<Y>(
    root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    series: &Series,
    x: std::ops::Range<f64>,
    y: Y,
) -> Result<(), String>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let mut chart = ChartBuilder::on(root)
        .caption(&series.title, ("sans-serif", 20))
        .margin(12)
        .margin_right(36)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc(series.x_label.as_str())
        .y_desc(series.y_label.as_str())
        .x_label_formatter(&|v| crate::format::plain(round_tick(*v)))
        .y_label_formatter(&|v| crate::format::plain(round_tick(*v)))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(|x| e(&x))?;
    for (i, line) in series.lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let pts: Vec<(f64, f64)> = line.points.iter().map(|[x, y]| (*x, *y)).collect();
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(line.name.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        if pts.len() <= 40 {
            chart
                .draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(|x| e(&x))?;
        }
    }
    if !series.lines.is_empty() {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|x| e(&x))?;
    }
    Ok(())
}

/// Rounds a tick value to four significant digits so labels stay short.
fn round_tick(v: f64) -> f64 {
    if v == 0.0 || !v.is_finite() {
        return v;
    }
    let mag = 10f64.powi(3 - v.abs().log10().floor() as i32);
    (v * mag).round() / mag
}

#[cfg(test)]
mod tests {
    use super::*;
    use collector::Line;

    #[test]
    fn draws_lines_and_labels_as_svg_text() {
        let s = Series {
            id: "lateness".into(),
            title: "Lateness p99".into(),
            x_label: "rate (ops/s)".into(),
            y_label: "p99 (µs)".into(),
            lines: vec![Line {
                name: "hybrid".into(),
                points: vec![[1000.0, 5.0], [10000.0, 9.0], [50000.0, 30.0]],
            }],
            log_y: false,
        };
        let svg = render_svg(&s).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.contains("Lateness p99"));
        assert!(svg.contains("hybrid"));
        assert!(svg.contains("<polyline"));
        assert_eq!(render_svg(&s).unwrap(), svg, "deterministic");
    }

    #[test]
    fn empty_and_flat_series_still_draw() {
        let mut s = Series {
            id: "e".into(),
            title: "empty".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            lines: vec![],
            log_y: true,
        };
        assert!(render_svg(&s).unwrap().contains("empty"));
        s.lines.push(Line {
            name: "one".into(),
            points: vec![[3.0, 3.0]],
        });
        assert!(render_svg(&s).unwrap().contains("one"));
        // A log axis with a zero value falls back to linear instead of failing.
        s.lines[0].points.push([4.0, 0.0]);
        assert!(render_svg(&s).unwrap().contains("one"));
    }
}
