//! PNG charts for training and evaluation reports, drawn with plotters: line charts of
//! per-epoch curves and precision–recall curves (round tick values, axis titles, a legend),
//! and a confusion matrix heat map. Text is DejaVu Sans, bundled (src/plot/README.md), so a
//! chart looks the same on every machine.

use std::path::Path;
use std::sync::Once;

use anyhow::Context;
use image::RgbImage;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

/// The family the bundled font is registered as.
const FAMILY: &str = "sans-serif";

/// Series colours: matplotlib's "tab10", the colours users know from its and Ultralytics' charts.
pub const COLOURS: [[u8; 3]; 10] = [
    [31, 119, 180],
    [255, 127, 14],
    [44, 160, 44],
    [214, 39, 40],
    [148, 103, 189],
    [140, 86, 75],
    [227, 119, 194],
    [127, 127, 127],
    [188, 189, 34],
    [23, 190, 207],
];

/// One curve: its name in the legend, colour and (x, y) points (non-finite y are left out).
pub struct Series<'a> {
    pub name: &'a str,
    pub colour: [u8; 3],
    pub points: Vec<(f64, f64)>,
}

/// A line chart's titles and, where given, fixed axis ranges (else the data's, padded).
pub struct Axes<'a> {
    pub title: &'a str,
    pub x: &'a str,
    pub y: &'a str,
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
}

fn font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // The bytes are a valid TrueType font (checked by the tests); a failure here would
        // only leave text undrawn, which the drawing calls then report.
        let _ = register_font(FAMILY, FontStyle::Normal, include_bytes!("DejaVuSans.ttf"));
    });
}

fn rgb(c: [u8; 3]) -> RGBColor {
    RGBColor(c[0], c[1], c[2])
}

fn draw_err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow::anyhow!("cannot draw the chart: {e}")
}

