//! Output decoders: raw output tensors → class scores or boxes in input pixels.
//!
//! A decoder is bound to a graph once, at load time ([`Decoder::bind`]): binding finds
//! which output plays which role from the shapes the graph really produces, and refuses
//! a manifest that disagrees with them. Decoding is then a pure function per frame.

mod blazeface;
mod classify;
mod detr;
mod end2end;
mod nanodet;
mod ssd;
mod yolo;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::manifest::DecoderSpec;
use super::Candidate;

/// One output tensor of a model run, as plain data.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The thresholds a decode uses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeParams {
    pub score: f32,
    pub iou: f32,
    pub max_detections: usize,
    pub top_k: usize,
}

/// What a decoder produces, before labels and the mapping back to the image.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// (class id, probability), best first.
    Classes(Vec<(usize, f32)>),
    Boxes(Vec<Candidate>),
}

/// A decoder bound to a model's outputs.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoder {
    Classify(classify::Classify),
    Yolo(yolo::Yolo),
    Nanodet(nanodet::Nanodet),
    Ssd(ssd::Ssd),
    Blazeface(blazeface::Blazeface),
    End2end(end2end::End2end),
    Detr(detr::Detr),
}

/// What binding sees of the graph: its outputs' names and shapes, its input size and the
/// manifest's label count.
#[derive(Debug, Clone, Copy)]
pub struct GraphOutputs<'a> {
    pub names: &'a [String],
    pub shapes: &'a [Vec<usize>],
    pub input_width: usize,
    pub input_height: usize,
    pub classes: usize,
}

impl GraphOutputs<'_> {
    /// "name" [d0, d1, …] for every output, for error messages.
    pub fn describe(&self) -> String {
        self.names.iter().zip(self.shapes).map(|(n, s)| format!("\"{n}\" {s:?}")).collect::<Vec<_>>().join(", ")
    }
}

impl Decoder {
    /// Binds `spec` to the graph's outputs or says what disagrees.
    pub fn bind(spec: &DecoderSpec, graph: GraphOutputs) -> Result<Decoder, String> {
        Ok(match spec {
            DecoderSpec::Classify { output } => Decoder::Classify(classify::bind(*output, graph)?),
            DecoderSpec::Yolov8 { keypoints } => Decoder::Yolo(yolo::bind(false, keypoints.len(), graph)?),
            DecoderSpec::Yolov5 {} => Decoder::Yolo(yolo::bind(true, 0, graph)?),
            DecoderSpec::Nanodet { strides, reg_max, centre_offset } => {
                Decoder::Nanodet(nanodet::bind(strides, *reg_max, *centre_offset, graph)?)
            }
            DecoderSpec::Ssd { box_format, normalized, background, sigmoid } => {
                Decoder::Ssd(ssd::bind(*box_format, *normalized, *background, *sigmoid, graph)?)
            }
            DecoderSpec::Blazeface { anchors, box_scale, keypoints } => {
                Decoder::Blazeface(blazeface::bind(anchors, *box_scale, keypoints.len(), graph)?)
            }
            DecoderSpec::End2end { columns, normalized, class_offset, nms, keypoints } => {
                let settings = end2end::Settings {
                    columns,
                    normalized: *normalized,
                    class_offset: *class_offset,
                    nms: *nms,
                    keypoints: keypoints.len(),
                };
                Decoder::End2end(end2end::bind(&settings, graph)?)
            }
            DecoderSpec::Detr { scores, box_format, normalized } => {
                let settings = detr::Settings { scores: *scores, box_format: *box_format, normalized: *normalized };
                Decoder::Detr(detr::bind(&settings, graph)?)
            }
        })
    }

