//! Image → input tensor: resize (letterbox or stretch), normalise, lay out, and the
//! [`Transform`] that maps boxes from input pixels back to the original image.
//!
//! The resampler is a separable triangle (bilinear) filter with pixel centres at +0.5
//! whose support widens with the downscale factor, so a 1920-pixel frame shrunk to 416
//! averages every source pixel instead of sampling a few (plain bilinear aliases badly at
//! such factors). Everything is computed in f32 without rounding back to u8. The exact
//! arithmetic is written down in docs/models.md so that other tools (the fixture script
//! in tests/fixtures) can reproduce vigil's input tensor bit for bit up to float rounding.

use std::cell::RefCell;
use std::rc::Rc;

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
    let mut out = Interleaved(vec![0f32; height * width * 3]);
    resize_rows(image, width, height, &mut out);
    out.0
}

/// Where the resize puts its rows: `put(y, line)` gets output row `y`, in order, as
/// interleaved RGB f32. A trait rather than a closure so that the AVX2 build of the resize
/// compiles the sink's loop for AVX2 too (a closure is compiled once, for the baseline).
trait Rows {
    fn put(&mut self, y: usize, line: &[f32]);
}

/// The resized image as it is, interleaved RGB.
struct Interleaved(Vec<f32>);

impl Rows for Interleaved {
    #[inline(always)]
    fn put(&mut self, y: usize, line: &[f32]) {
        self.0[y * line.len()..(y + 1) * line.len()].copy_from_slice(line);
    }
}

/// Output rows resampled side by side in the horizontal pass, one per SIMD lane. Four (a
/// 128-bit vector, NEON's and SSE's width) rather than eight: with eight the tile of a
/// 512-pixel row outgrows the L1 cache, which cost more than AVX2's wider horizontal pass
/// saved (measured with AVX2: 8 lanes took 0.94–1.26× the time of 4).
const LANES: usize = 4;

/// What resizing from one size to another takes besides the pixels: each axis's taps, the
/// horizontal ones padded with zero weights to one length `n` (adding 0·v changes no sum),
/// so that the horizontal pass's inner loop has one shape.
struct Plan {
    /// Source width and height, output width and height.
    sizes: [usize; 4],
    xt: Vec<Taps>,
    yt: Vec<Taps>,
    n: usize,
    /// `n` weights per output column.
    weights: Vec<f32>,
}

thread_local! {
    /// The last plan this thread resized with. A camera's frames keep their size, and
    /// building the plan cost nearly a tenth of resizing a 512² picture to 128².
    static PLAN: RefCell<Option<Rc<Plan>>> = const { RefCell::new(None) };
}

impl Plan {
    /// This thread's plan for these sizes, built if its last one was for others.
    fn cached(sizes: [usize; 4]) -> Rc<Plan> {
        PLAN.with_borrow_mut(|plan| match plan {
            Some(plan) if plan.sizes == sizes => plan.clone(),
            _ => plan.insert(Rc::new(Plan::new(sizes))).clone(),
        })
    }

    fn new(sizes: [usize; 4]) -> Plan {
        let [sw, sh, width, height] = sizes;
        let (xt, yt) = (axis_taps(sw, width), axis_taps(sh, height));
        let n = xt.iter().map(|t| t.weights.len()).max().unwrap_or(1);
        let mut weights = vec![0f32; width * n];
        for (ws, t) in weights.chunks_exact_mut(n).zip(&xt) {
            ws[..t.weights.len()].copy_from_slice(&t.weights);
        }
        Plan { sizes, xt, yt, n, weights }
    }
}

/// The resize, one output row at a time, into `rows`.
///
/// On x86-64 CPUs with AVX2 the same code is compiled a second time for AVX2 and chosen at
/// run time: twice the vector width, and the same results bit for bit, since no
/// multiply-add is fused and every sum is still taken in the same order.
fn resize_rows(image: &RgbImage, width: usize, height: usize, rows: &mut impl Rows) {
    let plan = Plan::cached([image.width() as usize, image.height() as usize, width, height]);
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has just been found to support AVX2.
        return unsafe { resize_rows_avx2(image, &plan, rows) };
    }
    resize_rows_portable(image, &plan, rows)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn resize_rows_avx2(image: &RgbImage, plan: &Plan, rows: &mut impl Rows) {
    resize_rows_portable(image, plan, rows)
}

