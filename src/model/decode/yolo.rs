//! Ultralytics-style YOLO outputs.
//!
//! - v8 / v11 layout: one output [1, 4 + C, N] (channels first, as exported) or its
//!   transpose [1, N, 4 + C]; rows are cx, cy, w, h in input pixels then C class scores.
//!   Pose exports add K keypoints of x, y (input pixels) and visibility: [1, 4 + C + 3K, N].
//! - v5 layout: one output [1, N, 5 + C]: cx, cy, w, h, objectness, C class scores; the
//!   score of class c is objectness × class score.
//!
//! Each anchor proposes its best class (as Ultralytics does without `multi_label`), then
//! class-wise NMS keeps the best boxes.

use super::{argmax, unbatched, DecodeParams, GraphOutputs, OutputTensor};
use crate::model::nms::nms;
use crate::model::{BBox, Candidate, Keypoint};

#[derive(Debug, Clone, PartialEq)]
pub struct Yolo {
    output: usize,
    classes: usize,
    anchors: usize,
    /// Values of one anchor are `stride` apart (channels-first) or consecutive.
    channels_first: bool,
    objectness: bool,
    keypoints: usize,
}

pub(super) fn bind(objectness: bool, keypoints: usize, g: GraphOutputs) -> Result<Yolo, String> {
    let kind = if objectness { "yolov5" } else { "yolov8" };
    let rows = g.classes + if objectness { 5 } else { 4 } + 3 * keypoints;
    let expected = if objectness {
        format!("[1, N, {rows}] (5 + {} labels)", g.classes)
    } else if keypoints > 0 {
        format!("[1, {rows}, N] or [1, N, {rows}] (4 + {} labels + 3 × {keypoints} keypoints)", g.classes)
    } else {
        format!("[1, {rows}, N] or [1, N, {rows}] (4 + {} labels)", g.classes)
    };
    if g.shapes.len() != 1 {
        return Err(format!(
            "decoder \"{kind}\": expected one output {expected}, but the graph has {}: {}",
            g.shapes.len(),
            g.describe()
        ));
    }
    let shape = &g.shapes[0];
    let (channels_first, anchors) = match unbatched(shape) {
        Some(&[a, b]) if !objectness && a == rows => (true, b),
        Some(&[a, b]) if b == rows => (false, a),
        _ => {
            return Err(format!(
                "decoder \"{kind}\": expected the output {expected}, but the graph's output \"{}\" \
                 is {:?}; check that labels lists exactly the model's classes{}",
                g.names[0],
                shape,
                if objectness { "" } else { " and decoder.keypoints its keypoints (none for a detector)" }
            ))
        }
    };
    Ok(Yolo { output: 0, classes: g.classes, anchors, channels_first, objectness, keypoints })
}