    /// Decodes one run's outputs (in graph output order).
    pub fn decode(&self, outputs: &[OutputTensor], params: &DecodeParams) -> Decoded {
        match self {
            Decoder::Classify(d) => Decoded::Classes(d.decode(outputs, params)),
            Decoder::Yolo(d) => Decoded::Boxes(d.decode(outputs, params)),
            Decoder::Nanodet(d) => Decoded::Boxes(d.decode(outputs, params)),
            Decoder::Ssd(d) => Decoded::Boxes(d.decode(outputs, params)),
            Decoder::Blazeface(d) => Decoded::Boxes(d.decode(outputs, params)),
            Decoder::End2end(d) => Decoded::Boxes(d.decode(outputs, params)),
            Decoder::Detr(d) => Decoded::Boxes(d.decode(outputs, params)),
        }
    }
}

/// One way a decoder reads its outputs: the roles it needs, in the order it binds them,
/// and the ones it can also take.
struct Form {
    required: Vec<String>,
    optional: Vec<String>,
}

/// The forms a decoder's outputs come in (the first is the one it finds by shape alone).
fn forms(spec: &DecoderSpec) -> Vec<Form> {
    let form = |required: &[&str], optional: &[&str]| Form {
        required: required.iter().map(|r| r.to_string()).collect(),
        optional: optional.iter().map(|r| r.to_string()).collect(),
    };
    match spec {
        DecoderSpec::Classify { .. } => vec![form(&["scores"], &[])],
        DecoderSpec::Yolov8 { .. } | DecoderSpec::Yolov5 {} => vec![form(&["predictions"], &[])],
        DecoderSpec::Nanodet { strides, .. } => vec![Form {
            required: strides.iter().flat_map(|s| [format!("scores_{s}"), format!("boxes_{s}")]).collect(),
            optional: Vec::new(),
        }],
        DecoderSpec::Ssd { .. } => vec![form(&["boxes", "scores"], &[])],
        DecoderSpec::Blazeface { .. } => vec![form(&["regressors", "scores"], &[])],
        DecoderSpec::End2end { .. } => {
            vec![form(&["detections"], &[]), form(&["boxes", "scores", "classes"], &["count"])]
        }
        DecoderSpec::Detr { .. } => vec![form(&["predictions"], &[]), form(&["boxes", "scores"], &[])],
    }
}

fn describe_forms(forms: &[Form]) -> String {
    let one = |f: &Form| {
        let mut roles = f.required.join(", ");
        if !f.optional.is_empty() {
            roles += &format!(" (and optionally {})", f.optional.join(", "));
        }
        roles
    };
    forms.iter().map(one).collect::<Vec<_>>().join("; or ")
}

