//! The model manifest: the `<name>.toml` beside an ONNX file that says how to feed the
//! model and how to read its outputs (documented field by field in docs/models.md).
//!
//! Parsing is two-phase: [`RawManifest`] is what serde reads (unknown keys refused), and
//! [`ModelManifest::load`] turns it into a checked manifest, collecting every problem it
//! finds before failing so that a user fixes a manifest in one pass.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ModelError;

/// What the model does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Classify,
    Detect,
}

/// Memory layout of the input tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    Nchw,
    Nhwc,
}

/// Order of the three colour channels the model expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    Rgb,
    Bgr,
}

/// How an image is brought to the model's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Resize {
    /// Keep the aspect ratio, centre the image and pad the rest with `input.pad`.
    Letterbox,
    /// Scale each axis independently to fill the input.
    Stretch,
}

/// Whether a classifier's output still needs a softmax.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClassifierOutput {
    /// Unnormalised scores: vigil applies a softmax.
    #[default]
    Logits,
    /// Already probabilities: used as they are.
    Probabilities,
}

/// What runs the graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// tract: pure Rust, on every platform vigil runs on.
    #[default]
    Tract,
    /// ONNX Runtime, loaded at run time (cargo feature `onnxruntime`).
    Onnxruntime,
}

impl Engine {
    /// The name as written in a manifest and published in the model's info.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Tract => "tract",
            Engine::Onnxruntime => "onnxruntime",
        }
    }

    /// Parses a name as written in a manifest.
    pub fn parse(name: &str) -> Option<Engine> {
        [Engine::Tract, Engine::Onnxruntime].into_iter().find(|e| e.name() == name)
    }

    fn is_tract(&self) -> bool {
        *self == Engine::Tract
    }
}

/// Coordinates format of an SSD-style box tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BoxFormat {
    /// x1, y1, x2, y2
    #[default]
    Xyxy,
    /// y1, x1, y2, x2 (TensorFlow Object Detection API order)
    Yxyx,
    /// centre x, centre y, width, height
    Cxcywh,
}

/// One anchor layer of a BlazeFace-style detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnchorLayer {
    /// Grid stride in input pixels.
    pub stride: usize,
    /// Anchors per grid cell.
    pub per_cell: usize,
}

/// One column of an end-to-end detector's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Column {
    X1,
    Y1,
    X2,
    Y2,
    Cx,
    Cy,
    W,
    H,
    Score,
    Class,
}

impl Column {
    /// The name as written in a manifest.
    pub fn name(self) -> &'static str {
        match self {
            Column::X1 => "x1",
            Column::Y1 => "y1",
            Column::X2 => "x2",
            Column::Y2 => "y2",
            Column::Cx => "cx",
            Column::Cy => "cy",
            Column::W => "w",
            Column::H => "h",
            Column::Score => "score",
            Column::Class => "class",
        }
    }

    /// Whether the column is a box coordinate.
    pub fn is_box(self) -> bool {
        !matches!(self, Column::Score | Column::Class)
    }
}

/// How a DETR-style decoder reads class values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetrScores {
    /// Logits, each class through a sigmoid (RT-DETR, D-FINE).
    #[default]
    Sigmoid,
    /// Already probabilities.
    Probabilities,
    /// Logits over the classes and a last "no object" column, through a softmax (DETR).
    Softmax,
}

/// The box a DETR-style decoder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DetrBoxes {
    #[default]
    Cxcywh,
    Xyxy,
}

/// The `[decoder]` table as written: its kind and settings, and which graph output plays
/// which of the decoder's roles (`outputs`, optional).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RawDecoder {
    #[serde(flatten)]
    pub spec: DecoderSpec,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
}

impl From<DecoderSpec> for RawDecoder {
    fn from(spec: DecoderSpec) -> RawDecoder {
        RawDecoder { spec, outputs: BTreeMap::new() }
    }
}

