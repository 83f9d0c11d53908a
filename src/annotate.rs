//! Draws detections onto an image: a box per detection, its keypoints, and its label with
//! the score, in an 8×8 bitmap font scaled to the picture (so nothing needs a font file).

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

use crate::model::{Detection, Keypoint, Prediction};

/// Colours by class id: distinct, readable on photos.
const PALETTE: [[u8; 3]; 10] = [
    [230, 25, 75],
    [60, 180, 75],
    [255, 225, 25],
    [0, 130, 200],
    [245, 130, 48],
    [145, 30, 180],
    [70, 240, 240],
    [240, 50, 230],
    [210, 245, 60],
    [250, 190, 190],
];

/// Keypoints whose visibility score is below this are not drawn (Ultralytics' own choice).
const KEYPOINT_VISIBLE: f32 = 0.5;

/// Draws a prediction: boxes for detections, the top classes as text for a classifier.
pub fn draw(image: &mut RgbImage, prediction: &Prediction) {
    let unit = (image.width().max(image.height()) / 400).max(1);
    match prediction {
        Prediction::Detections(dets) => {
            for d in dets {
                draw_detection(image, d, unit);
            }
        }
        Prediction::Classes(classes) => {
            for (row, c) in classes.iter().enumerate() {
                let text = format!("{} {:.2}", c.label, c.score);
                let y = 4 + row as u32 * (10 * unit + 2);
                label(image, 4, y, &text, PALETTE[c.class_id % PALETTE.len()], unit);
            }
        }
    }
}

fn draw_detection(image: &mut RgbImage, d: &Detection, unit: u32) {
    let colour = PALETTE[d.class_id % PALETTE.len()];
    let (x1, y1) = (d.bbox.x1.round() as i64, d.bbox.y1.round() as i64);
    let (x2, y2) = (d.bbox.x2.round() as i64, d.bbox.y2.round() as i64);
    let thickness = 2 * unit as i64;
    for t in 0..thickness {
        for x in x1..=x2 {
            put(image, x, y1 + t, colour);
            put(image, x, y2 - t, colour);
        }
        for y in y1..=y2 {
            put(image, x1 + t, y, colour);
            put(image, x2 - t, y, colour);
        }
    }
    // Keypoints: a dot ringed in white, skipped where the model thinks the point is hidden.
    let r = 2 * unit as i64;
    let shown = |k: &Keypoint| k.x.is_finite() && k.y.is_finite() && k.score.is_none_or(|s| s >= KEYPOINT_VISIBLE);
    for (_, k) in d.keypoints.iter().filter(|(_, k)| shown(k)) {
        // Clamped well outside any image, so that the offsets below cannot overflow.
        let (kx, ky) = (k.x.clamp(-1e6, 1e6).round() as i64, k.y.clamp(-1e6, 1e6).round() as i64);
        for dy in -r - 1..=r + 1 {
            for dx in -r - 1..=r + 1 {
                let ring = dx.abs() > r || dy.abs() > r;
                put(image, kx + dx, ky + dy, if ring { [255, 255, 255] } else { colour });
            }
        }
    }
    let text = format!("{} {:.2}", d.label, d.score);
    let text_h = 10 * unit as i64;
    let ty = if y1 >= text_h { y1 - text_h } else { y1 };
    label(image, x1.max(0) as u32, ty.max(0) as u32, &text, colour, unit);
}

/// Writes `text` on a filled background of `colour` with its top-left at (x, y).
fn label(image: &mut RgbImage, x: u32, y: u32, words: &str, colour: [u8; 3], unit: u32) {
    let (xi, yi, u) = (x as i64, y as i64, unit as i64);
    let width = words.chars().count() as i64 * 8 * u + 2 * u;
    for dy in 0..10 * u {
        for dx in 0..width {
            put(image, xi + dx, yi + dy, colour);
        }
    }
    let ink = if colour.iter().map(|&c| c as u32).sum::<u32>() > 380 { [0, 0, 0] } else { [255, 255, 255] };
    text(image, xi + u, yi + u, words, ink, unit);
}

