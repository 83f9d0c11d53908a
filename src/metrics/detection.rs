//! Detection metrics as COCO defines them for boxes (pycocotools' `COCOeval`, area "all",
//! at most 100 detections per image and class): average precision per class at IoU 0.50
//! (AP50) and averaged over IoU 0.50:0.05:0.95 (AP50-95), each the mean of 101 precision
//! values interpolated at recall 0, 0.01, …, 1; their means over the classes that have
//! ground truth (mAP50, mAP50-95); and precision and recall at a score threshold.
//!
//! The matching follows COCOeval step for step, so that the numbers are the ones people
//! compare against: per image and class, detections in descending score order (ties keep
//! their order) each take the unmatched ground-truth box they overlap most, at or above the
//! IoU threshold, non-crowd boxes first; a detection matched to a crowd box (whose IoU is
//! the intersection over the detection's own area, and which may match any number of
//! detections) counts neither as a true nor as a false positive, and crowd boxes are not
//! counted as instances. A test compares the results with pycocotools' on a committed
//! fixture (tests/fixtures/coco-eval, made by tests/data/make_coco_eval_fixture.py).

use serde::{Deserialize, Serialize};

use crate::dataset::DetectionImage;
use crate::model::{BBox, Candidate, Transform};

/// Detections per image and class that count, as COCO's `maxDets = 100`.
pub const MAX_DETECTIONS: usize = 100;

/// One ground-truth box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TruthBox {
    pub class: usize,
    pub bbox: BBox,
    /// A box around a crowd (COCO's `iscrowd`): detections in it are neither right nor wrong.
    pub crowd: bool,
}

/// One detection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PredictedBox {
    pub class: usize,
    pub score: f32,
    pub bbox: BBox,
}

/// One image's ground truth and detections.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageBoxes {
    pub truth: Vec<TruthBox>,
    pub predicted: Vec<PredictedBox>,
}

/// The figures of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassAp {
    /// Ground-truth boxes, crowds not counted.
    pub instances: usize,
    /// `None` for a class without instances (COCO's −1).
    pub ap50: Option<f64>,
    pub ap50_95: Option<f64>,
    /// At IoU 0.5 and the score threshold: true positives over detections kept, and over
    /// instances.
    pub precision: f64,
    pub recall: f64,
    /// The precision–recall curve at IoU 0.5: interpolated precision at COCO's 101 recall
    /// points 0, 0.01, …, 1 (what AP50 is the mean of); empty without instances. Written to
    /// pr_curve.csv, not to JSON.
    #[serde(skip)]
    pub pr50: Vec<f64>,
}

/// Everything reported about one detection evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectionEvaluation {
    pub images: usize,
    pub instances: usize,
    /// Means over the classes with instances; `None` when no class has any.
    pub map50: Option<f64>,
    pub map50_95: Option<f64>,
    /// The score threshold of `precision` and `recall`.
    pub score_threshold: f32,
    /// Means over the classes with instances of the per-class precision and recall.
    pub precision: f64,
    pub recall: f64,
    pub per_class: Vec<ClassAp>,
}

/// The score above which detections count towards mAP, as Ultralytics validates (COCO's
/// own tools take whatever they are given): low enough that the precision–recall curve
/// reaches its end, while the manifest's threshold sets the reported precision and recall.
pub const MAP_SCORE_THRESHOLD: f32 = 0.001;

/// An image's ground truth in image pixels, with its classes mapped through `class_map`
/// (the data's class index → the model's).
pub fn truth_in_pixels(image: &DetectionImage, class_map: &[usize]) -> Vec<TruthBox> {
    let (w, h) = (image.width as f32, image.height as f32);
    image
        .boxes
        .iter()
        .map(|b| TruthBox {
            class: class_map[b.class],
            bbox: BBox { x1: b.bbox.x1 * w, y1: b.bbox.y1 * h, x2: b.bbox.x2 * w, y2: b.bbox.y2 * h },
            crowd: b.crowd,
        })
        .collect()
}