/// How to turn the raw output tensors into classes or boxes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum DecoderSpec {
    /// One output [1, C] (or [C]): class scores.
    Classify {
        #[serde(default)]
        output: ClassifierOutput,
    },
    /// Ultralytics YOLOv8 / v11 export: one output [1, 4 + C, N] (or transposed [1, N, 4 + C]);
    /// boxes are centre x, centre y, width, height in input pixels; scores already sigmoid.
    /// A pose export adds K keypoints of x, y, visibility: [1, 4 + C + 3K, N].
    Yolov8 {
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        keypoints: Vec<String>,
    },
    /// YOLOv5-style export: one output [1, N, 5 + C] = box, objectness, class scores;
    /// a box's score for class c is objectness × class score.
    Yolov5 {},
    /// NanoDet (generalised focal loss heads): per stride a class map [1, N, C] (sigmoid)
    /// and a distribution box map [1, N, 4 × (reg_max + 1)].
    Nanodet {
        #[serde(default = "default_nanodet_strides")]
        strides: Vec<usize>,
        #[serde(default = "default_reg_max")]
        reg_max: usize,
        /// Cell (row, col) is anchored at ((col + offset)·s, (row + offset)·s): 0.5 for
        /// NanoDet (cell centres), 0 for NanoDet-Plus (cell corners).
        #[serde(default = "default_centre_offset")]
        centre_offset: f32,
    },
    /// SSD-style: boxes [1, N, 4] and scores [1, N, C].
    Ssd {
        #[serde(default)]
        box_format: BoxFormat,
        /// Box coordinates are fractions of the input size rather than pixels.
        #[serde(default)]
        normalized: bool,
        /// Scores column 0 is a background class that is never reported.
        #[serde(default)]
        background: bool,
        /// Scores are logits and need a sigmoid.
        #[serde(default)]
        sigmoid: bool,
    },
    /// MediaPipe BlazeFace: regressors [1, N, 4 + 2k] and scores [1, N, 1] (logits) over a
    /// fixed anchor grid.
    Blazeface {
        anchors: Vec<AnchorLayer>,
        /// Divisor of the raw box offsets (the input size the model was trained at).
        #[serde(default = "default_blazeface_scale")]
        box_scale: f32,
        /// Names of the points after each box (x, y pairs), to decode them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        keypoints: Vec<String>,
    },
    /// Detections already post-processed by the graph: one output [1, N, K] whose columns
    /// `columns` names (YOLO26, YOLOv10), or boxes, scores, classes (and count) as separate
    /// outputs named in `outputs` (TensorFlow Object Detection API).
    End2end {
        #[serde(default = "default_end2end_columns")]
        columns: Vec<Column>,
        /// Box coordinates are fractions of the input size rather than pixels.
        #[serde(default)]
        normalized: bool,
        /// Subtracted from the class column (1 for exports that count classes from 1).
        #[serde(default)]
        class_offset: u32,
        /// Run class-wise NMS anyway (for exports that still carry duplicates).
        #[serde(default)]
        nms: bool,
        /// Names of the K keypoints of x, y, visibility after the columns (YOLO26 pose).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        keypoints: Vec<String>,
    },
    /// DETR-style set predictions: per query a box (cx, cy, w, h, fractions of the input by
    /// default) and class values, [1, Q, 4 + C], or boxes and scores as two outputs.
    Detr {
        #[serde(default)]
        scores: DetrScores,
        #[serde(default)]
        box_format: DetrBoxes,
        /// Box coordinates are fractions of the input (DETR's convention, so the default).
        #[serde(default = "default_true")]
        normalized: bool,
    },
}

fn default_true() -> bool {
    true
}

fn default_end2end_columns() -> Vec<Column> {
    vec![Column::X1, Column::Y1, Column::X2, Column::Y2, Column::Score, Column::Class]
}

fn default_nanodet_strides() -> Vec<usize> {
    vec![8, 16, 32]
}
fn default_reg_max() -> usize {
    7
}
fn default_centre_offset() -> f32 {
    0.5
}
fn default_blazeface_scale() -> f32 {
    128.0
}

