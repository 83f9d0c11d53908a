//! The model layer: a manifest plus an ONNX graph, checked against each other, optimised
//! once by tract, then run per image: preprocess → engine → decode → NMS → map back. The engine
//! is tract, or ONNX Runtime where the manifest asks for it (cargo feature `onnxruntime`); tract
//! checks every graph against its manifest either way.

pub mod decode;
pub mod manifest;
pub mod nms;
#[cfg(feature = "onnxruntime")]
pub mod onnxruntime;
pub mod preprocess;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::RgbImage;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tract_onnx::prelude::tract_linalg::multithread::{self, Executor};
use tract_onnx::prelude::*;
use tract_onnx::tract_hir::infer::Factoid;

pub use decode::{DecodeParams, Decoded, Decoder, GraphOutputs, OutputTensor};
pub use manifest::{Engine, ModelManifest, Task};
pub use preprocess::{preprocess, InputTensor, Transform};

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    // `error`, not `source`: a source would print its text a second time after this one.
    #[error("cannot read {what} {path}: {error}")]
    Io { path: PathBuf, what: &'static str, error: std::io::Error },
    #[error("model manifest {path} has {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "))]
    Manifest { path: PathBuf, problems: Vec<String> },
    #[error("{path} is not a usable ONNX model: {reason}")]
    Onnx { path: PathBuf, reason: String },
    #[error("model {name} ({manifest}) disagrees with its ONNX graph {onnx}: {reason}")]
    Mismatch { name: String, manifest: PathBuf, onnx: PathBuf, reason: String },
    #[error("model {name} ({manifest}) cannot run on engine {engine}: {reason}")]
    Engine { name: String, manifest: PathBuf, engine: &'static str, reason: String },
    #[error("model {name} failed to run: {reason}")]
    Run { name: String, reason: String },
}

/// An axis-aligned box: corners in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BBox {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BBox {
    /// The box of centre (cx, cy), width w and height h.
    pub fn from_centre(cx: f32, cy: f32, w: f32, h: f32) -> BBox {
        BBox { x1: cx - w / 2.0, y1: cy - h / 2.0, x2: cx + w / 2.0, y2: cy + h / 2.0 }
    }

    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }
    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }
    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }
}

/// A point of a detected object (a face's eye, a person's wrist), in the same pixels as its
/// box; `score` is the model's confidence that the point is visible, where it gives one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Keypoint {
    pub x: f32,
    pub y: f32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
}

/// A box a decoder proposes, before labels and before mapping back to the image.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    pub class_id: usize,
    pub score: f32,
    pub bbox: BBox,
    /// In the order the manifest's `decoder.keypoints` names them (none when it names none).
    pub keypoints: Vec<Keypoint>,
}

/// A detection's keypoints with their names, written as a JSON object from name to point
/// in the manifest's order: `{"nose": {"x": …, "y": …, "score": …}, …}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Keypoints {
    pub names: Arc<[String]>,
    pub points: Vec<Keypoint>,
}

impl Keypoints {
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// (name, point) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Keypoint)> {
        self.names.iter().map(String::as_str).zip(&self.points)
    }
}

impl Serialize for Keypoints {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.points.len()))?;
        for (name, point) in self.iter() {
            map.serialize_entry(name, point)?;
        }
        map.end()
    }
}

/// A detected object, its box (and keypoints) in original-image pixels.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    pub label: String,
    pub class_id: usize,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: BBox,
    #[serde(skip_serializing_if = "Keypoints::is_empty")]
    pub keypoints: Keypoints,
}

/// One class of a classifier's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScore {
    pub label: String,
    pub class_id: usize,
    pub score: f32,
}

/// What a model says about one image.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Prediction {
    Classes(Vec<ClassScore>),
    Detections(Vec<Detection>),
}

/// Timings of one inference.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Timings {
    pub preprocess: Duration,
    pub inference: Duration,
    pub decode: Duration,
}

