//! One camera's pipeline: its source thread, its inference workers, and its reporter.
//!
//! - The source puts frames in the newest-frame-wins [`FrameSlot`].
//! - Each worker (`in_flight` of them) takes the next frame through the [`Intake`], which
//!   numbers frames in the order taken, keeps to the camera's `fps` and asks motion gating
//!   whether the model runs; the worker then runs the model on it with its own [`Runner`]
//!   (its kept tract state and its share of the camera's threads).
//! - The reporter puts the answers back in frame order, then filters, tracks, and turns
//!   them into MQTT messages. With several frames in flight, events and counts are exactly
//!   those of one frame at a time.
//!
//! Reporter → publisher is a bounded `mpsc` and lossless (`blocking_send` waits for room;
//! the publisher never blocks on the network, so a wait is short). The intake hands out a
//! frame only while at most `in_flight` are between it and the reporter, so a stuck
//! reporter or model stops the intake and the heartbeat instead of piling frames up.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::QoS;
use tokio::sync::mpsc;

use crate::collect::{self, Collector, Policy};
use crate::config::{CameraSettings, Count};
use crate::detect::motion::MotionGate;
use crate::detect::{FrameFilter, Observation, TrackEvent, Tracker};
use crate::model::{DecodeParams, Model, Prediction, Runner, Timings};
use crate::mqtt::journal::Sequence;
use crate::mqtt::payload::{self, ModelInfo};
use crate::mqtt::{Class, Message, Topics};
use crate::source::{self, unix_ms, Frame, FrameSlot, Heartbeat, SourceContext, SourceStatus, Taken};

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
    /// Frames motion gating kept from the model.
    pub gated: AtomicU64,
    /// Frames the model failed on (each logged).
    pub failed: AtomicU64,
    /// The last inference times (preprocess, model, decode), milliseconds, newest last.
    pub recent_ms: Mutex<VecDeque<f64>>,
    /// The last inferred frames' latencies, capture to messages handed to the publisher.
    pub recent_latency_ms: Mutex<VecDeque<f64>>,
    /// The same from the moment a worker took the frame (no wait in the frame slot).
    pub recent_processing_ms: Mutex<VecDeque<f64>>,
    pub plan: ThreadPlan,
}

impl CameraCounters {
    fn record(&self, recent: &Mutex<VecDeque<f64>>, ms: f64) {
        let mut recent = recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(ms);
    }
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

/// One frame's answer, as the reporter publishes it.
struct Inferred<'a> {
    serving: &'a ServingModel,
    prediction: Prediction,
    timings: Timings,
    threshold: f32,
}

/// What the workers and the reporter share.
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
    /// The reporter's tracker has nothing waiting on more frames (see `Tracker::settled`).
    settled: AtomicBool,
    /// Tickets the reporter has finished with (all below this number); workers wait on it
    /// so that at most `in_flight` frames are out between the intake and the reporter.
    reported: Mutex<u64>,
    reported_changed: std::sync::Condvar,
    /// A worker found the source closed (the replay ran out, or the source stopped).
    closed: AtomicBool,
    /// The publisher has gone: the workers stop.
    gone: AtomicBool,
    /// The camera's collection, when it has a `[collect]` table: its rules (the reporter's
    /// alone; the lock is never contended) and its collector.
    collecting: Option<(Mutex<Policy>, Collector)>,
    /// The lowest score collection looks at (its uncertain band's), when it has one.
    collect_floor: Option<f32>,
}

/// A running camera.
pub struct Pipeline {
    pub camera: String,
    pub model: ModelSlot,
    pub control: Arc<CameraControl>,
    pub counters: Arc<CameraCounters>,
    pub slot: Arc<FrameSlot>,
    pub source_heartbeat: Arc<Heartbeat>,
    pub source_status: Arc<SourceStatus>,
    pub inference_heartbeat: Arc<Heartbeat>,
    /// The camera's collection (commands, stats), when it has one.
    pub collect: Option<Arc<collect::Control>>,
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
    /// Threads "auto" gives this camera ([`cpu_share`]).
    pub cpu_share: usize,
}