/// The roles `decoder.outputs` names, in the order the decoder binds them, or what is wrong
/// with the names (checked with the manifest, before any graph is read).
pub fn named_roles(spec: &DecoderSpec, named: &BTreeMap<String, String>) -> Result<Vec<String>, String> {
    if named.is_empty() {
        return Ok(Vec::new());
    }
    let forms = forms(spec);
    let kind = spec.kind();
    for role in named.keys() {
        if !forms.iter().any(|f| f.required.contains(role) || f.optional.contains(role)) {
            return Err(format!(
                "decoder.outputs.{role}: decoder \"{kind}\" has no output role \"{role}\"; its roles are {}",
                describe_forms(&forms)
            ));
        }
    }
    let fits = |f: &&Form| {
        f.required.iter().all(|r| named.contains_key(r))
            && named.keys().all(|k| f.required.contains(k) || f.optional.contains(k))
    };
    let Some(form) = forms.iter().find(fits) else {
        return Err(format!(
            "decoder.outputs: decoder \"{kind}\" needs {}, got {}",
            describe_forms(&forms),
            named.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    };
    Ok(form.required.iter().chain(form.optional.iter().filter(|r| named.contains_key(*r))).cloned().collect())
}

/// Which of the graph's outputs the decoder reads, as indices in the order it binds them:
/// those `named` gives roles (`decoder.outputs`), or else every output, when the graph has
/// no more than the decoder reads. An output nobody decodes is an error that names the
/// field to set, not an output silently ignored.
pub fn select_outputs(
    spec: &DecoderSpec,
    named: &BTreeMap<String, String>,
    graph: GraphOutputs,
) -> Result<Vec<usize>, String> {
    let count = graph.names.len();
    if named.is_empty() {
        let forms = forms(spec);
        let reads = forms[0].required.len();
        if count > reads {
            return Err(format!(
                "the graph has {count} outputs ({}), but decoder \"{}\" reads {reads} ({}): choose them with \
                 decoder.outputs = {{ {} }}",
                graph.describe(),
                spec.kind(),
                forms[0].required.join(", "),
                forms[0].required.iter().map(|r| format!("{r} = \"…\"")).collect::<Vec<_>>().join(", ")
            ));
        }
        return Ok((0..count).collect());
    }
    let mut picked: Vec<usize> = Vec::new();
    for role in named_roles(spec, named)? {
        let name = &named[&role];
        let Some(i) = graph.names.iter().position(|n| n == name) else {
            return Err(format!(
                "decoder.outputs.{role}: the graph has no output \"{name}\"; its outputs are {}",
                graph.describe()
            ));
        };
        if picked.contains(&i) {
            return Err(format!("decoder.outputs.{role}: output \"{name}\" already plays another role"));
        }
        picked.push(i);
    }
    Ok(picked)
}

/// Normalised box values (0–1, a little beyond at the edges) never reach this; pixel ones
/// do (an input is tens to thousands of pixels a side).
const PIXEL_LIKE: f32 = 4.0;

/// Warns once (per loaded model) when a decoder told `decoder.normalized = true` read a box
/// value as large as `largest`: the model's boxes are in pixels, and scaling them by the input
/// size again puts every box in the input's far corner.
fn warn_if_pixels(decoder: &str, largest: f32, warned: &Once) {
    if largest > PIXEL_LIKE && warned.first() {
        log::warn!(
            "decoder \"{decoder}\": a box value of {largest} is far beyond 1, so the model's boxes look like pixels, \
             not normalised (0–1): set decoder.normalized = false (every box now lands in the input's far corner)"
        );
    }
}

/// The largest magnitude among a box's raw values (NaN counts as 0).
fn largest_value(values: &[f32]) -> f32 {
    values.iter().map(|v| v.abs()).filter(|v| !v.is_nan()).fold(0.0, f32::max)
}

/// A warning a decoder gives once per loaded model (its clones share it). Not part of what a
/// decoder is: decoders compare equal whatever it holds.
#[derive(Debug, Clone, Default)]
struct Once(Arc<AtomicBool>);

impl Once {
    /// True the first time only.
    fn first(&self) -> bool {
        !self.0.swap(true, Ordering::Relaxed)
    }

    fn given(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl PartialEq for Once {
    fn eq(&self, _: &Once) -> bool {
        true
    }
}

/// The shape without its leading batch dimension of 1, or `None` when the batch is not 1.
fn unbatched(shape: &[usize]) -> Option<&[usize]> {
    match shape {
        [1, rest @ ..] if !rest.is_empty() => Some(rest),
        _ => None,
    }
}

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// A logit below which `sigmoid` cannot give more than `threshold`, so that the anchors
/// that clearly fail the score test skip the exponential (most of them, and the most
/// negative ones take libm's slow overflow path). It is one whole unit below the exact
/// logit, far more than f32 rounding of the sigmoid can move, so the exact `score <=
/// threshold` test after it still decides every anchor near the threshold.
fn logit_floor(threshold: f32) -> f32 {
    let p = f64::from(threshold);
    if p > 0.0 && p < 1.0 {
        ((p / (1.0 - p)).ln() - 1.0) as f32
    } else {
        f32::NEG_INFINITY
    }
}

/// Index and value of the largest element (first one on ties).
fn argmax(values: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &v) in values.iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logit_floor_never_skips_an_anchor_the_score_test_keeps() {
        // Thresholds across the range (the largest f32 below 1 included), logits from far
        // below to above each one: whatever the cheap test skips, the exact test rejects.
        let mut thresholds = vec![1e-6, 0.001, 0.25, 0.5, 0.9, 0.999_999, 1.0 - f32::EPSILON / 2.0];
        thresholds.extend((1..100).map(|i| i as f32 / 100.0));
        for t in thresholds {
            let floor = logit_floor(t);
            assert!(floor.is_finite(), "{t}");
            let below = (0..10).scan(floor, |x, _| {
                *x = x.next_down();
                Some(*x)
            });
            for x in (0..80_000).map(|i| floor - 4.0 + i as f32 * 1e-4).filter(|x| *x < floor).chain(below) {
                assert!(sigmoid(x) <= t, "threshold {t}: logit {x} skipped but scores {}", sigmoid(x));
            }
            // One unit below the exact logit, not more: the cheap test skips nearly all it can.
            let exact = (f64::from(t) / (1.0 - f64::from(t))).ln();
            assert!((f64::from(floor) - (exact - 1.0)).abs() < 1e-5, "threshold {t}: floor {floor}");
        }
        for t in [0.0, 1.0, -1.0, f32::NAN, f32::INFINITY] {
            assert_eq!(logit_floor(t), f32::NEG_INFINITY, "{t}: no cheap test");
        }
    }
}

#[cfg(test)]
mod selection_tests {
    use super::*;
    use crate::model::manifest::ModelManifest;

    fn spec(decoder: &str) -> DecoderSpec {
        let text = format!(
            "name = \"m\"\nversion = \"1\"\ntask = \"detect\"\nmodel = \"m.onnx\"\nlabels = [\"a\"]\n\
             [input]\nwidth = 64\nheight = 64\n[decoder]\n{decoder}\n"
        );
        ModelManifest::from_toml(&text, std::path::Path::new(".")).unwrap().decoder
    }

    #[test]
    fn outputs_are_chosen_by_name_in_role_order() {
        let names: Vec<String> = ["feats", "num", "cls", "score", "bbox"].map(String::from).to_vec();
        let shapes = vec![vec![1, 8, 8, 8], vec![1], vec![1, 10], vec![1, 10], vec![1, 10, 4]];
        let g = GraphOutputs { names: &names, shapes: &shapes, input_width: 64, input_height: 64, classes: 1 };
        let named = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(r, n)| (r.to_string(), n.to_string())).collect()
        };
        let e2e = spec("kind = \"end2end\"");
        let all = named(&[("boxes", "bbox"), ("scores", "score"), ("classes", "cls"), ("count", "num")]);
        assert_eq!(select_outputs(&e2e, &all, g).unwrap(), [4, 3, 2, 1]);
        let no_count = named(&[("boxes", "bbox"), ("scores", "score"), ("classes", "cls")]);
        assert_eq!(select_outputs(&e2e, &no_count, g).unwrap(), [4, 3, 2]);

        // Unnamed, a graph with more outputs than the decoder reads is refused, naming the field.
        let e = select_outputs(&e2e, &BTreeMap::new(), g).unwrap_err();
        assert!(e.contains("5 outputs") && e.contains("decoder.outputs = { detections = \"…\" }"), "{e}");
        let e = select_outputs(&spec("kind = \"yolov8\""), &BTreeMap::new(), g).unwrap_err();
        assert!(e.contains("\"feats\" [1, 8, 8, 8]") && e.contains("predictions"), "{e}");

        let e = select_outputs(&e2e, &named(&[("detections", "dets")]), g).unwrap_err();
        assert!(
            e.contains("decoder.outputs.detections: the graph has no output \"dets\"") && e.contains("\"bbox\""),
            "{e}"
        );
        let twice = named(&[("boxes", "bbox"), ("scores", "bbox"), ("classes", "cls")]);
        let e = select_outputs(&e2e, &twice, g).unwrap_err();
        assert!(e.contains("already plays another role"), "{e}");
        let one = named(&[("predictions", "feats")]);
        assert_eq!(select_outputs(&spec("kind = \"yolov8\""), &one, g).unwrap(), [0]);
    }
}
