//! Image → input tensor: resize (letterbox or stretch), normalise, lay out, and the
//! [`Transform`] that maps boxes from input pixels back to the original image.
//!
//! The resampler is a separable triangle (bilinear) filter with pixel centres at +0.5
//! whose support widens with the downscale factor, so a 1920-pixel frame shrunk to 416
//! averages every source pixel instead of sampling a few (plain bilinear aliases badly at
//! such factors). Everything is computed in f32 without rounding back to u8. The exact
//! arithmetic is written down in docs/models.md so that other tools (the fixture script
//! in tests/fixtures) can reproduce vigil's input tensor bit for bit up to float rounding.

use image::RgbImage;

use super::manifest::{ChannelOrder, InputSpec, Layout, Resize};
use super::{BBox, Keypoint};

/// The input tensor for one image, in the model's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct InputTensor {
    pub shape: [usize; 4],
    pub data: Vec<f32>,
}

/// Maps coordinates in the model's input back to the original image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Transform {
    pub scale_x: f32,
    pub scale_y: f32,
    pub pad_x: f32,
    pub pad_y: f32,
    pub image_width: u32,
    pub image_height: u32,
}

impl Transform {
    /// Input-pixel x → original-image x, clamped to the image.
    pub fn x(&self, x: f32) -> f32 {
        ((x - self.pad_x) / self.scale_x).clamp(0.0, self.image_width as f32)
    }

    /// Input-pixel y → original-image y, clamped to the image.
    pub fn y(&self, y: f32) -> f32 {
        ((y - self.pad_y) / self.scale_y).clamp(0.0, self.image_height as f32)
    }

    /// A box in input pixels → in original-image pixels, clamped to the image.
    pub fn map_box(&self, b: &BBox) -> BBox {
        BBox { x1: self.x(b.x1), y1: self.y(b.y1), x2: self.x(b.x2), y2: self.y(b.y2) }
    }

    /// A keypoint in input pixels → in original-image pixels, clamped to the image.
    pub fn map_keypoint(&self, k: &Keypoint) -> Keypoint {
        Keypoint { x: self.x(k.x), y: self.y(k.y), score: k.score }
    }
}

/// Resampling weights for one output position: the first source index and the
/// normalised weights of the consecutive source pixels from there.
#[derive(Debug, Clone, PartialEq)]
pub struct Taps {
    pub first: usize,
    pub weights: Vec<f32>,
}

/// Triangle-filter taps for resampling an axis of `src` pixels to `dst` pixels.
///
/// Output pixel `o` is centred at `c = (o + 0.5) · src/dst` in source coordinates; with
/// `support = max(src/dst, 1)`, source pixel `i` gets weight `max(0, 1 − |i + 0.5 − c| /
/// support)`; weights are divided by their sum (which also handles the borders).
pub fn axis_taps(src: usize, dst: usize) -> Vec<Taps> {
    assert!(src > 0 && dst > 0, "cannot resample an empty axis");
    let ratio = src as f64 / dst as f64;
    let support = ratio.max(1.0);
    (0..dst)
        .map(|o| {
            let centre = (o as f64 + 0.5) * ratio;
            let lo = ((centre - support).floor().max(0.0)) as usize;
            let hi = ((centre + support).ceil() as usize).min(src);
            let raw: Vec<f64> =
                (lo..hi).map(|i| (1.0 - ((i as f64 + 0.5 - centre) / support).abs()).max(0.0)).collect();
            let sum: f64 = raw.iter().sum();
            // The nearest source pixel always has a positive weight, so sum > 0.
            Taps { first: lo, weights: raw.iter().map(|w| (w / sum) as f32).collect() }
        })
        .collect()
}

/// Resizes an RGB image to `width` × `height`, returning interleaved RGB f32 (0–255).
pub fn resize_rgb(image: &RgbImage, width: usize, height: usize) -> Vec<f32> {
    let mut out = vec![0f32; height * width * 3];
    resize_rows(image, width, height, |y, line| out[y * width * 3..(y + 1) * width * 3].copy_from_slice(line));
    out
}

/// Output rows resampled side by side in the horizontal pass, one per SIMD lane.
const LANES: usize = 8;

