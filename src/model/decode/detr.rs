//! DETR-style set predictions: a fixed number of queries, each a box and class scores, no
//! NMS needed (the model learned one query per object).
//!
//! - One output [1, Q, 4 + C] (or [Q, 4 + C]): per query a box, then its class values.
//! - Or two outputs named with `decoder.outputs`: `boxes` [1, Q, 4] and `scores` [1, Q, C]
//!   (or C + 1 with `scores = "softmax"`).
//!
//! Boxes are cx, cy, w, h (or x1, y1, x2, y2 with `box_format = "xyxy"`), fractions of the
//! input unless `normalized = false`. How class values become detections depends on
//! `scores`:
//! - `sigmoid` (logits, RT-DETR, D-FINE) and `probabilities` (already sigmoid): every
//!   (query, class) pair scoring above the threshold is a detection, the best
//!   `max_detections` of them, best first — the top-k over pairs RT-DETR's own
//!   post-processing takes;
//! - `softmax` (DETR and its descendants): the last column is "no object"; a query is one
//!   detection of its best real class.

use super::{logit_floor, sigmoid, unbatched, DecodeParams, GraphOutputs, Once, OutputTensor};
use crate::model::manifest::{DetrBoxes, DetrScores};
use crate::model::nms::best_first;
use crate::model::{BBox, Candidate};

#[derive(Debug, Clone, PartialEq)]
pub struct Detr {
    /// Boxes: the output and the stride between queries (4 + C combined, 4 split).
    boxes: (usize, usize),
    /// Class values: the output, where a query's first value is, and the stride.
    scores: (usize, usize, usize),
    queries: usize,
    classes: usize,
    kind: DetrScores,
    format: DetrBoxes,
    unit: (f32, f32),
    /// Warned that the class values look like probabilities already.
    warned: Once,
    /// Warned that boxes said to be normalised look like pixels.
    warned_pixels: Once,
}

/// The decoder's settings from the manifest.
pub struct Settings {
    pub scores: DetrScores,
    pub box_format: DetrBoxes,
    pub normalized: bool,
}

pub(super) fn bind(s: &Settings, g: GraphOutputs) -> Result<Detr, String> {
    let columns = g.classes + usize::from(s.scores == DetrScores::Softmax);
    let of_classes = if s.scores == DetrScores::Softmax {
        format!("{} labels + \"no object\"", g.classes)
    } else {
        format!("{} labels", g.classes)
    };
    let queries_of = |shape: &[usize], width: usize| match unbatched(shape) {
        Some(&[q, w]) if w == width => Some(q),
        _ if shape.len() == 2 && shape[1] == width => Some(shape[0]),
        _ => None,
    };
    let unit = if s.normalized { (g.input_width as f32, g.input_height as f32) } else { (1.0, 1.0) };
    let (boxes, scores, queries) = match g.shapes {
        [one] => {
            let Some(q) = queries_of(one, 4 + columns) else {
                return Err(format!(
                    "decoder \"detr\": expected one output [1, Q, {}] (4 box values + {of_classes}), but the graph's \
                     output \"{}\" is {one:?}; check labels and decoder.scores",
                    4 + columns,
                    g.names[0]
                ));
            };
            ((0, 4 + columns), (0, 4, 4 + columns), q)
        }
        [b, c] => {
            let (Some(qb), Some(qc)) = (queries_of(b, 4), queries_of(c, columns)) else {
                return Err(format!(
                    "decoder \"detr\": expected boxes [1, Q, 4] and scores [1, Q, {columns}] ({of_classes}), but the \
                     selected outputs are {}",
                    g.describe()
                ));
            };
            if qb != qc {
                return Err(format!(
                    "decoder \"detr\": boxes and scores disagree on the number of queries: {}",
                    g.describe()
                ));
            }
            ((0, 4), (1, 0, columns), qb)
        }
        _ => {
            return Err(format!(
                "decoder \"detr\": expected one output [1, Q, {}] or boxes and scores named with decoder.outputs, but \
                 the graph gives {}",
                4 + columns,
                g.describe()
            ))
        }
    };
    Ok(Detr {
        boxes,
        scores,
        queries,
        classes: g.classes,
        kind: s.scores,
        format: s.box_format,
        unit,
        warned: Once::default(),
        warned_pixels: Once::default(),
    })
}