/// Decoded candidates (input pixels) as detections in image pixels, mapped back exactly as
/// [`Model::decode`](crate::model::Model::decode) maps them for the daemon.
pub fn predicted_in_pixels(candidates: &[Candidate], transform: &Transform) -> Vec<PredictedBox> {
    candidates
        .iter()
        .map(|c| PredictedBox { class: c.class_id, score: c.score, bbox: transform.map_box(&c.bbox) })
        .collect()
}

impl DetectionEvaluation {
    /// A table in the shape people know from Ultralytics' validation.
    pub fn summary(&self, labels: &[String]) -> String {
        let f = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.4}"));
        let mut out = format!(
            "{:<20} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
            "class", "instances", "precision", "recall", "mAP50", "mAP50-95"
        );
        out += &format!(
            "{:<20} {:>9} {:>9.4} {:>9.4} {:>9} {:>9}\n",
            format!("all ({} images)", self.images),
            self.instances,
            self.precision,
            self.recall,
            f(self.map50),
            f(self.map50_95)
        );
        for (label, c) in labels.iter().zip(&self.per_class) {
            if c.instances == 0 {
                continue;
            }
            out += &format!(
                "{:<20} {:>9} {:>9.4} {:>9.4} {:>9} {:>9}\n",
                label,
                c.instances,
                c.precision,
                c.recall,
                f(c.ap50),
                f(c.ap50_95)
            );
        }
        out += &format!("(precision and recall at IoU 0.5 and score {})\n", self.score_threshold);
        out
    }

    /// per_class.csv (every class with instances) and evaluation.json in `out`.
    pub fn write_reports(&self, out: &std::path::Path, labels: &[String]) -> anyhow::Result<()> {
        use anyhow::Context;
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let mut csv = String::from("class,instances,precision,recall,ap50,ap50_95\n");
        let f = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{v:.6}"));
        for (label, c) in labels.iter().zip(&self.per_class) {
            if c.instances > 0 {
                csv += &format!(
                    "{},{},{:.6},{:.6},{},{}\n",
                    crate::metrics::csv_field(label),
                    c.instances,
                    c.precision,
                    c.recall,
                    f(c.ap50),
                    f(c.ap50_95)
                );
            }
        }
        let write = |name: &str, text: String| {
            let path = out.join(name);
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
        };
        write("per_class.csv", csv)?;
        write("evaluation.json", serde_json::to_string_pretty(self)?)?;
        // The precision–recall curves at IoU 0.5: one column per class with instances, and
        // their mean (whose area is mAP50).
        let curves: Vec<(&str, Vec<f64>)> = labels
            .iter()
            .zip(&self.per_class)
            .filter(|(_, c)| !c.pr50.is_empty())
            .map(|(l, c)| (l.as_str(), c.pr50.clone()))
            .collect();
        if curves.is_empty() {
            return Ok(());
        }
        let recalls = recall_points();
        let mean: Vec<f64> =
            (0..recalls.len()).map(|i| curves.iter().map(|(_, c)| c[i]).sum::<f64>() / curves.len() as f64).collect();
        let mut csv = String::from("recall");
        for (label, _) in &curves {
            csv += &format!(",{}", crate::metrics::csv_field(label));
        }
        csv += ",all classes\n";
        for (i, r) in recalls.iter().enumerate() {
            csv += &format!("{r:.2}");
            for (_, c) in &curves {
                csv += &format!(",{:.6}", c[i]);
            }
            csv += &format!(",{:.6}\n", mean[i]);
        }
        write("pr_curve.csv", csv)?;
        use crate::plot::{line_chart, save, Axes, Series, COLOURS};
        let points = |c: &[f64]| recalls.iter().copied().zip(c.iter().copied()).collect::<Vec<_>>();
        let names: Vec<String> = curves
            .iter()
            .map(|(label, _)| label.to_string())
            .zip(self.per_class.iter().filter(|c| !c.pr50.is_empty()))
            .map(|(label, c)| format!("{label} {:.3}", c.ap50.unwrap_or(0.0)))
            .collect();
        let all = format!("all classes {:.3} mAP50", self.map50.unwrap_or(0.0));
        // Up to nine classes by name (the palette's other colours), then the mean.
        let mut series: Vec<Series> = curves
            .iter()
            .zip(&names)
            .take(COLOURS.len() - 1)
            .enumerate()
            .map(|(k, ((_, c), name))| Series { name, colour: COLOURS[k + 1], points: points(c) })
            .collect();
        series.push(Series { name: &all, colour: COLOURS[0], points: points(&mean) });
        let axes = Axes {
            title: "precision-recall, IoU 0.5",
            x: "recall",
            y: "precision",
            x_range: Some((0.0, 1.0)),
            y_range: Some((0.0, 1.05)),
        };
        save(&line_chart(&axes, &series)?, &out.join("pr_curve.png"))?;
        // AP50 per class, best first.
        let mut bars: Vec<(String, f64)> =
            labels.iter().zip(&self.per_class).filter_map(|(l, c)| c.ap50.map(|ap| (l.clone(), ap))).collect();
        bars.sort_by(|a, b| b.1.total_cmp(&a.1));
        save(&crate::plot::bar_chart("AP50 per class", "AP50", &bars)?, &out.join("ap_per_class.png"))
    }
}

