//! The JSON documents vigil publishes (docs/mqtt.md). Every document carries `"v": 1`;
//! a change that breaks subscribers bumps it.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::detect::{Observation, TrackEvent};
use crate::model::{BBox, ClassScore, Model};

pub const VERSION: u32 = 1;

/// Which model produced a result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    pub name: String,
    pub version: String,
    pub sha256: String,
}

impl ModelInfo {
    pub fn of(model: &Model) -> ModelInfo {
        ModelInfo {
            name: model.manifest.name.clone(),
            version: model.manifest.version.clone(),
            sha256: model.sha256.clone(),
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
    pub device: &'a str,
    pub camera: &'a str,
    pub frame: u64,
    pub ts: u64,
    #[serde(flatten)]
    pub event: &'a TrackEvent,
    pub model: &'a ModelInfo,
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

/// `…/deploy/state` (retained): what became of the last bundle received.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeployState {
    pub v: u32,
    pub device: String,
    /// The device's `deploy.groups`: how `vigil deploy` learns who is in a group.
    pub groups: Vec<String>,
    pub ts: u64,
    /// "deploy" (a bundle arrived) or "rollback" (a rollback was asked for).
    pub action: &'static str,
    /// "accepted" or "already_serving" (deploy), "rolled_back" (rollback), or "refused"
    /// (either, with `reason`).
    pub result: &'static str,
    /// Deploy: the bundle's model name and version, when its header could be read.
    /// Rollback: the model rolled back, and the version now serving.
    pub name: Option<String>,
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// On success: the model now serving, the version it replaced, the cameras swapped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serving: Option<ModelInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    pub cameras: Vec<String>,
}

/// Per-camera figures in `…/stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CameraStats {
    pub detect: bool,
    /// Inferences per second over the last interval.
    pub fps: f64,
    pub inference_ms_p50: Option<f64>,
    pub inference_ms_p95: Option<f64>,
    /// Totals since start: frames captured, inferred, and dropped (replaced in the
    /// newest-frame slot before inference took them).
    pub frames: u64,
    pub inferred: u64,
    pub dropped: u64,
    pub source_running: bool,
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
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
