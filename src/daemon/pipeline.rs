//! One camera's pipeline: its source thread, and its inference thread that runs the model
//! on the newest frame, filters, tracks, and turns the result into MQTT messages.
//!
//! Channels: source → inference is the newest-frame-wins [`FrameSlot`]; inference →
//! publisher is a bounded `mpsc` and lossless (`blocking_send` waits for room; the
//! publisher never blocks on the network, so a wait is short).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::QoS;
use tokio::sync::mpsc;

use crate::config::CameraSettings;
use crate::detect::{FrameFilter, Observation, TrackEvent, Tracker};
use crate::model::{Model, Prediction};
use crate::mqtt::journal::Sequence;
use crate::mqtt::payload::{self, ModelInfo};
use crate::mqtt::{Class, Message, Topics};
use crate::source::{self, unix_ms, Frame, FrameSlot, Heartbeat, Taken};

/// Settings a command can change while the camera runs.
#[derive(Debug)]
pub struct CameraControl {
    pub detect: AtomicBool,
    /// Minimum score for every label; starts from the config (or the model's threshold).
    pub threshold: Mutex<f32>,
}

/// Counters the stats task reads.
#[derive(Debug, Default)]
pub struct CameraCounters {
    pub frames: AtomicU64,
    pub inferred: AtomicU64,
    /// The last inference times, milliseconds (newest last).
    pub recent_ms: Mutex<VecDeque<f64>>,
}

const RECENT: usize = 256;

/// A model and what payloads say about it.
#[derive(Debug)]
pub struct ServingModel {
    pub model: Arc<Model>,
    pub info: ModelInfo,
}

/// The model serving a camera, replaceable between two frames (a deploy swaps it). Each
/// frame takes the current model once, so every frame is answered by exactly one version.
#[derive(Debug, Clone)]
pub struct ModelSlot(Arc<RwLock<Arc<ServingModel>>>);

impl ModelSlot {
    pub fn new(model: Arc<Model>) -> ModelSlot {
        let info = ModelInfo::of(&model);
        ModelSlot(Arc::new(RwLock::new(Arc::new(ServingModel { model, info }))))
    }

    pub fn current(&self) -> Arc<ServingModel> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Puts `model` in place for the next frame; returns the one it replaces.
    pub fn swap(&self, model: Arc<Model>) -> Arc<ServingModel> {
        let info = ModelInfo::of(&model);
        let next = Arc::new(ServingModel { model, info });
        std::mem::replace(&mut *self.0.write().unwrap_or_else(|e| e.into_inner()), next)
    }
}

/// What the inference thread needs, moved into it.
struct Context {
    camera: String,
    device: String,
    settings: CameraSettings,
    model: ModelSlot,
    topics: Topics,
    qos: QoS,
    max_packet: usize,
    slot: Arc<FrameSlot>,
    stop: Arc<AtomicBool>,
    heartbeat: Arc<Heartbeat>,
    control: Arc<CameraControl>,
    counters: Arc<CameraCounters>,
    out: mpsc::Sender<Message>,
    sequence: Arc<Sequence>,
}

/// A running camera.
pub struct Pipeline {
    pub camera: String,
    pub model: ModelSlot,
    pub control: Arc<CameraControl>,
    pub counters: Arc<CameraCounters>,
    pub slot: Arc<FrameSlot>,
    pub source_heartbeat: Arc<Heartbeat>,
    pub inference_heartbeat: Arc<Heartbeat>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

/// Everything a pipeline is started with.
pub struct PipelineSpec<'a> {
    pub camera: &'a str,
    pub device: &'a str,
    pub settings: &'a CameraSettings,
    pub model: Arc<Model>,
    pub topics: &'a Topics,
    pub qos: QoS,
    pub max_packet: usize,
    pub out: mpsc::Sender<Message>,
    /// The device's event numbering, shared by its cameras and kept across reloads.
    pub sequence: Arc<Sequence>,
}

