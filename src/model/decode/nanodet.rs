//! NanoDet (generalised focal loss) heads.
//!
//! For each stride s the graph gives a class map [1, N, C] (already sigmoid) and a box map
//! [1, N, 4 × (reg_max + 1)], N = ⌈H/s⌉ · ⌈W/s⌉ cells in row-major order. Each box side
//! (left, top, right, bottom) is a distribution over reg_max + 1 bins: softmax, take the
//! expected bin, multiply by s. The cell at (row, col) is anchored at ((col + o) · s,
//! (row + o) · s), o = `centre_offset` (0.5, the cell's centre, for NanoDet).
//! Outputs are matched to strides by their shapes, so their order in the graph is free.

use super::{argmax, unbatched, DecodeParams, GraphOutputs, OutputTensor};
use crate::model::nms::nms;
use crate::model::{BBox, Candidate};

#[derive(Debug, Clone, PartialEq)]
pub struct Nanodet {
    levels: Vec<Level>,
    classes: usize,
    bins: usize,
    offset: f32,
}

#[derive(Debug, Clone, PartialEq)]
struct Level {
    stride: usize,
    cols: usize,
    cells: usize,
    class_output: usize,
    box_output: usize,
}

pub(super) fn bind(strides: &[usize], reg_max: usize, offset: f32, g: GraphOutputs) -> Result<Nanodet, String> {
    let bins = reg_max + 1;
    let mut levels = Vec::new();
    let mut used = vec![false; g.shapes.len()];
    for &stride in strides {
        let cols = g.input_width.div_ceil(stride);
        let rows = g.input_height.div_ceil(stride);
        let cells = rows * cols;
        let mut find = |width: usize, what: &str| {
            let found =
                g.shapes.iter().enumerate().position(|(i, s)| !used[i] && unbatched(s) == Some(&[cells, width][..]));
            match found {
                Some(i) => {
                    used[i] = true;
                    Ok(i)
                }
                None => Err(format!(
                    "decoder \"nanodet\": no output [1, {cells}, {width}] for the {what} of stride \
                     {stride} ({rows}×{cols} cells at input {}×{}); the graph's outputs are {}{}",
                    g.input_width,
                    g.input_height,
                    g.describe(),
                    if what == "class map" {
                        format!(" (check that labels has the model's {} classes)", g.classes)
                    } else {
                        format!(" (check decoder.reg_max = {reg_max})")
                    }
                )),
            }
        };
        let class_output = find(g.classes, "class map")?;
        let box_output = find(4 * bins, "box map")?;
        levels.push(Level { stride, cols, cells, class_output, box_output });
    }
    Ok(Nanodet { levels, classes: g.classes, bins, offset })
}

impl Nanodet {
    pub(super) fn decode(&self, outputs: &[OutputTensor], p: &DecodeParams) -> Vec<Candidate> {
        let mut candidates = Vec::new();
        for level in &self.levels {
            let scores = &outputs[level.class_output].data;
            let boxes = &outputs[level.box_output].data;
            let s = level.stride as f32;
            for cell in 0..level.cells {
                let (class_id, score) = argmax(&scores[cell * self.classes..(cell + 1) * self.classes]);
                if score <= p.score {
                    continue;
                }
                let dist = &boxes[cell * 4 * self.bins..(cell + 1) * 4 * self.bins];
                let side = |k: usize| expected_bin(&dist[k * self.bins..(k + 1) * self.bins]) * s;
                let cx = ((cell % level.cols) as f32 + self.offset) * s;
                let cy = ((cell / level.cols) as f32 + self.offset) * s;
                candidates.push(Candidate {
                    class_id,
                    score,
                    bbox: BBox { x1: cx - side(0), y1: cy - side(1), x2: cx + side(2), y2: cy + side(3) },
                    keypoints: Vec::new(),
                });
            }
        }
        nms(candidates, p.iou, p.max_detections)
    }
}

/// The expectation of the bin index under softmax(logits).
fn expected_bin(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let (mut sum, mut weighted) = (0f32, 0f32);
    for (i, &l) in logits.iter().enumerate() {
        let e = (l - max).exp();
        sum += e;
        weighted += e * i as f32;
    }
    weighted / sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_bin_of_a_peaked_distribution() {
        assert!((expected_bin(&[0.0, 0.0, 100.0, 0.0]) - 2.0).abs() < 1e-4);
        assert!((expected_bin(&[0.0, 0.0]) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn binds_by_shape_and_decodes_a_box() {
        // Input 16×16, strides 8 and 16: 4 cells and 1 cell; 2 classes; reg_max 1 (2 bins).
        let names: Vec<String> = ["b16", "c8", "b8", "c16"].iter().map(|s| s.to_string()).collect();
        let shapes = vec![vec![1, 1, 8], vec![1, 4, 2], vec![1, 4, 8], vec![1, 1, 2]];
        let g = GraphOutputs { names: &names, shapes: &shapes, input_width: 16, input_height: 16, classes: 2 };
        let d = bind(&[8, 16], 1, 0.0, g).unwrap();
        let mut c8 = vec![0.0; 8];
        c8[3 * 2 + 1] = 0.9; // cell 3 = row 1, col 1 → anchor (8, 8) at offset 0; class 1
                             // Each side: bins [0, big] → expectation 1 → distance 8 (one stride).
        let b8: Vec<f32> = (0..4 * 8).map(|i| if i % 2 == 1 { 50.0 } else { 0.0 }).collect();
        let outs = vec![
            OutputTensor { name: "b16".into(), shape: shapes[0].clone(), data: vec![0.0; 8] },
            OutputTensor { name: "c8".into(), shape: shapes[1].clone(), data: c8 },
            OutputTensor { name: "b8".into(), shape: shapes[2].clone(), data: b8 },
            OutputTensor { name: "c16".into(), shape: shapes[3].clone(), data: vec![0.1, 0.0] },
        ];
        let p = DecodeParams { score: 0.35, iou: 0.6, max_detections: 10, top_k: 1 };
        let out = d.decode(&outs, &p);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].class_id, 1);
        let b = out[0].bbox;
        for (got, want) in [(b.x1, 0.0), (b.y1, 0.0), (b.x2, 16.0), (b.y2, 16.0)] {
            assert!((got - want).abs() < 1e-3, "{b:?}");
        }
        // With NanoDet's default offset 0.5 the same cell is anchored at its centre (12, 12).
        let d = bind(&[8, 16], 1, 0.5, g).unwrap();
        let b = d.decode(&outs, &p)[0].bbox;
        assert!((b.x1 - 4.0).abs() < 1e-3 && (b.y2 - 20.0).abs() < 1e-3, "{b:?}");
    }

    #[test]
    fn a_wrong_class_count_is_named() {
        let names = vec!["c8".to_string(), "b8".to_string()];
        let shapes = vec![vec![1, 4, 80], vec![1, 4, 44]];
        let g = GraphOutputs { names: &names, shapes: &shapes, input_width: 16, input_height: 16, classes: 81 };
        let err = bind(&[8], 10, 0.5, g).unwrap_err();
        assert!(err.contains("[1, 4, 81]") && err.contains("labels") && err.contains("\"c8\" [1, 4, 80]"), "{err}");
    }
}
