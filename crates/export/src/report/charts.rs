//! The report's charts, drawn by plotters as SVG text to be inlined in the page: bars,
//! heatmaps and lines over named categories. Text is laid out by the browser (plotters' SVG
//! backend writes `<text>` elements), so no font is needed here.
//!
//! Every chart gets its numbers from the same rows as the data table printed beside it; the
//! chart is a picture of the table, never a second computation.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// A chart that could not be drawn (plotters' error, as text).
pub type ChartError = String;

const FONT: &str = "sans-serif";
const INK: RGBColor = RGBColor(0x33, 0x33, 0x33);
const GRID: RGBColor = RGBColor(0xdd, 0xdd, 0xdd);

/// Colors of the series, distinguishable and printable (Okabe-Ito).
pub const SERIES: [RGBColor; 8] = [
    RGBColor(0x00, 0x72, 0xb2),
    RGBColor(0xe6, 0x9f, 0x00),
    RGBColor(0x00, 0x9e, 0x73),
    RGBColor(0xcc, 0x79, 0xa7),
    RGBColor(0x56, 0xb4, 0xe9),
    RGBColor(0xd5, 0x5e, 0x00),
    RGBColor(0xf0, 0xe4, 0x42),
    RGBColor(0x00, 0x00, 0x00),
];

fn err(e: impl std::fmt::Display) -> ChartError {
    e.to_string()
}

/// Draws into an SVG string of `w` x `h` pixels.
fn svg(
    w: u32,
    h: u32,
    draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), ChartError>,
) -> Result<String, ChartError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        draw(&root)?;
        root.present().map_err(err)?;
    }
    // Inline in HTML the SVG scales with its container; the viewBox keeps its proportions.
    Ok(out.replacen(
        &format!("<svg width=\"{w}\" height=\"{h}\""),
        &format!("<svg viewBox=\"0 0 {w} {h}\" role=\"img\" width=\"{w}\" height=\"{h}\""),
        1,
    ))
}

/// A category axis is integer, `U` units per category (plotters labels integer key points;
/// a fraction of a category is a fraction of `U`).
const U: i32 = 100;

/// Key points at the middle of each of `n` categories on a 0..n*U axis.
fn centers(n: usize) -> Vec<i32> {
    (0..n as i32).map(|i| i * U + U / 2).collect()
}

/// The category a key point stands for (counted from the axis' start).
fn category(labels: &[String], v: i32) -> String {
    if (v - U / 2).rem_euclid(U) != 0 {
        return String::new();
    }
    usize::try_from((v - U / 2) / U)
        .ok()
        .and_then(|i| labels.get(i))
        .cloned()
        .unwrap_or_default()
}

/// Horizontal bars: one row per label, one bar per series in each row. `fmt` labels the axis.
pub fn bars(
    labels: &[String],
    series: &[(&str, Vec<f64>)],
    fmt: &dyn Fn(f64) -> String,
) -> Result<String, ChartError> {
    let n = labels.len().max(1);
    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(4);
    let h = 60 + 26 * n as u32 * (series.len().max(1) as u32).min(2);
    let max = series
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    let max = if max > 0.0 { max * 1.08 } else { 1.0 };
    svg(720, h, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size((longest as u32 * 7 + 12).clamp(60, 260))
            .build_cartesian_2d(0f64..max, (0..n as i32 * U).with_key_points(centers(n)))
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .axis_style(INK)
            .label_style((FONT, 15).into_font().color(&INK))
            .x_labels(6)
            .x_label_formatter(&|v| fmt(*v))
            .y_label_formatter(&|v| category(labels, n as i32 * U - *v))
            .draw()
            .map_err(err)?;
        let k = series.len().max(1) as i32;
        let band = U * 8 / 10 / k;
        for (s, (name, values)) in series.iter().enumerate() {
            let color = SERIES[s % SERIES.len()];
            chart
                .draw_series(values.iter().enumerate().map(|(i, v)| {
                    // Row 0 at the top, as the table lists it.
                    let top = (n - 1 - i) as i32 * U + U * 9 / 10 - band * s as i32;
                    Rectangle::new([(0.0, top - band), (v.max(0.0), top)], color.filled())
                }))
                .map_err(err)?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .background_style(WHITE.mix(0.9))
                .border_style(GRID)
                .label_font((FONT, 15).into_font().color(&INK))
                .draw()
                .map_err(err)?;
        }
        Ok(())
    })
}