/// Writes `text` in the 8×8 font scaled by `unit`, its top-left at (x, y); pixels outside
/// the image are skipped.
pub(crate) fn text(image: &mut RgbImage, x: i64, y: i64, text: &str, ink: [u8; 3], unit: u32) {
    let u = unit as i64;
    for (i, ch) in text.chars().enumerate() {
        let glyph = font8x8::BASIC_FONTS.get(ch).or_else(|| font8x8::BASIC_FONTS.get('?')).unwrap_or([0; 8]);
        for (gy, bits) in glyph.iter().enumerate() {
            for gx in 0..8 {
                if bits & (1 << gx) != 0 {
                    for sy in 0..u {
                        for sx in 0..u {
                            put(image, x + (i as i64 * 8 + gx) * u + sx, y + gy as i64 * u + sy, ink);
                        }
                    }
                }
            }
        }
    }
}

pub(crate) fn put(image: &mut RgbImage, x: i64, y: i64, colour: [u8; 3]) {
    if x >= 0 && y >= 0 && (x as u32) < image.width() && (y as u32) < image.height() {
        image.put_pixel(x as u32, y as u32, Rgb(colour));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BBox;

    #[test]
    fn draws_a_box_outline_in_the_class_colour() {
        let mut img = RgbImage::new(100, 100);
        let det = Detection {
            label: "cat".into(),
            class_id: 1,
            score: 0.9,
            bbox: BBox { x1: 20.0, y1: 40.0, x2: 80.0, y2: 90.0 },
            keypoints: Default::default(),
        };
        draw(&mut img, &Prediction::Detections(vec![det]));
        assert_eq!(img.get_pixel(50, 90).0, PALETTE[1]);
        assert_eq!(img.get_pixel(20, 60).0, PALETTE[1]);
        // Inside the box stays untouched; the label sits above the box.
        assert_eq!(img.get_pixel(50, 60).0, [0, 0, 0]);
        assert_ne!(img.get_pixel(21, 31).0, [0, 0, 0]);
    }

    /// A person in the box (20, 40)–(80, 90) with these points, named a, b, c, ….
    fn with_points(points: Vec<Keypoint>) -> Prediction {
        let names: Vec<String> = (0..points.len()).map(|i| char::from(b'a' + i as u8).to_string()).collect();
        Prediction::Detections(vec![Detection {
            label: "person".into(),
            class_id: 0,
            score: 0.9,
            bbox: BBox { x1: 20.0, y1: 40.0, x2: 80.0, y2: 90.0 },
            keypoints: crate::model::Keypoints { names: names.into(), points },
        }])
    }

    #[test]
    fn keypoints_are_dots_unless_hidden() {
        let mut img = RgbImage::new(100, 100);
        let k = |x: f32, y: f32, score: Option<f32>| Keypoint { x, y, score };
        draw(&mut img, &with_points(vec![k(50.0, 60.0, None), k(35.0, 70.0, Some(0.9)), k(65.0, 70.0, Some(0.2))]));
        assert_eq!(img.get_pixel(50, 60).0, PALETTE[0]);
        assert_eq!(img.get_pixel(53, 60).0, [255, 255, 255], "ringed");
        assert_eq!(img.get_pixel(35, 70).0, PALETTE[0]);
        assert_eq!(img.get_pixel(65, 70).0, [0, 0, 0], "a hidden point is not drawn");
        // NaN or far-away points draw nothing and do not panic.
        draw(&mut img, &with_points(vec![k(f32::NAN, 1e30, None), k(-1e30, f32::INFINITY, Some(1.0))]));
    }

    #[test]
    fn boxes_outside_the_image_do_not_panic() {
        let mut img = RgbImage::new(10, 10);
        let det = Detection {
            label: "x".into(),
            class_id: 0,
            score: 1.0,
            bbox: BBox { x1: -50.0, y1: -50.0, x2: 500.0, y2: 500.0 },
            keypoints: Default::default(),
        };
        draw(&mut img, &Prediction::Detections(vec![det]));
    }
}
