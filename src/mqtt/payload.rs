//! The JSON documents vigil publishes (docs/mqtt.md). Every document carries `"v": 1`;
//! a change that breaks subscribers bumps it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::detect::{Observation, TrackEvent};
use crate::model::{BBox, ClassScore, Keypoints, Model};

pub const VERSION: u32 = 1;

/// Which model produced a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub sha256: String,
    /// What runs it: "tract" or "onnxruntime" (read as "tract" where a document from a vigil
    /// without engines lacks it). Text, not an enum, so that a reader knows no engine it
    /// cannot read.
    #[serde(default = "tract")]
    pub engine: String,
}

fn tract() -> String {
    crate::model::Engine::Tract.name().to_string()
}

impl ModelInfo {
    pub fn of(model: &Model) -> ModelInfo {
        ModelInfo {
            name: model.manifest.name.clone(),
            version: model.manifest.version.clone(),
            sha256: model.sha256.clone(),
            engine: model.engine().name().to_string(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectedObject {
    pub label: String,
    pub class_id: usize,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: BBox,
    /// For models that give keypoints: name → {x, y[, score]}, in the manifest's order.
    #[serde(skip_serializing_if = "Keypoints::is_empty")]
    pub keypoints: Keypoints,
    /// Present once the tracker has confirmed the object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_id: Option<u64>,
    pub zones: Vec<String>,
}

impl From<&Observation> for DetectedObject {
    fn from(o: &Observation) -> Self {
        DetectedObject {
            label: o.detection.label.clone(),
            class_id: o.detection.class_id,
            score: o.detection.score,
            bbox: o.detection.bbox,
            keypoints: o.detection.keypoints.clone(),
            track_id: o.track_id,
            zones: o.zones.clone(),
        }
    }
}

/// `…/<camera>/detections`: one per inferred frame, empty lists included.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detections<'a> {
    pub v: u32,
    pub device: &'a str,
    pub camera: &'a str,
    pub frame: u64,
    /// Unix ms when the frame was captured, and when inference finished.
    pub captured_at: u64,
    pub ts: u64,
    pub width: u32,
    pub height: u32,
    pub inference_ms: f64,
    pub model: &'a ModelInfo,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detections: Option<Vec<DetectedObject>>,
    /// For classifiers: the top classes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<ClassScore>>,
}

/// `…/<camera>/events`: a tracked object appeared, moved, or left.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event<'a> {
    pub v: u32,
    /// The device's event number: increasing by one per event across its cameras, kept across
    /// restarts. A subscriber sees a gap as a lost event and a repeat as a duplicate.
    pub seq: u64,
    pub device: &'a str,
    pub camera: &'a str,
    pub frame: u64,
    pub ts: u64,
    #[serde(flatten)]
    pub event: &'a TrackEvent,
    pub model: &'a ModelInfo,
}

/// The fields of an event vigil reads back when the broker delivers it to the device's own
/// subscription (the proof that the broker has it).
#[derive(Debug, Deserialize)]
pub struct EventEcho {
    pub seq: u64,
}

/// `…/<camera>/counts` (retained): confirmed objects in view per label.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Counts<'a> {
    pub v: u32,
    pub device: &'a str,
    pub camera: &'a str,
    pub ts: u64,
    pub counts: &'a BTreeMap<String, u32>,
}

/// `…/<camera>/collect/state` (retained): the camera's collection of frames for labelling.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CollectState<'a> {
    pub v: u32,
    pub device: &'a str,
    pub camera: &'a str,
    pub ts: u64,
    #[serde(flatten)]
    pub stats: crate::collect::CollectStats,
    /// The item id of the last frame saved on request (`NOW`), if any.
    pub last_requested: Option<&'a str>,
    /// Why the last frame asked for was not saved (no room, say); `null` once one is.
    pub last_refusal: Option<&'a str>,
}

/// `…/<camera>/model` (retained): the model serving this camera.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelState<'a> {
    pub v: u32,
    pub device: &'a str,
    pub camera: &'a str,
    pub ts: u64,
    #[serde(flatten)]
    pub model: &'a ModelInfo,
    pub task: &'static str,
    pub labels: usize,
}

/// `…/deploy/state` (retained): what became of the last bundle or rollback request. The
/// device writes it and `vigil deploy` / `vigil rollback` read it: one type for both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeployState {
    pub v: u32,
    pub device: String,
    /// The device's `deploy.groups`: how `vigil deploy` learns who is in a group.
    #[serde(default)]
    pub groups: Vec<String>,
    pub ts: u64,
    pub action: DeployAction,
    pub result: DeployResult,
    /// Deploy: the bundle's model name and version, when its header could be read.
    /// Rollback: the model rolled back, and the version now serving.
    pub name: Option<String>,
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// On success: the model now serving, the version it replaced, the cameras swapped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving: Option<ModelInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    #[serde(default)]
    pub cameras: Vec<String>,
}

/// What a deploy state answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployAction {
    /// A bundle arrived.
    Deploy,
    /// A rollback was asked for.
    Rollback,
}

/// What came of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployResult {
    /// Deploy: checked and serving.
    Accepted,
    /// Deploy: this very model was serving already (an unretained answer).
    AlreadyServing,
    /// Rollback: the previous version is serving.
    RolledBack,
    /// Either, with `reason`.
    Refused,
}

