//! The daemon's deploy worker: one task that takes bundles and rollback requests in
//! arrival order, checks them off the async workers (a model load and a test vector can take
//! seconds on a small board), swaps the cameras' models between two frames, and reports on
//! the retained `<p>/deploy/state`. It runs beside the control loop, so watchdog pings,
//! commands and stats carry on while a deploy is checked.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::pipeline::ModelSlot;
use super::{latest, model_state};
use crate::config::DeploySettings;
use crate::deploy::device::{self, Outcome, RolledBack, ServingCamera};
use crate::deploy::DeployError;
use crate::model::Model;
use crate::mqtt::payload::{self, DeployAction, DeployResult, ModelInfo};
use crate::mqtt::{Message, Topics};
use crate::source::unix_ms;

/// Requests waiting for the worker; more are dropped with a warning.
const QUEUE: usize = 8;

/// Rollback request ids remembered, to act on each once.
const RECENT_IDS: usize = 32;

#[derive(Debug)]
pub enum Job {
    /// A bundle from a deploy topic. `retained`: the broker's stored copy, delivered on
    /// subscribing (after every reconnect), rather than one published just now.
    Bundle { bytes: bytes::Bytes, retained: bool },
    /// Back to the previous version of the named model ("": the only model served here).
    /// `id`: the request's, when it has one (the same request may come on several topics).
    Rollback { name: String, id: Option<String> },
}

/// A camera's model slot and the labels its configuration names.
pub struct DeployCamera {
    pub camera: String,
    pub slot: ModelSlot,
    pub labels: Vec<String>,
}

pub struct Deployer {
    pub device: String,
    pub settings: DeploySettings,
    pub cameras: Vec<DeployCamera>,
    pub topics: Topics,
    pub out: mpsc::Sender<Message>,
}

/// The worker's queue and its task.
pub struct DeployWorker {
    jobs: mpsc::Sender<Job>,
    task: tokio::task::JoinHandle<()>,
    /// Set when the daemon stops: jobs still queued are not started.
    closing: Arc<AtomicBool>,
}

impl DeployWorker {
    pub fn start(deployer: Deployer) -> DeployWorker {
        let (jobs, queue) = mpsc::channel(QUEUE);
        let closing = Arc::new(AtomicBool::new(false));
        DeployWorker { jobs, task: tokio::spawn(deployer.run(queue, closing.clone())), closing }
    }

    /// Queues a job without waiting: the control loop must not block.
    pub fn submit(&self, job: Job) {
        if let Err(e) = self.jobs.try_send(job) {
            log::warn!("a deploy request was dropped: {e}");
        }
    }

    /// Closes the queue (jobs not yet started are dropped, with a log line) and lets a job
    /// in progress finish (its result is published) until `deadline`; after that it is
    /// abandoned. An abandoned check may still complete on its blocking thread and record
    /// its version in the store, which the next start serves.
    pub async fn finish(self, deadline: tokio::time::Instant) {
        let DeployWorker { jobs, mut task, closing } = self;
        closing.store(true, Ordering::Relaxed);
        drop(jobs);
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            log::warn!("a deploy still being checked was abandoned at the drain deadline");
            task.abort();
        }
    }
}

impl Deployer {
    async fn run(self, mut queue: mpsc::Receiver<Job>, closing: Arc<AtomicBool>) {
        let mut recent_ids: VecDeque<String> = VecDeque::new();
        while let Some(job) = queue.recv().await {
            if closing.load(Ordering::Relaxed) {
                log::warn!("a deploy request was not processed: vigil is stopping");
                continue;
            }
            let state = match job {
                Job::Bundle { bytes, retained } => self.bundle(bytes, retained).await,
                Job::Rollback { id: Some(id), .. } if recent_ids.contains(&id) => {
                    log::info!("id={id} the same rollback request again (another topic); done once");
                    None
                }
                Job::Rollback { name, id } => {
                    if let Some(id) = id {
                        recent_ids.push_back(id);
                        if recent_ids.len() > RECENT_IDS {
                            recent_ids.pop_front();
                        }
                    }
                    self.rollback(name).await
                }
            };
            let Some(state) = state else { continue };
            let doc = serde_json::to_vec(&state).expect("deploy state serialises");
            let mut message = latest(self.topics.deploy_state(), doc);
            // "Already serving" answers whoever sent the bundle; it changes nothing, so it
            // does not replace the retained result of the last real change.
            if state.result == DeployResult::AlreadyServing {
                message.retain = false;
                message.class = crate::mqtt::Class::Transient;
            }
            if self.out.send(message).await.is_err() {
                return;
            }
        }
    }

    /// What each camera serves now, for the checks (taken when a job starts, so a job sees
    /// the result of the one before).
    fn serving(&self) -> Vec<ServingCamera> {
        self.cameras
            .iter()
            .map(|c| ServingCamera {
                camera: c.camera.clone(),
                model: c.slot.current().model.clone(),
                labels: c.labels.clone(),
            })
            .collect()
    }

