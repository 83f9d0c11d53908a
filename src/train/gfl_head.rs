//! NanoDet's head in training (Generalized Focal Loss heads on anchor points): where its
//! class and box maps are among the graph's outputs, its points, the ATSS targets of a
//! batch, and its loss. A second detector family would add a file like this one beside it.

use anyhow::bail;
use tch::{Device, Kind, Tensor};

use super::assign::{atss, grid_points, Assignment, Point};
use super::gfl::{aligned_iou, distribution_focal_loss, giou_loss, quality_focal_loss};
use crate::model::BBox;

/// ATSS as NanoDet-m was trained: square anchors of 5 strides a side, 9 candidates a level.
const ANCHOR_SCALE: f32 = 5.0;

const TOPK: usize = 9;

/// NanoDet-m's loss weights.
const GIOU_WEIGHT: f64 = 2.0;

const DFL_WEIGHT: f64 = 0.25;

/// Quality focal loss's β.
const QFL_BETA: f64 = 2.0;

/// Where each stride's class map and box map are among the graph's outputs.
#[derive(Debug, Clone)]
pub(super) struct HeadLayout {
    /// Per level: (class output, box output).
    levels: Vec<(usize, usize)>,
    pub(super) classes: i64,
}

impl HeadLayout {
    /// Matches outputs [B, cells, classes] and [B, cells, 4 × bins] to each stride, as the
    /// nanodet decoder does.
    pub(super) fn find(
        shapes: &[Vec<i64>],
        size: i64,
        strides: &[usize],
        classes: i64,
        bins: i64,
    ) -> anyhow::Result<HeadLayout> {
        let mut used = vec![false; shapes.len()];
        let mut levels = Vec::new();
        for &s in strides {
            let side = (size as usize).div_ceil(s) as i64;
            let mut find = |width: i64| {
                let i = shapes
                    .iter()
                    .enumerate()
                    .position(|(i, d)| !used[i] && d.len() == 3 && d[1..] == [side * side, width]);
                if let Some(i) = i {
                    used[i] = true;
                }
                i
            };
            let (Some(c), Some(b)) = (find(classes), find(4 * bins)) else {
                bail!(
                    "the graph's outputs {shapes:?} have no [batch, {}, {classes}] class map and [batch, {}, {}] box map \
                     for stride {s} at input {size}",
                    side * side,
                    side * side,
                    4 * bins
                );
            };
            levels.push((c, b));
        }
        Ok(HeadLayout { levels, classes })
    }

    /// All points' class logits [B, P, C] and box logits [B, P, 4 × bins], levels in order.
    pub(super) fn gather(&self, outputs: &[Tensor]) -> (Tensor, Tensor) {
        let cls: Vec<&Tensor> = self.levels.iter().map(|(c, _)| &outputs[*c]).collect();
        let reg: Vec<&Tensor> = self.levels.iter().map(|(_, b)| &outputs[*b]).collect();
        (Tensor::cat(&cls, 1), Tensor::cat(&reg, 1))
    }

    pub(super) fn is_class_output(&self, i: usize) -> bool {
        self.levels.iter().any(|(c, _)| *c == i)
    }
}

/// The points of every level and their geometry as tensors.
pub(super) struct Geometry {
    levels: Vec<Vec<Point>>,
    /// [P, 2] point centres, input pixels.
    centres: Tensor,
    /// [P] strides.
    strides: Tensor,
    points: i64,
}

impl Geometry {
    pub(super) fn new(size: usize, strides: &[usize], offset: f32, device: Device) -> Geometry {
        let levels = grid_points(size, size, strides, offset);
        let all: Vec<&Point> = levels.iter().flatten().collect();
        let centres: Vec<f32> = all.iter().flat_map(|p| [p.x, p.y]).collect();
        let s: Vec<f32> = all.iter().map(|p| p.stride).collect();
        let points = all.len() as i64;
        Geometry {
            centres: Tensor::from_slice(&centres).reshape([points, 2]).to_device(device),
            strides: Tensor::from_slice(&s).to_device(device),
            levels,
            points,
        }
    }
}

/// One image's boxes in input pixels: (class, box, crowd).
pub(super) type InputBoxes = Vec<(usize, BBox, bool)>;