/// Labels given inline or as a file beside the manifest (one label per line).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RawLabels {
    Inline(Vec<String>),
    File { file: PathBuf },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawInput {
    pub width: usize,
    pub height: usize,
    #[serde(default = "default_layout")]
    pub layout: Layout,
    #[serde(default = "default_channels")]
    pub channels: ChannelOrder,
    #[serde(default = "default_scale")]
    pub scale: f32,
    #[serde(default = "default_mean")]
    pub mean: [f32; 3],
    #[serde(default = "default_std")]
    pub std: [f32; 3],
    #[serde(default = "default_resize")]
    pub resize: Resize,
    #[serde(default = "default_pad")]
    pub pad: f32,
}

fn default_layout() -> Layout {
    Layout::Nchw
}
fn default_channels() -> ChannelOrder {
    ChannelOrder::Rgb
}
fn default_scale() -> f32 {
    1.0 / 255.0
}
fn default_mean() -> [f32; 3] {
    [0.0; 3]
}
fn default_std() -> [f32; 3] {
    [1.0; 3]
}
fn default_resize() -> Resize {
    Resize::Stretch
}
fn default_pad() -> f32 {
    114.0
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawThresholds {
    pub score: Option<f32>,
    pub iou: Option<f32>,
    pub max_detections: Option<usize>,
    pub top_k: Option<usize>,
}

/// The manifest as written in TOML.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManifest {
    pub name: String,
    pub version: String,
    pub task: Task,
    /// The ONNX file, relative to the manifest.
    pub model: PathBuf,
    /// The graph `vigil train` starts from, relative to the manifest: the same network as
    /// `model` with its BatchNormalization layers kept (not folded into the convolutions).
    #[serde(default)]
    pub train_model: Option<PathBuf>,
    pub labels: RawLabels,
    pub input: RawInput,
    pub decoder: RawDecoder,
    #[serde(default)]
    pub thresholds: RawThresholds,
    /// What runs the graph; tract unless the manifest says otherwise.
    #[serde(default, skip_serializing_if = "Engine::is_tract")]
    pub engine: Engine,
    /// Free text: where the model comes from, its licence.
    #[serde(default)]
    pub source: Option<String>,
}

/// The pixel pipeline a model expects, checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InputSpec {
    pub width: usize,
    pub height: usize,
    pub layout: Layout,
    pub channels: ChannelOrder,
    /// A channel value `v` (0–255) is fed as `(v * scale - mean[c]) / std[c]`.
    pub scale: f32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub resize: Resize,
    /// Letterbox fill, as a 0–255 pixel value before normalisation.
    pub pad: f32,
}

/// Default thresholds a model ships with; the CLI and the daemon may override them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Thresholds {
    pub score: f32,
    pub iou: f32,
    pub max_detections: usize,
    pub top_k: usize,
}

/// A checked manifest, with paths resolved and labels loaded.
#[derive(Debug, Clone, Serialize)]
pub struct ModelManifest {
    pub name: String,
    pub version: String,
    pub task: Task,
    /// The ONNX file, resolved against the manifest's folder.
    pub model_path: PathBuf,
    /// The training graph (`train_model`), resolved against the manifest's folder.
    pub train_model_path: Option<PathBuf>,
    pub labels: Vec<String>,
    pub input: InputSpec,
    pub decoder: DecoderSpec,
    /// `decoder.outputs`: role → graph output name (empty: the decoder finds its outputs by shape).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub decoder_outputs: BTreeMap<String, String>,
    pub thresholds: Thresholds,
    pub engine: Engine,
    pub source: Option<String>,
}

/// The largest manifest or label file read, bytes.
pub(crate) const MAX_TEXT_FILE: u64 = 4 << 20;
/// The most labels a model may have (a large-vocabulary classifier has some 22 000).
const MAX_LABELS: usize = 100_000;
/// The largest input side: 4096 pixels, far above what an edge model takes, and small enough
/// that an input tensor and its anchors stay a bounded allocation.
pub const MAX_INPUT_SIDE: usize = 4096;

