//! Augmentation for detection: the image is scaled about its centre, shifted and mirrored
//! by one affine resampling on the training device, and its boxes move with it; then
//! brightness, contrast and saturation are jittered as for classification.
//!
//! Boxes are transformed by their corners and clipped to the image. A box is dropped when
//! what is left inside is under 2 pixels wide or high, or under a fifth of its transformed
//! area (an object mostly pushed out of view is no longer a fair target). Pixels brought in
//! from outside the image take the letterbox fill, as the manifest's letterbox pads.

use tch::Tensor;

use crate::dataset::SplitMix64;
use crate::model::BBox;

/// The random ranges of [`augment`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxAugment {
    /// Mirror left–right with probability ½.
    pub flip: bool,
    /// Scale factor range, about the image centre (e.g. 0.6–1.4).
    pub scale: (f64, f64),
    /// Largest shift, as a fraction of the side, either way.
    pub translate: f64,
    /// Brightness, contrast and saturation factors in [1 − j, 1 + j].
    pub jitter: f64,
}

/// One draw of the geometry: `scale`, `shift` (in units of the side, so 0.1 moves a tenth of
/// the width or height) and `flip`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine {
    pub scale: f64,
    pub shift: (f64, f64),
    pub flip: bool,
}

impl Affine {
    pub fn draw(a: &BoxAugment, rng: &mut SplitMix64) -> Affine {
        let mut unit = || rng.unit();
        Affine {
            scale: a.scale.0 + (a.scale.1 - a.scale.0) * unit(),
            shift: ((unit() * 2.0 - 1.0) * a.translate, (unit() * 2.0 - 1.0) * a.translate),
            flip: a.flip && unit() < 0.5,
        }
    }

    /// Where input pixel coordinate (x, y) lands in a `width × height` image.
    pub fn apply(&self, x: f64, y: f64, width: f64, height: f64) -> (f64, f64) {
        let (cx, cy) = (width / 2.0, height / 2.0);
        let nx = (x - cx) * self.scale + cx + self.shift.0 * width;
        let ny = (y - cy) * self.scale + cy + self.shift.1 * height;
        (if self.flip { width - nx } else { nx }, ny)
    }

    /// A box's image under the transform, clipped, or `None` when it is dropped (see the
    /// module's rule).
    pub fn apply_box(&self, b: &BBox, width: f64, height: f64) -> Option<BBox> {
        let (xa, ya) = self.apply(b.x1 as f64, b.y1 as f64, width, height);
        let (xb, yb) = self.apply(b.x2 as f64, b.y2 as f64, width, height);
        let (x1, x2, y1, y2) = (xa.min(xb), xa.max(xb), ya.min(yb), ya.max(yb));
        let full = (x2 - x1) * (y2 - y1);
        let (cx1, cy1, cx2, cy2) = (x1.max(0.0), y1.max(0.0), x2.min(width), y2.min(height));
        let (w, h) = (cx2 - cx1, cy2 - cy1);
        if w < 2.0 || h < 2.0 || w * h < 0.2 * full {
            return None;
        }
        Some(BBox { x1: cx1 as f32, y1: cy1 as f32, x2: cx2 as f32, y2: cy2 as f32 })
    }
}

/// Resamples `x` ([N, 3, H, W], raw 0–255) by one [`Affine`] per image, filling uncovered
/// pixels with `fill` (0–255).
pub fn warp(x: &Tensor, affines: &[Affine], fill: f64) -> Tensor {
    let n = x.size()[0];
    assert_eq!(n as usize, affines.len(), "one affine per image");
    // grid_sample maps each output position to an input position, in coordinates that run
    // from −1 to 1 across the image: the inverse of `Affine::apply`.
    let theta: Vec<f32> = affines
        .iter()
        .flat_map(|a| {
            let f = if a.flip { -1.0 } else { 1.0 };
            let (tx, ty) = (2.0 * a.shift.0, 2.0 * a.shift.1);
            [(f / a.scale) as f32, 0.0, (-tx / a.scale) as f32, 0.0, (1.0 / a.scale) as f32, (-ty / a.scale) as f32]
        })
        .collect();
    let theta = Tensor::from_slice(&theta).reshape([n, 2, 3]).to_device(x.device()).to_kind(x.kind());
    let grid = Tensor::affine_grid_generator(&theta, x.size(), false);
    // Bilinear (0), zero padding (0) of the image less the fill: the fill comes back outside.
    (x - fill).grid_sampler(&grid, 0, 0, false) + fill
}

/// Brightness, contrast and saturation jitter per image, factors in [1 − j, 1 + j].
pub fn jitter(x: &Tensor, j: f64, rng: &mut SplitMix64) -> Tensor {
    if j <= 0.0 {
        return x.shallow_clone();
    }
    let n = x.size()[0];
    let factors: Vec<f32> = (0..n * 3).map(|_| (1.0 + (rng.unit() * 2.0 - 1.0) * j) as f32).collect();
    super::augment::colour_jitter(x, &Tensor::from_slice(&factors).reshape([n, 3]).to_device(x.device()))
}

