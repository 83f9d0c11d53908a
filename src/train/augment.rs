//! A classifier's augmentation, as tensor ops on the training device, and the colour jitter
//! the detector's augmentation shares.

use tch::{Kind, Tensor};

use super::Augment;
use crate::dataset::SplitMix64;

/// Random resized crop, rotation and horizontal flip as one affine resampling per image,
/// then brightness, contrast and saturation jitter; on raw 0–255 images, on the device.
pub(super) fn augment(x: &Tensor, a: &Augment, rng: &mut SplitMix64) -> Tensor {
    if *a == Augment::NONE {
        return x.shallow_clone();
    }
    let n = x.size()[0];
    let mut unit = || rng.unit();
    let mut theta = Vec::with_capacity(n as usize * 6);
    let mut factors = Vec::with_capacity(n as usize * 3);
    for _ in 0..n {
        let s = a.min_scale + (1.0 - a.min_scale) * unit();
        let angle = (unit() * 2.0 - 1.0) * a.rotation.to_radians();
        let flip = if a.flip && unit() < 0.5 { -1.0 } else { 1.0 };
        let (tx, ty) = ((unit() * 2.0 - 1.0) * (1.0 - s), (unit() * 2.0 - 1.0) * (1.0 - s));
        let (c, si) = (angle.cos() * s, angle.sin() * s);
        theta.extend([(c * flip) as f32, -si as f32, tx as f32, (si * flip) as f32, c as f32, ty as f32]);
        for _ in 0..3 {
            factors.push((1.0 + (unit() * 2.0 - 1.0) * a.jitter) as f32);
        }
    }
    let device = x.device();
    let theta = Tensor::from_slice(&theta).reshape([n, 2, 3]).to_device(device);
    let grid = Tensor::affine_grid_generator(&theta, x.size(), false);
    // Bilinear (0), border padding (1).
    let mut y = x.grid_sampler(&grid, 0, 1, false);
    if a.jitter > 0.0 {
        y = colour_jitter(&y, &Tensor::from_slice(&factors).reshape([n, 3]).to_device(device));
    }
    y
}

/// Multiplies brightness, contrast and saturation of each raw 0–255 image of `x` [N, 3, H, W]
/// by its row of `factors` [N, 3], and clamps to 0–255.
pub(super) fn colour_jitter(x: &Tensor, factors: &Tensor) -> Tensor {
    let n = x.size()[0];
    let at = |k: i64| factors.select(1, k).reshape([n, 1, 1, 1]);
    let y = x * at(0);
    let mean = y.mean_dim([1i64, 2, 3].as_slice(), true, Kind::Float);
    let y = (&y - &mean) * at(1) + &mean;
    let gray = (y.select(1, 0) * 0.299 + y.select(1, 1) * 0.587 + y.select(1, 2) * 0.114).unsqueeze(1);
    ((&y - &gray) * at(2) + &gray).clamp(0.0, 255.0)
}