    /// Swaps the model of `cameras` and announces it on each `…/<camera>/model`.
    async fn swap(&self, model: &Arc<Model>, cameras: &[String]) {
        for c in self.cameras.iter().filter(|c| cameras.contains(&c.camera)) {
            c.slot.swap(model.clone());
        }
        for camera in cameras {
            let _ = self.out.send(model_state(&self.topics, &self.device, camera, model)).await;
        }
    }

    fn state(&self, action: DeployAction) -> payload::DeployState {
        payload::DeployState {
            v: payload::VERSION,
            device: self.device.clone(),
            ts: unix_ms(),
            groups: self.settings.groups.clone(),
            action,
            result: DeployResult::Refused,
            name: None,
            version: None,
            reason: None,
            serving: None,
            previous: None,
            cameras: Vec::new(),
        }
    }

    async fn bundle(&self, bytes: bytes::Bytes, retained: bool) -> Option<payload::DeployState> {
        let size = bytes.len();
        let header = crate::deploy::bundle::peek(&bytes);
        let (settings, device, serving) = (self.settings.clone(), self.device.clone(), self.serving());
        let outcome = tokio::task::spawn_blocking(move || device::receive(&bytes, &settings, &device, &serving))
            .await
            .unwrap_or_else(|e| Err(DeployError::Internal(format!("the bundle check failed: {e}"))));
        let mut state = self.state(DeployAction::Deploy);
        state.name = header.as_ref().map(|h| h.name.clone());
        state.version = header.as_ref().map(|h| h.version.clone());
        match outcome {
            Ok(Outcome::AlreadyServing { model, cameras }) => {
                log::info!(
                    "model={} version={} retained={retained} bundle of the model in service; nothing to do",
                    model.manifest.name,
                    model.manifest.version
                );
                // Delivered again from the broker's store: not news. Published just now:
                // whoever sent it is waiting for an answer.
                if retained {
                    return None;
                }
                state.result = DeployResult::AlreadyServing;
                state.serving = Some(ModelInfo::of(&model));
                state.cameras = cameras;
            }
            Ok(Outcome::Accepted { model, cameras, previous, worst_diff }) => {
                self.swap(&model, &cameras).await;
                log::info!(
                    "model={} version={} previous={previous} cameras={} test_diff={worst_diff:.1e} bundle accepted; model swapped",
                    model.manifest.name,
                    model.manifest.version,
                    cameras.join(",")
                );
                state.result = DeployResult::Accepted;
                state.serving = Some(ModelInfo::of(&model));
                state.previous = Some(previous);
                state.cameras = cameras;
            }
            // A stale retained bundle (an older or withdrawn version, delivered again on
            // reconnecting) is not news: the state topic keeps the last real result.
            Err(e @ (DeployError::Older { .. } | DeployError::Withdrawn { .. })) if retained => {
                log::info!("bytes={size} retained bundle not applied: {e}");
                return None;
            }
            Err(e) => {
                log::warn!("bytes={size} bundle refused: {e}");
                state.reason = Some(e.to_string());
            }
        }
        Some(state)
    }

    async fn rollback(&self, name: String) -> Option<payload::DeployState> {
        let (settings, serving, asked) = (self.settings.clone(), self.serving(), name.clone());
        let outcome = tokio::task::spawn_blocking(move || device::rollback(&asked, &settings, &serving))
            .await
            .unwrap_or_else(|e| Err(DeployError::Internal(format!("the rollback failed: {e}"))));
        let mut state = self.state(DeployAction::Rollback);
        state.name = (!name.is_empty()).then_some(name);
        match outcome {
            Ok(RolledBack { model, cameras, from }) => {
                self.swap(&model, &cameras).await;
                log::info!(
                    "model={} version={} from={from} cameras={} rolled back",
                    model.manifest.name,
                    model.manifest.version,
                    cameras.join(",")
                );
                state.result = DeployResult::RolledBack;
                state.name = Some(model.manifest.name.clone());
                state.version = Some(model.manifest.version.clone());
                state.serving = Some(ModelInfo::of(&model));
                state.previous = Some(from);
                state.cameras = cameras;
            }
            Err(e) => {
                log::warn!("rollback refused: {e}");
                state.reason = Some(e.to_string());
            }
        }
        Some(state)
    }
}

/// The cameras a deploy may swap, from the running pipelines.
pub fn cameras(pipelines: &[super::Pipeline], labels: &BTreeMap<String, Vec<String>>) -> Vec<DeployCamera> {
    pipelines
        .iter()
        .map(|p| DeployCamera {
            camera: p.camera.clone(),
            slot: p.model.clone(),
            labels: labels.get(&p.camera).cloned().unwrap_or_default(),
        })
        .collect()
}