impl ModelManifest {
    /// Reads and checks the manifest at `path`.
    pub fn load(path: &Path) -> Result<ModelManifest, ModelError> {
        let text = crate::files::read_text_capped(path, MAX_TEXT_FILE).map_err(|e| ModelError::Io {
            path: path.to_path_buf(),
            what: "model manifest",
            error: e,
        })?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::from_toml(&text, dir).map_err(|problems| ModelError::Manifest { path: path.to_path_buf(), problems })
    }

    /// Parses and checks manifest text; relative paths are resolved against `dir`.
    /// Returns every problem found.
    pub fn from_toml(text: &str, dir: &Path) -> Result<ModelManifest, Vec<String>> {
        let raw: RawManifest =
            toml::from_str(text).map_err(|e| vec![decoder_problem(text).unwrap_or_else(|| e.to_string())])?;
        raw.check(dir)
    }
}

/// The `[decoder]` table's problem under its key (`decoder.class_offset: invalid type: …`),
/// when that table is what the manifest's text cannot be read for. Its kinds share one table
/// (serde reads it whole), so a parse error points at the table, not the key: the key is
/// found by reading the table again without each key in turn.
fn decoder_problem(text: &str) -> Option<String> {
    let doc: toml::Table = toml::from_str(text).ok()?;
    let toml::Value::Table(table) = doc.get("decoder")? else { return None };
    let read = |table: &toml::Table| RawDecoder::deserialize(toml::Value::Table(table.clone())).err();
    let error = read(table)?;
    let message = error.message().to_string();
    let without = |key: &str| {
        let mut rest = table.clone();
        rest.remove(key);
        read(&rest)
    };
    // The key whose absence cures the table; else a required key (its absence is then "missing").
    let culprit = table.keys().find(|k| without(k).is_none()).or_else(|| {
        table.keys().find(|k| without(k).is_some_and(|e| e.message().contains(&format!("missing field `{k}`"))))
    });
    Some(match culprit {
        Some(key) => format!("decoder.{key}: {message}"),
        None => format!("decoder: {message}"),
    })
}

