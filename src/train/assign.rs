//! Target assignment for an anchor-point detector (NanoDet-m): ATSS, Adaptive Training
//! Sample Selection (Zhang et al. 2020), the assigner NanoDet-m was trained with. Chosen over
//! NanoDet-Plus's dynamic soft labels because it needs no second (teacher) head and no
//! per-step cost matrix, and depends only on geometry, so it can be checked by hand.
//!
//! Each point of each feature level stands for a square anchor of side `anchor_scale ×
//! stride` centred on it. For every ground-truth box: on each level, the `topk` points nearest
//! its centre are candidates; their anchors' IoUs with the box give a threshold, mean + the
//! (unbiased) standard deviation; candidates at or above it whose point lies inside the box
//! become positives. A point claimed by several boxes goes to the one its anchor overlaps
//! most. Crowd boxes are never targets; a point inside one that no box claims is ignored
//! (neither positive nor negative), as COCO's evaluation ignores detections there.

use crate::model::BBox;

/// One point of a feature level, in input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub x: f32,
    pub y: f32,
    pub stride: f32,
}

/// What a point is trained towards.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Assignment {
    /// Background: every class score towards 0.
    Negative,
    /// The ground-truth box `truth` (an index into the boxes given), whose IoU with the
    /// point's anchor is `iou`.
    Positive { truth: usize, iou: f32 },
    /// Inside a crowd: no loss.
    Ignored,
}

/// The points of every level, row-major, as NanoDet lays them out: level `l` of stride `s`
/// over a `width × height` input has ⌈width / s⌉ × ⌈height / s⌉ points at cell corners plus
/// `offset × s` (NanoDet-m: offset 0.5, the cell centres).
pub fn grid_points(width: usize, height: usize, strides: &[usize], offset: f32) -> Vec<Vec<Point>> {
    strides
        .iter()
        .map(|&s| {
            let (cols, rows) = (width.div_ceil(s), height.div_ceil(s));
            (0..rows * cols)
                .map(|i| Point {
                    x: ((i % cols) as f32 + offset) * s as f32,
                    y: ((i / cols) as f32 + offset) * s as f32,
                    stride: s as f32,
                })
                .collect()
        })
        .collect()
}

fn iou(a: &BBox, b: &BBox) -> f32 {
    crate::model::nms::iou(a, b)
}

fn anchor(p: &Point, scale: f32) -> BBox {
    let half = p.stride * scale / 2.0;
    BBox { x1: p.x - half, y1: p.y - half, x2: p.x + half, y2: p.y + half }
}