impl Detr {
    pub(super) fn decode(&self, outputs: &[OutputTensor], p: &DecodeParams) -> Vec<Candidate> {
        let (box_output, box_stride) = self.boxes;
        let (score_output, first, stride) = self.scores;
        let (boxes, scores) = (&outputs[box_output].data, &outputs[score_output].data);
        let floor = if self.kind == DetrScores::Sigmoid { logit_floor(p.score) } else { f32::NEG_INFINITY };
        if self.kind == DetrScores::Sigmoid && !self.warned.given() {
            // Logits all within 0–1 are probabilities a sigmoid would squeeze into 0.5–0.73.
            let class_values =
                (0..self.queries).flat_map(|q| &scores[q * stride + first..q * stride + first + self.classes]);
            if class_values.into_iter().all(|v| (0.0..=1.0).contains(v)) && self.warned.first() {
                log::warn!(
                    "decoder \"detr\": every class value lies within 0–1, so they look like probabilities already; \
                     set decoder.scores = \"probabilities\" (the sigmoid makes each of them a score of 0.5 or more)"
                );
            }
        }
        let mut candidates = Vec::new();
        let mut largest = 0.0f32;
        for q in 0..self.queries {
            let values = &scores[q * stride + first..q * stride + first + self.classes];
            let b = &boxes[q * box_stride..q * box_stride + 4];
            let bbox = self.bbox(b);
            let mut push = |class_id: usize, score: f32| {
                if score > p.score {
                    largest = largest.max(super::largest_value(b));
                    candidates.push(Candidate { class_id, score, bbox, keypoints: Vec::new() });
                }
            };
            match self.kind {
                DetrScores::Softmax => {
                    // Over the real classes and "no object", from the largest for stability.
                    let all = &scores[q * stride + first..q * stride + first + self.classes + 1];
                    let max = all.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let sum: f32 = all.iter().map(|v| (v - max).exp()).sum();
                    let (best, value) = super::argmax(values);
                    push(best, (value - max).exp() / sum);
                }
                DetrScores::Sigmoid => {
                    for (c, &v) in values.iter().enumerate() {
                        if v >= floor {
                            push(c, sigmoid(v));
                        }
                    }
                }
                DetrScores::Probabilities => {
                    for (c, &v) in values.iter().enumerate() {
                        push(c, v);
                    }
                }
            }
        }
        if self.unit != (1.0, 1.0) {
            super::warn_if_pixels("detr", largest, &self.warned_pixels);
        }
        best_first(candidates, p.max_detections)
    }

