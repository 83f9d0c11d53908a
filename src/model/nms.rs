//! Class-wise non-maximum suppression over boxes in one coordinate space.

use super::{BBox, Candidate};

/// Intersection over union of two boxes (0 when either is empty).
pub fn iou(a: &BBox, b: &BBox) -> f32 {
    let iw = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let ih = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let inter = iw * ih;
    let union = a.area() + b.area() - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// Keeps the best-scoring boxes: a box is dropped when it overlaps a kept box of the same
/// class by an IoU greater than `iou_threshold`. Returns at most `max` boxes, best first.
/// Equal scores keep their input order. A candidate with a NaN or infinite score or
/// coordinate, its keypoints' included (a model gone wrong), is dropped: it would be
/// published as `null`.
pub fn nms(candidates: Vec<Candidate>, iou_threshold: f32, max: usize) -> Vec<Candidate> {
    let candidates = finite_best_first(candidates);
    let mut kept: Vec<Candidate> = Vec::new();
    for c in candidates {
        if kept.len() == max {
            break;
        }
        let suppressed = kept.iter().any(|k| k.class_id == c.class_id && iou(&k.bbox, &c.bbox) > iou_threshold);
        if !suppressed {
            kept.push(c);
        }
    }
    kept
}

/// The best `max` candidates, best first, without suppression (for detections a graph has
/// already suppressed); like [`nms`], equal scores keep their order and non-finite
/// candidates are dropped.
pub fn best_first(candidates: Vec<Candidate>, max: usize) -> Vec<Candidate> {
    let mut candidates = finite_best_first(candidates);
    candidates.truncate(max);
    candidates
}

fn finite_best_first(mut candidates: Vec<Candidate>) -> Vec<Candidate> {
    // A keypoint is not dropped alone: its place pairs it with its name.
    let finite_point =
        |k: &crate::model::Keypoint| k.x.is_finite() && k.y.is_finite() && k.score.is_none_or(f32::is_finite);
    candidates.retain(|c| {
        let b = &c.bbox;
        [c.score, b.x1, b.y1, b.x2, b.y2].iter().all(|v| v.is_finite()) && c.keypoints.iter().all(finite_point)
    });
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    candidates
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(class_id: usize, score: f32, x1: f32, y1: f32, x2: f32, y2: f32) -> Candidate {
        Candidate { class_id, score, bbox: BBox { x1, y1, x2, y2 }, keypoints: Vec::new() }
    }

    #[test]
    fn iou_of_known_boxes() {
        let a = BBox { x1: 0.0, y1: 0.0, x2: 10.0, y2: 10.0 };
        let b = BBox { x1: 5.0, y1: 0.0, x2: 15.0, y2: 10.0 };
        assert!((iou(&a, &b) - 50.0 / 150.0).abs() < 1e-6);
        assert_eq!(iou(&a, &BBox { x1: 20.0, y1: 20.0, x2: 30.0, y2: 30.0 }), 0.0);
        assert_eq!(iou(&a, &a), 1.0);
    }

    #[test]
    fn suppresses_overlaps_of_the_same_class_only() {
        let out = nms(
            vec![
                cand(0, 0.8, 0.0, 0.0, 10.0, 10.0),
                cand(0, 0.9, 1.0, 0.0, 11.0, 10.0),
                cand(1, 0.7, 0.0, 0.0, 10.0, 10.0),
                cand(0, 0.6, 50.0, 50.0, 60.0, 60.0),
            ],
            0.5,
            100,
        );
        let scores: Vec<f32> = out.iter().map(|c| c.score).collect();
        assert_eq!(scores, [0.9, 0.7, 0.6]);
    }

    #[test]
    fn threshold_is_strict_and_max_caps() {
        // IoU exactly 0.5 is kept (only greater suppresses, as torchvision does).
        let a = cand(0, 0.9, 0.0, 0.0, 10.0, 10.0);
        let b = cand(0, 0.8, 0.0, 0.0, 10.0, 5.0);
        let ab = || vec![a.clone(), b.clone()];
        assert_eq!(nms(ab(), 0.5, 100).len(), 2);
        assert_eq!(nms(ab(), 0.49, 100).len(), 1);
        assert_eq!(nms(ab(), 0.5, 1).len(), 1);
        let nan_box = cand(0, 0.99, f32::NAN, 0.0, 10.0, 10.0);
        let inf_score = cand(1, f32::INFINITY, 0.0, 0.0, 10.0, 10.0);
        let mut nan_point = cand(2, 0.95, 0.0, 0.0, 10.0, 10.0);
        nan_point.keypoints = vec![crate::model::Keypoint { x: 1.0, y: 1.0, score: Some(f32::NAN) }];
        assert_eq!(
            nms(vec![nan_box, inf_score, nan_point.clone(), a.clone()], 0.5, 100),
            vec![a],
            "non-finite candidates are dropped"
        );
        assert!(best_first(vec![nan_point], 10).is_empty());
    }
}
