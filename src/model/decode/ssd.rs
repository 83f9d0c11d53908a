//! SSD-style outputs: boxes [1, N, 4] and per-box class scores [1, N, C] (or C + 1 with a
//! background column first). Each box proposes its best class, then class-wise NMS.

use super::{argmax, logit_floor, sigmoid, unbatched, DecodeParams, GraphOutputs, Once, OutputTensor};
use crate::model::manifest::BoxFormat;
use crate::model::nms::nms;
use crate::model::{BBox, Candidate};

#[derive(Debug, Clone, PartialEq)]
pub struct Ssd {
    boxes: usize,
    scores: usize,
    anchors: usize,
    columns: usize,
    background: bool,
    format: BoxFormat,
    /// Multipliers from box units to input pixels (x, y).
    unit: (f32, f32),
    sigmoid: bool,
    /// Warned that boxes said to be normalised look like pixels.
    warned_pixels: Once,
}

pub(super) fn bind(
    format: BoxFormat,
    normalized: bool,
    background: bool,
    sigmoid: bool,
    g: GraphOutputs,
) -> Result<Ssd, String> {
    let columns = g.classes + usize::from(background);
    let dims: Vec<Option<&[usize]>> = g.shapes.iter().map(|s| unbatched(s)).collect();
    let boxes = dims.iter().position(|d| matches!(d, Some([_, 4])));
    let scores =
        dims.iter().enumerate().position(|(i, d)| Some(i) != boxes && matches!(d, Some([_, c]) if *c == columns));
    let (Some(boxes), Some(scores)) = (boxes, scores) else {
        return Err(format!(
            "decoder \"ssd\": expected boxes [1, N, 4] and scores [1, N, {columns}] ({} labels{}), \
             but the graph's outputs are {}",
            g.classes,
            if background { " + background" } else { "" },
            g.describe()
        ));
    };
    let anchors = dims[boxes].unwrap()[0];
    if dims[scores].unwrap()[0] != anchors {
        return Err(format!("decoder \"ssd\": boxes and scores disagree on the number of boxes: {}", g.describe()));
    }
    let unit = if normalized { (g.input_width as f32, g.input_height as f32) } else { (1.0, 1.0) };
    Ok(Ssd { boxes, scores, anchors, columns, background, format, unit, sigmoid, warned_pixels: Once::default() })
}

impl Ssd {
    pub(super) fn decode(&self, outputs: &[OutputTensor], p: &DecodeParams) -> Vec<Candidate> {
        let boxes = &outputs[self.boxes].data;
        let scores = &outputs[self.scores].data;
        let skip = usize::from(self.background);
        let floor = logit_floor(p.score);
        let mut candidates = Vec::new();
        let mut largest = 0.0f32;
        for a in 0..self.anchors {
            let row = &scores[a * self.columns + skip..(a + 1) * self.columns];
            let (class_id, mut score) = argmax(row);
            if self.sigmoid {
                if score < floor {
                    continue;
                }
                score = sigmoid(score);
            }
            if score <= p.score {
                continue;
            }
            let b = &boxes[a * 4..a * 4 + 4];
            largest = largest.max(super::largest_value(b));
            let (ux, uy) = self.unit;
            let bbox = match self.format {
                BoxFormat::Xyxy => BBox { x1: b[0] * ux, y1: b[1] * uy, x2: b[2] * ux, y2: b[3] * uy },
                BoxFormat::Yxyx => BBox { x1: b[1] * ux, y1: b[0] * uy, x2: b[3] * ux, y2: b[2] * uy },
                BoxFormat::Cxcywh => BBox {
                    x1: (b[0] - b[2] / 2.0) * ux,
                    y1: (b[1] - b[3] / 2.0) * uy,
                    x2: (b[0] + b[2] / 2.0) * ux,
                    y2: (b[1] + b[3] / 2.0) * uy,
                },
            };
            candidates.push(Candidate { class_id, score, bbox, keypoints: Vec::new() });
        }
        if self.unit != (1.0, 1.0) {
            super::warn_if_pixels("ssd", largest, &self.warned_pixels);
        }
        nms(candidates, p.iou, p.max_detections)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_normalised_yxyx_with_background() {
        let names = vec!["scores".to_string(), "boxes".to_string()];
        let shapes = vec![vec![1, 2, 3], vec![1, 2, 4]];
        let g = GraphOutputs { names: &names, shapes: &shapes, input_width: 100, input_height: 50, classes: 2 };
        let d = bind(BoxFormat::Yxyx, true, true, false, g).unwrap();
        let outs = vec![
            // box 0: background wins but is never reported: class 1 at 0.6; box 1: all low.
            OutputTensor { name: "scores".into(), shape: shapes[0].clone(), data: vec![0.99, 0.1, 0.6, 0.9, 0.1, 0.1] },
            OutputTensor {
                name: "boxes".into(),
                shape: shapes[1].clone(),
                data: vec![0.1, 0.2, 0.5, 0.6, 0.0, 0.0, 1.0, 1.0],
            },
        ];
        let p = DecodeParams { score: 0.5, iou: 0.5, max_detections: 10, top_k: 1 };
        let out = d.decode(&outs, &p);
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].class_id, out[0].score), (1, 0.6));
        let b = out[0].bbox;
        assert!((b.x1 - 20.0).abs() < 1e-4 && (b.y1 - 5.0).abs() < 1e-4);
        assert!((b.x2 - 60.0).abs() < 1e-4 && (b.y2 - 25.0).abs() < 1e-4);
        assert!(!d.warned_pixels.given(), "normalised boxes: no warning");
        // The same model, had it given pixels: warned once that the setting looks wrong.
        let mut pixels = outs.clone();
        pixels[1].data = vec![10.0, 20.0, 50.0, 60.0, 0.0, 0.0, 100.0, 50.0];
        d.decode(&pixels, &p);
        assert!(d.warned_pixels.given(), "pixel boxes under normalized = true: warned");
    }

    #[test]
    fn missing_outputs_are_described() {
        let names = vec!["out".to_string()];
        let shapes = vec![vec![1, 10, 4]];
        let g = GraphOutputs { names: &names, shapes: &shapes, input_width: 10, input_height: 10, classes: 3 };
        let err = bind(BoxFormat::Xyxy, false, false, false, g).unwrap_err();
        assert!(err.contains("scores [1, N, 3]") && err.contains("\"out\" [1, 10, 4]"), "{err}");
    }
}