/// A loaded, checked and optimised model, ready to run. Cheap to share: running takes
/// `&self`, so several threads may run one model side by side.
#[derive(Debug)]
pub struct Model {
    pub manifest: ModelManifest,
    /// sha256 of the ONNX file, lower-case hex.
    pub sha256: String,
    plan: Plan,
    decoder: Decoder,
    output_names: Vec<String>,
    /// The shapes the decoder was bound to: every run's outputs are checked against them, so
    /// that a decoder never indexes past the data it gets.
    output_shapes: Vec<Vec<usize>>,
    /// `decoder.keypoints`, shared by every detection's keypoints.
    keypoint_names: Arc<[String]>,
}

/// What runs a model's graph; shared by the runners that run it.
#[derive(Debug)]
enum Plan {
    /// tract's optimised plan.
    Tract(Arc<TypedRunnableModel>),
    /// The graph as ONNX Runtime takes it.
    #[cfg(feature = "onnxruntime")]
    Onnxruntime(Arc<onnxruntime::Graph>),
}

/// The largest ONNX file loaded: 2 GiB, protobuf's own limit for one message.
pub const MAX_ONNX_BYTES: u64 = 2 << 30;

impl Model {
    /// The first 12 hex digits of the ONNX file's sha256, for log lines.
    pub fn short_hash(&self) -> &str {
        self.sha256.get(..12).unwrap_or(&self.sha256)
    }

    /// Loads the manifest at `path` and the ONNX graph it names.
    pub fn load(manifest_path: &Path) -> Result<Model, ModelError> {
        Model::load_on(manifest_path, None)
    }

    /// Loads the manifest at `path` and its graph, run by `engine` when one is given instead
    /// of the manifest's (the command line's `--engine`).
    pub fn load_on(manifest_path: &Path, engine: Option<Engine>) -> Result<Model, ModelError> {
        let mut manifest = ModelManifest::load(manifest_path)?;
        manifest.engine = engine.unwrap_or(manifest.engine);
        Model::from_manifest(manifest, manifest_path)
    }

    /// Loads the ONNX graph a checked manifest names (`manifest_path` is for messages).
    pub fn from_manifest(manifest: ModelManifest, manifest_path: &Path) -> Result<Model, ModelError> {
        let onnx_path = manifest.model_path.clone();
        let bytes = crate::files::read_capped(&onnx_path, MAX_ONNX_BYTES).map_err(|e| ModelError::Io {
            path: onnx_path.clone(),
            what: "ONNX model",
            error: e,
        })?;
        let model = Model::from_onnx_bytes(manifest, manifest_path, &bytes);
        drop(bytes);
        return_freed_memory();
        model
    }