impl Yolo {
    pub(super) fn decode(&self, outputs: &[OutputTensor], p: &DecodeParams) -> Vec<Candidate> {
        let data = &outputs[self.output].data;
        let first_class = if self.objectness { 5 } else { 4 };
        let first_keypoint = first_class + self.classes;
        let rows = first_keypoint + 3 * self.keypoints;
        let mut anchor = vec![0f32; rows];
        let mut candidates = Vec::new();
        for a in 0..self.anchors {
            if self.channels_first {
                for (r, v) in anchor.iter_mut().enumerate() {
                    *v = data[r * self.anchors + a];
                }
            } else {
                anchor.copy_from_slice(&data[a * rows..(a + 1) * rows]);
            }
            let (class_id, mut score) = argmax(&anchor[first_class..first_keypoint]);
            if self.objectness {
                score *= anchor[4];
            }
            if score <= p.score {
                continue;
            }
            let (cx, cy, w, h) = (anchor[0], anchor[1], anchor[2], anchor[3]);
            let keypoints = anchor[first_keypoint..]
                .chunks_exact(3)
                .map(|k| Keypoint { x: k[0], y: k[1], score: Some(k[2]) })
                .collect();
            candidates.push(Candidate { class_id, score, bbox: BBox::from_centre(cx, cy, w, h), keypoints });
        }
        nms(candidates, p.iou, p.max_detections)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph<'a>(names: &'a [String], shapes: &'a [Vec<usize>], classes: usize) -> GraphOutputs<'a> {
        GraphOutputs { names, shapes, input_width: 64, input_height: 64, classes }
    }
    const P: DecodeParams = DecodeParams { score: 0.25, iou: 0.45, max_detections: 100, top_k: 5 };

    /// Two classes, three anchors: anchor 0 class 1 (0.9), anchor 1 a weaker duplicate of
    /// it, anchor 2 below threshold.
    fn anchors() -> [[f32; 6]; 3] {
        [[20.0, 20.0, 10.0, 10.0, 0.1, 0.9], [21.0, 20.0, 10.0, 10.0, 0.2, 0.8], [50.0, 50.0, 4.0, 4.0, 0.2, 0.1]]
    }

    #[test]
    fn v8_channels_first_and_transposed_decode_the_same() {
        let names = ["output0".to_string()];
        let a = anchors();
        let first: Vec<f32> = (0..6).flat_map(|r| a.iter().map(move |x| x[r])).collect();
        let last: Vec<f32> = a.iter().flatten().copied().collect();
        for (shape, data) in [(vec![1, 6, 3], first), (vec![1, 3, 6], last)] {
            let shapes = [shape.clone()];
            let d = bind(false, 0, graph(&names, &shapes, 2)).unwrap();
            let out = d.decode(&[OutputTensor { name: "output0".into(), shape, data }], &P);
            assert_eq!(out.len(), 1, "{out:?}");
            assert_eq!(out[0].class_id, 1);
            assert_eq!(out[0].score, 0.9);
            assert_eq!(out[0].bbox, BBox { x1: 15.0, y1: 15.0, x2: 25.0, y2: 25.0 });
        }
    }

    #[test]
    fn v5_multiplies_objectness() {
        let names = ["output0".to_string()];
        let shapes = [vec![1, 2, 7]];
        let d = bind(true, 0, graph(&names, &shapes, 2)).unwrap();
        let data = vec![
            10.0, 10.0, 4.0, 4.0, 0.5, 0.2, 0.8, // 0.4 for class 1
            40.0, 40.0, 4.0, 4.0, 0.3, 0.9, 0.1, // 0.27 for class 0
        ];
        let out = d.decode(&[OutputTensor { name: "output0".into(), shape: vec![1, 2, 7], data }], &P);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].class_id, out[0].score), (1, 0.4));
        assert!((out[1].score - 0.27).abs() < 1e-6 && out[1].class_id == 0);
    }

    #[test]
    fn a_class_count_mismatch_is_named() {
        let names = ["output0".to_string()];
        let shapes = [vec![1, 84, 2100]];
        let err = bind(false, 0, graph(&names, &shapes, 79)).unwrap_err();
        assert!(err.contains("[1, 83, N]") && err.contains("[1, 84, 2100]") && err.contains("labels"), "{err}");
        let shapes = [vec![1, 2100, 84]];
        assert!(bind(true, 0, graph(&names, &shapes, 80)).is_err());
        assert!(bind(true, 0, graph(&names, &shapes, 79)).is_ok());
    }

    #[test]
    fn pose_rows_carry_keypoints_after_the_classes() {
        // One class, two keypoints: cx, cy, w, h, score, (x, y, v) × 2; channels first, 2 anchors.
        let names = ["output0".to_string()];
        let shapes = [vec![1, 11, 2]];
        let d = bind(false, 2, graph(&names, &shapes, 1)).unwrap();
        let a = [[20.0, 20.0, 10.0, 10.0, 0.9, 18.0, 17.0, 0.8, 22.0, 23.0, 0.1], [0.0; 11]];
        let data: Vec<f32> = (0..11).flat_map(|r| a.iter().map(move |x| x[r])).collect();
        let out = d.decode(&[OutputTensor { name: "output0".into(), shape: shapes[0].clone(), data }], &P);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].keypoints,
            [Keypoint { x: 18.0, y: 17.0, score: Some(0.8) }, Keypoint { x: 22.0, y: 23.0, score: Some(0.1) }]
        );
        let e = bind(false, 3, graph(&names, &shapes, 1)).unwrap_err();
        assert!(e.contains("3 × 3 keypoints") && e.contains("decoder.keypoints"), "{e}");
    }
}
