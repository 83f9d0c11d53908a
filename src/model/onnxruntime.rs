//! The onnxruntime engine (cargo feature `onnxruntime`): the same checked graph run by ONNX
//! Runtime instead of tract. The library is not linked: `libonnxruntime.so` is opened at run
//! time ([`library_path`]) the first time a model asks for this engine, and refused with a
//! message that says what to do when it is missing, is not ONNX Runtime, or is older than
//! 1.17 (the C API the `ort` crate is built against).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::builder::{GraphOptimizationLevel, PrepackedWeights, SessionBuilder};
use ort::session::Session;
use ort::value::Tensor;

use super::{InputTensor, OutputTensor};

/// The environment variable naming the library (the `ort` crate's own name for it).
pub const LIBRARY_VARIABLE: &str = "ORT_DYLIB_PATH";
/// The library's name when the variable is not set: looked for beside the vigil binary, then
/// on the loader's search path (`LD_LIBRARY_PATH`, `/etc/ld.so.conf`).
pub const LIBRARY_NAME: &str = "libonnxruntime.so";

/// The library this process loads: `ORT_DYLIB_PATH` when set and not empty. A relative path
/// with a folder in it is taken from the working directory; a bare file name is looked for
/// beside the vigil binary, then on the loader's path (the `ort` crate's rule).
pub fn library_path() -> PathBuf {
    match std::env::var_os(LIBRARY_VARIABLE) {
        Some(path) if !path.is_empty() => {
            let path = PathBuf::from(path);
            if path.components().count() > 1 {
                std::path::absolute(&path).unwrap_or(path)
            } else {
                path
            }
        }
        _ => PathBuf::from(LIBRARY_NAME),
    }
}

/// The process's ONNX Runtime, loaded by the first model that asks for it. A failure is not
/// kept: the next model to ask (a deploy after the library was installed) tries again.
fn environment() -> Result<&'static Environment, String> {
    static LOADED: OnceLock<Environment> = OnceLock::new();
    static LOADING: Mutex<()> = Mutex::new(());
    if let Some(environment) = LOADED.get() {
        return Ok(environment);
    }
    let _one_at_a_time = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(environment) = LOADED.get() {
        return Ok(environment);
    }
    let environment = load()?;
    Ok(LOADED.get_or_init(|| environment))
}

fn load() -> Result<Environment, String> {
    let path = library_path();
    let advice = format!(
        "install ONNX Runtime 1.17 or newer (scripts/setup-onnxruntime.sh takes it from the onnxruntime \
         wheel) and set {LIBRARY_VARIABLE} to libonnxruntime.so's path, or use engine = \"tract\""
    );
    if path.components().count() > 1 {
        match path.try_exists() {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!("{LIBRARY_VARIABLE} names {}, which does not exist; {advice}", path.display()))
            }
            Err(e) => return Err(format!("cannot reach {} ({LIBRARY_VARIABLE}): {e}; {advice}", path.display())),
        }
    }
    // ort asserts on a library whose API base is null: a panic here is a refusal too.
    let loaded = std::panic::catch_unwind(|| ort::init_from(&path).map(|b| b.with_name("vigil").build()));
    match loaded {
        Ok(Ok(Ok(environment))) => {
            log::info!("path={} ONNX Runtime loaded", path.display());
            Ok(environment)
        }
        Ok(Ok(Err(e))) => Err(format!("ONNX Runtime ({}) did not start: {e}", path.display())),
        Ok(Err(e)) => Err(format!("cannot use ONNX Runtime library {}: {e}; {advice}", path.display())),
        Err(_) => Err(format!("{} is not a usable ONNX Runtime library; {advice}", path.display())),
    }
}

/// A graph ready for ONNX Runtime: its bytes (each runner builds its session from them, with
/// its own thread count) and the pre-packed weights those sessions share.
pub struct Graph {
    bytes: Arc<[u8]>,
    weights: PrepackedWeights,
    input_name: String,
    output_names: Vec<String>,
    /// The shapes tract gave the outputs and the decoder was bound to: ONNX Runtime's are
    /// checked against them every run, so that a decoder never reads a tensor of another size.
    output_shapes: Vec<Vec<usize>>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph").field("bytes", &self.bytes.len()).field("outputs", &self.output_names).finish()
    }
}

impl Graph {
    /// Prepares `bytes` (a graph tract has already checked against its manifest) and builds
    /// one session, so that a graph ONNX Runtime refuses is refused now, not at the first
    /// frame. `output_names` and `output_shapes` are the graph's outputs in order, as tract
    /// read them and the decoder was bound to them.
    pub fn new(bytes: &[u8], output_names: &[String], output_shapes: &[Vec<usize>]) -> Result<Graph, String> {
        environment()?;
        let mut graph = Graph {
            bytes: Arc::from(bytes),
            weights: PrepackedWeights::new(),
            input_name: String::new(),
            output_names: output_names.to_vec(),
            output_shapes: output_shapes.to_vec(),
        };
        let session = graph.session(1)?;
        let found: Vec<&str> = session.outputs().iter().map(|o| o.name()).collect();
        if found != graph.output_names.iter().map(String::as_str).collect::<Vec<_>>() {
            return Err(format!("ONNX Runtime reads its outputs as {found:?}, tract as {:?}", graph.output_names));
        }
        let [input] = session.inputs() else {
            return Err(format!("ONNX Runtime finds {} inputs; vigil feeds one", session.inputs().len()));
        };
        graph.input_name = input.name().to_string();
        Ok(graph)
    }

    /// A session of this graph that splits each operator over `threads` threads.
    pub fn session(&self, threads: usize) -> Result<Session, String> {
        let refused = |e: String| format!("ONNX Runtime refused the graph: {e}");
        let text = |e: ort::Error<SessionBuilder>| refused(e.to_string());
        Session::builder(environment()?)
            .map_err(|e| refused(e.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(text)?
            .with_intra_threads(threads.max(1))
            .map_err(text)?
            .with_inter_threads(1)
            .map_err(text)?
            // An edge box's spare cores belong to its other cameras: a waiting thread sleeps.
            .with_intra_op_spinning(false)
            .map_err(text)?
            .with_prepacked_weights(&self.weights)
            .map_err(text)?
            .commit_from_memory(&self.bytes)
            .map_err(|e| refused(e.to_string()))
    }

    /// Runs `session` (made by [`Graph::session`]) on one input; outputs in graph order.
    pub fn run(&self, session: &mut Session, input: InputTensor) -> Result<Vec<OutputTensor>, String> {
        let InputTensor { shape, data } = input;
        let tensor = Tensor::from_array((shape, data)).map_err(|e| format!("input tensor: {e}"))?;
        let outputs = session.run(ort::inputs![self.input_name.as_str() => tensor]).map_err(|e| e.to_string())?;
        self.output_names
            .iter()
            .zip(&self.output_shapes)
            .map(|(name, want)| {
                let value = outputs.get(name).ok_or_else(|| format!("output \"{name}\" missing"))?;
                let (shape, data) = value.try_extract_tensor::<f32>().map_err(|e| format!("output \"{name}\": {e}"))?;
                if shape.len() != want.len() || shape.iter().zip(want).any(|(&d, &w)| usize::try_from(d) != Ok(w)) {
                    return Err(format!(
                        "output \"{name}\" came out {:?}, not the {want:?} its decoder reads",
                        &shape[..]
                    ));
                }
                Ok(OutputTensor { name: name.clone(), shape: want.clone(), data: data.to_vec() })
            })
            .collect()
    }
}