    /// Loads an ONNX graph from its bytes for a checked manifest (whose `model_path` and
    /// `manifest_path` are for messages). A panic in the ONNX importer on a malformed file
    /// is an error naming the file, never the end of the process.
    pub fn from_onnx_bytes(manifest: ModelManifest, manifest_path: &Path, bytes: &[u8]) -> Result<Model, ModelError> {
        let onnx_path = manifest.model_path.clone();
        let loaded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Model::import(manifest, manifest_path, bytes)));
        loaded.unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(ModelError::Onnx { path: onnx_path, reason: format!("the ONNX importer failed on it: {why}") })
        })
    }

    fn import(manifest: ModelManifest, manifest_path: &Path, bytes: &[u8]) -> Result<Model, ModelError> {
        let onnx_path = manifest.model_path.clone();
        let sha256 = sha256_hex(bytes);
        let mismatch = |reason: String| ModelError::Mismatch {
            name: manifest.name.clone(),
            manifest: manifest_path.to_path_buf(),
            onnx: onnx_path.clone(),
            reason,
        };
        let onnx_err = |e: TractError| ModelError::Onnx { path: onnx_path.clone(), reason: format!("{e:#}") };

        let mut graph = tract_onnx::onnx().model_for_read(&mut &bytes[..]).map_err(onnx_err)?;
        let inputs = graph.input_outlets().map_err(onnx_err)?.len();
        if inputs != 1 {
            return Err(mismatch(format!("vigil feeds one image input, but the graph has {inputs} inputs")));
        }
        check_input(&graph, &manifest.input).map_err(mismatch)?;
        let shape = input_shape(&manifest.input);
        graph.set_input_fact(0, f32::fact(shape).into()).map_err(onnx_err)?;
        let mut typed = graph.into_typed().map_err(onnx_err)?;

        // Every output's name (the ONNX tensor's, "logits", not its producing node's) and
        // shape (empty where not fixed), so that the decoder's outputs can be chosen by name.
        let outlets = typed.output_outlets().map_err(onnx_err)?.to_vec();
        let mut all_names = Vec::new();
        let mut all_shapes = Vec::new();
        for outlet in &outlets {
            let fact = typed.outlet_fact(*outlet).map_err(onnx_err)?;
            all_names.push(typed.outlet_label(*outlet).unwrap_or(&typed.node(outlet.node).name).to_string());
            all_shapes.push(fact.shape.as_concrete().map(|d| d.to_vec()).unwrap_or_default());
        }
        let graph_outputs = |names, shapes| GraphOutputs {
            names,
            shapes,
            input_width: manifest.input.width,
            input_height: manifest.input.height,
            classes: manifest.labels.len(),
        };
        let picked = decode::select_outputs(
            &manifest.decoder,
            &manifest.decoder_outputs,
            graph_outputs(&all_names, &all_shapes),
        )
        .map_err(mismatch)?;
        let mut output_names = Vec::new();
        let mut output_shapes = Vec::new();
        for &i in &picked {
            let (name, fact) = (&all_names[i], typed.outlet_fact(outlets[i]).map_err(onnx_err)?);
            let Some(dims) = fact.shape.as_concrete() else {
                return Err(mismatch(format!("output {i} \"{name}\" has no fixed shape ({:?})", fact.shape)));
            };
            if fact.datum_type != f32::datum_type() {
                return Err(mismatch(format!("output \"{name}\" is {:?}; vigil decodes f32 outputs", fact.datum_type)));
            }
            output_names.push(name.clone());
            output_shapes.push(dims.to_vec());
        }
        let decoder =
            Decoder::bind(&manifest.decoder, graph_outputs(&output_names, &output_shapes)).map_err(mismatch)?;
        // Outputs the decoder does not read are not computed: they stop being outputs, and
        // optimisation (tract's, or ONNX Runtime's on the pruned file) drops what only fed them.
        let pruned = picked.len() != outlets.len() || picked.iter().enumerate().any(|(k, &i)| k != i);
        if pruned {
            typed.select_output_outlets(&picked.iter().map(|&i| outlets[i]).collect::<Vec<_>>()).map_err(onnx_err)?;
        }

        let plan = match manifest.engine {
            Engine::Tract => Plan::Tract(typed.into_optimized().and_then(|m| m.into_runnable()).map_err(onnx_err)?),
            Engine::Onnxruntime => {
                drop(typed);
                let pruned_bytes;
                let bytes = if pruned {
                    pruned_bytes = keep_outputs(bytes, &output_names).map_err(|e| ModelError::Onnx {
                        path: onnx_path.clone(),
                        reason: format!("choosing the decoder's outputs: {e}"),
                    })?;
                    &pruned_bytes[..]
                } else {
                    bytes
                };
                onnxruntime_plan(bytes, &output_names, &output_shapes).map_err(|reason| ModelError::Engine {
                    name: manifest.name.clone(),
                    manifest: manifest_path.to_path_buf(),
                    engine: manifest.engine.name(),
                    reason,
                })?
            }
        };
        let keypoint_names = manifest.decoder.keypoints().into();
        Ok(Model { manifest, sha256, plan, decoder, output_names, output_shapes, keypoint_names })
    }

    /// What runs this model's graph.
    pub fn engine(&self) -> Engine {
        self.manifest.engine
    }

    /// The manifest's thresholds as decode parameters.
    pub fn default_params(&self) -> DecodeParams {
        let t = &self.manifest.thresholds;
        DecodeParams { score: t.score, iou: t.iou, max_detections: t.max_detections, top_k: t.top_k }
    }

    /// Runs the graph on a prepared input tensor and returns its raw outputs (on this thread
    /// alone, with state made for this one run; a camera keeps a [`Runner`] instead).
    pub fn run_raw(&self, input: &InputTensor) -> Result<Vec<OutputTensor>, ModelError> {
        self.run_in(&mut Runner::single(), input.clone())
    }

    /// Runs the graph with a runner's threads and kept state. The input's buffer becomes the
    /// graph's input tensor without a copy; the outputs are copied out of tract's tensors.
    pub fn run_in(&self, runner: &mut Runner, input: InputTensor) -> Result<Vec<OutputTensor>, ModelError> {
        match &self.plan {
            Plan::Tract(plan) => self.run_tract(plan, runner, input),
            #[cfg(feature = "onnxruntime")]
            Plan::Onnxruntime(graph) => {
                let run_err = |reason: String| ModelError::Run { name: self.manifest.name.clone(), reason };
                let session = runner.session_for(graph).map_err(run_err)?;
                graph.run(session, input).map_err(run_err)
            }
        }
    }

    fn run_tract(
        &self,
        plan: &Arc<TypedRunnableModel>,
        runner: &mut Runner,
        input: InputTensor,
    ) -> Result<Vec<OutputTensor>, ModelError> {
        let run_err = |e: TractError| ModelError::Run { name: self.manifest.name.clone(), reason: format!("{e:#}") };
        let InputTensor { shape, data } = input;
        let tensor = tract_ndarray::Array4::from_shape_vec(shape, data)
            .map_err(|e| run_err(TractError::msg(format!("input tensor: {e}"))))?
            .into_tensor();
        let executor = runner.executor.clone();
        let state = runner.state_for(plan).map_err(run_err)?;
        let outputs =
            multithread::multithread_tract_scope(executor, || state.run(tvec!(tensor.into()))).map_err(run_err)?;
        if outputs.len() != self.output_names.len() {
            return Err(run_err(TractError::msg(format!(
                "the graph gave {} outputs, not the {} its decoder reads",
                outputs.len(),
                self.output_names.len()
            ))));
        }
        outputs
            .into_iter()
            .zip(self.output_names.iter().zip(&self.output_shapes))
            .map(|(value, (name, want))| {
                let array = value.into_tensor().into_plain_array::<f32>().map_err(run_err)?;
                let shape = array.shape().to_vec();
                if shape != *want {
                    return Err(run_err(TractError::msg(format!(
                        "output \"{name}\" came out {shape:?}, not the {want:?} its decoder reads"
                    ))));
                }
                let data = if array.is_standard_layout() {
                    array.into_raw_vec_and_offset().0
                } else {
                    array.iter().copied().collect()
                };
                Ok(OutputTensor { name: name.clone(), shape, data })
            })
            .collect()
    }

    /// Decodes raw outputs without mapping: boxes stay in input pixels, unlabelled.
    pub fn decode_raw(&self, outputs: &[OutputTensor], params: &DecodeParams) -> Decoded {
        self.decoder.decode(outputs, params)
    }

    /// Decodes raw outputs and maps boxes back to the image through `transform`.
    pub fn decode(&self, outputs: &[OutputTensor], transform: &Transform, params: &DecodeParams) -> Prediction {
        let labels = &self.manifest.labels;
        match self.decode_raw(outputs, params) {
            Decoded::Classes(classes) => Prediction::Classes(
                classes
                    .into_iter()
                    .map(|(class_id, score)| ClassScore { label: labels[class_id].clone(), class_id, score })
                    .collect(),
            ),
            Decoded::Boxes(boxes) => Prediction::Detections(
                boxes
                    .into_iter()
                    .map(|c| Detection {
                        label: labels[c.class_id].clone(),
                        class_id: c.class_id,
                        score: c.score,
                        bbox: transform.map_box(&c.bbox),
                        keypoints: Keypoints {
                            names: self.keypoint_names.clone(),
                            points: c.keypoints.iter().map(|k| transform.map_keypoint(k)).collect(),
                        },
                    })
                    .collect(),
            ),
        }
    }

    /// The whole path for one image, on this thread alone.
    pub fn predict(&self, image: &RgbImage, params: &DecodeParams) -> Result<(Prediction, Timings), ModelError> {
        self.predict_in(&mut Runner::single(), image, params)
    }

    /// The whole path for one image, with a runner's threads and kept state.
    pub fn predict_in(
        &self,
        runner: &mut Runner,
        image: &RgbImage,
        params: &DecodeParams,
    ) -> Result<(Prediction, Timings), ModelError> {
        let t0 = Instant::now();
        let (input, transform) = preprocess(image, &self.manifest.input);
        let t1 = Instant::now();
        let outputs = self.run_in(runner, input)?;
        let t2 = Instant::now();
        let prediction = self.decode(&outputs, &transform, params);
        let timings = Timings { preprocess: t1 - t0, inference: t2 - t1, decode: t2.elapsed() };
        Ok((prediction, timings))
    }
}