impl RawManifest {
    /// Turns the raw manifest into a [`ModelManifest`], collecting every problem.
    pub fn check(self, dir: &Path) -> Result<ModelManifest, Vec<String>> {
        let mut problems = Vec::new();
        if self.name.trim().is_empty() {
            problems.push("name: must not be empty".to_string());
        }
        if self.version.trim().is_empty() {
            problems.push("version: must not be empty".to_string());
        }

        let labels = match &self.labels {
            RawLabels::Inline(labels) => Some(labels.clone()),
            RawLabels::File { file } => {
                let path = dir.join(file);
                match crate::files::read_text_capped(&path, MAX_TEXT_FILE) {
                    Ok(text) => Some(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()),
                    Err(e) => {
                        problems.push(format!("labels.file: cannot read {}: {e}", path.display()));
                        None
                    }
                }
            }
        };
        if labels.as_ref().is_some_and(Vec::is_empty) {
            problems.push("labels: at least one label is needed".to_string());
        }

        let labels = labels.unwrap_or_default();
        if labels.len() > MAX_LABELS {
            problems.push(format!("labels: {} labels, more than the {MAX_LABELS} vigil takes", labels.len()));
        }
        if let Some(twice) = first_repeated(&labels) {
            let twice = crate::service::logging::shown(twice.as_bytes());
            problems.push(format!(
                "labels: {twice} is listed twice (a label names one class: detections, counts and filters go by it)"
            ));
        }

        let i = &self.input;
        if !(1..=MAX_INPUT_SIDE).contains(&i.width) || !(1..=MAX_INPUT_SIDE).contains(&i.height) {
            problems.push(format!(
                "input.width/height: must be 1 to {MAX_INPUT_SIDE} pixels, got {}x{}",
                i.width, i.height
            ));
        }
        if !(i.scale.is_finite() && i.scale > 0.0) {
            problems.push(format!("input.scale: must be a positive number, got {}", i.scale));
        }
        for (c, m) in i.mean.iter().enumerate() {
            if !(m.is_finite() && *m >= 0.0) {
                problems.push(format!("input.mean[{c}]: must be a finite number, 0 or more, got {m}"));
            }
        }
        for (c, s) in i.std.iter().enumerate() {
            if !(s.is_finite() && *s > 0.0) {
                problems.push(format!("input.std[{c}]: must be a positive number, got {s}"));
            }
        }
        if !(0.0..=255.0).contains(&i.pad) {
            problems.push(format!("input.pad: must be a pixel value 0–255, got {}", i.pad));
        }

        match (&self.task, &self.decoder.spec) {
            (Task::Classify, DecoderSpec::Classify { .. }) => {}
            (Task::Detect, DecoderSpec::Classify { .. }) => {
                problems.push("decoder.kind: \"classify\" needs task = \"classify\", not \"detect\"".into())
            }
            (Task::Classify, d) => {
                problems.push(format!("decoder.kind: \"{}\" is a detector, but task = \"classify\"", d.kind()))
            }
            (Task::Detect, _) => {}
        }
        if let Err(e) = super::decode::named_roles(&self.decoder.spec, &self.decoder.outputs) {
            problems.push(e);
        }
        if let Err(e) = check_keypoints(self.decoder.spec.keypoints()) {
            problems.push(format!("decoder.keypoints: {e}"));
        }
        match &self.decoder.spec {
            DecoderSpec::End2end { columns, class_offset, keypoints, .. } => {
                let split = !self.decoder.outputs.is_empty() && !self.decoder.outputs.contains_key("detections");
                if !keypoints.is_empty() && split {
                    problems.push(
                        "decoder.keypoints: read from the one-output form (decoder.outputs.detections), not from \
                         separate boxes, scores and classes"
                            .into(),
                    );
                }
                if let Err(e) = check_columns(columns) {
                    problems.push(format!("decoder.columns: {e}"));
                }
                if *class_offset > 1000 {
                    problems.push(format!("decoder.class_offset: must be 0 to 1000, got {class_offset}"));
                }
            }
            DecoderSpec::Nanodet { strides, reg_max, centre_offset } => {
                if !(0.0..=1.0).contains(centre_offset) {
                    problems.push(format!("decoder.centre_offset: must be within 0–1, got {centre_offset}"));
                }
                if strides.is_empty() || strides.len() > 8 || strides.iter().any(|s| !(1..=MAX_INPUT_SIDE).contains(s))
                {
                    problems.push(format!(
                        "decoder.strides: need 1 to 8 strides of 1 to {MAX_INPUT_SIDE} pixels, got {strides:?}"
                    ));
                }
                if !(1..=64).contains(reg_max) {
                    problems.push(format!("decoder.reg_max: must be 1 to 64, got {reg_max}"));
                }
            }
            DecoderSpec::Blazeface { anchors, box_scale, .. } => {
                if anchors.is_empty()
                    || anchors.len() > 8
                    || anchors
                        .iter()
                        .any(|a| !(1..=MAX_INPUT_SIDE).contains(&a.stride) || !(1..=64).contains(&a.per_cell))
                {
                    problems.push(format!(
                        "decoder.anchors: need 1 to 8 layers, each with a stride of 1 to {MAX_INPUT_SIDE} and 1 to 64 per_cell"
                    ));
                }
                if !(box_scale.is_finite() && *box_scale > 0.0) {
                    problems.push(format!("decoder.box_scale: must be positive, got {box_scale}"));
                }
                if labels.len() != 1 && !labels.is_empty() {
                    problems.push(format!("labels: a blazeface decoder has exactly one class, got {}", labels.len()));
                }
            }
            _ => {}
        }

        let t = &self.thresholds;
        let thresholds = Thresholds {
            score: t.score.unwrap_or(match self.task {
                Task::Classify => 0.0,
                Task::Detect => 0.35,
            }),
            iou: t.iou.unwrap_or(0.5),
            max_detections: t.max_detections.unwrap_or(100),
            top_k: t.top_k.unwrap_or(5),
        };
        if !(0.0..=1.0).contains(&thresholds.score) {
            problems.push(format!("thresholds.score: must be within 0–1, got {}", thresholds.score));
        }
        if !(0.0..=1.0).contains(&thresholds.iou) {
            problems.push(format!("thresholds.iou: must be within 0–1, got {}", thresholds.iou));
        }
        if thresholds.top_k == 0 {
            problems.push("thresholds.top_k: must be at least 1".into());
        }
        if !(1..=10_000).contains(&thresholds.max_detections) {
            problems.push(format!("thresholds.max_detections: must be 1 to 10000, got {}", thresholds.max_detections));
        }

        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(ModelManifest {
            name: self.name,
            version: self.version,
            task: self.task,
            model_path: dir.join(&self.model),
            train_model_path: self.train_model.map(|m| dir.join(m)),
            labels,
            input: InputSpec {
                width: i.width,
                height: i.height,
                layout: i.layout,
                channels: i.channels,
                scale: i.scale,
                mean: i.mean,
                std: i.std,
                resize: i.resize,
                pad: i.pad,
            },
            decoder: self.decoder.spec,
            decoder_outputs: self.decoder.outputs,
            thresholds,
            engine: self.engine,
            source: self.source,
        })
    }
}