/// The data's range on one axis, padded by 5 % (or ±0.5 around a single value).
fn span(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !(hi - lo).is_finite() {
        // Nothing, or a span beyond f64 (plotters' tick search would never end).
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

/// A line chart, 800×500.
pub fn line_chart(axes: &Axes, series: &[Series]) -> anyhow::Result<RgbImage> {
    font();
    let (w, h) = (800u32, 500u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        // Points drawn: finite, of a size a pixel mapping can take (plotters overflows on
        // values near f64's limits), and inside the fixed ranges.
        let within = |v: f64, range: Option<(f64, f64)>| {
            v.is_finite() && v.abs() < 1e300 && range.is_none_or(|(lo, hi)| v >= lo && v <= hi)
        };
        let drawable = |p: &(f64, f64)| within(p.0, axes.x_range) && within(p.1, axes.y_range);
        let finite = || series.iter().flat_map(|s| s.points.iter().copied()).filter(drawable);
        let (x0, x1) = axes.x_range.unwrap_or_else(|| span(finite().map(|p| p.0)));
        let (y0, y1) = axes.y_range.unwrap_or_else(|| span(finite().map(|p| p.1)));
        let mut chart = ChartBuilder::on(&root)
            .caption(axes.title, (FAMILY, 22))
            .margin(14)
            .x_label_area_size(46)
            .y_label_area_size(64)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw_err)?;
        // Whole-number x (epochs) is labelled only at whole numbers.
        let whole = finite().all(|p| p.0.fract() == 0.0);
        let x_label = |v: &f64| {
            if !whole {
                // At most four decimals, trailing zeros dropped (0.30000000000000004 → 0.3).
                let s = format!("{v:.4}");
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            } else if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .x_label_formatter(&x_label)
            .x_desc(axes.x)
            .y_desc(axes.y)
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .light_line_style(WHITE)
            .bold_line_style(RGBColor(225, 225, 225))
            .draw()
            .map_err(draw_err)?;
        for s in series {
            let colour = rgb(s.colour);
            let points: Vec<(f64, f64)> = s.points.iter().copied().filter(drawable).collect();
            chart
                // Markers too: a series of one point (a run of one epoch) is a dot, not nothing.
                .draw_series(LineSeries::new(points, colour.stroke_width(2)).point_size(2))
                .map_err(draw_err)?
                .label(s.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2)));
        }
        if !series.is_empty() {
            chart
                .configure_series_labels()
                .label_font((FAMILY, 14))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(180, 180, 180))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    RgbImage::from_raw(w, h, buf).context("the chart's pixels do not fill its image")
}

/// The most classes a confusion chart shows.
pub const CONFUSION_CLASSES: usize = 60;

/// A confusion matrix: rows are true classes, columns predictions; each cell shaded by its
/// share of the row and labelled with its count. Only classes that occur (as truth or as
/// prediction) are shown, at most [`CONFUSION_CLASSES`] of them, those with the most images
/// (a 1000-class model evaluated on a few classes gets a chart of those few).
pub fn confusion_chart(all_counts: &[Vec<u64>], all_labels: &[String]) -> anyhow::Result<RgbImage> {
    font();
    let n_all = all_labels.len().min(all_counts.len());
    let weight = |i: usize| -> u64 {
        all_counts[i].iter().sum::<u64>() + all_counts.iter().map(|row| row.get(i).copied().unwrap_or(0)).sum::<u64>()
    };
    let mut shown: Vec<usize> = (0..n_all).filter(|&i| weight(i) > 0).collect();
    let occurring = shown.len();
    shown.sort_by_key(|&i| std::cmp::Reverse(weight(i)));
    shown.truncate(CONFUSION_CLASSES);
    shown.sort_unstable();
    let counts: Vec<Vec<u64>> =
        shown.iter().map(|&r| shown.iter().map(|&c| all_counts[r].get(c).copied().unwrap_or(0)).collect()).collect();
    let labels: Vec<&String> = shown.iter().map(|&i| &all_labels[i]).collect();
    let title = if occurring > shown.len() {
        format!("confusion matrix ({} of {occurring} classes, those with the most images)", shown.len())
    } else {
        "confusion matrix".to_string()
    };
    let n = labels.len().max(1) as i32;
    let cell = (640 / n).clamp(18, 64);
    let name: Vec<String> = labels.iter().map(|l| l.chars().take(16).collect()).collect();
    let name_w = 8 * name.iter().map(|l| l.chars().count()).max().unwrap_or(1) as i32 + 16;
    let (left, top) = (name_w + 34, name_w + 60);
    let w = (left + n * cell + 20).max(560) as u32;
    let h = (top + n * cell + 20) as u32;
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        root.draw(&Text::new(title, (14, 10), (FAMILY, 22).into_font())).map_err(draw_err)?;
        let small = (FAMILY, (cell / 3).clamp(10, 15)).into_font();
        let axis = (FAMILY, 16).into_font();
        root.draw(&Text::new("predicted", (left + n * cell / 2 - 36, 40), axis.clone())).map_err(draw_err)?;
        let vertical = axis.transform(FontTransform::Rotate270);
        root.draw(&Text::new("true", (10, top + n * cell / 2 + 14), vertical)).map_err(draw_err)?;
        for (r, row) in counts.iter().enumerate() {
            // The share of the whole row, classes not drawn included.
            let total: u64 = all_counts[shown[r]].iter().sum::<u64>().max(1);
            for (c, &v) in row.iter().enumerate() {
                let share = v as f64 / total as f64;
                let shade = |base: u8| (255.0 - (255.0 - base as f64) * share) as u8;
                let (x, y) = (left + c as i32 * cell, top + r as i32 * cell);
                let fill = RGBColor(shade(31), shade(119), shade(180));
                root.draw(&Rectangle::new([(x, y), (x + cell - 1, y + cell - 1)], fill.filled())).map_err(draw_err)?;
                let edge = RGBColor(225, 225, 225);
                root.draw(&Rectangle::new([(x, y), (x + cell - 1, y + cell - 1)], edge.stroke_width(1)))
                    .map_err(draw_err)?;
                let ink = if share > 0.5 { WHITE } else { BLACK };
                let s = v.to_string();
                let style = small.clone().color(&ink).pos(plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Center,
                ));
                root.draw(&Text::new(s, (x + cell / 2, y + cell / 2), style)).map_err(draw_err)?;
            }
        }
        let label = (FAMILY, 13).into_font();
        for (i, l) in name.iter().enumerate() {
            let y = top + i as i32 * cell + cell / 2 - 6;
            root.draw(&Text::new(l.clone(), (34, y), label.clone())).map_err(draw_err)?;
            let x = left + i as i32 * cell + cell / 2 - 6;
            let down = label.clone().transform(FontTransform::Rotate90);
            root.draw(&Text::new(l.clone(), (x + 12, 60), down)).map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    RgbImage::from_raw(w, h, buf).context("the chart's pixels do not fill its image")
}

/// Horizontal bars, one per (name, value) with the value in 0–1 written beside it (per-class
/// AP, say); at most [`CONFUSION_CLASSES`] bars.
pub fn bar_chart(title: &str, x: &str, bars: &[(String, f64)]) -> anyhow::Result<RgbImage> {
    font();
    let title = if bars.len() > CONFUSION_CLASSES {
        format!("{title} (the first {CONFUSION_CLASSES} of {})", bars.len())
    } else {
        title.to_string()
    };
    let bars = &bars[..bars.len().min(CONFUSION_CLASSES)];
    let n = bars.len() as i32;
    let row = 24;
    let name_w = 8 * bars.iter().map(|(l, _)| l.chars().take(24).count()).max().unwrap_or(1) as i32 + 24;
    let (left, top, bar_w) = (name_w, 50, 480);
    let (w, h) = ((left + bar_w + 90) as u32, (top + n * row + 50) as u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        root.draw(&Text::new(title, (14, 10), (FAMILY, 22).into_font())).map_err(draw_err)?;
        let label = (FAMILY, 13).into_font();
        let grid = RGBColor(225, 225, 225);
        for k in 0..=10 {
            let gx = left + bar_w * k / 10;
            root.draw(&PathElement::new(vec![(gx, top - 4), (gx, top + n * row)], grid)).map_err(draw_err)?;
            if k % 2 == 0 {
                let tick = format!("{:.1}", k as f64 / 10.0);
                root.draw(&Text::new(tick, (gx - 8, top + n * row + 6), label.clone())).map_err(draw_err)?;
            }
        }
        root.draw(&Text::new(x.to_string(), (left + bar_w / 2 - 20, top + n * row + 26), (FAMILY, 16).into_font()))
            .map_err(draw_err)?;
        for (i, (name, value)) in bars.iter().enumerate() {
            let y = top + i as i32 * row;
            let v = if value.is_finite() { value.clamp(0.0, 1.0) } else { 0.0 };
            let name: String = name.chars().take(24).collect();
            root.draw(&Text::new(name, (10, y + 5), label.clone())).map_err(draw_err)?;
            let end = left + (bar_w as f64 * v).round() as i32;
            root.draw(&Rectangle::new([(left, y + 3), (end.max(left + 1), y + row - 3)], rgb(COLOURS[0]).filled()))
                .map_err(draw_err)?;
            root.draw(&Text::new(format!("{value:.3}"), (end + 6, y + 5), label.clone())).map_err(draw_err)?;
        }
        root.present().map_err(draw_err)?;
    }
    RgbImage::from_raw(w, h, buf).context("the chart's pixels do not fill its image")
}

/// Writes `chart` as PNG to `path`.
pub fn save(chart: &RgbImage, path: &Path) -> anyhow::Result<()> {
    chart.save(path).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(img: &RgbImage, colour: [u8; 3]) -> usize {
        img.pixels().filter(|p| p.0 == colour).count()
    }

    #[test]
    fn a_line_chart_draws_its_series_and_its_text() {
        let s = Series { name: "loss", colour: COLOURS[0], points: vec![(1.0, 2.0), (2.0, 1.0), (3.0, 0.5)] };
        let axes = Axes { title: "training loss", x: "epoch", y: "loss", x_range: None, y_range: None };
        let img = line_chart(&axes, &[s]).unwrap();
        assert!(count(&img, COLOURS[0]) > 300, "{} pixels of the series colour", count(&img, COLOURS[0]));
        // Text is drawn (dark grey anti-aliased pixels outside the series colour): a chart
        // whose font failed to load would have none.
        let dark = img.pixels().filter(|p| p.0.iter().all(|&v| v < 80)).count();
        assert!(dark > 500, "{dark} dark pixels: no text?");
    }

    #[test]
    fn a_series_of_one_point_is_drawn() {
        let s = Series { name: "loss", colour: COLOURS[2], points: vec![(1.0, 0.7)] };
        let axes = Axes { title: "t", x: "epoch", y: "loss", x_range: None, y_range: None };
        let img = line_chart(&axes, &[s]).unwrap();
        // The legend's sample line is drawn anyway; the point adds its own pixels.
        let legend_only = line_chart(&axes, &[Series { name: "loss", colour: COLOURS[2], points: vec![] }]).unwrap();
        assert!(count(&img, COLOURS[2]) > count(&legend_only, COLOURS[2]) + 4);
    }

    #[test]
    fn a_chart_of_nothing_or_of_nan_is_still_a_chart() {
        let axes = Axes { title: "t", x: "x", y: "y", x_range: Some((0.0, 1.0)), y_range: Some((0.0, 1.0)) };
        assert!(line_chart(&axes, &[]).is_ok());
        let nan = Series { name: "nan", colour: COLOURS[1], points: vec![(0.0, f64::NAN), (1.0, f64::INFINITY)] };
        let axes = Axes { title: "t", x: "x", y: "y", x_range: None, y_range: None };
        assert!(line_chart(&axes, &[nan]).is_ok());
        let huge = Series { name: "huge", colour: COLOURS[1], points: vec![(0.0, -1.5e308), (1.0, 1.5e308)] };
        assert!(line_chart(&axes, &[huge]).is_ok());
        let wide = Series { name: "wide", colour: COLOURS[1], points: vec![(0.0, -9e299), (1.0, 9e299), (2.0, 5.0)] };
        assert!(line_chart(&axes, &[wide]).is_ok());
        let fixed = Axes { title: "t", x: "x", y: "y", x_range: Some((0.0, 1.0)), y_range: Some((0.0, 1.0)) };
        let outside = Series { name: "out", colour: COLOURS[1], points: vec![(0.5, 1e30), (0.5, 0.5), (-1e30, 0.2)] };
        assert!(line_chart(&fixed, &[outside]).is_ok());
    }

    #[test]
    fn bars_are_as_long_as_their_values() {
        let bars = vec![("cat".to_string(), 1.0), ("dog".to_string(), 0.5), ("nan".to_string(), f64::NAN)];
        let img = bar_chart("AP50 per class", "AP50", &bars).unwrap();
        // Each bar's row: the first one twice as long as the second, the NaN one none.
        let blue = |y: u32| (0..img.width()).filter(|&x| img.get_pixel(x, y).0 == COLOURS[0]).count();
        let (a, b, c) = (blue(50 + 12), blue(50 + 24 + 12), blue(50 + 48 + 12));
        assert!((a as f64 / b as f64 - 2.0).abs() < 0.02, "{a} vs {b}");
        assert!(c <= 1, "{c}");
    }

    #[test]
    fn confusion_cells_are_shaded_by_row_share() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let img = confusion_chart(&[vec![9, 1], vec![0, 10]], &labels).unwrap();
        assert!(img.width() > 100 && img.height() > 100);
        // The diagonal cell of row b (10 of 10) is the darkest blue.
        assert!(count(&img, [31, 119, 180]) > 100);
    }

    #[test]
    fn a_confusion_chart_shows_the_classes_that_occur_and_stays_small() {
        // 1000 classes, three of them with images: the chart is of those three.
        let labels: Vec<String> = (0..1000).map(|i| format!("class {i}")).collect();
        let mut counts = vec![vec![0u64; 1000]; 1000];
        counts[3][3] = 5;
        counts[500][7] = 2;
        let small = confusion_chart(&counts, &labels).unwrap();
        let three = confusion_chart(&[vec![5, 0, 0], vec![0, 0, 0], vec![0, 0, 0]], &labels[..3]).unwrap();
        assert!(small.width() <= 1000 && small.height() <= 1000, "{}x{}", small.width(), small.height());
        assert!(three.width() <= 1000);
        // Every class with images: still at most CONFUSION_CLASSES of them drawn.
        let full: Vec<Vec<u64>> = (0..1000).map(|i| (0..1000).map(|j| u64::from(i == j)).collect()).collect();
        let capped = confusion_chart(&full, &labels).unwrap();
        assert!(capped.height() < 80 * CONFUSION_CLASSES as u32, "{}", capped.height());
    }
}