/// How one thread runs models: with how many threads each run may use (tract splits each
/// matrix product over a pool of them, ONNX Runtime each operator) and the graph's state, kept
/// from one run to the next so that a camera does not rebuild it every frame (tract's
/// `SimpleState`, or an ONNX Runtime session). The state belongs to one model; a run with
/// another (a deploy swapped it) builds that one's.
pub struct Runner {
    threads: usize,
    /// tract's: this thread alone, or a pool of `threads`.
    executor: Executor,
    state: Option<State>,
}

enum State {
    Tract(Arc<TypedRunnableModel>, TypedSimpleState),
    #[cfg(feature = "onnxruntime")]
    Onnxruntime(Arc<onnxruntime::Graph>, ::ort::session::Session),
}

impl State {
    fn is_for(&self, plan: &Plan) -> bool {
        match (self, plan) {
            (State::Tract(a, _), Plan::Tract(b)) => Arc::ptr_eq(a, b),
            #[cfg(feature = "onnxruntime")]
            (State::Onnxruntime(a, _), Plan::Onnxruntime(b)) => Arc::ptr_eq(a, b),
            #[cfg(feature = "onnxruntime")]
            _ => false,
        }
    }
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("threads", &self.threads).finish_non_exhaustive()
    }
}

impl Runner {
    /// Runs on the calling thread only.
    pub fn single() -> Runner {
        Runner::with_threads(1, "")
    }