impl Pipeline {
    pub fn start(spec: PipelineSpec) -> std::io::Result<Pipeline> {
        let camera = spec.camera.to_string();
        let threshold = starting_threshold(spec.settings, &spec.model);
        let model = ModelSlot::new(spec.model.clone());
        let control =
            Arc::new(CameraControl { detect: AtomicBool::new(spec.settings.detect), threshold: Mutex::new(threshold) });
        let plan = ThreadPlan::of(spec.settings, spec.cpu_share);
        let counters = Arc::new(CameraCounters { plan, ..CameraCounters::default() });
        let source_ctx = SourceContext::new(&camera, spec.settings.fps);
        let (slot, stop) = (source_ctx.slot.clone(), source_ctx.stop.clone());
        let (source_heartbeat, source_status) = (source_ctx.heartbeat.clone(), source_ctx.status.clone());
        let inference_heartbeat = Arc::new(Heartbeat::default());
        source_heartbeat.beat();
        inference_heartbeat.beat();
        let collecting = match &spec.settings.collect {
            None => None,
            Some(settings) => {
                let control = Arc::new(collect::Control::default());
                control.enabled.store(settings.enabled, Ordering::Relaxed);
                let (out, topics, device, cam) =
                    (spec.out.clone(), spec.topics.clone(), spec.device.to_string(), camera.clone());
                let owner = collect::Owner {
                    device: spec.device.to_string(),
                    camera: camera.clone(),
                    // A frame asked for over MQTT is answered on the state topic, with its id.
                    on_requested: Box::new(move |control: &collect::Control| {
                        let _ = out.blocking_send(collect_state_message(&topics, &device, &cam, control));
                    }),
                };
                // Collection is never in detection's way: a folder it cannot use leaves the
                // camera detecting, without it, and says why.
                match Collector::start(settings.clone(), owner, control) {
                    Ok(collector) => Some((Mutex::new(Policy::new(settings.clone())), collector)),
                    Err(e) => {
                        log::error!(
                            "camera={camera} path={} collection cannot start, and is off for this camera: {e}",
                            settings.dir.display()
                        );
                        None
                    }
                }
            }
        };
        let collect_control = collecting.as_ref().map(|(_, c)| c.control.clone());
        let ctx = Arc::new(Context {
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
            settled: AtomicBool::new(true),
            reported: Mutex::new(0),
            reported_changed: std::sync::Condvar::new(),
            closed: AtomicBool::new(false),
            gone: AtomicBool::new(false),
            collect_floor: spec.settings.collect.as_ref().and_then(|c| c.uncertain).map(|(lo, _)| lo),
            collecting,
        });
        // Built before any thread starts: making a thread pool can fail (it panics in tract).
        let runners = std::panic::catch_unwind(|| {
            (0..plan.in_flight)
                .map(|w| Runner::with_threads(plan.threads_per_frame, &format!("tract-{camera}-{w}")))
                .collect::<Vec<_>>()
        })
        .map_err(|_| {
            std::io::Error::other(format!("cannot start {} thread pool(s) for camera {camera}", plan.in_flight))
        })?;
        let mut threads = Vec::new();
        let started = (|| {
            threads.push(source::spawn(&spec.settings.source, source_ctx)?);
            let intake = Arc::new(Mutex::new(Intake::new(spec.settings, plan.in_flight)));
            let (done, results) = std::sync::mpsc::channel();
            for (worker, runner) in runners.into_iter().enumerate() {
                let (ctx, intake, done) = (ctx.clone(), intake.clone(), done.clone());
                let name = format!("infer-{camera}-{worker}");
                threads.push(std::thread::Builder::new().name(name).spawn(move || ctx.work(&intake, done, runner))?);
            }
            drop(done);
            let reporter = ctx.clone();
            let name = format!("report-{camera}");
            threads.push(std::thread::Builder::new().name(name).spawn(move || reporter.report(results))?);
            Ok(())
        })();
        if let Err(e) = started {
            // The threads already started end on their own.
            stop.store(true, Ordering::Relaxed);
            return Err(e);
        }
        log::info!(
            "camera={camera} threads={} in_flight={} threads_per_frame={} motion={} pipeline started",
            plan.in_flight * plan.threads_per_frame,
            plan.in_flight,
            plan.threads_per_frame,
            if spec.settings.motion.is_some() { "on" } else { "off" }
        );
        Ok(Pipeline {
            camera,
            model,
            control,
            counters,
            slot,
            source_heartbeat,
            source_status,
            inference_heartbeat,
            collect: collect_control,
            stop,
            threads,
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
        let copy = |m: &Mutex<VecDeque<f64>>| -> Vec<f64> {
            m.lock().unwrap_or_else(|e| e.into_inner()).iter().copied().collect()
        };
        let (recent, latency) = (copy(&self.counters.recent_ms), copy(&self.counters.recent_latency_ms));
        let plan = self.counters.plan;
        payload::CameraStats {
            detect: self.control.detect.load(Ordering::Relaxed),
            fps: interval_inferred as f64 / interval.as_secs_f64().max(1e-3),
            inference_ms_p50: percentile(&recent, 0.50),
            inference_ms_p95: percentile(&recent, 0.95),
            latency_ms_p50: percentile(&latency, 0.50),
            latency_ms_p99: percentile(&latency, 0.99),
            frames: self.counters.frames.load(Ordering::Relaxed),
            inferred: self.counters.inferred.load(Ordering::Relaxed),
            gated: self.counters.gated.load(Ordering::Relaxed),
            failed: self.counters.failed.load(Ordering::Relaxed),
            dropped: self.slot.dropped(),
            source_running: self.source_status.is_running(),
            source_reconnects: self.source_status.reconnects(),
            threads: plan.in_flight * plan.threads_per_frame,
            in_flight: plan.in_flight,
            collect: self.collect.as_ref().map(|c| c.stats()),
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

/// How a camera spends its threads: `in_flight` frames at once, each on `threads_per_frame`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThreadPlan {
    pub in_flight: usize,
    pub threads_per_frame: usize,
}

impl Default for ThreadPlan {
    fn default() -> Self {
        ThreadPlan { in_flight: 1, threads_per_frame: 1 }
    }
}

impl ThreadPlan {
    /// The camera's `threads` and `in_flight`; "auto" threads are `cpu_share` (the
    /// device's cores divided among its cameras), "auto" frames in flight are one per
    /// thread: tract splits only matrix products over threads, so whole frames side by
    /// side use cores better (docs/performance.md has the measurements).
    pub fn of(settings: &CameraSettings, cpu_share: usize) -> ThreadPlan {
        let threads = match settings.threads {
            Count::Fixed(n) => n,
            Count::Auto => cpu_share.max(1),
        };
        let in_flight = match settings.in_flight {
            Count::Fixed(n) => n.min(threads),
            Count::Auto => threads,
        };
        ThreadPlan { in_flight, threads_per_frame: (threads / in_flight).max(1) }
    }
}

/// The device's cores divided among `cameras` cameras, at least one each.
pub fn cpu_share(cameras: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / cameras.max(1)).max(1)
}

/// Hands frames out to the workers: numbered in the order taken (the reporter's order), at
/// most `fps` a second, each with what to do with it.
struct Intake {
    ticket: u64,
    in_flight: u64,
    next_start: Instant,
    interval: Duration,
    gate: Option<MotionGate>,
}

/// What a worker is to do with a frame.
enum Plan {
    /// Detection is off.
    Off,
    /// Motion gating skips the model.
    Gated,
    /// The model and its parameters, chosen in frame order (a deploy's swap falls between
    /// two tickets, never among them), and the camera's score threshold (the parameters' may
    /// be lower, for collection's uncertain band).
    Run(Arc<ServingModel>, DecodeParams, f32),
}

/// Waits until `ok(frames out)` holds, frames out being those handed out before `ticket`
/// that the reporter has not finished; false on stop or when the publisher has gone.
fn wait_reported(ctx: &Context, ticket: u64, ok: impl Fn(u64) -> bool) -> bool {
    let mut reported = ctx.reported.lock().unwrap_or_else(|e| e.into_inner());
    while !ok(ticket - *reported) {
        if ctx.stop.load(Ordering::Relaxed) || ctx.gone.load(Ordering::Relaxed) {
            return false;
        }
        reported = ctx
            .reported_changed
            .wait_timeout(reported, Duration::from_millis(100))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
    true
}

enum Next {
    Frame(u64, Frame, Plan),
    Empty,
    Closed,
}

impl Intake {
    fn new(settings: &CameraSettings, in_flight: usize) -> Intake {
        Intake {
            ticket: 0,
            in_flight: in_flight as u64,
            next_start: Instant::now(),
            interval: Duration::from_secs_f64(1.0 / settings.fps),
            gate: settings.motion.map(|m| MotionGate::new(m, settings.masks.clone())),
        }
    }

    fn next(&mut self, ctx: &Context) -> Next {
        // No new frame while `in_flight` + 1 are out (one may sit with the reporter while the
        // workers go on): a stuck reporter or model stops the intake (and with it the
        // heartbeat, so the watchdog sees it) instead of piling frames up.
        if !wait_reported(ctx, self.ticket, |out| out <= self.in_flight) {
            return Next::Empty;
        }
        let wait = self.next_start.saturating_duration_since(Instant::now());
        if !wait.is_zero() && !source::sleep_unless(&ctx.stop, wait, &ctx.heartbeat) {
            return Next::Empty;
        }
        let frame = match ctx.slot.take(Duration::from_millis(200)) {
            Taken::Frame(f) => f,
            Taken::Empty => return Next::Empty,
            Taken::Closed => {
                ctx.closed.store(true, Ordering::Relaxed);
                return Next::Closed;
            }
        };
        let now = Instant::now();
        self.next_start = now + self.interval;
        ctx.counters.frames.store(frame.number, Ordering::Relaxed);
        let plan = if !ctx.control.detect.load(Ordering::Relaxed) {
            Plan::Off
        } else {
            // The tracker's word is current only once every frame handed out is reported: a
            // still frame waits for that (nothing moves, so nothing is lost by waiting).
            let ticket = self.ticket;
            let settled = || wait_reported(ctx, ticket, |out| out == 0) && ctx.settled.load(Ordering::Relaxed);
            match self.gate.as_mut().map(|gate| gate.judge(&frame.image, now, settled)) {
                Some(verdict) if !verdict.runs() => Plan::Gated,
                _ => {
                    let serving = ctx.model.current();
                    let mut params = serving.model.default_params();
                    let threshold = *ctx.control.threshold.lock().unwrap_or_else(|e| e.into_inner());
                    // Collection's uncertain band may reach below the threshold: decoded down to
                    // it, and the reporter holds the rest to the threshold.
                    // (Detectors only: a classifier's classes are not held to the threshold after.)
                    if serving.model.manifest.task == crate::model::manifest::Task::Detect {
                        params.score = ctx.collect_floor.map_or(threshold, |floor| floor.min(threshold));
                    } else {
                        params.score = threshold;
                    }
                    Plan::Run(serving, params, threshold)
                }
            }
        };
        self.ticket += 1;
        Next::Frame(self.ticket - 1, frame, plan)
    }
}

/// A worker's answer for one frame.
enum Work {
    Off,
    Gated,
    Inferred {
        serving: Arc<ServingModel>,
        prediction: Prediction,
        timings: Timings,
        /// The camera's score threshold for what is published.
        threshold: f32,
    },
    /// The model failed on it (logged).
    Failed,
}

struct Done {
    ticket: u64,
    frame: Frame,
    /// When a worker took it.
    taken: Instant,
    work: Work,
}

impl Context {
    /// A worker: takes the next frame, runs the model on it, hands the answer to the reporter.
    fn work(&self, intake: &Mutex<Intake>, done: std::sync::mpsc::Sender<Done>, mut runner: Runner) {
        while !self.stop.load(Ordering::Relaxed) && !self.gone.load(Ordering::Relaxed) {
            self.heartbeat.beat();
            // A model replaced by a deploy is not kept alive by this worker's state, even
            // while no frame comes.
            runner.keep_only(&self.model.current().model);
            let next = intake.lock().unwrap_or_else(|e| e.into_inner()).next(self);
            let (ticket, frame, plan) = match next {
                Next::Frame(ticket, frame, plan) => (ticket, frame, plan),
                Next::Empty => continue,
                Next::Closed => break,
            };
            let taken = Instant::now();
            let work = match plan {
                Plan::Off => Work::Off,
                Plan::Gated => Work::Gated,
                Plan::Run(serving, params, threshold) => {
                    self.run_model(&mut runner, serving, &params, threshold, &frame)
                }
            };
            if done.send(Done { ticket, frame, taken, work }).is_err() {
                break;
            }
        }
    }

    fn run_model(
        &self,
        runner: &mut Runner,
        serving: Arc<ServingModel>,
        params: &DecodeParams,
        threshold: f32,
        frame: &Frame,
    ) -> Work {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            serving.model.predict_in(runner, &frame.image, params)
        }));
        match ran {
            Ok(Ok((prediction, timings))) => Work::Inferred { serving, prediction, timings, threshold },
            Ok(Err(e)) => {
                log::error!("camera={} frame={} inference failed: {e}", self.camera, frame.number);
                Work::Failed
            }
            Err(_) => {
                // The panic message went to the log through the panic hook.
                log::error!("camera={} frame={} inference panicked; its state is rebuilt", self.camera, frame.number);
                runner.forget_state();
                Work::Failed
            }
        }
    }

    /// The reporter: puts the workers' answers back in frame order and turns them into
    /// messages (filters, tracker, events, counts). Ends when every worker has.
    fn report(&self, results: std::sync::mpsc::Receiver<Done>) {
        let filter = FrameFilter {
            labels: self.settings.labels.clone(),
            min_score: None,
            per_label: self.settings.filters.clone(),
            masks: self.settings.masks.clone(),
            zones: self.settings.zones.clone(),
        };
        let mut tracker = Tracker::new(self.settings.tracker);
        let mut counts: BTreeMap<String, u32> = BTreeMap::new();
        let mut last_frame = 0;
        let mut pending = BTreeMap::new();
        let mut next = 0;
        for done in results.iter() {
            pending.insert(done.ticket, done);
            while let Some(Done { frame, taken, work, .. }) = pending.remove(&next) {
                next += 1;
                last_frame = frame.number;
                let sent = match work {
                    // Detection off: whatever was in view has left as far as subscribers know.
                    Work::Off => self.finish_tracks(&mut tracker, &mut counts, frame.number),
                    Work::Gated => {
                        self.counters.gated.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    Work::Failed => {
                        self.counters.failed.fetch_add(1, Ordering::Relaxed);
                        true
                    }
                    Work::Inferred { serving, prediction, timings, threshold } => {
                        let inferred = Inferred { serving: &serving, prediction, timings, threshold };
                        let sent = self.publish(&frame, inferred, &filter, &mut tracker, &mut counts);
                        let since = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
                        self.counters.record(&self.counters.recent_latency_ms, since(frame.captured));
                        self.counters.record(&self.counters.recent_processing_ms, since(taken));
                        sent
                    }
                };
                self.settled.store(tracker.settled(), Ordering::Relaxed);
                *self.reported.lock().unwrap_or_else(|e| e.into_inner()) = next;
                self.reported_changed.notify_all();
                if !sent {
                    self.gone.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
        self.finish_tracks(&mut tracker, &mut counts, last_frame);
        // Finished on purpose only; workers gone any other way leave the heartbeat to age,
        // so the watchdog notices.
        if self.closed.load(Ordering::Relaxed) || self.stop.load(Ordering::Relaxed) {
            self.heartbeat.finish();
        }
        log::info!("camera={} frames={last_frame} pipeline stopped", self.camera);
    }

    /// Publishes one inferred frame's results; false when the publisher is gone.
    fn publish(
        &self,
        frame: &Frame,
        inferred: Inferred,
        filter: &FrameFilter,
        tracker: &mut Tracker,
        counts: &mut BTreeMap<String, u32>,
    ) -> bool {
        let Inferred { serving, prediction, timings, threshold } = inferred;
        let inference_ms = (timings.preprocess + timings.inference + timings.decode).as_secs_f64() * 1000.0;
        self.counters.inferred.fetch_add(1, Ordering::Relaxed);
        self.counters.record(&self.counters.recent_ms, inference_ms);
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
                // The model's every detection, before the camera's filters: pre-labels label
                // everything in view.
                let all = self.collecting.as_ref().map(|_| detections.clone());
                let mut detections = detections;
                detections.retain(|d| d.score >= threshold);
                let mut observed = filter.apply(detections, width, height);
                let events = tracker.update(&mut observed, frame.captured_at);
                if let Some(all) = all {
                    let new_track = events.iter().any(|e| e.kind == crate::detect::EventKind::New);
                    self.collect(frame, serving, all, new_track);
                }
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

    /// Offers the frame to the collector when the camera's rules (or a request) pick it.
    fn collect(
        &self,
        frame: &Frame,
        serving: &ServingModel,
        detections: Vec<crate::model::Detection>,
        new_track: bool,
    ) {
        let Some((policy, collector)) = &self.collecting else { return };
        let control = &collector.control;
        let requested = control.requested.swap(false, Ordering::Relaxed);
        let enabled = control.enabled.load(Ordering::Relaxed);
        let mut policy = policy.lock().unwrap_or_else(|e| e.into_inner());
        let Some(why) = policy.consider(Instant::now(), &detections, new_track, enabled, requested) else { return };
        let info = &serving.info;
        let offered = collector.offer(collect::Job {
            image: frame.image.clone(),
            jpeg: frame.jpeg.clone(),
            detections,
            why,
            captured_at: frame.captured_at,
            model: collect::item::ItemModel {
                name: info.name.clone(),
                version: info.version.clone(),
                sha256: info.sha256.clone(),
            },
            labels: serving.model.manifest.labels.clone().into(),
        });
        if requested && !offered {
            // The queue was full: the next frame is the one asked for.
            control.requested.store(true, Ordering::Relaxed);
        }
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

/// `<prefix>/<camera>/collect/state` (retained): the camera's collection, and the id of the
/// last frame saved on request.
pub fn collect_state_message(topics: &Topics, device: &str, camera: &str, control: &collect::Control) -> Message {
    let last = control.last_requested.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let refusal = control.last_refusal.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let doc = payload::CollectState {
        v: payload::VERSION,
        device,
        camera,
        ts: unix_ms(),
        stats: control.stats(),
        last_requested: last.as_deref(),
        last_refusal: refusal.as_deref(),
    };
    Message {
        topic: topics.state(camera, "collect"),
        payload: serde_json::to_vec(&doc).expect("collect state serialises"),
        qos: QoS::AtLeastOnce,
        retain: true,
        class: Class::Latest,
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