/// A batch's training targets: per point (images concatenated) its class, `classes` for
/// background, −1 when ignored; the positive points' rows and target boxes (input pixels).
pub(super) struct Targets {
    labels: Vec<i64>,
    positive_rows: Vec<i64>,
    positive_boxes: Vec<f32>,
}

pub(super) fn targets(geometry: &Geometry, boxes: &[InputBoxes], classes: i64) -> Targets {
    let mut t = Targets { labels: Vec::new(), positive_rows: Vec::new(), positive_boxes: Vec::new() };
    for (i, image) in boxes.iter().enumerate() {
        let bboxes: Vec<BBox> = image.iter().map(|b| b.1).collect();
        let crowd: Vec<bool> = image.iter().map(|b| b.2).collect();
        for (p, a) in atss(&geometry.levels, &bboxes, &crowd, ANCHOR_SCALE, TOPK).into_iter().enumerate() {
            t.labels.push(match a {
                Assignment::Negative => classes,
                Assignment::Ignored => -1,
                Assignment::Positive { truth, .. } => {
                    let b = &bboxes[truth];
                    t.positive_rows.push(i as i64 * geometry.points + p as i64);
                    t.positive_boxes.extend([b.x1, b.y1, b.x2, b.y2]);
                    image[truth].0 as i64
                }
            });
        }
    }
    t
}