    /// Lets each run use `threads` threads (the calling thread waits for them); 1 is
    /// [`Runner::single`]. tract's pool (its threads named after `name`) is made here, so
    /// that a pool the system refuses stops a camera at its start, not at every frame.
    pub fn with_threads(threads: usize, name: &str) -> Runner {
        let executor =
            if threads <= 1 { Executor::SingleThread } else { Executor::multithread_with_name(threads, name) };
        Runner { threads: threads.max(1), executor, state: None }
    }

    /// Threads a run may use.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Drops the kept state unless it is `model`'s (after a deploy replaced the model it was
    /// built for, which it would otherwise keep in memory).
    pub fn keep_only(&mut self, model: &Model) {
        if !self.state.as_ref().is_some_and(|s| s.is_for(&model.plan)) {
            self.state = None;
        }
    }

    /// Drops the kept state (after a run that panicked, say); the next run builds it anew.
    pub fn forget_state(&mut self) {
        self.state = None;
    }

    fn state_for(&mut self, plan: &Arc<TypedRunnableModel>) -> TractResult<&mut TypedSimpleState> {
        if !matches!(&self.state, Some(State::Tract(p, _)) if Arc::ptr_eq(p, plan)) {
            self.state = None;
            self.state = Some(State::Tract(plan.clone(), TypedSimpleState::new(plan)?));
        }
        match &mut self.state {
            Some(State::Tract(_, state)) => Ok(state),
            _ => unreachable!("set above"),
        }
    }