impl DecoderSpec {
    /// The `kind` string as written in a manifest.
    pub fn kind(&self) -> &'static str {
        match self {
            DecoderSpec::Classify { .. } => "classify",
            DecoderSpec::Yolov8 { .. } => "yolov8",
            DecoderSpec::Yolov5 {} => "yolov5",
            DecoderSpec::Nanodet { .. } => "nanodet",
            DecoderSpec::Ssd { .. } => "ssd",
            DecoderSpec::Blazeface { .. } => "blazeface",
            DecoderSpec::End2end { .. } => "end2end",
            DecoderSpec::Detr { .. } => "detr",
        }
    }

    /// The names of the keypoints the decoder reads after each box (none for most).
    pub fn keypoints(&self) -> &[String] {
        match self {
            DecoderSpec::Yolov8 { keypoints } => keypoints,
            DecoderSpec::Blazeface { keypoints, .. } => keypoints,
            DecoderSpec::End2end { keypoints, .. } => keypoints,
            _ => &[],
        }
    }
}

/// The most keypoints a decoder reads per detection (COCO's people have 17, faces 68).
const MAX_KEYPOINTS: usize = 256;

/// The first name given twice, if any (labels, class names).
pub(crate) fn first_repeated(names: &[String]) -> Option<&str> {
    let mut seen = std::collections::HashSet::with_capacity(names.len());
    names.iter().find(|n| !seen.insert(n.as_str())).map(String::as_str)
}

/// Keypoint names: each a non-empty name, given once.
fn check_keypoints(names: &[String]) -> Result<(), String> {
    if names.len() > MAX_KEYPOINTS {
        return Err(format!("{} names, more than the {MAX_KEYPOINTS} vigil reads", names.len()));
    }
    for (i, name) in names.iter().enumerate() {
        if name.trim().is_empty() {
            return Err(format!("name {i} is empty"));
        }
        if names[..i].contains(name) {
            return Err(format!("\"{name}\" is listed twice"));
        }
    }
    Ok(())
}

