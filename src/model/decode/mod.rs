//! Output decoders: raw output tensors → class scores or boxes in input pixels.
//!
//! A decoder is bound to a graph once, at load time ([`Decoder::bind`]): binding finds
//! which output plays which role from the shapes the graph really produces, and refuses
//! a manifest that disagrees with them. Decoding is then a pure function per frame.

mod blazeface;
mod classify;
mod nanodet;
mod ssd;
mod yolo;

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
            DecoderSpec::Yolov8 {} => Decoder::Yolo(yolo::bind(false, graph)?),
            DecoderSpec::Yolov5 {} => Decoder::Yolo(yolo::bind(true, graph)?),
            DecoderSpec::Nanodet { strides, reg_max, centre_offset } => {
                Decoder::Nanodet(nanodet::bind(strides, *reg_max, *centre_offset, graph)?)
            }
            DecoderSpec::Ssd { box_format, normalized, background, sigmoid } => {
                Decoder::Ssd(ssd::bind(*box_format, *normalized, *background, *sigmoid, graph)?)
            }
            DecoderSpec::Blazeface { anchors, box_scale } => {
                Decoder::Blazeface(blazeface::bind(anchors, *box_scale, graph)?)
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
        }
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
