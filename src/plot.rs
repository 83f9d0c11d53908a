//! Small PNG charts for training reports: line charts of per-epoch curves and a confusion
//! matrix heat map, drawn with the `image` crate and the 8×8 font used for annotations.

use image::{Rgb, RgbImage};

use crate::annotate::{put, text};

const WHITE: [u8; 3] = [255, 255, 255];
const INK: [u8; 3] = [30, 30, 30];
const GRID: [u8; 3] = [225, 225, 225];
/// Series colours.
pub const COLOURS: [[u8; 3]; 4] = [[31, 119, 180], [255, 127, 14], [44, 160, 44], [214, 39, 40]];

/// One curve: its name, colour and (x, y) points.
pub struct Series<'a> {
    pub name: &'a str,
    pub colour: [u8; 3],
    pub points: Vec<(f64, f64)>,
}

/// A line chart with axes, four labelled ticks per axis and a legend.
pub fn line_chart(title: &str, x_label: &str, series: &[Series]) -> RgbImage {
    let (w, h) = (720u32, 440u32);
    let (left, right, top, bottom) = (70i64, 20i64, 40i64, 50i64);
    let mut img = RgbImage::from_pixel(w, h, Rgb(WHITE));
    text(&mut img, left, 12, title, INK, 2);
    let all: Vec<(f64, f64)> =
        series.iter().flat_map(|s| s.points.iter().copied()).filter(|p| p.1.is_finite()).collect();
    if all.is_empty() {
        return img;
    }
    let (mut x0, mut x1) = bounds(all.iter().map(|p| p.0));
    let (mut y0, mut y1) = bounds(all.iter().map(|p| p.1));
    if x1 - x0 < 1e-12 {
        x0 -= 1.0;
        x1 += 1.0;
    }
    if y1 - y0 < 1e-12 {
        y0 -= 0.5;
        y1 += 0.5;
    }
    let pw = w as i64 - left - right;
    let ph = h as i64 - top - bottom;
    let px = |x: f64| left + ((x - x0) / (x1 - x0) * pw as f64).round() as i64;
    let py = |y: f64| top + ph - ((y - y0) / (y1 - y0) * ph as f64).round() as i64;
    for k in 0..=4 {
        let f = k as f64 / 4.0;
        let (gx, gy) = (left + (f * pw as f64) as i64, top + ph - (f * ph as f64) as i64);
        line(&mut img, (gx, top), (gx, top + ph), GRID, 1);
        line(&mut img, (left, gy), (left + pw, gy), GRID, 1);
        text(&mut img, gx - 12, top + ph + 8, &short(x0 + f * (x1 - x0)), INK, 1);
        text(&mut img, 4, gy - 4, &short(y0 + f * (y1 - y0)), INK, 1);
    }
    line(&mut img, (left, top + ph), (left + pw, top + ph), INK, 1);
    line(&mut img, (left, top), (left, top + ph), INK, 1);
    text(&mut img, left + pw / 2 - 4 * x_label.len() as i64, h as i64 - 18, x_label, INK, 1);
    for (i, s) in series.iter().enumerate() {
        let pts: Vec<(i64, i64)> = s.points.iter().filter(|p| p.1.is_finite()).map(|&(x, y)| (px(x), py(y))).collect();
        for pair in pts.windows(2) {
            line(&mut img, pair[0], pair[1], s.colour, 2);
        }
        for &(x, y) in &pts {
            for d in -2..=2 {
                put(&mut img, x + d, y, s.colour);
                put(&mut img, x, y + d, s.colour);
            }
        }
        let ly = top + 8 + 14 * i as i64;
        line(&mut img, (left + pw - 150, ly + 4), (left + pw - 130, ly + 4), s.colour, 2);
        text(&mut img, left + pw - 124, ly, s.name, INK, 1);
    }
    img
}

/// A confusion matrix: rows are true classes, columns predictions; each cell shaded by
/// its share of the row and labelled with its count.
pub fn confusion_chart(counts: &[Vec<u64>], labels: &[String]) -> RgbImage {
    let n = labels.len() as i64;
    let cell = (480 / n.max(1)).clamp(24, 64);
    let name_w = 8 * labels.iter().map(|l| l.chars().count().min(14)).max().unwrap_or(1) as i64 + 12;
    let (left, top) = (name_w + 10, 50 + name_w);
    let title = "confusion matrix (rows: truth, columns: prediction)";
    let w = (left + n * cell + 20).max(20 + 8 * title.len() as i64) as u32;
    let h = (top + n * cell + 20) as u32;
    let mut img = RgbImage::from_pixel(w, h, Rgb(WHITE));
    text(&mut img, 10, 10, title, INK, 1);
    for (r, row) in counts.iter().enumerate() {
        let total: u64 = row.iter().sum::<u64>().max(1);
        for (c, &v) in row.iter().enumerate() {
            let share = v as f64 / total as f64;
            let shade = |base: u8| (255.0 - (255.0 - base as f64) * share) as u8;
            let colour = [shade(31), shade(119), shade(180)];
            let (x, y) = (left + c as i64 * cell, top + r as i64 * cell);
            for dy in 1..cell {
                for dx in 1..cell {
                    put(&mut img, x + dx, y + dy, colour);
                }
            }
            let s = v.to_string();
            let ink = if share > 0.5 { WHITE } else { INK };
            text(&mut img, x + cell / 2 - 4 * s.len() as i64, y + cell / 2 - 4, &s, ink, 1);
        }
    }
    for (i, l) in labels.iter().enumerate() {
        let l: String = l.chars().take(14).collect();
        text(&mut img, 10, top + i as i64 * cell + cell / 2 - 4, &l, INK, 1);
        // Column labels, written downwards one character per line.
        for (k, ch) in l.chars().enumerate() {
            text(&mut img, left + i as i64 * cell + cell / 2 - 4, 40 + k as i64 * 9, &ch.to_string(), INK, 1);
        }
    }
    img
}

fn bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)))
}

fn short(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// A straight line `thickness` pixels wide (Bresenham).
fn line(img: &mut RgbImage, (mut x0, mut y0): (i64, i64), (x1, y1): (i64, i64), colour: [u8; 3], thickness: i64) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let mut err = dx + dy;
    loop {
        for t in 0..thickness {
            put(img, x0, y0 + t, colour);
            put(img, x0 + t, y0, colour);
        }
        if x0 == x1 && y0 == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x0 += sx;
        }
        if e2 <= dx {
            err += dx;
            y0 += sy;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_chart_draws_its_series() {
        let s = Series { name: "loss", colour: COLOURS[0], points: vec![(1.0, 2.0), (2.0, 1.0), (3.0, 0.5)] };
        let img = line_chart("loss", "epoch", &[s]);
        let coloured = img.pixels().filter(|p| p.0 == COLOURS[0]).count();
        assert!(coloured > 300, "{coloured} pixels of the series colour");
    }

    #[test]
    fn confusion_cells_are_shaded_by_row_share() {
        let labels = vec!["a".to_string(), "b".to_string()];
        let img = confusion_chart(&[vec![9, 1], vec![0, 10]], &labels);
        assert!(img.width() > 100 && img.height() > 100);
        // The diagonal cell of row b (10 of 10) is the darkest blue.
        assert!(img.pixels().any(|p| p.0 == [31, 119, 180]));
    }
}