/// An end-to-end row layout: each column once, a score, a class, and one whole box (x1, y1,
/// x2, y2 or cx, cy, w, h).
pub(crate) fn check_columns(columns: &[Column]) -> Result<(), String> {
    let names = || columns.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ");
    if columns.len() != 6 {
        return Err(format!("need 6 columns (4 box values, score, class), got {}: [{}]", columns.len(), names()));
    }
    for (i, c) in columns.iter().enumerate() {
        if columns[..i].contains(c) {
            return Err(format!("\"{}\" is listed twice in [{}]", c.name(), names()));
        }
    }
    let has = |c: Column| columns.contains(&c);
    if !has(Column::Score) || !has(Column::Class) {
        return Err(format!("need a \"score\" and a \"class\" column, got [{}]", names()));
    }
    let corners = [Column::X1, Column::Y1, Column::X2, Column::Y2].into_iter().all(has);
    let centre = [Column::Cx, Column::Cy, Column::W, Column::H].into_iter().all(has);
    if !corners && !centre {
        return Err(format!("the box must be x1, y1, x2, y2 or cx, cy, w, h (in any order), got [{}]", names()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "tiny"
version = "1"
task = "detect"
model = "tiny.onnx"
labels = ["cat", "dog"]
[input]
width = 320
height = 240
resize = "letterbox"
[decoder]
kind = "yolov8"
"#;

    #[test]
    fn reads_a_minimal_manifest_with_defaults() {
        let m = ModelManifest::from_toml(GOOD, Path::new("/m")).unwrap();
        assert_eq!(m.model_path, Path::new("/m/tiny.onnx"));
        assert_eq!(m.labels, ["cat", "dog"]);
        assert_eq!(m.input.layout, Layout::Nchw);
        assert_eq!(m.input.channels, ChannelOrder::Rgb);
        assert_eq!(m.input.resize, Resize::Letterbox);
        assert_eq!(m.thresholds.score, 0.35);
        assert_eq!(m.decoder, DecoderSpec::Yolov8 { keypoints: vec![] });
    }

    /// A type error in `[decoder]` names its key, not the table.
    #[test]
    fn decoder_type_errors_name_the_key() {
        for (decoder, want) in [
            (
                "kind = \"end2end\"\nclass_offset = \"one\"",
                "decoder.class_offset: invalid type: string \"one\", expected u32",
            ),
            ("kind = \"nanodet\"\nreg_max = -7", "decoder.reg_max: invalid value: integer `-7`, expected usize"),
            (
                "kind = \"ssd\"\nnormalized = \"yes\"",
                "decoder.normalized: invalid type: string \"yes\", expected a boolean",
            ),
            ("kind = \"blazeface\"\nanchors = 5", "decoder.anchors: invalid type: integer `5`, expected a sequence"),
            ("kind = \"yolo9\"", "decoder.kind: unknown variant `yolo9`"),
        ] {
            let text = GOOD.replace("kind = \"yolov8\"", decoder);
            let err = ModelManifest::from_toml(&text, Path::new(".")).unwrap_err();
            assert!(err[0].starts_with(want), "{decoder:?}: {err:?}");
        }
    }

    #[test]
    fn refuses_unknown_keys_naming_them() {
        let text = GOOD.replace("resize = \"letterbox\"", "resise = \"letterbox\"");
        let err = ModelManifest::from_toml(&text, Path::new(".")).unwrap_err();
        assert!(err[0].contains("resise"), "{err:?}");
    }

    #[test]
    fn lists_every_problem_at_once() {
        let text = r#"
name = ""
version = "1"
task = "classify"
model = "m.onnx"
labels = []
[input]
width = 0
height = 224
std = [1.0, 0.0, 1.0]
[decoder]
kind = "nanodet"
reg_max = 0
[thresholds]
score = 1.5
"#;
        let err = ModelManifest::from_toml(text, Path::new(".")).unwrap_err();
        let all = err.join("\n");
        for needle in [
            "name:",
            "labels:",
            "input.width/height",
            "input.std[1]",
            "decoder.kind",
            "decoder.reg_max",
            "thresholds.score",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(err.len(), 7, "{all}");
    }

    #[test]
    fn a_decoder_key_that_is_not_its_own_is_refused() {
        // `outputs` sits beside the decoder's own keys; anything else is still refused.
        let text = GOOD.replace("kind = \"yolov8\"", "kind = \"yolov8\"\nnormalised = true");
        let err = ModelManifest::from_toml(&text, Path::new(".")).unwrap_err();
        assert!(err[0].contains("normalised"), "{err:?}");
        let text = GOOD.replace("kind = \"yolov8\"", "kind = \"yolov8\"\noutputs = { predictions = \"output0\" }");
        let m = ModelManifest::from_toml(&text, Path::new(".")).unwrap();
        assert_eq!(m.decoder_outputs, BTreeMap::from([("predictions".to_string(), "output0".to_string())]));
    }

    #[test]
    fn end2end_settings_and_output_roles_are_checked() {
        let with = |decoder: &str| GOOD.replace("kind = \"yolov8\"", decoder);
        let m = ModelManifest::from_toml(&with("kind = \"end2end\""), Path::new(".")).unwrap();
        assert_eq!(
            m.decoder,
            DecoderSpec::End2end {
                columns: default_end2end_columns(),
                normalized: false,
                class_offset: 0,
                nms: false,
                keypoints: vec![]
            }
        );
        let detr = ModelManifest::from_toml(&with("kind = \"detr\""), Path::new(".")).unwrap();
        assert_eq!(
            detr.decoder,
            DecoderSpec::Detr { scores: DetrScores::Sigmoid, box_format: DetrBoxes::Cxcywh, normalized: true }
        );
        let split = "kind = \"end2end\"\ncolumns = [\"y1\", \"x1\", \"y2\", \"x2\", \"score\", \"class\"]\n\
                     outputs = { boxes = \"b\", scores = \"s\", classes = \"c\", count = \"n\" }";
        assert!(ModelManifest::from_toml(&with(split), Path::new(".")).is_ok());
        for (decoder, needle) in [
            ("kind = \"end2end\"\ncolumns = [\"x1\", \"y1\", \"x2\", \"y2\", \"score\"]", "decoder.columns: need 6"),
            (
                "kind = \"end2end\"\ncolumns = [\"x1\", \"y1\", \"w\", \"h\", \"score\", \"class\"]",
                "decoder.columns: the box",
            ),
            ("kind = \"end2end\"\ncolumns = [\"x1\", \"x1\", \"x2\", \"y2\", \"score\", \"class\"]", "listed twice"),
            ("kind = \"end2end\"\ncolumns = [\"x1\", \"y1\", \"x2\", \"y2\", \"score\", \"klass\"]", "klass"),
            ("kind = \"end2end\"\nclass_offset = 5000", "decoder.class_offset"),
            (
                "kind = \"end2end\"\noutputs = { boxes = \"b\", scores = \"s\" }",
                "decoder.outputs: decoder \"end2end\" needs",
            ),
            (
                "kind = \"end2end\"\noutputs = { detections = \"d\", count = \"n\" }",
                "decoder.outputs: decoder \"end2end\" needs",
            ),
            (
                "kind = \"ssd\"\noutputs = { boxes = \"b\", logits = \"s\" }",
                "decoder.outputs.logits: decoder \"ssd\" has no",
            ),
            ("kind = \"end2end\"\nkeypoints = [\"nose\", \"nose\"]", "decoder.keypoints: \"nose\" is listed twice"),
            ("kind = \"yolov8\"\nkeypoints = [\"nose\", \" \"]", "decoder.keypoints: name 1 is empty"),
            (
                "kind = \"end2end\"\nkeypoints = [\"nose\"]\noutputs = { boxes = \"b\", scores = \"s\", classes = \"c\" }",
                "decoder.keypoints: read from the one-output form",
            ),
            ("kind = \"nanodet\"\nkeypoints = [\"nose\"]", "unknown field `keypoints`"),
        ] {
            let err = ModelManifest::from_toml(&with(decoder), Path::new(".")).unwrap_err().join("\n");
            assert!(err.contains(needle), "{decoder}: {needle:?} not in {err}");
        }
    }

    #[test]
    fn a_missing_labels_file_is_named() {
        let text = GOOD.replace("labels = [\"cat\", \"dog\"]", "labels = { file = \"nope.txt\" }");
        let err = ModelManifest::from_toml(&text, Path::new("/nowhere")).unwrap_err();
        assert_eq!(err.len(), 1, "{err:?}");
        assert!(err[0].contains("labels.file") && err[0].contains("/nowhere/nope.txt"), "{err:?}");
    }
}