/// The resize, one output row at a time: `row(y, line)` gets row `y` in order, as
/// interleaved RGB f32.
///
/// The vertical pass comes first: an output row is a weighted sum of whole source rows
/// (contiguous, so it vectorises along the row, reading the 8-bit pixels directly). Its
/// rows are stored transposed, `LANES` at a time, so that the horizontal pass computes
/// `LANES` rows at once, each tap a contiguous load. Every output value is still the sum of
/// its taps in order, so the result does not depend on `LANES` or the machine's vectors.
fn resize_rows(image: &RgbImage, width: usize, height: usize, mut row: impl FnMut(usize, &[f32])) {
    let (sw, sh) = (image.width() as usize, image.height() as usize);
    let src = image.as_raw();
    let stride = sw * 3;
    let xt = axis_taps(sw, width);
    let yt = axis_taps(sh, height);
    // Horizontal taps padded to one length `n` with zero weights (adding 0·v changes no
    // sum), so that the inner loop has one shape.
    let n = xt.iter().map(|t| t.weights.len()).max().unwrap_or(1);
    let mut weights = vec![0f32; width * n];
    for (ws, t) in weights.chunks_exact_mut(n).zip(&xt) {
        ws[..t.weights.len()].copy_from_slice(&t.weights);
    }

    let mut column = vec![0f32; stride];
    // `LANES` vertically resampled rows: value j of lane l at tile[j][l]; the zeros past the
    // row let a window of `n` pixels start at any tap's first pixel.
    let mut tile = vec![[0f32; LANES]; (sw + n) * 3];
    let mut done = vec![[0f32; LANES]; width * 3];
    let mut line = vec![0f32; width * 3];
    for (y, taps) in yt.iter().enumerate() {
        column.fill(0.0);
        for (k, &w) in taps.weights.iter().enumerate() {
            let src_row = &src[(taps.first + k) * stride..][..stride];
            for (d, &s) in column.iter_mut().zip(src_row) {
                *d += w * f32::from(s);
            }
        }
        let lane = y % LANES;
        for (t, &v) in tile.iter_mut().zip(&column) {
            t[lane] = v;
        }
        if lane < LANES - 1 && y < height - 1 {
            continue;
        }
        for ((t, ws), out) in xt.iter().zip(weights.chunks_exact(n)).zip(done.chunks_exact_mut(3)) {
            let window = &tile[t.first * 3..(t.first + n) * 3];
            let mut acc = [[0f32; LANES]; 3];
            for (&w, pixel) in ws.iter().zip(window.chunks_exact(3)) {
                for (a, p) in acc.iter_mut().zip(pixel) {
                    for (a, p) in a.iter_mut().zip(p) {
                        *a += w * p;
                    }
                }
            }
            out.copy_from_slice(&acc);
        }
        for l in 0..=lane {
            for (v, d) in line.iter_mut().zip(&done) {
                *v = d[l];
            }
            row(y - lane + l, &line);
        }
    }
}

/// Where the resized image sits in the model input.
pub fn placement(spec: &InputSpec, image_width: u32, image_height: u32) -> (usize, usize, Transform) {
    let (iw, ih) = (image_width as f32, image_height as f32);
    let (w, h) = (spec.width, spec.height);
    match spec.resize {
        Resize::Stretch => (
            w,
            h,
            Transform {
                scale_x: w as f32 / iw,
                scale_y: h as f32 / ih,
                pad_x: 0.0,
                pad_y: 0.0,
                image_width,
                image_height,
            },
        ),
        Resize::Letterbox => {
            let s = (w as f32 / iw).min(h as f32 / ih);
            let nw = ((iw * s).round() as usize).clamp(1, w);
            let nh = ((ih * s).round() as usize).clamp(1, h);
            let (px, py) = ((w - nw) / 2, (h - nh) / 2);
            (
                nw,
                nh,
                Transform {
                    scale_x: nw as f32 / iw,
                    scale_y: nh as f32 / ih,
                    pad_x: px as f32,
                    pad_y: py as f32,
                    image_width,
                    image_height,
                },
            )
        }
    }
}