    #[cfg(feature = "onnxruntime")]
    fn session_for(&mut self, graph: &Arc<onnxruntime::Graph>) -> Result<&mut ::ort::session::Session, String> {
        if !matches!(&self.state, Some(State::Onnxruntime(g, _)) if Arc::ptr_eq(g, graph)) {
            self.state = None;
            self.state = Some(State::Onnxruntime(graph.clone(), graph.session(self.threads)?));
        }
        match &mut self.state {
            Some(State::Onnxruntime(_, session)) => Ok(session),
            _ => unreachable!("set above"),
        }
    }
}

/// The ONNX Runtime form of a checked graph.
#[cfg(feature = "onnxruntime")]
fn onnxruntime_plan(bytes: &[u8], names: &[String], shapes: &[Vec<usize>]) -> Result<Plan, String> {
    Ok(Plan::Onnxruntime(Arc::new(onnxruntime::Graph::new(bytes, names, shapes)?)))
}

/// The ONNX file with only `names` as its graph's outputs, in that order.
fn keep_outputs(bytes: &[u8], names: &[String]) -> Result<Vec<u8>, String> {
    use prost::Message;
    let mut model = tract_onnx::pb::ModelProto::decode(bytes).map_err(|e| e.to_string())?;
    let graph = model.graph.as_mut().ok_or("the file has no graph")?;
    let mut outputs = Vec::new();
    for name in names {
        let i = graph.output.iter().position(|o| &o.name == name).ok_or(format!("no graph output \"{name}\""))?;
        outputs.push(graph.output[i].clone());
    }
    graph.output = outputs;
    Ok(model.encode_to_vec())
}

#[cfg(not(feature = "onnxruntime"))]
fn onnxruntime_plan(_: &[u8], _: &[String], _: &[Vec<usize>]) -> Result<Plan, String> {
    Err("this vigil was built without ONNX Runtime (cargo feature `onnxruntime`): build it with \
         `--features onnxruntime`, or set engine = \"tract\" in the manifest"
        .to_string())
}

/// Gives the memory freed while loading back to the system. Loading peaks at several times
/// the model's file (its bytes, the parsed graph and the optimised plan at once); glibc keeps
/// what is freed in its heap, about 30 MB after MobileNetV2 (docs/performance.md).
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim only returns free heap pages to the kernel.
        unsafe { malloc_trim(0) };
    }
}

/// The input shape the manifest describes (batch 1).
fn input_shape(spec: &manifest::InputSpec) -> [usize; 4] {
    match spec.layout {
        manifest::Layout::Nchw => [1, 3, spec.height, spec.width],
        manifest::Layout::Nhwc => [1, spec.height, spec.width, 3],
    }
}

/// Compares the graph's declared input with the manifest, dimension by dimension;
/// dimensions the graph leaves open (a symbolic batch, say) are accepted.
fn check_input(graph: &InferenceModel, spec: &manifest::InputSpec) -> Result<(), String> {
    let fact = graph.input_fact(0).map_err(|e| format!("{e:#}"))?;
    let name = graph.node(graph.input_outlets().map_err(|e| format!("{e:#}"))?[0].node).name.clone();
    let dims: Vec<Option<i64>> = fact.shape.dims().map(|d| d.concretize().and_then(|d| d.to_i64().ok())).collect();
    if let Some(dt) = fact.datum_type.concretize() {
        if dt != f32::datum_type() {
            return Err(format!("input \"{name}\" is {dt:?}; vigil feeds f32 images"));
        }
    }
    if fact.shape.rank().concretize().is_none() {
        return Ok(()); // Nothing declared: the manifest decides.
    }
    let show = |d: &[Option<i64>]| {
        let parts: Vec<String> = d.iter().map(|x| x.map(|v| v.to_string()).unwrap_or_else(|| "?".into())).collect();
        format!("[{}]", parts.join(", "))
    };
    if dims.len() != 4 {
        return Err(format!(
            "input \"{name}\" has rank {} ({}); vigil feeds a 4-d image tensor",
            dims.len(),
            show(&dims)
        ));
    }
    let (c, h, w) = match spec.layout {
        manifest::Layout::Nchw => (1, 2, 3),
        manifest::Layout::Nhwc => (3, 1, 2),
    };
    let want = |i: usize, v: usize| dims[i].is_none_or(|d| d == v as i64);
    if !want(c, 3) {
        let other = match spec.layout {
            manifest::Layout::Nchw if dims[3] == Some(3) => " (it looks like NHWC)",
            manifest::Layout::Nhwc if dims[1] == Some(3) => " (it looks like NCHW)",
            _ => "",
        };
        return Err(format!(
            "input.layout = \"{}\" puts channels on axis {c}, but the graph's input \"{name}\" is {}{other}",
            format!("{:?}", spec.layout).to_lowercase(),
            show(&dims)
        ));
    }
    if !want(w, spec.width) {
        return Err(format!(
            "input.width = {}, but the graph's input \"{name}\" {} has width {}",
            spec.width,
            show(&dims),
            dims[w].unwrap()
        ));
    }
    if !want(h, spec.height) {
        return Err(format!(
            "input.height = {}, but the graph's input \"{name}\" {} has height {}",
            spec.height,
            show(&dims),
            dims[h].unwrap()
        ));
    }
    if !want(0, 1) {
        return Err(format!(
            "the graph's input \"{name}\" {} has batch {}; vigil runs batch 1",
            show(&dims),
            dims[0].unwrap()
        ));
    }
    Ok(())
}

