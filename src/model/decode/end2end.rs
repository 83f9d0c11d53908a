//! Detections the graph has already post-processed ("end-to-end" exports): one row per
//! detection, NMS done inside the graph or not needed at all.
//!
//! - Combined: one output [1, N, K] (or [N, K]) whose K columns are named by
//!   `decoder.columns`, e.g. x1, y1, x2, y2, score, class (YOLO26, YOLOv10), then, for a
//!   pose model, 3 values (x, y, visibility) per keypoint the manifest names.
//! - Split (TensorFlow Object Detection API and the like): boxes [1, N, 4], scores [1, N],
//!   classes [1, N] and optionally count [1], chosen by name with `decoder.outputs`; the box
//!   columns come in the order `decoder.columns` lists them.
//!
//! A row is a detection when its score passes the threshold and its class (minus
//! `class_offset`) is a label; padding rows (score 0, class −1) fail one or the other. A
//! class beyond the labels and pixel boxes that all fit in one pixel (normalised boxes
//! declared as pixels) are logged once per model: both mean the manifest is wrong.

use super::{DecodeParams, GraphOutputs, Once, OutputTensor};
use crate::model::manifest::{check_columns, Column};
use crate::model::nms::{best_first, nms};
use crate::model::{BBox, Candidate, Keypoint};

