//! Classifier output: softmax when the model gives logits, then the top k.

use super::{unbatched, DecodeParams, GraphOutputs, OutputTensor};
use crate::model::manifest::ClassifierOutput;

#[derive(Debug, Clone, PartialEq)]
pub struct Classify {
    output: usize,
    softmax: bool,
}

pub(super) fn bind(kind: ClassifierOutput, g: GraphOutputs) -> Result<Classify, String> {
    let Some(shape) = g.shapes.first() else {
        return Err("decoder \"classify\": the graph has no output".into());
    };
    let volume: usize = unbatched(shape).map(|s| s.iter().product()).unwrap_or(0);
    if volume != g.classes {
        return Err(format!(
            "labels: the manifest lists {} labels, but the graph's first output \"{}\" {:?} \
             holds {} class scores (expected shape [1, {}])",
            g.classes, g.names[0], shape, volume, g.classes
        ));
    }
    Ok(Classify { output: 0, softmax: kind == ClassifierOutput::Logits })
}

impl Classify {
    pub(super) fn decode(&self, outputs: &[OutputTensor], p: &DecodeParams) -> Vec<(usize, f32)> {
        let raw = &outputs[self.output].data;
        let probs = if self.softmax { softmax(raw) } else { raw.to_vec() };
        top_k(&probs, p.top_k, p.score)
    }
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&x| (x - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// The `k` best (index, value) pairs at or above `min`, best first; ties keep index order.
/// NaN and infinite values (a model gone wrong) are never reported.
pub fn top_k(values: &[f32], k: usize, min: f32) -> Vec<(usize, f32)> {
    let mut ranked: Vec<(usize, f32)> =
        values.iter().copied().enumerate().filter(|(_, v)| v.is_finite() && *v >= min).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    ranked.truncate(k);
    ranked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_is_a_distribution_and_keeps_order() {
        let p = softmax(&[1.0, 2.0, 3.0, 1000.0]);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(p[3] > 0.999);
        assert_eq!(top_k(&[0.2, f32::NAN, f32::INFINITY, 0.5], 5, 0.0), vec![(3, 0.5), (0, 0.2)]);
        let q = softmax(&[0.0, (2f32).ln()]);
        assert!((q[1] - 2.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn top_k_sorts_filters_and_truncates() {
        assert_eq!(top_k(&[0.1, 0.5, 0.3, 0.05], 2, 0.0), [(1, 0.5), (2, 0.3)]);
        assert_eq!(top_k(&[0.1, 0.5, 0.3], 5, 0.2), [(1, 0.5), (2, 0.3)]);
    }

    #[test]
    fn binding_checks_the_class_count() {
        let names = ["logits".to_string()];
        let shapes = [vec![1, 1000]];
        let g = GraphOutputs { names: &names, shapes: &shapes, input_width: 224, input_height: 224, classes: 10 };
        let err = bind(ClassifierOutput::Logits, g).unwrap_err();
        assert!(err.contains("10 labels") && err.contains("1000 class scores"), "{err}");
        let g = GraphOutputs { classes: 1000, ..g };
        let d = bind(ClassifierOutput::Logits, g).unwrap();
        let out = [OutputTensor {
            name: "logits".into(),
            shape: vec![1, 1000],
            data: (0..1000).map(|i| i as f32 / 100.0).collect(),
        }];
        let p = DecodeParams { score: 0.0, iou: 0.5, max_detections: 10, top_k: 3 };
        let top = d.decode(&out, &p);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), [999, 998, 997]);
    }
}