/// Augments a batch and its boxes (per image, in input pixels): returns the images and, per
/// image, the boxes kept with the index of the box they came from.
pub fn augment(
    x: &Tensor,
    boxes: &[Vec<BBox>],
    a: &BoxAugment,
    fill: f64,
    rng: &mut SplitMix64,
) -> (Tensor, Vec<Vec<(usize, BBox)>>) {
    let size = x.size();
    let (h, w) = (size[2] as f64, size[3] as f64);
    let affines: Vec<Affine> = boxes.iter().map(|_| Affine::draw(a, rng)).collect();
    let moved = boxes
        .iter()
        .zip(&affines)
        .map(|(bs, t)| bs.iter().enumerate().filter_map(|(i, b)| t.apply_box(b, w, h).map(|b| (i, b))).collect())
        .collect();
    (jitter(&warp(x, &affines, fill), a.jitter, rng), moved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// A black 64×48 image with a white rectangle, as [1, 3, 48, 64].
    fn picture(b: &BBox) -> Tensor {
        let x = Tensor::zeros([1, 3, 48, 64], (Kind::Float, Device::Cpu));
        let _ =
            x.narrow(2, b.y1 as i64, (b.y2 - b.y1) as i64).narrow(3, b.x1 as i64, (b.x2 - b.x1) as i64).fill_(255.0);
        x
    }

    /// The bounding box of the pixels brighter than half.
    fn bright_box(x: &Tensor) -> BBox {
        let mask = x.select(0, 0).select(0, 0).gt(127.5);
        let rows = mask.any_dim(1, false).nonzero().squeeze_dim(1);
        let cols = mask.any_dim(0, false).nonzero().squeeze_dim(1);
        let first_last = |t: &Tensor| (t.int64_value(&[0]) as f32, t.int64_value(&[t.size()[0] - 1]) as f32 + 1.0);
        let ((y1, y2), (x1, x2)) = (first_last(&rows), first_last(&cols));
        BBox { x1, y1, x2, y2 }
    }

    #[test]
    fn boxes_move_with_the_pixels() {
        let b = BBox { x1: 16.0, y1: 12.0, x2: 40.0, y2: 30.0 };
        for affine in [
            Affine { scale: 1.0, shift: (0.0, 0.0), flip: true },
            Affine { scale: 1.25, shift: (0.1, -0.05), flip: false },
            Affine { scale: 0.75, shift: (-0.125, 0.1), flip: true },
        ] {
            let moved = affine.apply_box(&b, 64.0, 48.0).unwrap();
            let seen = bright_box(&warp(&picture(&b), &[affine], 0.0));
            for (m, s) in [(moved.x1, seen.x1), (moved.y1, seen.y1), (moved.x2, seen.x2), (moved.y2, seen.y2)] {
                assert!((m - s).abs() <= 1.0, "{affine:?}: the box went to {moved:?}, the pixels to {seen:?}");
            }
        }
    }

    #[test]
    fn uncovered_pixels_take_the_fill() {
        let x = Tensor::full([1, 3, 8, 8], 10.0, (Kind::Float, Device::Cpu));
        let y = warp(&x, &[Affine { scale: 0.5, shift: (0.0, 0.0), flip: false }], 114.0);
        assert_eq!(y.double_value(&[0, 0, 0, 0]), 114.0, "a corner left uncovered");
        assert!((y.double_value(&[0, 1, 4, 4]) - 10.0).abs() < 1e-4, "the centre keeps the image");
    }

    #[test]
    fn boxes_pushed_out_of_view_are_clipped_or_dropped() {
        let t = Affine { scale: 1.0, shift: (0.4, 0.0), flip: false };
        // 16 px wide at x 16–32 lands at 41.6–57.6 of 64: inside, whole.
        let whole = t.apply_box(&BBox { x1: 16.0, y1: 8.0, x2: 32.0, y2: 24.0 }, 64.0, 48.0).unwrap();
        assert!((whole.x1 - 41.6).abs() < 1e-4 && (whole.x2 - 57.6).abs() < 1e-4, "{whole:?}");
        // 20 px at x 30–50 lands at 55.6–75.6: 8.4 px (42 %) left inside, clipped at the edge.
        let clipped = t.apply_box(&BBox { x1: 30.0, y1: 8.0, x2: 50.0, y2: 24.0 }, 64.0, 48.0).unwrap();
        assert!((clipped.x1 - 55.6).abs() < 1e-4 && clipped.x2 == 64.0, "{clipped:?}");
        // 20 px at x 40–60 lands at 65.6–85.6: gone.
        assert_eq!(t.apply_box(&BBox { x1: 40.0, y1: 8.0, x2: 60.0, y2: 24.0 }, 64.0, 48.0), None);
        // 16 px at x 36–52 lands at 61.6–77.6: 2.4 px (15 %) left inside, dropped.
        assert_eq!(t.apply_box(&BBox { x1: 36.0, y1: 8.0, x2: 52.0, y2: 24.0 }, 64.0, 48.0), None);
    }

    #[test]
    fn augment_keeps_the_indices_of_the_boxes_it_keeps() {
        let a = BoxAugment { flip: true, scale: (1.0, 1.0), translate: 0.0, jitter: 0.2 };
        let boxes =
            vec![vec![BBox { x1: 2.0, y1: 2.0, x2: 20.0, y2: 20.0 }, BBox { x1: 30.0, y1: 4.0, x2: 60.0, y2: 40.0 }]];
        let x = Tensor::full([1, 3, 48, 64], 100.0, (Kind::Float, Device::Cpu));
        let (y, kept) = augment(&x, &boxes, &a, 0.0, &mut SplitMix64(3));
        assert_eq!(y.size(), [1, 3, 48, 64]);
        assert_eq!(kept[0].iter().map(|(i, _)| *i).collect::<Vec<_>>(), [0, 1]);
        let max = y.max().double_value(&[]);
        assert!((0.0..=255.0).contains(&max));
    }
}