/// A heatmap: `values[row][column]` coloured from white to the first series colour, with
/// `text[row][column]` written in each cell (rows top to bottom, columns left to right).
pub fn heatmap(
    columns: &[String],
    rows: &[String],
    values: &[Vec<f64>],
    text: &[Vec<String>],
    x_title: &str,
    y_title: &str,
) -> Result<String, ChartError> {
    let (nx, ny) = (columns.len().max(1), rows.len().max(1));
    let longest = rows.iter().map(|l| l.chars().count()).max().unwrap_or(4);
    let longest_column = columns.iter().map(|l| l.chars().count()).max().unwrap_or(4) as u32;
    // Wide enough for the longest line written in a cell.
    let longest_text = text
        .iter()
        .flatten()
        .flat_map(|t| t.lines())
        .map(|l| l.chars().count() as u32)
        .max()
        .unwrap_or(0);
    let cell_w = (if nx > 8 { 72 } else { 96 }).max((longest_text * 8 + 12).min(170));
    // Column labels wider than a cell are staggered on two lines.
    let staggered = longest_column * 6 + 8 > cell_w;
    let label_h = if staggered { 72 } else { 56 };
    let w = (cell_w * nx as u32 + longest as u32 * 7 + 80).max(360);
    let h = 36 * ny as u32 + 54 + label_h;
    let max = values
        .iter()
        .flatten()
        .copied()
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max);
    svg(w, h, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(8)
            .x_label_area_size(label_h)
            .y_label_area_size((longest as u32 * 7 + 30).clamp(50, 260))
            .build_cartesian_2d(
                (0..nx as i32 * U).with_key_points(centers(nx)),
                (0..ny as i32 * U).with_key_points(centers(ny)),
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .axis_style(INK)
            .label_style((FONT, 14).into_font().color(&INK))
            .x_label_formatter(&|v| {
                if staggered {
                    String::new()
                } else {
                    category(columns, *v)
                }
            })
            .y_label_formatter(&|v| category(rows, ny as i32 * U - *v))
            .x_desc(x_title)
            .y_desc(y_title)
            .draw()
            .map_err(err)?;
        let base = SERIES[0];
        let shade = |v: f64| {
            let t = if max > 0.0 && v.is_finite() {
                (v / max).clamp(0.0, 1.0)
            } else {
                0.0
            };
            let mix = |c: u8| (255.0 - (255.0 - f64::from(c)) * t).round() as u8;
            (RGBColor(mix(base.0), mix(base.1), mix(base.2)), t)
        };
        for (r, row) in values.iter().enumerate() {
            let y = (ny - 1 - r) as i32 * U;
            for (c, v) in row.iter().enumerate() {
                let (fill, t) = shade(*v);
                let x = c as i32 * U;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x, y), (x + U, y + U)],
                        fill.filled(),
                    )))
                    .map_err(err)?;
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x, y), (x + U, y + U)],
                        WHITE.stroke_width(1),
                    )))
                    .map_err(err)?;
                let label = text
                    .get(r)
                    .and_then(|t| t.get(c))
                    .cloned()
                    .unwrap_or_default();
                if !label.is_empty() {
                    let ink = if t > 0.55 { WHITE } else { BLACK };
                    let style = (FONT, 14)
                        .into_font()
                        .color(&ink)
                        .pos(Pos::new(HPos::Center, VPos::Center));
                    let lines = label.lines().count() as i32;
                    for (k, line) in label.lines().enumerate() {
                        // Lines 30% of a cell apart, centred on the cell.
                        let dy = (2 * k as i32 - (lines - 1)) * U * 3 / 20;
                        chart
                            .draw_series(std::iter::once(Text::new(
                                line.to_string(),
                                (x + U / 2, y + U / 2 - dy),
                                style.clone(),
                            )))
                            .map_err(err)?;
                    }
                }
            }
        }
        if staggered {
            let style = (FONT, 14)
                .into_font()
                .color(&INK)
                .pos(Pos::new(HPos::Center, VPos::Top));
            for (c, label) in columns.iter().enumerate() {
                let (px, py) = chart.backend_coord(&(c as i32 * U + U / 2, 0));
                let dy = if c % 2 == 0 { 8 } else { 24 };
                root.draw(&Text::new(label.clone(), (px, py + dy), style.clone()))
                    .map_err(err)?;
            }
        }
        Ok(())
    })
}