/// The loss terms of a batch: (total, quality focal, GIoU, distribution focal), the
/// weights and normalisation as NanoDet's GFL head: QFL summed over points and divided by
/// the positives; GIoU and DFL weighted per positive by its best class score (detached) and
/// divided by the sum of those weights (DFL also by its four sides).
pub(super) fn gfl_loss(cls: &Tensor, reg: &Tensor, t: &Targets, geometry: &Geometry, bins: i64) -> [Tensor; 4] {
    let device = cls.device();
    let classes = cls.size()[2];
    let cls = cls.reshape([-1, classes]);
    let reg = reg.reshape([-1, 4 * bins]);
    let labels = Tensor::from_slice(&t.labels).to_device(device);
    let k = t.positive_rows.len() as i64;
    let mut quality = Tensor::zeros([cls.size()[0]], (Kind::Float, device));
    let zero = || Tensor::zeros([], (Kind::Float, device));
    let (giou, dfl) = if k > 0 {
        let rows = Tensor::from_slice(&t.positive_rows).to_device(device);
        let points = rows.remainder(geometry.points);
        let stride = geometry.strides.index_select(0, &points).unsqueeze(1);
        let centre = geometry.centres.index_select(0, &points) / &stride;
        let target = Tensor::from_slice(&t.positive_boxes).reshape([k, 4]).to_device(device) / &stride;
        let logits = reg.index_select(0, &rows).reshape([k, 4, bins]).to_kind(Kind::Float);
        let project = Tensor::arange(bins, (Kind::Float, device));
        let d = logits.softmax(-1, Kind::Float).matmul(&project);
        let (cx, cy) = (centre.select(1, 0), centre.select(1, 1));
        let predicted =
            Tensor::stack(&[&cx - d.select(1, 0), &cy - d.select(1, 1), &cx + d.select(1, 2), &cy + d.select(1, 3)], 1);
        quality = quality.index_put(&[Some(rows.shallow_clone())], &aligned_iou(&predicted.detach(), &target), false);
        let weight = cls.index_select(0, &rows).detach().to_kind(Kind::Float).sigmoid().amax([1i64].as_slice(), false);
        let weight_sum = weight.sum(Kind::Float).clamp_min(1e-6);
        let giou = (giou_loss(&predicted, &target) * &weight).sum(Kind::Float) / &weight_sum;
        let sides = Tensor::stack(
            &[
                &cx - target.select(1, 0),
                &cy - target.select(1, 1),
                target.select(1, 2) - &cx,
                target.select(1, 3) - &cy,
            ],
            1,
        );
        let dfl = distribution_focal_loss(&logits.reshape([k * 4, bins]), &sides.reshape([-1]));
        let dfl = (dfl * weight.repeat_interleave_self_int(4, Some(0), None)).sum(Kind::Float) / 4.0 / &weight_sum;
        (giou, dfl)
    } else {
        (zero(), zero())
    };
    let counted = labels.ge(0).nonzero().squeeze_dim(1);
    let qfl = quality_focal_loss(
        &cls.index_select(0, &counted).to_kind(Kind::Float),
        &labels.index_select(0, &counted),
        &quality.index_select(0, &counted),
        QFL_BETA,
    )
    .sum(Kind::Float)
        / k.max(1) as f64;
    let total = &qfl + &giou * GIOU_WEIGHT + &dfl * DFL_WEIGHT;
    [total, qfl, giou, dfl]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One image, one box: the targets name its points; a prediction whose box-side
    /// distributions put their mass on the two bins around each target distance gives
    /// GIoU 0, quality 1, DFL equal to the mean entropy of those distributions, and QFL as
    /// computed by hand.
    #[test]
    fn targets_and_loss_of_one_box() {
        let geometry = Geometry::new(64, &[8, 16, 32], 0.5, Device::Cpu);
        assert_eq!(geometry.points, 64 + 16 + 4);
        let b = BBox { x1: 8.0, y1: 8.0, x2: 40.0, y2: 40.0 };
        let t = targets(&geometry, &[vec![(1, b, false)], vec![]], 3);
        assert_eq!(t.labels.len(), 2 * 84);
        assert!(!t.positive_rows.is_empty());
        assert!(t.positive_rows.iter().all(|&r| r < 84), "the second image has no box");
        assert!(t.labels[84..].iter().all(|&l| l == 3), "the second image is all background");
        for (k, &r) in t.positive_rows.iter().enumerate() {
            assert_eq!(t.labels[r as usize], 1);
            assert_eq!(&t.positive_boxes[k * 4..k * 4 + 4], &[8.0, 8.0, 40.0, 40.0]);
        }

        let bins = 8i64;
        let points: Vec<&Point> = geometry.levels.iter().flatten().collect();
        let mut reg = vec![-1e4f32; (2 * 84 * 4 * bins) as usize];
        let mut entropy = 0.0f64;
        for &r in &t.positive_rows {
            let p = points[r as usize % 84];
            let sides = [p.x - b.x1, p.y - b.y1, b.x2 - p.x, b.y2 - p.y].map(|d| (d / p.stride) as f64);
            for (j, d) in sides.into_iter().enumerate() {
                assert!(d < bins as f64 - 1.1, "a target beyond the bins: {d}");
                let left = d.floor();
                let (wl, wr) = (left + 1.0 - d, d - left);
                let at = (r * 4 * bins) as usize + j * bins as usize + left as usize;
                for (i, w) in [(at, wl), (at + 1, wr)] {
                    if w > 0.0 {
                        reg[i] = w.ln() as f32;
                        entropy -= w * w.ln();
                    }
                }
            }
        }
        let reg = Tensor::from_slice(&reg).reshape([2, 84, 4 * bins]);
        let cls = Tensor::full([2, 84, 3], -4.0, (Kind::Float, Device::Cpu));
        let [total, qfl, giou, dfl] = gfl_loss(&cls, &reg, &t, &geometry, bins);
        let v = |t: &Tensor| t.double_value(&[]);
        let k = t.positive_rows.len() as f64;
        assert!(v(&giou).abs() < 1e-4, "GIoU loss {}", v(&giou));
        assert!((v(&dfl) - entropy / 4.0 / k).abs() < 1e-4, "DFL {} vs {}", v(&dfl), entropy / 4.0 / k);
        // QFL by hand: every point counted; a positive's own class towards quality 1, every
        // other score towards 0.
        let sigma = 1.0 / (1.0 + 4f64.exp());
        let bce = |q: f64| -(q * sigma.ln() + (1.0 - q) * (1.0 - sigma).ln());
        let negative = bce(0.0) * sigma.powi(2);
        let positive = bce(1.0) * (1.0 - sigma).powi(2);
        let want = ((2.0 * 84.0 * 3.0 - k) * negative + k * positive) / k;
        assert!((v(&qfl) - want).abs() < 1e-3 * want, "QFL {} vs {want}", v(&qfl));
        assert!((v(&total) - (v(&qfl) + 2.0 * v(&giou) + 0.25 * v(&dfl))).abs() < 1e-4);
    }
}
