//! The losses NanoDet is trained with (Generalized Focal Loss, Li et al. 2020), as tensor
//! functions over the predictions of the positive and negative anchor points:
//!
//! - [`quality_focal_loss`] on the class logits: binary cross-entropy against a soft target
//!   (the IoU of the predicted box with its ground truth for the positive class, 0 for every
//!   other), scaled by |target − σ(logit)|^β;
//! - [`distribution_focal_loss`] on the box-side bins: the two bins around each continuous
//!   target distance share it in proportion to their nearness, as a cross-entropy of the
//!   softmax over the bins;
//! - [`giou_loss`]: 1 − the generalised IoU of predicted and target boxes.
//!
//! Each returns per-row losses (no reduction), so the caller weights and normalises them as
//! the detector's recipe does. Unit tests compare them with the formulas computed by hand.

use tch::{Kind, Tensor};

/// Quality focal loss. `logits` [N, C] (before the sigmoid); `labels` [N] (a class index, or
/// any value ≥ C for a background point); `quality` [N] (the target score of the labelled
/// class, e.g. an IoU in 0–1). Returns [N]: each row's loss summed over its classes.
pub fn quality_focal_loss(logits: &Tensor, labels: &Tensor, quality: &Tensor, beta: f64) -> Tensor {
    let (n, c) = (logits.size()[0], logits.size()[1]);
    let sigma = logits.sigmoid();
    // Every class as a negative first: target 0, scaled by σ^β.
    let mut loss =
        logits.binary_cross_entropy_with_logits::<Tensor>(&logits.zeros_like(), None, None, tch::Reduction::None)
            * sigma.pow_tensor_scalar(beta);
    let positive = labels.ge(0).logical_and(&labels.lt(c));
    let rows = positive.nonzero().squeeze_dim(1);
    if rows.size()[0] > 0 {
        let cols = labels.index_select(0, &rows);
        let at = |t: &Tensor| t.index_select(0, &rows).gather(1, &cols.unsqueeze(1), false).squeeze_dim(1);
        let (x, s) = (at(logits), at(&sigma));
        let q = quality.index_select(0, &rows).to_kind(logits.kind());
        let pos = x.binary_cross_entropy_with_logits::<Tensor>(&q, None, None, tch::Reduction::None)
            * (&q - &s).abs().pow_tensor_scalar(beta);
        let flat = &rows * c + &cols;
        loss = loss.reshape([-1]).index_put(&[Some(flat)], &pos, false).reshape([n, c]);
    }
    loss.sum_dim_intlist([1i64].as_slice(), false, logits.kind())
}

/// Distribution focal loss. `logits` [N, B] over the bins 0 … B − 1 of one box side;
/// `target` [N] the continuous distance in bin units, clamped to [0, B − 1 − 0.1] as NanoDet's
/// `bbox2distance` does. Returns [N].
pub fn distribution_focal_loss(logits: &Tensor, target: &Tensor) -> Tensor {
    let bins = logits.size()[1];
    let target = target.clamp(0.0, bins as f64 - 1.0 - 0.1);
    let left = target.floor();
    let right = &left + 1.0;
    let (weight_left, weight_right) = (&right - &target, &target - &left);
    let logp = logits.log_softmax(1, logits.kind());
    let pick = |i: &Tensor| -logp.gather(1, &i.to_kind(Kind::Int64).unsqueeze(1), false).squeeze_dim(1);
    pick(&left) * weight_left + pick(&right) * weight_right
}

/// The IoU of each row of `a` with the same row of `b`, both [N, 4] as x1, y1, x2, y2
/// (the quality target of a positive point). Returns [N].
pub fn aligned_iou(a: &Tensor, b: &Tensor) -> Tensor {
    let col = |t: &Tensor, i: i64| t.select(1, i);
    let area = |x1: &Tensor, y1: &Tensor, x2: &Tensor, y2: &Tensor| (x2 - x1).clamp_min(0.0) * (y2 - y1).clamp_min(0.0);
    let inter = area(
        &col(a, 0).maximum(&col(b, 0)),
        &col(a, 1).maximum(&col(b, 1)),
        &col(a, 2).minimum(&col(b, 2)),
        &col(a, 3).minimum(&col(b, 3)),
    );
    let union = area(&col(a, 0), &col(a, 1), &col(a, 2), &col(a, 3))
        + area(&col(b, 0), &col(b, 1), &col(b, 2), &col(b, 3))
        - &inter;
    (&inter / union.clamp_min(1e-6)).clamp(0.0, 1.0)
}

