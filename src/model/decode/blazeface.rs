//! MediaPipe BlazeFace: box regressors [1, A, 4 + 2k] and score logits [1, A, 1] over a
//! fixed grid of A anchors.
//!
//! Anchors are laid out layer by layer, then row by row, column by column, with `per_cell`
//! anchors per cell, centred at ((col + 0.5) / cols, (row + 0.5) / rows) in fractions of the
//! input. A box is (cx, cy, w, h) = raw[0..4] / box_scale + (ax, ay, 0, 0), in fractions of
//! the input; the score is sigmoid(raw score). Keypoint i, when the manifest names it, is
//! (raw[4 + 2i], raw[5 + 2i]) / box_scale + (ax, ay), likewise.

use super::{logit_floor, sigmoid, unbatched, DecodeParams, GraphOutputs, OutputTensor};
use crate::model::manifest::AnchorLayer;
use crate::model::nms::nms;
use crate::model::{BBox, Candidate, Keypoint};

#[derive(Debug, Clone, PartialEq)]
pub struct Blazeface {
    regressors: usize,
    scores: usize,
    /// Per regressor row: its length.
    row: usize,
    anchors: Vec<(f32, f32)>,
    box_scale: f32,
    input: (f32, f32),
    keypoints: usize,
}

/// Anchor centres, in fractions of the input.
pub fn anchors(layers: &[AnchorLayer], width: usize, height: usize) -> Vec<(f32, f32)> {
    let mut out = Vec::new();
    for layer in layers {
        let cols = width.div_ceil(layer.stride);
        let rows = height.div_ceil(layer.stride);
        for y in 0..rows {
            for x in 0..cols {
                let centre = ((x as f32 + 0.5) / cols as f32, (y as f32 + 0.5) / rows as f32);
                out.extend(std::iter::repeat_n(centre, layer.per_cell));
            }
        }
    }
    out
}

/// How many anchors [`anchors`] makes (saturating: a manifest can ask for absurd grids).
/// Counted in u64, so that a 32-bit device names the same count as any other.
fn anchor_count(layers: &[AnchorLayer], width: usize, height: usize) -> u64 {
    layers.iter().fold(0u64, |n, l| {
        let cells = (width.div_ceil(l.stride) as u64).saturating_mul(height.div_ceil(l.stride) as u64);
        n.saturating_add(cells.saturating_mul(l.per_cell as u64))
    })
}

pub(super) fn bind(
    layers: &[AnchorLayer],
    box_scale: f32,
    keypoints: usize,
    g: GraphOutputs,
) -> Result<Blazeface, String> {
    // Counted before any is made: the grid is built only once the graph is known to produce
    // that many rows, so the manifest alone cannot make vigil allocate.
    let n = anchor_count(layers, g.input_width, g.input_height);
    let dims: Vec<Option<&[usize]>> = g.shapes.iter().map(|s| unbatched(s)).collect();
    let rows = |a: &usize| *a as u64 == n;
    let scores = dims.iter().position(|d| matches!(d, Some([a, 1]) if rows(a)));
    let regressors = dims.iter().position(|d| matches!(d, Some([a, r]) if rows(a) && *r >= 4));
    let (Some(regressors), Some(scores)) = (regressors, scores) else {
        return Err(format!(
            "decoder \"blazeface\": decoder.anchors give {n} anchors at input {}×{}, so expected \
             regressors [1, {n}, 4 + 2k] and scores [1, {n}, 1], but the graph's outputs are {}",
            g.input_width,
            g.input_height,
            g.describe()
        ));
    };
    let row = dims[regressors].unwrap()[1];
    if 4 + 2 * keypoints > row {
        return Err(format!(
            "decoder.keypoints: names {keypoints} points, but the regressors \"{}\" [1, {n}, {row}] hold {} after \
             each box",
            g.names[regressors],
            (row - 4) / 2
        ));
    }
    let anchors = anchors(layers, g.input_width, g.input_height);
    Ok(Blazeface {
        regressors,
        scores,
        row,
        anchors,
        box_scale,
        input: (g.input_width as f32, g.input_height as f32),
        keypoints,
    })
}