impl Pipeline {
    pub fn start(spec: PipelineSpec) -> std::io::Result<Pipeline> {
        let camera = spec.camera.to_string();
        let threshold = starting_threshold(spec.settings, &spec.model);
        let model = ModelSlot::new(spec.model.clone());
        let control =
            Arc::new(CameraControl { detect: AtomicBool::new(spec.settings.detect), threshold: Mutex::new(threshold) });
        let counters = Arc::new(CameraCounters::default());
        let slot = Arc::new(FrameSlot::new());
        let stop = Arc::new(AtomicBool::new(false));
        let source_heartbeat = Arc::new(Heartbeat::default());
        let inference_heartbeat = Arc::new(Heartbeat::default());
        source_heartbeat.beat();
        inference_heartbeat.beat();
        let ctx = Context {
            camera: camera.clone(),
            device: spec.device.to_string(),
            settings: spec.settings.clone(),
            model: model.clone(),
            topics: spec.topics.clone(),
            qos: spec.qos,
            max_packet: spec.max_packet,
            slot: slot.clone(),
            stop: stop.clone(),
            heartbeat: inference_heartbeat.clone(),
            control: control.clone(),
            counters: counters.clone(),
            out: spec.out,
            sequence: spec.sequence,
        };
        let source =
            source::spawn(&camera, &spec.settings.source, slot.clone(), stop.clone(), source_heartbeat.clone())?;
        let inference = std::thread::Builder::new().name(format!("infer-{camera}")).spawn(move || ctx.run())?;
        Ok(Pipeline {
            camera,
            model,
            control,
            counters,
            slot,
            source_heartbeat,
            inference_heartbeat,
            stop,
            threads: vec![source, inference],
        })
    }

    /// Asks both threads to stop; [`Pipeline::join`] waits for them.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }

    /// The threads that have not shown a sign of life within `limit`.
    pub fn stalled(&self, limit: Duration) -> Vec<String> {
        let mut out = Vec::new();
        for (what, hb) in [("source", &self.source_heartbeat), ("inference", &self.inference_heartbeat)] {
            if !hb.is_finished() && hb.age() > limit {
                out.push(format!("camera {} {what} (silent for {:.0} s)", self.camera, hb.age().as_secs_f64()));
            }
        }
        out
    }

    pub fn stats(&self, interval_inferred: u64, interval: Duration) -> payload::CameraStats {
        let recent: Vec<f64> = self.counters.recent_ms.lock().unwrap().iter().copied().collect();
        payload::CameraStats {
            detect: self.control.detect.load(Ordering::Relaxed),
            fps: interval_inferred as f64 / interval.as_secs_f64().max(1e-3),
            inference_ms_p50: percentile(&recent, 0.50),
            inference_ms_p95: percentile(&recent, 0.95),
            frames: self.counters.frames.load(Ordering::Relaxed),
            inferred: self.counters.inferred.load(Ordering::Relaxed),
            dropped: self.slot.dropped(),
            source_running: !self.source_heartbeat.is_finished(),
        }
    }
}

/// The score threshold a camera starts with: its `min_score`, else the model's.
pub fn starting_threshold(settings: &CameraSettings, model: &Model) -> f32 {
    settings.min_score.unwrap_or(model.manifest.thresholds.score)
}

fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() - 1) as f64 * q).round() as usize;
    Some((v[i] * 1000.0).round() / 1000.0)
}