/// 1 − GIoU of boxes `predicted` and `target`, both [N, 4] as x1, y1, x2, y2. Returns [N].
pub fn giou_loss(predicted: &Tensor, target: &Tensor) -> Tensor {
    const EPS: f64 = 1e-6;
    let col = |t: &Tensor, i: i64| t.select(1, i);
    let (px1, py1, px2, py2) = (col(predicted, 0), col(predicted, 1), col(predicted, 2), col(predicted, 3));
    let (tx1, ty1, tx2, ty2) = (col(target, 0), col(target, 1), col(target, 2), col(target, 3));
    let area = |x1: &Tensor, y1: &Tensor, x2: &Tensor, y2: &Tensor| (x2 - x1).clamp_min(0.0) * (y2 - y1).clamp_min(0.0);
    let inter = area(&px1.maximum(&tx1), &py1.maximum(&ty1), &px2.minimum(&tx2), &py2.minimum(&ty2));
    let union = area(&px1, &py1, &px2, &py2) + area(&tx1, &ty1, &tx2, &ty2) - &inter + EPS;
    let enclosing = area(&px1.minimum(&tx1), &py1.minimum(&ty1), &px2.maximum(&tx2), &py2.maximum(&ty2)) + EPS;
    let iou = &inter / &union;
    let giou = iou - (&enclosing - &union) / &enclosing;
    1.0 - giou
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(t: &Tensor) -> Vec<f64> {
        Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap()
    }

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// Binary cross-entropy of probability p against target y.
    fn bce(p: f64, y: f64) -> f64 {
        -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
    }

    #[test]
    fn quality_focal_loss_by_hand() {
        let x: [[f64; 3]; 2] = [[1.5, -0.5, 0.2], [-2.0, 0.3, 0.0]];
        let logits = Tensor::from_slice(&x.concat()).reshape([2, 3]);
        // Row 0: class 2 with quality 0.7; row 1: background (label 3 = C).
        let labels = Tensor::from_slice(&[2i64, 3]);
        let quality = Tensor::from_slice(&[0.7f64, 0.0]);
        let got = values(&quality_focal_loss(&logits, &labels, &quality, 2.0));
        let negative = |v: f64| bce(sigmoid(v), 0.0) * sigmoid(v).powi(2);
        let positive = |v: f64, q: f64| bce(sigmoid(v), q) * (q - sigmoid(v)).abs().powi(2);
        let want =
            [negative(1.5) + negative(-0.5) + positive(0.2, 0.7), negative(-2.0) + negative(0.3) + negative(0.0)];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn distribution_focal_loss_by_hand() {
        let x: [f64; 4] = [0.1, 2.0, -1.0, 0.5];
        let logits = Tensor::from_slice(&[x, x].concat()).reshape([2, 4]);
        // 1.25 lies between bins 1 and 2 (weights 0.75, 0.25); 5.0 is clamped to 2.9.
        let target = Tensor::from_slice(&[1.25f64, 5.0]);
        let got = values(&distribution_focal_loss(&logits, &target));
        let z: f64 = x.iter().map(|v| v.exp()).sum();
        let nll = |i: usize| -(x[i].exp() / z).ln();
        let want = [0.75 * nll(1) + 0.25 * nll(2), 0.1 * nll(2) + 0.9 * nll(3)];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-9, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn giou_loss_by_hand() {
        let predicted =
            Tensor::from_slice(&[0.0f64, 0.0, 2.0, 2.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]).reshape([3, 4]);
        let target =
            Tensor::from_slice(&[1.0f64, 1.0, 3.0, 3.0, 2.0, 0.0, 3.0, 1.0, 0.0, 0.0, 1.0, 1.0]).reshape([3, 4]);
        let got = values(&giou_loss(&predicted, &target));
        // Overlapping: IoU 1/7, enclosing 9, union 7 → GIoU 1/7 − 2/9.
        // Apart: IoU 0, enclosing 3, union 2 → GIoU −1/3. The same box: GIoU 1.
        let want = [1.0 - (1.0 / 7.0 - 2.0 / 9.0), 1.0 + 1.0 / 3.0, 0.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn the_losses_have_gradients() {
        let logits = Tensor::from_slice(&[0.3f32, -0.2, 0.9, 0.1]).reshape([2, 2]).set_requires_grad(true);
        let loss =
            quality_focal_loss(&logits, &Tensor::from_slice(&[0i64, 2]), &Tensor::from_slice(&[0.9f32, 0.0]), 2.0)
                .sum(Kind::Float)
                + distribution_focal_loss(&logits, &Tensor::from_slice(&[0.4f32, 0.6])).sum(Kind::Float);
        loss.backward();
        let grad = values(&logits.grad());
        assert!(grad.iter().all(|g| g.is_finite()) && grad.iter().any(|g| g.abs() > 1e-3), "{grad:?}");
    }
}