impl Blazeface {
    pub(super) fn decode(&self, outputs: &[OutputTensor], p: &DecodeParams) -> Vec<Candidate> {
        let reg = &outputs[self.regressors].data;
        let logits = &outputs[self.scores].data;
        let (w, h) = self.input;
        let floor = logit_floor(p.score);
        let mut candidates = Vec::new();
        for (a, &(ax, ay)) in self.anchors.iter().enumerate() {
            if logits[a] < floor {
                continue;
            }
            let score = sigmoid(logits[a].clamp(-100.0, 100.0));
            if score <= p.score {
                continue;
            }
            let r = &reg[a * self.row..(a + 1) * self.row];
            let cx = (r[0] / self.box_scale + ax) * w;
            let cy = (r[1] / self.box_scale + ay) * h;
            let bw = r[2] / self.box_scale * w;
            let bh = r[3] / self.box_scale * h;
            let keypoints = r[4..4 + 2 * self.keypoints]
                .chunks_exact(2)
                .map(|p| Keypoint {
                    x: (p[0] / self.box_scale + ax) * w,
                    y: (p[1] / self.box_scale + ay) * h,
                    score: None,
                })
                .collect();
            candidates.push(Candidate { class_id: 0, score, bbox: BBox::from_centre(cx, cy, bw, bh), keypoints });
        }
        nms(candidates, p.iou, p.max_detections)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short_range() -> Vec<AnchorLayer> {
        vec![AnchorLayer { stride: 8, per_cell: 2 }, AnchorLayer { stride: 16, per_cell: 6 }]
    }

    #[test]
    fn short_range_model_has_896_anchors() {
        let a = anchors(&short_range(), 128, 128);
        assert_eq!(a.len(), 896);
        assert_eq!(a[0], (0.5 / 16.0, 0.5 / 16.0));
        assert_eq!(a[1], a[0]);
        assert_eq!(a[2], (1.5 / 16.0, 0.5 / 16.0));
        assert_eq!(a[512], (0.5 / 8.0, 0.5 / 8.0));
        assert_eq!(a[895], (7.5 / 8.0, 7.5 / 8.0));
        assert_eq!(anchor_count(&short_range(), 128, 128), 896);
    }

    #[test]
    fn an_absurd_anchor_grid_is_refused_before_it_is_built() {
        // 8 · 4096² · 64 ≈ 8.6e9 anchors: counted, compared with the graph, never allocated.
        let layers = [AnchorLayer { stride: 1, per_cell: 64 }; 8];
        let names = vec!["reg".to_string(), "cls".to_string()];
        let shapes = vec![vec![1, 896, 16], vec![1, 896, 1]];
        let g = GraphOutputs { names: &names, shapes: &shapes, input_width: 4096, input_height: 4096, classes: 1 };
        let e = bind(&layers, 128.0, 0, g).unwrap_err();
        assert!(e.contains("8589934592 anchors"), "{e}");
    }

    #[test]
    fn decodes_one_face() {
        let layers = [AnchorLayer { stride: 64, per_cell: 1 }]; // 2×2 anchors at 128
        let names = vec!["reg".to_string(), "cls".to_string()];
        let shapes = vec![vec![1, 4, 16], vec![1, 4, 1]];
        let g = GraphOutputs { names: &names, shapes: &shapes, input_width: 128, input_height: 128, classes: 1 };
        let d = bind(&layers, 128.0, 6, g).unwrap();
        assert!(bind(&layers, 128.0, 7, g).unwrap_err().contains("decoder.keypoints: names 7 points"));
        let mut reg = vec![0.0; 64];
        // Anchor 3 is centred at (96, 96); shift by +8 px in x, size 32×16; its first point
        // 4 px left of the anchor and its last 4 px below.
        reg[3 * 16..3 * 16 + 6].copy_from_slice(&[8.0, 0.0, 32.0, 16.0, -4.0, 0.0]);
        reg[3 * 16 + 15] = 4.0;
        let outs = vec![
            OutputTensor { name: "reg".into(), shape: shapes[0].clone(), data: reg },
            OutputTensor { name: "cls".into(), shape: shapes[1].clone(), data: vec![-5.0, -5.0, -5.0, 3.0] },
        ];
        let p = DecodeParams { score: 0.5, iou: 0.3, max_detections: 10, top_k: 1 };
        let out = d.decode(&outs, &p);
        assert_eq!(out.len(), 1);
        assert!((out[0].score - sigmoid(3.0)).abs() < 1e-6);
        assert_eq!(out[0].bbox, BBox { x1: 88.0, y1: 88.0, x2: 120.0, y2: 104.0 });
        let k = &out[0].keypoints;
        assert_eq!(k.len(), 6);
        assert_eq!(k[0], Keypoint { x: 92.0, y: 96.0, score: None });
        assert_eq!(k[5], Keypoint { x: 96.0, y: 100.0, score: None });
    }

    #[test]
    fn anchor_count_mismatch_is_named() {
        let names = vec!["reg".to_string(), "cls".to_string()];
        let shapes = vec![vec![1, 896, 16], vec![1, 896, 1]];
        let g = GraphOutputs { names: &names, shapes: &shapes, input_width: 128, input_height: 128, classes: 1 };
        let err = bind(&[AnchorLayer { stride: 8, per_cell: 2 }], 128.0, 0, g).unwrap_err();
        assert!(err.contains("512 anchors") && err.contains("[1, 896, 16]"), "{err}");
    }
}