    fn bbox(&self, b: &[f32]) -> BBox {
        let (ux, uy) = self.unit;
        match self.format {
            DetrBoxes::Cxcywh => {
                let (cx, cy, w, h) = (b[0] * ux, b[1] * uy, b[2] * ux, b[3] * uy);
                BBox::from_centre(cx, cy, w, h)
            }
            DetrBoxes::Xyxy => BBox { x1: b[0] * ux, y1: b[1] * uy, x2: b[2] * ux, y2: b[3] * uy },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: DecodeParams = DecodeParams { score: 0.5, iou: 0.5, max_detections: 100, top_k: 5 };

    fn graph<'a>(names: &'a [String], shapes: &'a [Vec<usize>], classes: usize) -> GraphOutputs<'a> {
        GraphOutputs { names, shapes, input_width: 100, input_height: 50, classes }
    }
    fn settings(scores: DetrScores) -> Settings {
        Settings { scores, box_format: DetrBoxes::Cxcywh, normalized: true }
    }
    fn tensor(shape: &[usize], data: Vec<f32>) -> OutputTensor {
        OutputTensor { name: "t".into(), shape: shape.to_vec(), data }
    }

    #[test]
    fn probabilities_give_every_pair_above_the_threshold_best_first() {
        let names = ["pred".to_string()];
        let shapes = [vec![1, 2, 6]];
        let d = bind(&settings(DetrScores::Probabilities), graph(&names, &shapes, 2)).unwrap();
        #[rustfmt::skip]
        let rows = vec![
            0.5, 0.5, 0.2, 0.4, 0.7, 0.9, // one query, two classes above 0.5
            0.1, 0.1, 0.1, 0.1, 0.2, 0.3, // nothing
        ];
        let out = d.decode(&[tensor(&[1, 2, 6], rows)], &P);
        let got: Vec<(usize, f32)> = out.iter().map(|c| (c.class_id, c.score)).collect();
        assert_eq!(got, [(1, 0.9), (0, 0.7)]);
        let b = out[0].bbox;
        assert!((b.x1 - 40.0).abs() < 1e-4 && (b.y1 - 15.0).abs() < 1e-4, "{b:?}");
        assert!((b.x2 - 60.0).abs() < 1e-4 && (b.y2 - 35.0).abs() < 1e-4, "{b:?}");
    }

    #[test]
    fn logits_through_the_sigmoid_and_the_softmax() {
        let names = ["pred".to_string()];
        let d = bind(&settings(DetrScores::Sigmoid), graph(&names, &[vec![1, 1, 6]], 2)).unwrap();
        let out = d.decode(&[tensor(&[1, 1, 6], vec![0.5, 0.5, 0.2, 0.4, 2.0, -2.0])], &P);
        assert_eq!(out.len(), 1);
        assert!((out[0].score - sigmoid(2.0)).abs() < 1e-6);
        // Softmax: 2 classes + "no object"; a query whose best is "no object" still reports
        // its best real class only when that passes.
        let d = bind(&settings(DetrScores::Softmax), graph(&names, &[vec![1, 2, 7]], 2)).unwrap();
        let rows = vec![0.5, 0.5, 0.2, 0.4, 3.0, 0.0, 0.0, 0.5, 0.5, 0.2, 0.4, 0.0, 0.0, 3.0];
        let out = d.decode(&[tensor(&[1, 2, 7], rows)], &P);
        assert_eq!(out.len(), 1);
        let e3 = 3f32.exp();
        assert_eq!(out[0].class_id, 0);
        assert!((out[0].score - e3 / (e3 + 2.0)).abs() < 1e-6);
    }

    #[test]
    fn probabilities_read_as_logits_are_named_once() {
        let names = ["pred".to_string()];
        let d = bind(&settings(DetrScores::Sigmoid), graph(&names, &[vec![1, 1, 6]], 2)).unwrap();
        d.decode(&[tensor(&[1, 1, 6], vec![0.5, 0.5, 0.2, 0.4, -3.0, 0.5])], &P);
        assert!(!d.warned.given(), "a logit outside 0–1: no warning");
        d.decode(&[tensor(&[1, 1, 6], vec![0.5, 0.5, 0.2, 0.4, 0.1, 0.5])], &P);
        assert!(d.warned.given(), "every value within 0–1: warned");
    }

    /// `normalized = true` (the default) on a model whose boxes are pixels: every box would
    /// land in the input's far corner; warned once, naming the setting.
    #[test]
    fn pixel_boxes_read_as_normalised_are_named_once() {
        let names = ["pred".to_string()];
        let d = bind(&settings(DetrScores::Sigmoid), graph(&names, &[vec![1, 1, 6]], 2)).unwrap();
        d.decode(&[tensor(&[1, 1, 6], vec![0.5, 0.5, 0.2, 0.4, 3.0, -3.0])], &P);
        assert!(!d.warned_pixels.given(), "normalised boxes: no warning");
        d.decode(&[tensor(&[1, 1, 6], vec![250.0, 250.0, 40.0, 60.0, -3.0, -3.0])], &P);
        assert!(!d.warned_pixels.given(), "no box above the score: nothing to judge");
        d.decode(&[tensor(&[1, 1, 6], vec![250.0, 250.0, 40.0, 60.0, 3.0, -3.0])], &P);
        assert!(d.warned_pixels.given(), "pixel boxes: warned");
    }

    #[test]
    fn split_outputs_and_shapes_that_do_not_fit() {
        let names = ["boxes".to_string(), "logits".to_string()];
        let s = Settings { scores: DetrScores::Softmax, box_format: DetrBoxes::Xyxy, normalized: false };
        let d = bind(&s, graph(&names, &[vec![1, 1, 4], vec![1, 1, 3]], 2)).unwrap();
        let out =
            d.decode(&[tensor(&[1, 1, 4], vec![1.0, 2.0, 3.0, 4.0]), tensor(&[1, 1, 3], vec![0.0, 5.0, 0.0])], &P);
        assert_eq!(out[0].bbox, BBox { x1: 1.0, y1: 2.0, x2: 3.0, y2: 4.0 });
        assert_eq!(out[0].class_id, 1);
        let e = bind(&s, graph(&names, &[vec![1, 1, 4], vec![1, 1, 2]], 2)).unwrap_err();
        assert!(e.contains("scores [1, Q, 3] (2 labels + \"no object\")"), "{e}");
        let e = bind(&settings(DetrScores::Sigmoid), graph(&names[..1], &[vec![1, 300, 6]], 80)).unwrap_err();
        assert!(e.contains("[1, Q, 84]") && e.contains("check labels"), "{e}");
    }
}