impl Context {
    fn run(self) {
        let filter = FrameFilter {
            labels: self.settings.labels.clone(),
            min_score: None,
            per_label: self.settings.filters.clone(),
            masks: self.settings.masks.clone(),
            zones: self.settings.zones.clone(),
        };
        let mut tracker = Tracker::new(self.settings.tracker);
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        let interval = Duration::from_secs_f64(1.0 / self.settings.fps);
        let mut last_frame = 0;
        // Ends when the source closes the slot, or on stop even if the source is stuck in a
        // camera read (the drain must not wait on a wedged device).
        while !self.stop.load(Ordering::Relaxed) {
            self.heartbeat.beat();
            let frame = match self.slot.take(Duration::from_millis(200)) {
                Taken::Frame(f) => f,
                Taken::Empty => continue,
                Taken::Closed => break,
            };
            self.counters.frames.store(frame.number, Ordering::Relaxed);
            last_frame = frame.number;
            let started = Instant::now();
            if !self.control.detect.load(Ordering::Relaxed) {
                // Detection off: whatever was in view has left as far as subscribers know.
                if !self.finish_tracks(&mut tracker, &mut counts, frame.number) {
                    return;
                }
            } else if !self.infer(&frame, &filter, &mut tracker, &mut counts) {
                return;
            }
            let rest = interval.saturating_sub(started.elapsed());
            if !rest.is_zero() && !source::sleep_unless(&self.stop, rest, &self.heartbeat) {
                // Stopping: the source closes the slot; take what remains on the next turn.
            }
        }
        self.finish_tracks(&mut tracker, &mut counts, last_frame);
        self.heartbeat.finish();
        log::info!("camera={} frames={last_frame} pipeline stopped", self.camera);
    }

    /// Runs the model on one frame and publishes the results; false when the publisher is gone.
    fn infer(
        &self,
        frame: &Frame,
        filter: &FrameFilter,
        tracker: &mut Tracker,
        counts: &mut BTreeMap<String, u32>,
    ) -> bool {
        let serving = self.model.current();
        let mut params = serving.model.default_params();
        params.score = *self.control.threshold.lock().unwrap();
        let (prediction, timings) = match serving.model.predict(&frame.image, &params) {
            Ok(r) => r,
            Err(e) => {
                log::error!("camera={} frame={} inference failed: {e}", self.camera, frame.number);
                return true;
            }
        };
        let inference_ms = (timings.preprocess + timings.inference + timings.decode).as_secs_f64() * 1000.0;
        self.counters.inferred.fetch_add(1, Ordering::Relaxed);
        {
            let mut recent = self.counters.recent_ms.lock().unwrap();
            if recent.len() == RECENT {
                recent.pop_front();
            }
            recent.push_back(inference_ms);
        }
        let now = unix_ms();
        let (width, height) = frame.image.dimensions();
        let mut document = payload::Detections {
            v: payload::VERSION,
            device: &self.device,
            camera: &self.camera,
            frame: frame.number,
            captured_at: frame.captured_at,
            ts: now,
            width,
            height,
            inference_ms: (inference_ms * 1000.0).round() / 1000.0,
            model: &serving.info,
            detections: None,
            classes: None,
        };
        let mut messages = Vec::new();
        match prediction {
            Prediction::Classes(classes) => document.classes = Some(classes),
            Prediction::Detections(detections) => {
                let mut observed = filter.apply(detections, width, height);
                let events = tracker.update(&mut observed, frame.captured_at);
                document.detections = Some(observed.iter().map(payload::DetectedObject::from).collect());
                self.event_messages(&events, frame.number, now, &serving.info, &mut messages);
                if self.settings.snapshots && events.iter().any(|e| e.kind == crate::detect::EventKind::New) {
                    messages.extend(self.snapshot(frame, &observed));
                }
                let current = tracker.counts();
                if current != *counts {
                    *counts = current;
                    messages.push(self.counts_message(counts, now));
                }
            }
        }
        log::debug!(
            "camera={} frame={} objects={} inference_ms={:.1} frame inferred",
            self.camera,
            frame.number,
            document.detections.as_ref().map_or(0, Vec::len),
            inference_ms
        );
        let detections = Message {
            topic: self.topics.detections(&self.camera),
            payload: serde_json::to_vec(&document).expect("detections serialise"),
            qos: self.qos,
            retain: false,
            class: Class::Transient,
        };
        // Detections first, then the events and counts they caused.
        std::iter::once(detections).chain(messages).all(|m| self.out.blocking_send(m).is_ok())
    }