/// The resize itself (see [`resize_rows`]).
///
/// The vertical pass comes first: an output row is a weighted sum of whole source rows
/// (contiguous, so it vectorises along the row, reading the 8-bit pixels directly). Every
/// `LANES` such rows are interleaved into a tile, so that the horizontal pass computes
/// `LANES` rows at once, each tap a contiguous load (interleaving whole rows at once
/// vectorises; storing each value into its lane as it was computed took 2.6–3.7 times as
/// long). Every output value is still the sum of its taps in order, so the result does not
/// depend on `LANES` or the machine's vectors.
#[inline(always)]
fn resize_rows_portable(image: &RgbImage, plan: &Plan, rows: &mut impl Rows) {
    let Plan { sizes: [sw, _, width, height], xt, yt, n, weights } = plan;
    let (sw, width, height, n) = (*sw, *width, *height, *n);
    let src = image.as_raw();
    let stride = sw * 3;

    // `LANES` vertically resampled rows, then interleaved: value j of lane l at tile[j][l];
    // the zeros past the row let a window of `n` pixels start at any tap's first pixel.
    let mut columns = vec![0f32; LANES * stride];
    let mut tile = vec![[0f32; LANES]; (sw + n) * 3];
    let mut done = vec![[0f32; LANES]; width * 3];
    let mut line = vec![0f32; width * 3];
    for (y, taps) in yt.iter().enumerate() {
        let lane = y % LANES;
        let column = &mut columns[lane * stride..][..stride];
        // The first tap's products are stored rather than added to zeros: the same values
        // (0 + x = x for the non-negative x here), without clearing the row first.
        let src_row = |k: usize| &src[(taps.first + k) * stride..][..stride];
        let (&w, rest) = taps.weights.split_first().expect("every output pixel has a tap");
        for (d, &s) in column.iter_mut().zip(src_row(0)) {
            *d = w * f32::from(s);
        }
        for (k, &w) in rest.iter().enumerate() {
            for (d, &s) in column.iter_mut().zip(src_row(k + 1)) {
                *d += w * f32::from(s);
            }
        }
        if lane < LANES - 1 && y < height - 1 {
            continue;
        }
        // (After a last, partial group of rows the lanes past `lane` hold older rows, whose
        // results are not put.)
        let lanes: [&[f32]; LANES] = std::array::from_fn(|l| &columns[l * stride..][..stride]);
        for (j, t) in tile[..stride].iter_mut().enumerate() {
            *t = std::array::from_fn(|l| lanes[l][j]);
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
            rows.put(y - lane + l, &line);
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

/// Resized rows normalised straight into their place in the input tensor.
struct Normalised<'a> {
    data: &'a mut [f32],
    layout: Layout,
    /// The tensor's width and height, and where the picture starts in it.
    width: usize,
    height: usize,
    pad_x: usize,
    pad_y: usize,
    /// Per source channel (R, G, B): the model channel it feeds, and `v · mul + add`.
    channel: [usize; 3],
    mul: [f32; 3],
    add: [f32; 3],
}

impl Rows for Normalised<'_> {
    #[inline(always)]
    fn put(&mut self, y: usize, line: &[f32]) {
        let (w, at) = (self.width, (y + self.pad_y) * self.width + self.pad_x);
        let (mul, add, channel) = (self.mul, self.add, self.channel);
        match self.layout {
            Layout::Nchw => {
                // One pass over the row, R, G and B each to its plane: constant offsets in
                // the interleaved row, so the loop vectorises.
                let mut planes = self.data.chunks_exact_mut(w * self.height);
                let mut planes: [Option<&mut [f32]>; 3] = std::array::from_fn(|_| planes.next());
                let [r, g, b] = channel.map(|c| planes[c].take().expect("each of the three planes once"));
                for (((r, g), b), rgb) in
                    r[at..].iter_mut().zip(&mut g[at..]).zip(&mut b[at..]).zip(line.chunks_exact(3))
                {
                    *r = rgb[0] * mul[0] + add[0];
                    *g = rgb[1] * mul[1] + add[1];
                    *b = rgb[2] * mul[2] + add[2];
                }
            }
            Layout::Nhwc => {
                let out = &mut self.data[at * 3..][..line.len()];
                for (o, rgb) in out.chunks_exact_mut(3).zip(line.chunks_exact(3)) {
                    for (k, &v) in rgb.iter().enumerate() {
                        o[channel[k]] = v * mul[k] + add[k];
                    }
                }
            }
        }
    }
}

/// Turns an image into the model's input tensor and the transform back to the image.
/// Each resized row is normalised straight into its place in the tensor (no resized
/// image in between); the arithmetic is [`resize_rgb`]'s, then `v · mul + add`.
pub fn preprocess(image: &RgbImage, spec: &InputSpec) -> (InputTensor, Transform) {
    let (nw, nh, t) = placement(spec, image.width(), image.height());
    let (w, h) = (spec.width, spec.height);

    // Per model channel c: its affine normalisation, and the pad value it gets.
    let mul: [f32; 3] = std::array::from_fn(|c| spec.scale / spec.std[c]);
    let add: [f32; 3] = std::array::from_fn(|c| -spec.mean[c] / spec.std[c]);
    let pad: [f32; 3] = std::array::from_fn(|c| spec.pad * mul[c] + add[c]);
    // Per source channel k (R, G, B): the model channel it feeds.
    let channel = match spec.channels {
        ChannelOrder::Rgb => [0, 1, 2],
        ChannelOrder::Bgr => [2, 1, 0],
    };

    // The pad value everywhere, written once; the picture then overwrites its part.
    let mut data = match spec.layout {
        Layout::Nchw => {
            let mut data = Vec::with_capacity(3 * w * h);
            for value in pad {
                data.resize(data.len() + w * h, value);
            }
            data
        }
        Layout::Nhwc => [pad].repeat(w * h).into_flattened(),
    };
    let mut rows = Normalised {
        data: &mut data,
        layout: spec.layout,
        width: w,
        height: h,
        pad_x: t.pad_x as usize,
        pad_y: t.pad_y as usize,
        channel,
        mul: channel.map(|c| mul[c]),
        add: channel.map(|c| add[c]),
    };
    resize_rows(image, nw, nh, &mut rows);
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

    /// Pseudo-random pixels, so that rounding differences would show.
    fn noise(width: u32, height: u32) -> RgbImage {
        let mut seed = 0x2545_f491_u32;
        RgbImage::from_fn(width, height, |_, _| {
            image::Rgb(std::array::from_fn(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            }))
        })
    }

    /// The values' bits, to compare floats exactly (and show where they differ).
    fn bits(values: &[f32]) -> Vec<u32> {
        values.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn the_resize_is_the_documented_sums_bit_for_bit() {
        // docs/models.md, written out plainly: columns first, each sum taken in tap order
        // from zero. The sizes alternate, so the thread's cached plan is replaced as well
        // as reused, and their heights leave a last, partial group of lanes.
        let img = noise(61, 37);
        let src = |x: usize, y: usize, c: usize| f32::from(img.get_pixel(x as u32, y as u32)[c]);
        for (w, h) in [(13, 9), (150, 91), (13, 9), (7, 40), (7, 40), (1, 1), (61, 37)] {
            let (xt, yt) = (axis_taps(61, w), axis_taps(37, h));
            let mut want = Vec::with_capacity(w * h * 3);
            for ty in &yt {
                let column = |x: usize, c: usize| {
                    ty.weights.iter().enumerate().fold(0f32, |sum, (k, wy)| sum + wy * src(x, ty.first + k, c))
                };
                for tx in &xt {
                    for c in 0..3 {
                        want.push(
                            tx.weights.iter().enumerate().fold(0f32, |sum, (k, wx)| sum + wx * column(tx.first + k, c)),
                        );
                    }
                }
            }
            assert_eq!(bits(&resize_rgb(&img, w, h)), bits(&want), "61x37 -> {w}x{h}");
        }
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn the_avx2_build_gives_the_portable_results_bit_for_bit() {
        if !std::arch::is_x86_feature_detected!("avx2") {
            eprintln!("this CPU has no AVX2: only the portable build runs here");
            return;
        }
        let img = noise(61, 37);
        for (w, h) in [(13, 9), (61, 37), (150, 91), (7, 40), (1, 1)] {
            let plan = Plan::new([61, 37, w, h]);
            let mut avx2 = Interleaved(vec![0f32; w * h * 3]);
            // SAFETY: the CPU was found to support AVX2 above.
            unsafe { resize_rows_avx2(&img, &plan, &mut avx2) };
            let mut portable = Interleaved(vec![0f32; w * h * 3]);
            resize_rows_portable(&img, &plan, &mut portable);
            assert_eq!(bits(&avx2.0), bits(&portable.0), "61x37 -> {w}x{h}");
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