/// COCO's IoU thresholds, 0.50 to 0.95 in steps of 0.05, computed as numpy's `linspace`.
pub fn iou_thresholds() -> [f64; 10] {
    let step = (0.95 - 0.5) / 9.0;
    let mut t = [0.0; 10];
    for (i, v) in t.iter_mut().enumerate() {
        *v = if i == 9 { 0.95 } else { 0.5 + i as f64 * step };
    }
    t
}

/// The 101 recall points of COCO's interpolated precision, as numpy's `linspace(0, 1, 101)`.
fn recall_points() -> Vec<f64> {
    (0..101).map(|i| if i == 100 { 1.0 } else { i as f64 * 0.01 }).collect()
}

/// IoU of a detection with a ground-truth box, as pycocotools computes it (in f64; over the
/// detection's own area for a crowd box).
fn coco_iou(d: &BBox, g: &BBox, crowd: bool) -> f64 {
    let (dx1, dy1, dx2, dy2) = (d.x1 as f64, d.y1 as f64, d.x2 as f64, d.y2 as f64);
    let (gx1, gy1, gx2, gy2) = (g.x1 as f64, g.y1 as f64, g.x2 as f64, g.y2 as f64);
    let w = dx2.min(gx2) - dx1.max(gx1);
    let h = dy2.min(gy2) - dy1.max(gy1);
    if w <= 0.0 || h <= 0.0 {
        return 0.0;
    }
    let inter = w * h;
    let d_area = (dx2 - dx1) * (dy2 - dy1);
    let union = if crowd { d_area } else { d_area + (gx2 - gx1) * (gy2 - gy1) - inter };
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// The outcome of one image and class: per kept detection (best first) its score and, per
/// IoU threshold, whether it matched a box and whether that box was a crowd.
struct ImageClass {
    scores: Vec<f64>,
    /// `[threshold][detection]`.
    matched: Vec<Vec<bool>>,
    ignored: Vec<Vec<bool>>,
    instances: usize,
}

/// COCOeval's `evaluateImg` for one image and class.
fn match_image(truth: &[&TruthBox], predicted: &[&PredictedBox], thresholds: &[f64]) -> ImageClass {
    // Ground truth: non-crowd boxes first, each group in its order.
    let mut gts: Vec<&TruthBox> = truth.iter().filter(|g| !g.crowd).copied().collect();
    gts.extend(truth.iter().filter(|g| g.crowd));
    // Detections: best first, ties in their order, at most MAX_DETECTIONS.
    let mut dts: Vec<&PredictedBox> = predicted.to_vec();
    dts.sort_by(|a, b| b.score.partial_cmp(&a.score).unwrap_or(std::cmp::Ordering::Equal));
    dts.truncate(MAX_DETECTIONS);
    let ious: Vec<Vec<f64>> =
        dts.iter().map(|d| gts.iter().map(|g| coco_iou(&d.bbox, &g.bbox, g.crowd)).collect()).collect();
    let mut matched = vec![vec![false; dts.len()]; thresholds.len()];
    let mut ignored = vec![vec![false; dts.len()]; thresholds.len()];
    for (t, &threshold) in thresholds.iter().enumerate() {
        let mut gt_taken = vec![false; gts.len()];
        for (d, row) in ious.iter().enumerate() {
            let mut best = threshold.min(1.0 - 1e-10);
            let mut m: Option<usize> = None;
            for (g, &iou) in row.iter().enumerate() {
                if gt_taken[g] && !gts[g].crowd {
                    continue;
                }
                // Matched to a real box: crowd boxes (sorted last) cannot take it away.
                if m.is_some_and(|m| !gts[m].crowd) && gts[g].crowd {
                    break;
                }
                if iou < best {
                    continue;
                }
                best = iou;
                m = Some(g);
            }
            if let Some(g) = m {
                matched[t][d] = true;
                ignored[t][d] = gts[g].crowd;
                gt_taken[g] = true;
            }
        }
    }
    ImageClass {
        scores: dts.iter().map(|d| d.score as f64).collect(),
        matched,
        ignored,
        instances: gts.iter().filter(|g| !g.crowd).count(),
    }
}

/// Evaluates the detections of `images` for `classes` classes (class ids outside the range
/// are ignored); `score_threshold` sets where precision and recall are read.
pub fn evaluate_detections(images: &[ImageBoxes], classes: usize, score_threshold: f32) -> DetectionEvaluation {
    let thresholds = iou_thresholds();
    let recalls = recall_points();
    let mut per_class = Vec::with_capacity(classes);
    for class in 0..classes {
        // COCOeval's accumulate: every image's kept detections of the class, merged by
        // score (a stable sort, so ties keep image order).
        let mut instances = 0;
        let mut dets: Vec<(f64, Vec<bool>, Vec<bool>)> = Vec::new();
        for image in images {
            let truth: Vec<&TruthBox> = image.truth.iter().filter(|g| g.class == class).collect();
            let predicted: Vec<&PredictedBox> =
                image.predicted.iter().filter(|d| d.class == class && !d.score.is_nan()).collect();
            if truth.is_empty() && predicted.is_empty() {
                continue;
            }
            let r = match_image(&truth, &predicted, &thresholds);
            instances += r.instances;
            for (d, &score) in r.scores.iter().enumerate() {
                let matched = (0..thresholds.len()).map(|t| r.matched[t][d]).collect();
                let ignored = (0..thresholds.len()).map(|t| r.ignored[t][d]).collect();
                dets.push((score, matched, ignored));
            }
        }
        dets.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal));
        if instances == 0 {
            per_class.push(ClassAp {
                instances,
                ap50: None,
                ap50_95: None,
                precision: 0.0,
                recall: 0.0,
                pr50: Vec::new(),
            });
            continue;
        }
        let mut ap = Vec::with_capacity(thresholds.len());
        let mut pr50 = Vec::new();
        let (mut precision_at, mut recall_at) = (0.0, 0.0);
        for t in 0..thresholds.len() {
            let (mut tp, mut fp) = (0.0f64, 0.0f64);
            let mut rc = Vec::with_capacity(dets.len());
            let mut pr = Vec::with_capacity(dets.len());
            for (score, matched, ignored) in &dets {
                if ignored[t] {
                    // Neither kind: the cumulative counts stay, as in COCOeval.
                } else if matched[t] {
                    tp += 1.0;
                } else {
                    fp += 1.0;
                }
                rc.push(tp / instances as f64);
                pr.push(tp / (tp + fp + f64::EPSILON));
                if t == 0 && *score >= score_threshold as f64 {
                    precision_at = if tp + fp > 0.0 { tp / (tp + fp) } else { 0.0 };
                    recall_at = tp / instances as f64;
                }
            }
            // Precision made monotone from the right, then read at each recall point (the
            // first detection reaching it; 0 beyond the last recall reached).
            for i in (1..pr.len()).rev() {
                if pr[i] > pr[i - 1] {
                    pr[i - 1] = pr[i];
                }
            }
            let at_points: Vec<f64> = recalls
                .iter()
                .map(|&r| {
                    let i = rc.partition_point(|&v| v < r);
                    pr.get(i).copied().unwrap_or(0.0)
                })
                .collect();
            ap.push(at_points.iter().sum::<f64>() / recalls.len() as f64);
            if t == 0 {
                pr50 = at_points;
            }
        }
        per_class.push(ClassAp {
            instances,
            ap50: Some(ap[0]),
            ap50_95: Some(ap.iter().sum::<f64>() / ap.len() as f64),
            precision: precision_at,
            recall: recall_at,
            pr50,
        });
    }
    let with_instances: Vec<&ClassAp> = per_class.iter().filter(|c| c.instances > 0).collect();
    let mean = |f: fn(&ClassAp) -> f64| -> Option<f64> {
        (!with_instances.is_empty())
            .then(|| with_instances.iter().map(|c| f(c)).sum::<f64>() / with_instances.len() as f64)
    };
    DetectionEvaluation {
        images: images.len(),
        instances: per_class.iter().map(|c| c.instances).sum(),
        map50: mean(|c| c.ap50.unwrap_or(0.0)),
        map50_95: mean(|c| c.ap50_95.unwrap_or(0.0)),
        score_threshold,
        precision: mean(|c| c.precision).unwrap_or(0.0),
        recall: mean(|c| c.recall).unwrap_or(0.0),
        per_class,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bbox(x1: f32, y1: f32, x2: f32, y2: f32) -> BBox {
        BBox { x1, y1, x2, y2 }
    }

    fn truth(class: usize, b: BBox) -> TruthBox {
        TruthBox { class, bbox: b, crowd: false }
    }

    fn det(class: usize, score: f32, b: BBox) -> PredictedBox {
        PredictedBox { class, score, bbox: b }
    }

    fn near(v: Option<f64>, want: f64) -> bool {
        v.is_some_and(|v| (v - want).abs() < 1e-12)
    }

    #[test]
    fn perfect_detections_score_one() {
        let images = vec![ImageBoxes {
            truth: vec![truth(0, bbox(0.0, 0.0, 10.0, 10.0)), truth(1, bbox(20.0, 20.0, 40.0, 30.0))],
            predicted: vec![det(0, 0.9, bbox(0.0, 0.0, 10.0, 10.0)), det(1, 0.8, bbox(20.0, 20.0, 40.0, 30.0))],
        }];
        let e = evaluate_detections(&images, 2, 0.5);
        // 1 up to COCO's guard against 0/0: tp / (tp + fp + 2.2e-16).
        assert!(near(e.map50, 1.0) && near(e.map50_95, 1.0), "{e:?}");
        assert_eq!((e.precision, e.recall, e.instances), (1.0, 1.0, 2));
    }

    #[test]
    fn average_precision_by_hand() {
        // One class, two instances in two images. Detections by score: a hit (IoU 1), a
        // miss, a hit (IoU 0.81: right at 0.5…0.80, wrong above).
        let images = vec![
            ImageBoxes {
                truth: vec![truth(0, bbox(0.0, 0.0, 10.0, 10.0))],
                predicted: vec![det(0, 0.9, bbox(0.0, 0.0, 10.0, 10.0)), det(0, 0.8, bbox(50.0, 50.0, 60.0, 60.0))],
            },
            ImageBoxes {
                truth: vec![truth(0, bbox(0.0, 0.0, 10.0, 10.0))],
                predicted: vec![det(0, 0.7, bbox(0.0, 0.0, 9.0, 9.0))],
            },
        ];
        let e = evaluate_detections(&images, 1, 0.75);
        // At IoU ≤ 0.80: precision 1 up to recall 0.5 (51 points), then 2/3 up to recall 1
        // (50 points). Above: 1 up to 0.5, then nothing.
        let hit = (51.0 + 50.0 * (2.0 / 3.0 - f64::EPSILON)) / 101.0;
        let miss = 51.0 / 101.0;
        assert!((e.map50.unwrap() - hit).abs() < 1e-12, "{:?}", e.map50);
        // Thresholds 0.50…0.80 (7 of them) take the third detection; 0.85…0.95 (3) do not.
        let want = (7.0 * hit + 3.0 * miss) / 10.0;
        assert!((e.map50_95.unwrap() - want).abs() < 1e-12, "{:?} vs {want}", e.map50_95);
        // At score ≥ 0.75: one hit, one miss kept; one of two instances found.
        assert_eq!((e.per_class[0].precision, e.per_class[0].recall), (0.5, 0.5));
        // The curve at IoU 0.5: precision 1 to recall 0.5, 2/3 beyond; its mean is AP50.
        let curve = &e.per_class[0].pr50;
        assert_eq!(curve.len(), 101);
        // (Precision is tp / (tp + fp + ε), as COCOeval computes it.)
        assert!((curve[0] - 1.0).abs() < 1e-12 && (curve[50] - 1.0).abs() < 1e-12, "{curve:?}");
        assert!((curve[51] - 2.0 / 3.0).abs() < 1e-12 && (curve[100] - 2.0 / 3.0).abs() < 1e-12, "{curve:?}");
        assert!((curve.iter().sum::<f64>() / 101.0 - e.map50.unwrap()).abs() < 1e-15);
        // The reports: the curve as CSV (recall, the class, the mean over classes) and PNG.
        let out = std::env::temp_dir().join(format!("vigil-pr-curve-{}", std::process::id()));
        e.write_reports(&out, &["a,b".to_string()]).unwrap();
        let csv = std::fs::read_to_string(out.join("pr_curve.csv")).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "recall,\"a,b\",all classes");
        assert_eq!(lines.len(), 102);
        assert_eq!(lines[51], "0.50,1.000000,1.000000");
        assert_eq!(lines[101], "1.00,0.666667,0.666667");
        assert!(image::open(out.join("pr_curve.png")).is_ok());
        assert!(image::open(out.join("ap_per_class.png")).is_ok());
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("evaluation.json")).unwrap()).unwrap();
        assert!(json["per_class"][0].get("pr50").is_none(), "the curve stays out of the JSON");
        let _ = std::fs::remove_dir_all(&out);
    }

    #[test]
    fn crowds_are_neither_right_nor_wrong_and_classes_without_instances_do_not_count() {
        let crowd = TruthBox { class: 0, bbox: bbox(0.0, 0.0, 100.0, 100.0), crowd: true };
        let images = vec![ImageBoxes {
            truth: vec![truth(0, bbox(200.0, 200.0, 210.0, 210.0)), crowd],
            predicted: vec![
                // Inside the crowd (IoU over its own area is 1): ignored, though scored first.
                det(0, 0.95, bbox(10.0, 10.0, 20.0, 20.0)),
                det(0, 0.9, bbox(30.0, 30.0, 40.0, 40.0)),
                det(0, 0.8, bbox(200.0, 200.0, 210.0, 210.0)),
                // A class with no instances: its false positive changes nothing.
                det(1, 0.99, bbox(0.0, 0.0, 5.0, 5.0)),
            ],
        }];
        let e = evaluate_detections(&images, 2, 0.0);
        assert_eq!(e.per_class[0].instances, 1);
        assert!(near(e.per_class[0].ap50, 1.0), "{e:?}");
        assert_eq!(e.per_class[1].ap50, None);
        assert!(near(e.map50, 1.0), "{e:?}");
    }

    #[test]
    fn only_the_best_hundred_detections_per_image_count() {
        // 100 misses scored above the one hit: the hit is the 101st and does not count.
        let mut predicted: Vec<PredictedBox> =
            (0..100).map(|i| det(0, 0.9, bbox(100.0 + i as f32, 0.0, 101.0 + i as f32, 1.0))).collect();
        predicted.push(det(0, 0.5, bbox(0.0, 0.0, 10.0, 10.0)));
        let images = vec![ImageBoxes { truth: vec![truth(0, bbox(0.0, 0.0, 10.0, 10.0))], predicted }];
        assert_eq!(evaluate_detections(&images, 1, 0.0).map50, Some(0.0));
    }

    /// tests/fixtures/coco-eval/fixture.json: random boxes with crowds, empty images, a
    /// class never labelled, 120 detections in one image and tied scores, with what
    /// pycocotools' COCOeval computed from them (tests/data/make_coco_eval_fixture.py).
    #[test]
    fn matches_pycocotools() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/coco-eval/fixture.json");
        let f: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let ids = |key: &str| -> Vec<u64> { f[key].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect() };
        let (image_ids, categories) = (ids("images"), ids("categories"));
        let index = |list: &[u64], v: &serde_json::Value| list.iter().position(|x| *x == v.as_u64().unwrap()).unwrap();
        let xywh = |v: &serde_json::Value| {
            let b: Vec<f64> = v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
            BBox { x1: b[0] as f32, y1: b[1] as f32, x2: (b[0] + b[2]) as f32, y2: (b[1] + b[3]) as f32 }
        };
        let mut images = vec![ImageBoxes::default(); image_ids.len()];
        for t in f["truth"].as_array().unwrap() {
            images[index(&image_ids, &t["image_id"])].truth.push(TruthBox {
                class: index(&categories, &t["category_id"]),
                bbox: xywh(&t["bbox"]),
                crowd: t["iscrowd"] == 1,
            });
        }
        for d in f["detections"].as_array().unwrap() {
            images[index(&image_ids, &d["image_id"])].predicted.push(PredictedBox {
                class: index(&categories, &d["category_id"]),
                score: d["score"].as_f64().unwrap() as f32,
                bbox: xywh(&d["bbox"]),
            });
        }
        let e = evaluate_detections(&images, categories.len(), 0.25);
        let want = &f["expected"];
        let close = |got: Option<f64>, want: &serde_json::Value, what: &str| match (got, want.as_f64()) {
            (Some(g), Some(w)) => assert!((g - w).abs() < 1e-4, "{what}: vigil {g}, pycocotools {w}"),
            (None, None) => {}
            (g, w) => panic!("{what}: vigil {g:?}, pycocotools {w:?}"),
        };
        close(e.map50_95, &want["map50_95"], "mAP50-95");
        close(e.map50, &want["map50"], "mAP50");
        for (k, c) in categories.iter().enumerate() {
            let expected = &want["per_class"][c.to_string()];
            close(e.per_class[k].ap50, &expected["ap50"], &format!("AP50 of category {c}"));
            close(e.per_class[k].ap50_95, &expected["ap50_95"], &format!("AP50-95 of category {c}"));
        }
        assert!(e.map50.unwrap() > 0.1 && e.map50_95.unwrap() < e.map50.unwrap(), "{e:?}");
    }

    #[test]
    fn no_ground_truth_at_all_has_no_map() {
        let images = vec![ImageBoxes { truth: vec![], predicted: vec![det(0, 0.9, bbox(0.0, 0.0, 1.0, 1.0))] }];
        let e = evaluate_detections(&images, 1, 0.5);
        assert_eq!((e.map50, e.map50_95, e.instances), (None, None, 0));
    }
}