impl std::fmt::Display for DeployResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeployResult::Accepted => "accepted",
            DeployResult::AlreadyServing => "already serving",
            DeployResult::RolledBack => "rolled back",
            DeployResult::Refused => "refused",
        })
    }
}

/// `…/deploy/rollback`: a rollback request as `vigil rollback` sends it. Both sides use this
/// type; a device refuses any other key or type (a misspelt key must not read as "the only
/// model").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The model to roll back; empty: the only model the device serves.
    pub model: String,
    /// Makes the same request arriving on several topics (the device's and a group's) count once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl RollbackRequest {
    /// The documented forms: this JSON object, or a bare model name (empty: the only model).
    /// Anything else says why it is refused.
    pub fn parse(payload: &[u8]) -> Result<RollbackRequest, String> {
        const MAX: usize = 1024;
        if payload.len() > MAX {
            return Err(format!("{} bytes (a rollback request is at most {MAX})", payload.len()));
        }
        let text = std::str::from_utf8(payload).map_err(|_| "not UTF-8 text".to_string())?.trim();
        if text.starts_with('{') {
            let request: RollbackRequest =
                serde_json::from_str(text).map_err(|e| format!("not {{\"model\": NAME, \"id\": ID}}: {e}"))?;
            if !request.model.is_empty() && !crate::deploy::bundle::is_store_word(&request.model) {
                return Err(format!("\"model\" {:?} is not a model name", request.model));
            }
            return Ok(request);
        }
        if text.is_empty() || crate::deploy::bundle::is_store_word(text) {
            return Ok(RollbackRequest { model: text.to_string(), id: None });
        }
        Err("neither a model name nor {\"model\": NAME, \"id\": ID}".into())
    }
}

/// Per-camera figures in `…/stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CameraStats {
    pub detect: bool,
    /// Inferences per second over the last interval.
    pub fps: f64,
    pub inference_ms_p50: Option<f64>,
    pub inference_ms_p95: Option<f64>,
    /// Capture to messages handed to the publisher, over the last inferred frames.
    pub latency_ms_p50: Option<f64>,
    pub latency_ms_p99: Option<f64>,
    /// Totals since start: frames captured, inferred, kept from the model by motion gating,
    /// the model failed on (each logged), and dropped (replaced in the newest-frame slot
    /// before inference took them).
    pub frames: u64,
    pub inferred: u64,
    pub gated: u64,
    pub failed: u64,
    pub dropped: u64,
    /// The source is delivering frames (a camera opened and giving frames, a replay
    /// playing); false while it fails to open or waits to reopen, and once a replay ends.
    pub source_running: bool,
    /// Times the source was opened again after losing its device or stream, since start
    /// (failed attempts are not counted).
    pub source_reconnects: u64,
    /// CPU threads the camera's inference uses, and frames it works on at once.
    pub threads: usize,
    pub in_flight: usize,
    /// The camera's collection, when it has one (`[cameras.<id>.collect]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collect: Option<crate::collect::CollectStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MqttStats {
    /// Events waiting for the broker, and events lost because the spool was full.
    pub spooled: usize,
    pub spool_capacity: usize,
    pub spool_lost: u64,
    /// Per-frame messages (detections, stats) not sent while the broker was away.
    pub skipped: u64,
    pub reconnects: u64,
}

/// `…/stats`, every `mqtt.stats_interval_s`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats<'a> {
    pub v: u32,
    pub device: &'a str,
    pub ts: u64,
    pub version: &'static str,
    pub uptime_s: f64,
    /// Resident memory of the process.
    pub memory_bytes: Option<u64>,
    pub cameras: BTreeMap<String, CameraStats>,
    pub mqtt: MqttStats,
}

/// Resident set size (VmRSS in /proc/self/status; page-size independent).
pub fn resident_memory() -> Option<u64> {
    let status = crate::files::read_text_capped(std::path::Path::new("/proc/self/status"), 1 << 20).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Keypoint;

    #[test]
    fn keypoints_are_an_object_from_name_to_point_in_the_manifests_order() {
        let object = DetectedObject {
            label: "person".into(),
            class_id: 0,
            score: 0.5,
            bbox: BBox { x1: 1.0, y1: 2.0, x2: 3.0, y2: 4.0 },
            keypoints: Keypoints {
                names: vec!["nose".to_string(), "left_eye".to_string()].into(),
                points: vec![Keypoint { x: 2.0, y: 2.5, score: Some(0.75) }, Keypoint { x: 1.5, y: 2.25, score: None }],
            },
            track_id: None,
            zones: vec![],
        };
        let text = serde_json::to_string(&object).unwrap();
        assert_eq!(
            text,
            r#"{"label":"person","class_id":0,"score":0.5,"box":{"x1":1.0,"y1":2.0,"x2":3.0,"y2":4.0},"keypoints":{"nose":{"x":2.0,"y":2.5,"score":0.75},"left_eye":{"x":1.5,"y":2.25}},"zones":[]}"#
        );
        let none = DetectedObject { keypoints: Keypoints::default(), ..object };
        assert!(!serde_json::to_string(&none).unwrap().contains("keypoints"));
    }
}