/// Turns an image into the model's input tensor and the transform back to the image.
/// Each resized row is normalised straight into its place in the tensor (no resized
/// image in between); the arithmetic is [`resize_rgb`]'s, then `v · mul + add`.
pub fn preprocess(image: &RgbImage, spec: &InputSpec) -> (InputTensor, Transform) {
    let (nw, nh, t) = placement(spec, image.width(), image.height());
    let (w, h) = (spec.width, spec.height);
    let (px, py) = (t.pad_x as usize, t.pad_y as usize);

    // Per model channel: which RGB channel feeds it, and its affine normalisation.
    let order = match spec.channels {
        ChannelOrder::Rgb => [0, 1, 2],
        ChannelOrder::Bgr => [2, 1, 0],
    };
    let mul: [f32; 3] = std::array::from_fn(|c| spec.scale / spec.std[c]);
    let add: [f32; 3] = std::array::from_fn(|c| -spec.mean[c] / spec.std[c]);
    let pad: [f32; 3] = std::array::from_fn(|c| spec.pad * mul[c] + add[c]);

    let mut data = vec![0f32; 3 * w * h];
    match spec.layout {
        Layout::Nchw => {
            for (plane, value) in data.chunks_exact_mut(w * h).zip(pad) {
                plane.fill(value);
            }
        }
        Layout::Nhwc => {
            for pixel in data.chunks_exact_mut(3) {
                pixel.copy_from_slice(&pad);
            }
        }
    }
    resize_rows(image, nw, nh, |y, line| {
        let y = y + py;
        match spec.layout {
            Layout::Nchw => {
                for c in 0..3 {
                    let out = &mut data[(c * h + y) * w + px..][..nw];
                    for (o, rgb) in out.iter_mut().zip(line.chunks_exact(3)) {
                        *o = rgb[order[c]] * mul[c] + add[c];
                    }
                }
            }
            Layout::Nhwc => {
                let out = &mut data[(y * w + px) * 3..][..nw * 3];
                for (o, rgb) in out.chunks_exact_mut(3).zip(line.chunks_exact(3)) {
                    for c in 0..3 {
                        o[c] = rgb[order[c]] * mul[c] + add[c];
                    }
                }
            }
        }
    });
    let shape = match spec.layout {
        Layout::Nchw => [1, 3, h, w],
        Layout::Nhwc => [1, h, w, 3],
    };
    (InputTensor { shape, data }, t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(width: usize, height: usize, resize: Resize, layout: Layout) -> InputSpec {
        InputSpec {
            width,
            height,
            layout,
            channels: ChannelOrder::Rgb,
            scale: 1.0,
            mean: [0.0; 3],
            std: [1.0; 3],
            resize,
            pad: 114.0,
        }
    }

    #[test]
    fn taps_sum_to_one_and_stay_in_range() {
        for (src, dst) in [(1920, 416), (7, 3), (3, 7), (416, 416), (1, 5), (5, 1)] {
            for t in axis_taps(src, dst) {
                let s: f32 = t.weights.iter().sum();
                assert!((s - 1.0).abs() < 1e-5, "{src}->{dst}: sum {s}");
                assert!(t.first + t.weights.len() <= src);
            }
        }
    }

    #[test]
    fn identity_resize_keeps_pixels() {
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 10, y as u8 * 20, 7]));
        let out = resize_rgb(&img, 5, 4);
        for (o, p) in out.chunks(3).zip(img.pixels()) {
            for (got, want) in o.iter().zip(p.0) {
                assert!((got - want as f32).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn downscale_by_two_averages_neighbours() {
        // Factor 2: support 2; output 0 is centred at 1.0, so source pixels 0 and 1 (at
        // distance 0.5) weigh 0.75 and pixel 2 (distance 1.5) 0.25; pixel -1 is outside
        // the image and the rest is renormalised: 3/7, 3/7, 1/7.
        let taps = axis_taps(4, 2);
        assert_eq!(taps[0].first, 0);
        let w = &taps[0].weights;
        let want = [3.0 / 7.0, 3.0 / 7.0, 1.0 / 7.0];
        assert_eq!(w.len(), 3);
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{w:?}");
        }
    }

    #[test]
    fn letterbox_centres_and_maps_back() {
        let s = spec(416, 416, Resize::Letterbox, Layout::Nchw);
        let (nw, nh, t) = placement(&s, 1920, 1280);
        assert_eq!((nw, nh), (416, 277));
        assert_eq!(t.pad_x, 0.0);
        assert_eq!(t.pad_y, 69.0);
        // The input's top-left of the picture area is the image's origin.
        assert_eq!(t.y(69.0), 0.0);
        assert!((t.x(208.0) - 960.0).abs() < 1e-3);
        assert!((t.y(69.0 + 277.0) - 1280.0).abs() < 1e-2);
    }

    #[test]
    fn letterbox_pads_with_the_pad_value_and_layouts_agree() {
        let img = RgbImage::from_pixel(20, 10, image::Rgb([10, 20, 30]));
        let (nchw, _) = preprocess(&img, &spec(8, 8, Resize::Letterbox, Layout::Nchw));
        let (nhwc, _) = preprocess(&img, &spec(8, 8, Resize::Letterbox, Layout::Nhwc));
        assert_eq!(nchw.shape, [1, 3, 8, 8]);
        assert_eq!(nhwc.shape, [1, 8, 8, 3]);
        // Row 0 is padding (image is 8x4 centred at rows 2..6), row 4 is picture.
        assert_eq!(nchw.data[0], 114.0);
        assert!((nchw.data[4 * 8 + 3] - 10.0).abs() < 1e-4);
        assert!((nchw.data[64 * 2 + 4 * 8 + 3] - 30.0).abs() < 1e-4);
        for c in 0..3 {
            for y in 0..8 {
                for x in 0..8 {
                    assert_eq!(nchw.data[(c * 8 + y) * 8 + x], nhwc.data[(y * 8 + x) * 3 + c]);
                }
            }
        }
    }

    #[test]
    fn bgr_and_normalisation() {
        let img = RgbImage::from_pixel(4, 4, image::Rgb([255, 0, 51]));
        let mut s = spec(4, 4, Resize::Stretch, Layout::Nchw);
        s.channels = ChannelOrder::Bgr;
        s.scale = 1.0 / 255.0;
        s.mean = [0.5, 0.5, 0.5];
        s.std = [0.5, 0.25, 0.5];
        let (t, _) = preprocess(&img, &s);
        // Channel 0 is blue = 51 → (0.2 - 0.5) / 0.5 = -0.6
        assert!((t.data[0] + 0.6).abs() < 1e-5, "{}", t.data[0]);
        // Channel 1 is green = 0 → -2
        assert!((t.data[16] + 2.0).abs() < 1e-5);
        // Channel 2 is red = 255 → 1
        assert!((t.data[32] - 1.0).abs() < 1e-5);
    }
}