/// ATSS over `levels` (each level's points), for boxes in input pixels; `crowd[i]` marks a
/// crowd box. Returns one assignment per point, levels concatenated in order.
pub fn atss(levels: &[Vec<Point>], boxes: &[BBox], crowd: &[bool], anchor_scale: f32, topk: usize) -> Vec<Assignment> {
    let points: Vec<&Point> = levels.iter().flatten().collect();
    let mut best: Vec<Option<(usize, f32)>> = vec![None; points.len()];
    for (g, b) in boxes.iter().enumerate() {
        if crowd[g] {
            continue;
        }
        let (cx, cy) = ((b.x1 + b.x2) / 2.0, (b.y1 + b.y2) / 2.0);
        // The topk nearest points of each level (ties by position, for reproducibility).
        let mut candidates = Vec::new();
        let mut start = 0;
        for level in levels {
            let mut by_distance: Vec<(f32, usize)> =
                level.iter().enumerate().map(|(i, p)| (((p.x - cx).powi(2) + (p.y - cy).powi(2)), start + i)).collect();
            by_distance.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            candidates.extend(by_distance.iter().take(topk).map(|&(_, i)| i));
            start += level.len();
        }
        let ious: Vec<f32> = candidates.iter().map(|&i| iou(&anchor(points[i], anchor_scale), b)).collect();
        let n = ious.len() as f32;
        let mean = ious.iter().sum::<f32>() / n;
        let std = if ious.len() > 1 {
            (ious.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / (n - 1.0)).sqrt()
        } else {
            0.0
        };
        let threshold = mean + std;
        for (&i, &overlap) in candidates.iter().zip(&ious) {
            let p = points[i];
            // The point must lie inside the box (by more than a hair, as mmdet's 0.01).
            let inside = (p.x - b.x1).min(p.y - b.y1).min(b.x2 - p.x).min(b.y2 - p.y) > 0.01;
            if overlap >= threshold && inside && best[i].is_none_or(|(_, o)| overlap > o) {
                best[i] = Some((g, overlap));
            }
        }
    }
    points
        .iter()
        .zip(best)
        .map(|(p, best)| match best {
            Some((truth, iou)) => Assignment::Positive { truth, iou },
            None if boxes
                .iter()
                .zip(crowd)
                .any(|(b, &c)| c && p.x > b.x1 && p.x < b.x2 && p.y > b.y1 && p.y < b.y2) =>
            {
                Assignment::Ignored
            }
            None => Assignment::Negative,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bbox(x1: f32, y1: f32, x2: f32, y2: f32) -> BBox {
        BBox { x1, y1, x2, y2 }
    }

    #[test]
    fn grid_points_follow_nanodet() {
        let levels = grid_points(20, 16, &[8, 16], 0.5);
        assert_eq!(levels[0].len(), 3 * 2);
        assert_eq!(levels[1].len(), 2);
        assert_eq!(levels[0][0], Point { x: 4.0, y: 4.0, stride: 8.0 });
        assert_eq!(levels[0][4], Point { x: 12.0, y: 12.0, stride: 8.0 });
        assert_eq!(levels[1][1], Point { x: 24.0, y: 8.0, stride: 16.0 });
    }

    #[test]
    fn atss_by_hand() {
        // One level, stride 8, anchors 16 px (scale 2), a 4×4 grid of points at 4, 12, 20, 28.
        let levels = grid_points(32, 32, &[8], 0.5);
        let b = bbox(6.0, 6.0, 22.0, 22.0);
        let got = atss(&levels, &[b], &[false], 2.0, 4);
        // The 4 nearest points to the centre (14, 14): (12,12), (20,12), (12,20), (20,20),
        // indices 5, 6, 9, 10. Anchor (12,12) is [4,20]², overlapping the box on [6,20]²:
        // IoU 196 / (256 + 256 − 196) = 0.620; the other three overlap it less.
        let anchor_iou = |x: f32, y: f32| iou(&bbox(x - 8.0, y - 8.0, x + 8.0, y + 8.0), &b);
        let ious = [anchor_iou(12.0, 12.0), anchor_iou(20.0, 12.0), anchor_iou(12.0, 20.0), anchor_iou(20.0, 20.0)];
        assert!((ious[0] - 196.0 / 316.0).abs() < 1e-6, "{ious:?}");
        let mean = ious.iter().sum::<f32>() / 4.0;
        let std = (ious.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / 3.0).sqrt();
        let threshold = mean + std;
        // Only the best-placed anchor clears mean + std here.
        assert!(ious[0] >= threshold && ious[1..].iter().all(|v| *v < threshold), "{ious:?} vs {threshold}");
        for (i, a) in got.iter().enumerate() {
            match i {
                5 => assert_eq!(*a, Assignment::Positive { truth: 0, iou: ious[0] }),
                _ => assert_eq!(*a, Assignment::Negative, "point {i}"),
            }
        }
    }

    #[test]
    fn a_point_outside_the_box_is_never_positive_and_overlaps_go_to_the_best_box() {
        let levels = grid_points(32, 32, &[8], 0.5);
        // A thin box between point rows: the candidates' anchors overlap it, no point is
        // inside it.
        let thin = bbox(0.0, 13.0, 32.0, 19.0);
        assert!(atss(&levels, &[thin], &[false], 2.0, 4).iter().all(|a| *a == Assignment::Negative));
        // Two boxes claim point (12, 12): `wide`, centred between four points (equal IoUs,
        // so all four reach mean + std), and `exact`, the point's own anchor (IoU 1). The
        // better overlap takes it; `wide` keeps the other three.
        let (wide, exact) = (bbox(8.0, 8.0, 24.0, 24.0), bbox(4.0, 4.0, 20.0, 20.0));
        let got = atss(&levels, &[wide, exact], &[false, false], 2.0, 4);
        assert_eq!(got[5], Assignment::Positive { truth: 1, iou: 1.0 });
        for i in [6, 9, 10] {
            assert!(matches!(got[i], Assignment::Positive { truth: 0, .. }), "point {i}: {:?}", got[i]);
        }
    }

    #[test]
    fn crowds_are_not_targets_and_their_points_are_ignored() {
        let levels = grid_points(32, 32, &[8], 0.5);
        let crowd = bbox(0.0, 0.0, 16.0, 16.0);
        let got = atss(&levels, &[crowd], &[true], 2.0, 4);
        // Points (4,4), (12,4), (4,12), (12,12) are inside the crowd.
        for (i, a) in got.iter().enumerate() {
            let inside = [0, 1, 4, 5].contains(&i);
            assert_eq!(*a, if inside { Assignment::Ignored } else { Assignment::Negative }, "point {i}");
        }
    }
}