#[derive(Debug, Clone, PartialEq)]
pub struct End2end {
    layout: Layout,
    rows: usize,
    /// Where each box value sits: in a combined row, or within the boxes output's 4 values.
    boxes: BoxColumns,
    unit: (f32, f32),
    class_offset: f32,
    classes: usize,
    nms: bool,
    keypoints: usize,
    /// Warned of a class beyond the labels; of boxes all within a pixel.
    warned_class: Once,
    warned_pixel: Once,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Layout {
    Combined { output: usize, width: usize, score: usize, class: usize, first_keypoint: usize },
    Split { boxes: usize, scores: usize, classes: usize, count: Option<usize> },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum BoxColumns {
    Corners { x1: usize, y1: usize, x2: usize, y2: usize },
    Centre { cx: usize, cy: usize, w: usize, h: usize },
}

/// The decoder's settings from the manifest.
pub struct Settings<'a> {
    pub columns: &'a [Column],
    pub normalized: bool,
    pub class_offset: u32,
    pub nms: bool,
    /// Keypoints (x, y, visibility) after the columns.
    pub keypoints: usize,
}

pub(super) fn bind(s: &Settings, g: GraphOutputs) -> Result<End2end, String> {
    // The manifest check did this already; a spec made another way gets the same answer.
    check_columns(s.columns).map_err(|e| format!("decoder.columns: {e}"))?;
    let unit = if s.normalized { (g.input_width as f32, g.input_height as f32) } else { (1.0, 1.0) };
    let position = |c: Column| s.columns.iter().position(|x| *x == c);
    let row = s.columns.len() + 3 * s.keypoints;
    let expected = || {
        format!(
            "one output [1, N, {row}] (decoder.columns: {}{}), or boxes [1, N, 4], scores [1, N] and classes \
             [1, N] (and count [1]) named with decoder.outputs",
            s.columns.iter().map(|c| c.name()).collect::<Vec<_>>().join(", "),
            if s.keypoints > 0 { format!(", then 3 × {} keypoints", s.keypoints) } else { String::new() }
        )
    };
    let (layout, rows, boxes) = match g.shapes {
        [shape] => {
            let [rows, width] = rows_of(shape).ok_or_else(|| {
                format!("decoder \"end2end\": expected {}, but the graph's output is {}", expected(), g.describe())
            })?;
            if width != row {
                let named = if s.keypoints > 0 {
                    format!("{} columns and 3 × {} keypoints (decoder.keypoints)", s.columns.len(), s.keypoints)
                } else {
                    format!("{} columns", s.columns.len())
                };
                return Err(format!(
                    "decoder.columns: names {named}, but the graph's output \"{}\" {shape:?} has {width} per detection",
                    g.names[0]
                ));
            }
            let (Some(score), Some(class)) = (position(Column::Score), position(Column::Class)) else {
                unreachable!("check_columns requires score and class columns")
            };
            let first_keypoint = s.columns.len();
            (Layout::Combined { output: 0, width, score, class, first_keypoint }, rows, box_columns(s.columns, false))
        }
        [_, _, _, ..] if s.keypoints > 0 => {
            return Err("decoder.keypoints: read from one output of rows, not from separate boxes, scores and \
                        classes"
                .into())
        }
        [b, sc, cl, rest @ ..] if rest.len() <= 1 => {
            let shape_err = |role: &str, want: String, i: usize| {
                format!(
                    "decoder.outputs.{role}: expected {want}, but \"{}\" is {:?}; the selected outputs are {}",
                    g.names[i],
                    g.shapes[i],
                    g.describe()
                )
            };
            let Some([rows, 4]) = rows_of(b) else {
                return Err(shape_err("boxes", "[1, N, 4]".into(), 0));
            };
            for (i, role) in [(1, "scores"), (2, "classes")] {
                if !matches!(g.shapes[i].as_slice(), [1, n] | [n] | [1, n, 1] if *n == rows) {
                    return Err(shape_err(role, format!("[1, {rows}] like the boxes"), i));
                }
            }
            if let Some(count) = rest.first() {
                if !matches!(count.as_slice(), [] | [1] | [1, 1]) {
                    return Err(shape_err("count", "one value ([1])".into(), 3));
                }
            }
            let count = (rest.len() == 1).then_some(3);
            (Layout::Split { boxes: 0, scores: 1, classes: 2, count }, rows, box_columns(s.columns, true))
        }
        _ => return Err(format!("decoder \"end2end\": expected {}, but the graph gives {}", expected(), g.describe())),
    };
    Ok(End2end {
        layout,
        rows,
        boxes,
        unit,
        class_offset: s.class_offset as f32,
        classes: g.classes,
        nms: s.nms,
        keypoints: s.keypoints,
        warned_class: Once::default(),
        warned_pixel: Once::default(),
    })
}

/// [N, K] from [1, N, K] or [N, K].
fn rows_of(shape: &[usize]) -> Option<[usize; 2]> {
    match *shape {
        [1, n, k] | [n, k] => Some([n, k]),
        _ => None,
    }
}

/// Where the box values are: positions in the whole row, or among the box columns only
/// (`split`: the boxes output holds just those four, in the order the columns list them).
fn box_columns(columns: &[Column], split: bool) -> BoxColumns {
    let boxes: Vec<Column> = columns.iter().copied().filter(|c| c.is_box()).collect();
    let at = |c: Column| {
        let list = if split { &boxes[..] } else { columns };
        list.iter().position(|x| *x == c).expect("check_columns requires a whole box")
    };
    if boxes.contains(&Column::X1) {
        BoxColumns::Corners { x1: at(Column::X1), y1: at(Column::Y1), x2: at(Column::X2), y2: at(Column::Y2) }
    } else {
        BoxColumns::Centre { cx: at(Column::Cx), cy: at(Column::Cy), w: at(Column::W), h: at(Column::H) }
    }
}

impl End2end {
    pub(super) fn decode(&self, outputs: &[OutputTensor], p: &DecodeParams) -> Vec<Candidate> {
        let mut candidates = Vec::new();
        let mut beyond = None;
        let mut largest = 0.0f32;
        let rows = match self.layout {
            Layout::Split { count: Some(i), .. } => {
                let n = outputs[i].data[0];
                // A count the graph gets wrong (NaN, negative, too large) reads no row twice.
                if n.is_finite() && n > 0.0 {
                    (n as usize).min(self.rows)
                } else {
                    0
                }
            }
            _ => self.rows,
        };
        for r in 0..rows {
            let (values, score, class, points): (&[f32], f32, f32, &[f32]) = match self.layout {
                Layout::Combined { output, width, score, class, first_keypoint } => {
                    let row = &outputs[output].data[r * width..(r + 1) * width];
                    (row, row[score], row[class], &row[first_keypoint..])
                }
                Layout::Split { boxes, scores, classes, .. } => {
                    (&outputs[boxes].data[r * 4..r * 4 + 4], outputs[scores].data[r], outputs[classes].data[r], &[])
                }
            };
            if score.is_nan() || score <= p.score {
                continue; // padding rows (score 0) and NaN scores too
            }
            let id = class - self.class_offset;
            if !(id >= 0.0 && id.fract() == 0.0 && (id as usize) < self.classes) {
                if id >= 0.0 || id.is_nan() {
                    beyond.get_or_insert(class); // a padding row's class is negative
                }
                continue;
            }
            let (ux, uy) = self.unit;
            let raw = match self.boxes {
                BoxColumns::Corners { x1, y1, x2, y2 } => [values[x1], values[y1], values[x2], values[y2]],
                BoxColumns::Centre { cx, cy, w, h } => [values[cx], values[cy], values[w], values[h]],
            };
            largest = largest.max(super::largest_value(&raw));
            let bbox = match self.boxes {
                BoxColumns::Corners { x1, y1, x2, y2 } => {
                    BBox { x1: values[x1] * ux, y1: values[y1] * uy, x2: values[x2] * ux, y2: values[y2] * uy }
                }
                BoxColumns::Centre { cx, cy, w, h } => {
                    let (cx, cy, w, h) = (values[cx] * ux, values[cy] * uy, values[w] * ux, values[h] * uy);
                    BBox::from_centre(cx, cy, w, h)
                }
            };
            let keypoints =
                points.chunks_exact(3).map(|k| Keypoint { x: k[0] * ux, y: k[1] * uy, score: Some(k[2]) }).collect();
            candidates.push(Candidate { class_id: id as usize, score, bbox, keypoints });
        }
        if let Some(class) = beyond {
            if self.warned_class.first() {
                log::warn!(
                    "decoder \"end2end\": the model gave class {class}, which with decoder.class_offset = {} is not \
                     one of the {} labels; such detections are dropped: check labels and decoder.class_offset",
                    self.class_offset,
                    self.classes
                );
            }
        }
        let within_a_pixel = |c: &Candidate| c.bbox.x2.abs() <= 1.0 && c.bbox.y2.abs() <= 1.0;
        if self.unit == (1.0, 1.0)
            && candidates.len() >= 2
            && candidates.iter().all(within_a_pixel)
            && self.warned_pixel.first()
        {
            log::warn!(
                "decoder \"end2end\": every box lies within one pixel of the input's corner; the model's boxes \
                 look normalised (0–1): set decoder.normalized = true"
            );
        }
        if self.unit != (1.0, 1.0) {
            super::warn_if_pixels("end2end", largest, &self.warned_pixel);
        }
        if self.nms {
            nms(candidates, p.iou, p.max_detections)
        } else {
            best_first(candidates, p.max_detections)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: DecodeParams = DecodeParams { score: 0.25, iou: 0.5, max_detections: 100, top_k: 5 };

    fn settings(columns: &[Column]) -> Settings<'_> {
        Settings { columns, normalized: false, class_offset: 0, nms: false, keypoints: 0 }
    }
    fn corners() -> Vec<Column> {
        vec![Column::X1, Column::Y1, Column::X2, Column::Y2, Column::Score, Column::Class]
    }
    fn graph<'a>(names: &'a [String], shapes: &'a [Vec<usize>]) -> GraphOutputs<'a> {
        GraphOutputs { names, shapes, input_width: 100, input_height: 50, classes: 3 }
    }
    fn tensor(shape: &[usize], data: Vec<f32>) -> OutputTensor {
        OutputTensor { name: "t".into(), shape: shape.to_vec(), data }
    }

    #[test]
    fn rows_become_detections_and_padding_rows_are_skipped() {
        let names = ["output0".to_string()];
        let shapes = [vec![1, 5, 6]];
        let d = bind(&settings(&corners()), graph(&names, &shapes)).unwrap();
        #[rustfmt::skip]
        let rows = vec![
            10.0, 5.0, 30.0, 25.0, 0.5, 2.0,
            40.0, 5.0, 60.0, 25.0, 0.9, 0.0,
            41.0, 5.0, 61.0, 25.0, 0.8, 0.0, // a duplicate the graph let through: kept without nms
            0.0, 0.0, 0.0, 0.0, 0.0, -1.0,   // padding
            1.0, 1.0, 2.0, 2.0, 0.1, 1.0,    // below the threshold
        ];
        let out = d.decode(&[tensor(&[1, 5, 6], rows.clone())], &P);
        let got: Vec<(usize, f32)> = out.iter().map(|c| (c.class_id, c.score)).collect();
        assert_eq!(got, [(0, 0.9), (0, 0.8), (2, 0.5)]);
        assert_eq!(out[0].bbox, BBox { x1: 40.0, y1: 5.0, x2: 60.0, y2: 25.0 });

        let columns = corners();
        let s = Settings { nms: true, ..settings(&columns) };
        let d = bind(&s, graph(&names, &shapes)).unwrap();
        assert_eq!(d.decode(&[tensor(&[1, 5, 6], rows)], &P).len(), 2, "nms = true drops the duplicate");
    }

    #[test]
    fn column_order_normalised_boxes_and_class_offset() {
        let columns = [Column::Class, Column::Score, Column::Cx, Column::Cy, Column::W, Column::H];
        let s = Settings { columns: &columns, normalized: true, class_offset: 1, nms: false, keypoints: 0 };
        let names = ["dets".to_string()];
        let shapes = [vec![2, 6]];
        let d = bind(&s, graph(&names, &shapes)).unwrap();
        // Class 3 counted from 1 is label 2; class 4 would be label 3, beyond the 3 labels.
        let rows = vec![3.0, 0.7, 0.5, 0.5, 0.2, 0.4, 4.0, 0.9, 0.5, 0.5, 0.2, 0.4];
        let out = d.decode(&[tensor(&[2, 6], rows)], &P);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].class_id, out[0].score), (2, 0.7));
        let b = out[0].bbox;
        assert!((b.x1 - 40.0).abs() < 1e-4 && (b.x2 - 60.0).abs() < 1e-4, "{b:?}");
        assert!((b.y1 - 15.0).abs() < 1e-4 && (b.y2 - 35.0).abs() < 1e-4, "{b:?}");
        assert!(!d.warned_pixel.given(), "normalised boxes: no warning");
        // The same rows in pixels of a 512 input: each box would land at the far corner.
        let rows = vec![3.0, 0.98, 256.0, 256.0, 100.0, 120.0, 3.0, 0.9, 300.0, 200.0, 50.0, 50.0];
        d.decode(&[tensor(&[2, 6], rows)], &P);
        assert!(d.warned_pixel.given(), "pixel boxes under normalized = true: warned");
    }

    #[test]
    fn split_outputs_in_role_order_with_a_count() {
        let columns = [Column::Y1, Column::X1, Column::Y2, Column::X2, Column::Score, Column::Class];
        let s = Settings { columns: &columns, normalized: true, class_offset: 0, nms: false, keypoints: 0 };
        let names: Vec<String> = ["boxes", "scores", "classes", "count"].map(String::from).to_vec();
        let shapes = vec![vec![1, 3, 4], vec![1, 3], vec![1, 3], vec![1]];
        let d = bind(&s, graph(&names, &shapes)).unwrap();
        let outputs = |count: f32| {
            vec![
                tensor(&[1, 3, 4], vec![0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.6, 0.6, 0.0, 0.0, 1.0, 1.0]),
                tensor(&[1, 3], vec![0.9, 0.8, 0.95]),
                tensor(&[1, 3], vec![1.0, 0.0, 2.0]),
                tensor(&[1], vec![count]),
            ]
        };
        let out = d.decode(&outputs(2.0), &P);
        assert_eq!(out.len(), 2, "the third row is past the count: {out:?}");
        assert_eq!(out[0].class_id, 1);
        let b = out[0].bbox; // y1, x1, y2, x2 = 0.1, 0.2, 0.3, 0.4 of 100 × 50
        assert!((b.x1 - 20.0).abs() < 1e-4 && (b.y1 - 5.0).abs() < 1e-4, "{b:?}");
        assert!((b.x2 - 40.0).abs() < 1e-4 && (b.y2 - 15.0).abs() < 1e-4, "{b:?}");
        // A count the graph got wrong never reads past its rows.
        assert_eq!(d.decode(&outputs(1e9), &P).len(), 3);
        assert_eq!(d.decode(&outputs(f32::NAN), &P).len(), 0);
        assert_eq!(d.decode(&outputs(-4.0), &P).len(), 0);
    }

    #[test]
    fn columns_from_an_unchecked_spec_are_refused_not_trusted() {
        let names = ["output0".to_string()];
        let columns = [Column::X1, Column::Y1, Column::X2, Column::Y2, Column::Score, Column::Score];
        let e = bind(&settings(&columns), graph(&names, &[vec![1, 5, 6]])).unwrap_err();
        assert!(e.starts_with("decoder.columns:"), "{e}");
    }

    #[test]
    fn shapes_that_do_not_fit_name_the_field() {
        let names = ["output0".to_string()];
        let e = bind(&settings(&corners()), graph(&names, &[vec![1, 300, 7]])).unwrap_err();
        assert!(e.contains("decoder.columns") && e.contains("has 7"), "{e}");
        let e = bind(&settings(&corners()), graph(&names, &[vec![1, 84, 8400, 1]])).unwrap_err();
        assert!(e.contains("decoder \"end2end\": expected one output [1, N, 6]"), "{e}");
        let names: Vec<String> = ["b", "s", "c"].map(String::from).to_vec();
        let e = bind(&settings(&corners()), graph(&names, &[vec![1, 10, 4], vec![1, 9], vec![1, 10]])).unwrap_err();
        assert!(e.contains("decoder.outputs.scores") && e.contains("\"s\""), "{e}");
    }

    #[test]
    fn pose_rows_carry_keypoints_after_the_columns() {
        let columns = corners();
        let s = Settings { keypoints: 2, ..settings(&columns) };
        let names = ["output0".to_string()];
        let shapes = [vec![1, 1, 12]];
        let d = bind(&s, graph(&names, &shapes)).unwrap();
        let row = vec![10.0, 5.0, 30.0, 25.0, 0.5, 0.0, 12.0, 6.0, 0.9, 28.0, 24.0, 0.2];
        let out = d.decode(&[tensor(&[1, 1, 12], row)], &P);
        assert_eq!(
            out[0].keypoints,
            [Keypoint { x: 12.0, y: 6.0, score: Some(0.9) }, Keypoint { x: 28.0, y: 24.0, score: Some(0.2) }]
        );
        let e = bind(&Settings { keypoints: 3, ..settings(&columns) }, graph(&names, &shapes)).unwrap_err();
        assert!(e.contains("6 columns and 3 × 3 keypoints") && e.contains("has 12"), "{e}");
    }
}