    fn event_messages(&self, events: &[TrackEvent], frame: u64, now: u64, model: &ModelInfo, out: &mut Vec<Message>) {
        for event in events {
            let seq = self.sequence.take();
            let doc = payload::Event {
                v: payload::VERSION,
                seq,
                device: &self.device,
                camera: &self.camera,
                frame,
                ts: now,
                event,
                model,
            };
            log::info!(
                "camera={} seq={seq} ts={now} track={} label={} score={:.2} zones={:?} object {}",
                self.camera,
                event.track_id,
                event.label,
                event.score,
                event.zones,
                match event.kind {
                    crate::detect::EventKind::New => "appeared",
                    crate::detect::EventKind::Update => "moved",
                    crate::detect::EventKind::End => "left",
                }
            );
            out.push(Message {
                topic: self.topics.events(&self.camera),
                payload: serde_json::to_vec(&doc).expect("events serialise"),
                // Always 1: the link re-sends unacknowledged QoS 1 publishes after a reconnect;
                // a QoS 2 flow cut between PUBREC and PUBREL could not be resumed in a new session.
                qos: QoS::AtLeastOnce,
                retain: false,
                class: Class::Event { seq },
            });
        }
    }

    fn counts_message(&self, counts: &BTreeMap<String, u32>, now: u64) -> Message {
        counts_message(&self.topics, &self.device, &self.camera, counts, now)
    }

    /// Ends every track (detection off, or stopping); false when the publisher is gone.
    fn finish_tracks(&self, tracker: &mut Tracker, counts: &mut BTreeMap<String, u32>, frame: u64) -> bool {
        let now = unix_ms();
        let mut messages = Vec::new();
        self.event_messages(&tracker.end_all(), frame, now, &self.model.current().info, &mut messages);
        if !counts.is_empty() {
            counts.clear();
            messages.push(self.counts_message(counts, now));
        }
        messages.into_iter().all(|m| self.out.blocking_send(m).is_ok())
    }

    /// The frame with its boxes drawn, as a retained JPEG.
    fn snapshot(&self, frame: &Frame, observed: &[Observation]) -> Option<Message> {
        let mut image = (*frame.image).clone();
        let detections = observed.iter().map(|o| o.detection.clone()).collect();
        crate::annotate::draw(&mut image, &Prediction::Detections(detections));
        let mut jpeg = Vec::new();
        let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, self.settings.snapshot_quality);
        if let Err(e) = image.write_with_encoder(encoder) {
            log::warn!("camera={} cannot encode a snapshot: {e}", self.camera);
            return None;
        }
        if jpeg.len() + 1024 > self.max_packet {
            log::warn!(
                "camera={} bytes={} max_packet_size={} snapshot too large for mqtt.max_packet_size; skipped",
                self.camera,
                jpeg.len(),
                self.max_packet
            );
            return None;
        }
        Some(Message {
            topic: self.topics.snapshot(&self.camera),
            payload: jpeg,
            qos: QoS::AtMostOnce,
            retain: true,
            class: Class::Latest,
        })
    }
}

pub fn counts_message(
    topics: &Topics,
    device: &str,
    camera: &str,
    counts: &BTreeMap<String, u32>,
    now: u64,
) -> Message {
    let doc = payload::Counts { v: payload::VERSION, device, camera, ts: now, counts };
    Message {
        topic: topics.counts(camera),
        payload: serde_json::to_vec(&doc).expect("counts serialise"),
        qos: QoS::AtLeastOnce,
        retain: true,
        class: Class::Latest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_keeps_the_model_it_started_with_across_a_swap() {
        let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        let faces = Arc::new(Model::load(&models.join("blazeface.toml")).unwrap());
        let classifier = Arc::new(Model::load(&models.join("mobilenet-v2.toml")).unwrap());
        let slot = ModelSlot::new(faces);
        let in_flight = slot.current();
        let replaced = slot.swap(classifier);
        assert_eq!(in_flight.info.name, "blazeface", "a frame already running keeps its model");
        assert_eq!(replaced.info.name, "blazeface");
        assert_eq!(slot.current().info.name, "mobilenet-v2", "the next frame gets the new one");
        assert_eq!(slot.current().info.sha256, slot.current().model.sha256);
    }
}