/// Largest difference between two runs of a model, relative to the reference value where it
/// exceeds 1: `max |a − b| / max(1, |b|)`. Outputs span very different scales (probabilities,
/// logits down to −360, box coordinates up to 600 pixels) and f32 carries about 7 significant
/// digits, so "equal within 1e-4" is absolute below 1 and relative above.
///
/// NaN when the two cannot be compared: a NaN (or an infinity met by another) on either side,
/// or slices of different lengths. Compare with `!(d <= limit)` so that NaN fails.
pub fn max_scaled_diff(a: &[f32], reference: &[f32]) -> f32 {
    if a.len() != reference.len() {
        return f32::NAN;
    }
    let mut worst = 0.0f32;
    for (x, y) in a.iter().zip(reference) {
        let d = (x - y).abs() / y.abs().max(1.0);
        // `f32::max` would drop a NaN; it must win instead.
        if d.is_nan() {
            return f32::NAN;
        }
        worst = worst.max(d);
    }
    worst
}

/// An ONNX tensor shape of fixed dimensions (for graphs vigil writes: the trainer's export,
/// tests).
pub fn fixed_shape(dims: &[i64]) -> tract_onnx::pb::TensorShapeProto {
    use tract_onnx::pb::tensor_shape_proto::{dimension::Value, Dimension};
    tract_onnx::pb::TensorShapeProto {
        dim: dims.iter().map(|&d| Dimension { value: Some(Value::DimValue(d)), ..Default::default() }).collect(),
    }
}

/// An ONNX graph input or output: float32 with fixed dimensions.
pub fn f32_value(name: &str, dims: &[i64]) -> tract_onnx::pb::ValueInfoProto {
    use tract_onnx::pb::{type_proto, TypeProto, ValueInfoProto};
    let tensor = type_proto::Tensor { elem_type: 1, shape: Some(fixed_shape(dims)) };
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)), ..Default::default() }),
        ..Default::default()
    }
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The sha256 of bytes, in lower-case hex (how models and bundle files are identified).
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::max_scaled_diff;

    #[test]
    fn a_nan_anywhere_makes_the_difference_nan() {
        assert_eq!(max_scaled_diff(&[1.0, 250.0], &[1.0, 200.0]), 0.25);
        assert!(max_scaled_diff(&[1.0, f32::NAN], &[1.0, 2.0]).is_nan());
        assert!(max_scaled_diff(&[1.0, 2.0], &[f32::NAN, 2.0]).is_nan());
        assert!(max_scaled_diff(&[f32::INFINITY], &[f32::INFINITY]).is_nan());
        assert!(max_scaled_diff(&[1.0], &[1.0, 2.0]).is_nan(), "different lengths");
    }
}