/// Lines over categories (`x`, left to right), one per series; a value of `None` leaves a
/// gap. Points are drawn too, so a series of one point shows. `mark` circles one category
/// (the chosen k).
pub fn lines(
    x: &[String],
    series: &[(String, Vec<Option<f64>>)],
    fmt: &dyn Fn(f64) -> String,
    mark: Option<usize>,
) -> Result<String, ChartError> {
    let n = x.len().max(1);
    let all: Vec<f64> = series
        .iter()
        .flat_map(|(_, v)| v.iter().flatten().copied())
        .filter(|v| v.is_finite())
        .collect();
    let (lo, hi) = all
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(*v), b.max(*v))
        });
    let (lo, hi) = if all.is_empty() {
        (0.0, 1.0)
    } else if hi > lo {
        let pad = (hi - lo) * 0.08;
        (
            (lo - pad).min(if lo >= 0.0 { 0.0 } else { lo - pad }),
            hi + pad,
        )
    } else {
        (lo.min(0.0), hi.abs().max(1.0) * 1.1)
    };
    let h = 300 + 18 * (series.len() as u32).min(12);
    svg(720, h, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d((0..n as i32 * U).with_key_points(centers(n)), lo..hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .axis_style(INK)
            .label_style((FONT, 15).into_font().color(&INK))
            .x_label_formatter(&|v| category(x, *v))
            .y_labels(6)
            .y_label_formatter(&|v| fmt(*v))
            .draw()
            .map_err(err)?;
        for (s, (name, values)) in series.iter().enumerate() {
            let color = SERIES[s % SERIES.len()];
            let style = if s >= SERIES.len() {
                color.stroke_width(1)
            } else {
                color.stroke_width(2)
            };
            let points: Vec<(i32, f64)> = values
                .iter()
                .enumerate()
                .filter_map(|(i, v)| v.map(|v| (i as i32 * U + U / 2, v)))
                .collect();
            // Runs of consecutive values are joined; a gap breaks the line.
            let mut run: Vec<(i32, f64)> = Vec::new();
            let mut last: Option<i32> = None;
            for &(px, py) in &points {
                let gap = last.is_some_and(|l| px - l > U);
                if gap && run.len() > 1 {
                    chart
                        .draw_series(LineSeries::new(std::mem::take(&mut run), style))
                        .map_err(err)?;
                }
                if gap {
                    run.clear();
                }
                run.push((px, py));
                last = Some(px);
            }
            if run.len() > 1 {
                chart
                    .draw_series(LineSeries::new(run, style))
                    .map_err(err)?;
            }
            chart
                .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
                .map_err(err)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
                });
        }
        if let Some(i) = mark.filter(|i| *i < n) {
            for (s, (_, values)) in series.iter().enumerate() {
                if let Some(Some(v)) = values.get(i) {
                    chart
                        .draw_series(std::iter::once(Circle::new(
                            (i as i32 * U + U / 2, *v),
                            8,
                            SERIES[s % SERIES.len()].stroke_width(2),
                        )))
                        .map_err(err)?;
                }
            }
        }
        if series.len() > 1 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.9))
                .border_style(GRID)
                .label_font((FONT, 14).into_font().color(&INK))
                .draw()
                .map_err(err)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn charts_are_inline_svg_with_their_labels() {
        let b = bars(
            &names(&["champions", "at_risk"]),
            &[("customers", vec![0.6, 0.4]), ("revenue", vec![0.8, 0.2])],
            &|v| format!("{:.0}%", v * 100.0),
        )
        .unwrap();
        assert!(b.starts_with("<svg viewBox=\"0 0 720 "), "{}", &b[..80]);
        // Text elements hold their text on a line of its own.
        let b = b.replace(char::is_whitespace, "");
        assert!(b.contains(">champions</text>") && b.contains(">at_risk</text>"));
        assert!(b.matches("<rect").count() >= 4);

        let h = heatmap(
            &names(&["1", "2"]),
            &names(&["2", "1"]),
            &[vec![1.0, 5.0], vec![0.0, 2.0]],
            &[
                vec!["a\n1".into(), "b\n5".into()],
                vec![String::new(), "d\n2".into()],
            ],
            "x",
            "y",
        )
        .unwrap();
        let h = h.replace(char::is_whitespace, "");
        assert!(h.contains(">b</text>") && h.contains(">5</text>"));

        let l = lines(
            &names(&["3", "4", "5"]),
            &[("inertia".into(), vec![Some(9.0), None, Some(4.0)])],
            &|v| format!("{v:.0}"),
            Some(2),
        )
        .unwrap();
        let l = l.replace(char::is_whitespace, "");
        assert!(l.contains(">3</text>") && l.contains(">5</text>"));
        assert!(l.contains("<circle"));
    }
}
