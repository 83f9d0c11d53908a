//! `vigil run`: the daemon. It loads every camera's model, connects to the broker, starts
//! the pipelines, tells systemd it is ready, and then serves: commands, stats, watchdog
//! pings, and the signals (SIGTERM/SIGINT stop with a drain deadline, SIGHUP reloads).
//!
//! A reload reads and checks the new configuration and loads its models *before* touching
//! the running pipelines; if anything is wrong the old configuration keeps running.

pub mod bench;
pub mod broker;
mod deployer;
pub mod pipeline;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::QoS;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::config::{Config, ConfigError};
use crate::deploy::bundle::is_store_word;
use crate::deploy::store::{Choice, Store};
use crate::model::{Model, ModelError};
use crate::mqtt::journal::{EventJournal, JournalError, Sequence, SharedJournal};
use crate::mqtt::payload::{self, ModelInfo};
use crate::mqtt::publisher::Deadline;
use crate::mqtt::{
    discovery, link, Class, CollectCommand, Command, CommandKind, DeployTopics, Message, Publisher, PublisherStats,
    Topics,
};
use crate::service::logging::shown;
use crate::service::notify::Notifier;
use crate::source::unix_ms;
use deployer::{DeployWorker, Deployer, Job};
use pipeline::{counts_message, Pipeline, PipelineSpec};

/// Why the daemon could not start (or stopped).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("camera {camera}: {error}")]
    Model { camera: String, error: ModelError },
    #[error(transparent)]
    Mqtt(#[from] link::LinkError),
    #[error("{0}")]
    Broker(String),
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    /// The event journal cannot be used: the error names the file or folder in
    /// `mqtt.spool_dir` and what is wrong with it (exit 78, like a refused configuration).
    #[error("the event journal (mqtt.spool_dir) cannot be opened: {0}")]
    Journal(JournalError),
    /// A task the daemon cannot run without ended (the MQTT publisher): vigil stops, with a
    /// failure for systemd to restart it, rather than run on without publishing.
    #[error("{0}")]
    Died(String),
    /// A camera's configuration names labels its model does not have.
    #[error("{0}")]
    Labels(String),
    /// The model store cannot be read, so which version to serve cannot be decided.
    #[error("the model store (deploy.store) cannot be read, so vigil cannot tell which version to serve: {0}")]
    Store(crate::deploy::DeployError),
    /// A panic caught where it cannot take the daemon down.
    #[error("{0}")]
    Internal(String),
}

/// Pipeline → publisher channel size (messages). Lossless: a full channel makes inference wait.
const PIPELINE_CHANNEL: usize = 256;

/// Runs until SIGTERM or SIGINT.
pub async fn run(config_path: PathBuf, config: Config) -> Result<(), DaemonError> {
    let notifier = Notifier::from_env();
    let io = |what: &str| {
        let what = what.to_string();
        move |error| DaemonError::Io { what, error }
    };
    let mut term = signal(SignalKind::terminate()).map_err(io("SIGTERM handler"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(io("SIGINT handler"))?;
    let mut hup = signal(SignalKind::hangup()).map_err(io("SIGHUP handler"))?;

    let broker = config.broker.clone();
    if let Some(b) = &broker {
        let (b2, size) = (b.clone(), config.mqtt.max_packet_size);
        tokio::task::spawn_blocking(move || broker::start(&b2, size))
            .await
            .map_err(|e| DaemonError::Broker(format!("the embedded broker failed to start: {}", panic_text(e))))?
            .map_err(DaemonError::Broker)?;
    }
    notifier.status("loading models");
    let mut models = load_models(&config).await?;
    let (journal, sequence) = open_journal(&config.mqtt)?;
    let mut config = config;
    loop {
        let mut running = Running::start(&config, models, &journal, &sequence)?;
        let cameras = config.cameras.len();
        notifier.ready(&format!("running {cameras} camera(s), broker {}:{}", config.mqtt.host, config.mqtt.port));
        log::info!(
            "cameras={cameras} broker={}:{} prefix={} vigil is running",
            config.mqtt.host,
            config.mqtt.port,
            config.mqtt.topic_prefix
        );

        let watchdog = notifier.watchdog_interval();
        let mut watchdog_tick = tokio::time::interval(watchdog.map(|w| w / 2).unwrap_or(Duration::from_secs(3600)));
        let mut stats_tick = tokio::time::interval(config.mqtt.stats_interval);
        stats_tick.tick().await;
        let mut status_tick = tokio::time::interval(Duration::from_secs(10));
        // A reload checks the new configuration and loads its models in a task of its own, so
        // watchdog pings and commands carry on meanwhile.
        let mut reloading: Option<tokio::task::JoinHandle<Result<Reloaded, DaemonError>>> = None;
        let next = loop {
            tokio::select! {
                _ = term.recv() => break Ok(None),
                _ = int.recv() => break Ok(None),
                _ = hup.recv() => {
                    if reloading.is_some() {
                        log::warn!("SIGHUP: a reload is already in progress");
                    } else {
                        log::info!("path={} SIGHUP: reloading the configuration", config_path.display());
                        let path = config_path.clone();
                        reloading = Some(tokio::spawn(async move { reload(&path).await }));
                    }
                }
                done = async { reloading.as_mut().expect("guarded by is_some").await }, if reloading.is_some() => {
                    reloading = None;
                    match reload_outcome(done) {
                        Ok(reloaded) => break Ok(Some(reloaded)),
                        Err(e) => {
                            log::error!("the new configuration is refused; the running one stays: {e}");
                            notifier.status("reload refused; see the log");
                        }
                    }
                }
                died = publisher_end(&mut running.publisher) => break Err(died),
                Some(command) = running.commands.recv() => running.apply(command).await,
                _ = stats_tick.tick() => running.publish_stats().await,
                _ = watchdog_tick.tick(), if watchdog.is_some() => {
                    let stalled = running.stalled(config.service.stall_timeout);
                    if stalled.is_empty() {
                        notifier.watchdog();
                    } else {
                        log::error!("no watchdog ping: {} stalled; systemd will restart vigil", stalled.join(", "));
                        notifier.status(&format!("stalled: {}", stalled.join(", ")));
                    }
                }
                _ = status_tick.tick() => notifier.status(&running.status_line()),
            }
        };
        match next {
            Err(died) => {
                log::error!("{died}; vigil stops, to be restarted (by systemd's Restart=)");
                notifier.stopping("stopping: the MQTT publisher ended");
                running.stop(config.service.drain_timeout).await;
                return Err(died);
            }
            Ok(None) => {
                notifier.stopping("stopping: draining the pipelines");
                log::info!("stopping");
                running.stop(config.service.drain_timeout).await;
                return Ok(());
            }
            Ok(Some((new, mut new_models))) => {
                notifier.status("reloading: restarting the pipelines");
                running.stop(config.service.drain_timeout).await;
                if store_moved(&new, &new_models) {
                    log::info!("a deploy or rollback finished during the reload: choosing the models again");
                    match load_models(&new).await {
                        Ok(models) => new_models = models,
                        Err(e) => {
                            log::error!("the models do not load again ({e}); serving those loaded for the reload")
                        }
                    }
                }
                if new.broker != broker {
                    log::warn!("[broker] changed: the embedded broker keeps its old settings until vigil restarts");
                }
                if (&new.mqtt.spool_dir, new.mqtt.spool_bytes) != (&config.mqtt.spool_dir, config.mqtt.spool_bytes) {
                    log::warn!("mqtt.spool_dir/spool_bytes changed: the event journal keeps its old place until vigil restarts");
                }
                log::set_max_level(new.log_level);
                config = new;
                models = new_models;
            }
        }
    }
}

/// One malloc arena for the whole process, unless the environment chose (`MALLOC_ARENA_MAX`,
/// `GLIBC_TUNABLES`). glibc gives each thread that allocates an arena of its own, up to eight
/// per core, and each keeps the model activations its thread freed: the demo configuration
/// (NanoDet-m, two frames in flight) held 148–175 MB with the default or two arenas and
/// 119 MB with one, for the same CPU (docs/performance.md). Call it before any thread starts.
pub fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() || std::env::var_os("GLIBC_TUNABLES").is_some() {
            return;
        }
        extern "C" {
            fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
        }
        const M_ARENA_MAX: std::ffi::c_int = -8;
        // SAFETY: mallopt only sets a limit glibc reads when a thread first allocates.
        unsafe { mallopt(M_ARENA_MAX, 1) };
    }
}

/// With deploys on: keeps the configured model in the store (so a rollback can return to
/// it) and serves the store's current version when that was deployed after it. A store that
/// cannot be read is an error: serving the configured version might serve one rolled back.
fn deployed(store: &Store, configured: Arc<Model>, manifest: &Path) -> Result<Arc<Model>, DaemonError> {
    let (name, version) = (configured.manifest.name.clone(), configured.manifest.version.clone());
    if !is_store_word(&name) || !is_store_word(&version) {
        log::error!(
            "model={name:?} version={version:?} not a plain folder name (letters, digits, '.', '-', '_', '+'): \
             this model is served as configured, and deploys and rollbacks of it are off"
        );
        return Ok(configured);
    }
    if let Err(e) = store.keep(&configured, manifest) {
        log::error!("model={name} version={version} cannot keep the configured model in the store: {e}");
    }
    let serve_configured = |configured: Arc<Model>| {
        if let Err(e) = store.put_in_service(&name, &version) {
            log::error!("model={name} version={version} cannot record it in the store: {e}");
        }
        configured
    };
    Ok(match store.choose_at_start(&name, &version).map_err(DaemonError::Store)? {
        Choice::Configured => serve_configured(configured),
        Choice::Stored { version: stored, manifest } => {
            match Model::load(&manifest) {
                Ok(m) => {
                    log::info!("model={name} version={stored} configured={version} serving the deployed version from the store");
                    Arc::new(m)
                }
                Err(e) => {
                    log::error!(
                        "path={} the stored model does not load ({e}); serving the configured one",
                        manifest.display()
                    );
                    serve_configured(configured)
                }
            }
        }
    })
}

/// True when a deploy or rollback finished after `models` were chosen from the store (it
/// ran while a reload loaded them): they must be chosen again.
fn store_moved(config: &Config, models: &BTreeMap<String, Arc<Model>>) -> bool {
    let Some(d) = &config.deploy else { return false };
    let store = Store::new(&d.store);
    // A store that cannot be read: the models are chosen again, and that says why.
    models
        .values()
        .any(|m| store.current(&m.manifest.name).map_or(true, |v| v.is_some_and(|v| v != m.manifest.version)))
}

/// Loads each camera's model once per manifest path (or its deployed version), off the
/// async workers.
async fn load_models(config: &Config) -> Result<BTreeMap<String, Arc<Model>>, DaemonError> {
    let wanted: Vec<(String, PathBuf, crate::config::CameraSettings)> =
        config.cameras.iter().map(|(c, s)| (c.clone(), s.model.clone(), s.clone())).collect();
    let store = config.deploy.as_ref().map(|d| Store::new(&d.store));
    tokio::task::spawn_blocking(move || {
        let mut by_path: BTreeMap<PathBuf, Arc<Model>> = BTreeMap::new();
        let mut out = BTreeMap::new();
        for (camera, path, settings) in wanted {
            let model = match by_path.get(&path) {
                Some(m) => m.clone(),
                None => {
                    let m = Arc::new(
                        Model::load(&path).map_err(|error| DaemonError::Model { camera: camera.clone(), error })?,
                    );
                    let m = match &store {
                        Some(store) => deployed(store, m, &path)?,
                        None => m,
                    };
                    log::info!(
                        "camera={camera} model={} version={} sha256={} model loaded",
                        m.manifest.name,
                        m.manifest.version,
                        m.short_hash()
                    );
                    by_path.insert(path, m.clone());
                    m
                }
            };
            check_labels(&camera, &settings, &model).map_err(DaemonError::Labels)?;
            out.insert(camera, model);
        }
        Ok(out)
    })
    .await
    .map_err(|e| DaemonError::Internal(format!("loading the models failed: {}", panic_text(e))))?
}

/// Opens the event journal (kept for the life of the process, across reloads) and the
/// event numbering that continues from it.
fn open_journal(mqtt: &crate::config::MqttSettings) -> Result<(SharedJournal, Arc<Sequence>), DaemonError> {
    let opened = EventJournal::open(&mqtt.spool_dir, mqtt.spool_bytes).map_err(DaemonError::Journal)?;
    log::info!(
        "path={} pending={} damaged={} event journal opened",
        mqtt.spool_dir.display(),
        opened.pending.len(),
        opened.damaged
    );
    let journal: SharedJournal = Arc::new(std::sync::Mutex::new(opened.journal));
    let sequence = Arc::new(Sequence::new(journal.clone()));
    Ok((journal, sequence))
}

/// A checked configuration with its models loaded.
type Reloaded = (Config, BTreeMap<String, Arc<Model>>);

/// What a reload task came to. A panic while loading (a bug, or a model that trips one in
/// the runtime) refuses the reload like any other problem: the running configuration stays.
fn reload_outcome(
    done: Result<Result<Reloaded, DaemonError>, tokio::task::JoinError>,
) -> Result<Reloaded, DaemonError> {
    done.unwrap_or_else(|e| Err(DaemonError::Internal(format!("loading it failed: {}", panic_text(e)))))
}

/// Waits for the publisher task to end, which it must not while its configuration runs,
/// and says how it ended: the select loop's watch on it. Once it has ended (`None`), this
/// waits forever.
async fn publisher_end(publisher: &mut Option<tokio::task::JoinHandle<()>>) -> DaemonError {
    let Some(handle) = publisher.as_mut() else { return std::future::pending().await };
    let done = handle.await;
    *publisher = None;
    DaemonError::Died(match done {
        Ok(()) => "the MQTT publisher task ended while vigil was running".into(),
        Err(e) => format!("the MQTT publisher task failed: {}", panic_text(e)),
    })
}

/// The message of a task that panicked (or "cancelled").
fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into()),
        Err(_) => "cancelled".into(),
    }
}

/// Everything that can refuse a configuration, done before the running one is touched:
/// the checks, the MQTT options (TLS files parsed), the models.
async fn reload(path: &Path) -> Result<Reloaded, DaemonError> {
    let path = path.to_path_buf();
    let config = tokio::task::spawn_blocking(move || Config::load(&path))
        .await
        .map_err(|e| DaemonError::Internal(format!("reading it failed: {}", panic_text(e))))??;
    link::options(&config.mqtt, &Topics { prefix: config.mqtt.topic_prefix.clone() })?;
    let models = load_models(&config).await?;
    Ok((config, models))
}

/// One configuration's worth of running parts.
struct Running {
    device: String,
    topics: Topics,
    qos: QoS,
    pipelines: Vec<Pipeline>,
    out: mpsc::Sender<Message>,
    commands: mpsc::Receiver<Command>,
    /// None once it has ended (watched by the select loop).
    publisher: Option<tokio::task::JoinHandle<()>>,
    publisher_deadline: Deadline,
    link: tokio::task::JoinHandle<()>,
    publisher_stats: Arc<PublisherStats>,
    /// Checks and applies deploys and rollbacks, when deploys are on.
    deployer: Option<DeployWorker>,
    spool_capacity: usize,
    started: Instant,
    last_stats: (Instant, BTreeMap<String, u64>),
}

impl Running {
    fn start(
        config: &Config,
        models: BTreeMap<String, Arc<Model>>,
        journal: &SharedJournal,
        sequence: &Arc<Sequence>,
    ) -> Result<Running, DaemonError> {
        let topics = Topics { prefix: config.mqtt.topic_prefix.clone() };
        let (command_tx, commands) = mpsc::channel(64);
        // Delivery proofs: one per event, read at once by the publisher.
        let (echo_tx, echoes) = mpsc::channel(1024);
        let options = link::options(&config.mqtt, &topics)?;
        let deploy_topics = match &config.deploy {
            None => DeployTopics::default(),
            Some(d) => {
                let groups = d.groups.iter().map(|g| crate::mqtt::group_deploy(&d.group_prefix, g));
                let bundles: Vec<String> = std::iter::once(topics.deploy()).chain(groups).collect();
                let rollbacks = bundles.iter().map(|t| crate::mqtt::rollback_of(t)).collect();
                DeployTopics { bundles, rollbacks }
            }
        };
        let link =
            link::start(options, topics.clone(), command_tx, echo_tx, deploy_topics, config.mqtt.max_packet_size);
        let device = config.device_id.clone();
        let now = unix_ms();
        let mut announce = vec![availability(&topics, "online")];
        if config.mqtt.discovery {
            for (topic, doc) in discovery::configs(config, &topics) {
                announce.push(latest(topic, serde_json::to_vec(&doc).expect("discovery serialises")));
            }
        }
        for (camera, settings) in &config.cameras {
            let model = &models[camera];
            announce.push(model_state(&topics, &device, camera, model));
            announce.push(counts_message(&topics, &device, camera, &BTreeMap::new(), now));
            announce.push(latest(topics.state(camera, "detect"), on_off(settings.detect)));
            let threshold = pipeline::starting_threshold(settings, model);
            announce.push(latest(topics.state(camera, "threshold"), format!("{threshold}").into_bytes()));
        }
        // The announcements go first, so the channel is made to hold them all.
        let (out, messages) = mpsc::channel(PIPELINE_CHANNEL.max(announce.len()));
        for m in announce {
            out.try_send(m).expect("the fresh channel holds every announcement");
        }
        let publisher =
            Publisher::new(link.client.clone(), link.state.clone(), journal.clone(), &topics, config.mqtt.spool_events);
        let publisher_stats = publisher.stats();
        let farewell = availability(&topics, "offline");
        let publisher_deadline = Deadline::default();
        let publisher = tokio::spawn(publisher.run(messages, echoes, farewell, publisher_deadline.clone()));

        let mut pipelines = Vec::new();
        for (camera, settings) in &config.cameras {
            let pipeline = Pipeline::start(PipelineSpec {
                camera,
                device: &device,
                settings,
                model: models[camera].clone(),
                topics: &topics,
                qos: qos(config.mqtt.qos),
                max_packet: config.mqtt.max_packet_size,
                out: out.clone(),
                sequence: sequence.clone(),
                cpu_share: pipeline::cpu_share(config.cameras.len()),
            })
            .map_err(|error| DaemonError::Io { what: format!("starting camera {camera}"), error })?;
            if let Some(collect) = &pipeline.collect {
                // Behind the announcements; the channel holds them (a camera's first frames
                // come later).
                let _ = out.try_send(pipeline::collect_state_message(&topics, &device, camera, collect));
            }
            pipelines.push(pipeline);
        }
        let deployer = config.deploy.as_ref().map(|settings| {
            let labels = config.cameras.iter().map(|(c, s)| (c.clone(), labels_named(s))).collect();
            DeployWorker::start(Deployer {
                device: device.clone(),
                settings: settings.clone(),
                cameras: deployer::cameras(&pipelines, &labels),
                topics: topics.clone(),
                out: out.clone(),
            })
        });
        Ok(Running {
            device,
            topics,
            qos: qos(config.mqtt.qos),
            pipelines,
            out,
            commands,
            publisher: Some(publisher),
            publisher_deadline,
            link: link.task,
            publisher_stats,
            deployer,
            spool_capacity: config.mqtt.spool_events,
            started: Instant::now(),
            last_stats: (Instant::now(), BTreeMap::new()),
        })
    }

    async fn apply(&mut self, command: Command) {
        let job = match command.kind {
            CommandKind::Deploy { bytes, retained } => Job::Bundle { bytes, retained },
            CommandKind::Rollback { name, id } => Job::Rollback { name, id },
            kind => return self.apply_setting(&command.camera, kind).await,
        };
        match &self.deployer {
            Some(d) => d.submit(job),
            None => log::warn!("a deploy request arrived, but deploys are off (no deploy.trusted_keys)"),
        }
    }

    /// A camera setting from a `…/<camera>/<setting>/set` command, confirmed on its state topic.
    async fn apply_setting(&mut self, camera: &str, kind: CommandKind) {
        // The camera comes from a topic: shown escaped, like the payload.
        if let CommandKind::Invalid { setting, why } = kind {
            log::warn!("camera={} setting={setting} command refused: {why}", shown(camera.as_bytes()));
            return;
        }
        let Some(p) = self.pipelines.iter().find(|p| p.camera == camera) else {
            log::warn!("camera={} command for a camera this device does not have", shown(camera.as_bytes()));
            return;
        };
        let (setting, value) = match kind {
            CommandKind::Detect(on) => {
                p.control.detect.store(on, Ordering::Relaxed);
                ("detect", on_off(on))
            }
            CommandKind::Threshold(t) => {
                *p.control.threshold.lock().unwrap() = t;
                ("threshold", format!("{t}").into_bytes())
            }
            CommandKind::Collect(what) => {
                let Some(collect) = &p.collect else {
                    log::warn!(
                        "camera={camera} setting=collect command refused: the camera collects nothing (no \
                         [cameras.{camera}.collect] table, or its collection could not start: see the log)"
                    );
                    return;
                };
                match what {
                    CollectCommand::On => collect.enabled.store(true, Ordering::Relaxed),
                    CollectCommand::Off => collect.enabled.store(false, Ordering::Relaxed),
                    // Answered with the item's id once the frame is saved.
                    CollectCommand::Now => collect.requested.store(true, Ordering::Relaxed),
                }
                log::info!("camera={camera} setting=collect value={what:?} command applied");
                let message = pipeline::collect_state_message(&self.topics, &self.device, camera, collect);
                let _ = self.out.send(message).await;
                return;
            }
            CommandKind::Deploy { .. } | CommandKind::Rollback { .. } | CommandKind::Invalid { .. } => {
                unreachable!("deploy requests go to apply, refusals are logged above")
            }
        };
        log::info!("camera={camera} setting={setting} value={} command applied", String::from_utf8_lossy(&value));
        let _ = self.out.send(latest(self.topics.state(camera, setting), value)).await;
    }

    fn stalled(&self, limit: Duration) -> Vec<String> {
        self.pipelines.iter().flat_map(|p| p.stalled(limit)).collect()
    }

    fn status_line(&self) -> String {
        let fps: Vec<String> = self
            .pipelines
            .iter()
            .map(|p| format!("{} {} inferences", p.camera, p.counters.inferred.load(Ordering::Relaxed)))
            .collect();
        format!("running: {}; {} events spooled", fps.join(", "), self.publisher_stats.spooled.load(Ordering::Relaxed))
    }

    async fn publish_stats(&mut self) {
        let (since, previous) = &self.last_stats;
        let interval = since.elapsed();
        let mut cameras = BTreeMap::new();
        let mut now_counts = BTreeMap::new();
        for p in &self.pipelines {
            let inferred = p.counters.inferred.load(Ordering::Relaxed);
            let delta = inferred - previous.get(&p.camera).copied().unwrap_or(0);
            cameras.insert(p.camera.clone(), p.stats(delta, interval));
            now_counts.insert(p.camera.clone(), inferred);
        }
        self.last_stats = (Instant::now(), now_counts);
        let s = &self.publisher_stats;
        let doc = payload::Stats {
            v: payload::VERSION,
            device: &self.device,
            ts: unix_ms(),
            version: env!("CARGO_PKG_VERSION"),
            uptime_s: (self.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            memory_bytes: payload::resident_memory(),
            cameras,
            mqtt: payload::MqttStats {
                spooled: s.spooled.load(Ordering::Relaxed),
                spool_capacity: self.spool_capacity,
                spool_lost: s.spool_lost.load(Ordering::Relaxed) + s.journal_lost.load(Ordering::Relaxed),
                skipped: s.skipped.load(Ordering::Relaxed),
                reconnects: s.reconnects.load(Ordering::Relaxed),
            },
        };
        let message = Message {
            topic: self.topics.stats(),
            payload: serde_json::to_vec(&doc).expect("stats serialise"),
            qos: self.qos,
            retain: false,
            class: Class::Transient,
        };
        let _ = self.out.send(message).await;
    }

    /// Stops the sources, lets inference finish (ending its tracks), then lets the publisher
    /// drain and say "offline" — all within `deadline`; names whatever did not finish.
    async fn stop(self, deadline: Duration) {
        let limit = tokio::time::Instant::now() + deadline;
        let Running { pipelines, out, publisher, publisher_deadline, link, deployer, .. } = self;
        let _ = publisher_deadline.set(limit);
        for p in &pipelines {
            p.request_stop();
        }
        let names: Vec<String> = pipelines.iter().map(|p| p.camera.clone()).collect();
        let joined = tokio::task::spawn_blocking(move || pipelines.into_iter().for_each(Pipeline::join));
        if tokio::time::timeout_at(limit, joined).await.is_err() {
            log::error!("cameras={} the pipelines did not stop within the drain deadline", names.join(","));
        }
        if let Some(deployer) = deployer {
            // It holds a sender of `out`: the publisher drains only once it has finished. It
            // gets half of the time left, the publisher the rest.
            let now = tokio::time::Instant::now();
            deployer.finish(now + limit.saturating_duration_since(now) / 2).await;
        }
        drop(out);
        if let Some(mut publisher) = publisher {
            if tokio::time::timeout_at(limit + Duration::from_millis(200), &mut publisher).await.is_err() {
                log::error!("the MQTT publisher did not finish within the drain deadline; unsent messages are lost");
                publisher.abort();
            }
        }
        let mut link = link;
        if tokio::time::timeout(Duration::from_secs(1), &mut link).await.is_err() {
            log::warn!("the MQTT connection did not close cleanly; the broker will publish the last will");
            link.abort();
        }
    }
}

/// `…/<camera>/model` (retained): the model serving a camera.
fn model_state(topics: &Topics, device: &str, camera: &str, model: &Model) -> Message {
    let info = ModelInfo::of(model);
    let doc = payload::ModelState {
        v: payload::VERSION,
        device,
        camera,
        ts: unix_ms(),
        model: &info,
        task: match model.manifest.task {
            crate::model::Task::Classify => "classify",
            crate::model::Task::Detect => "detect",
        },
        labels: model.manifest.labels.len(),
    };
    latest(topics.model(camera), serde_json::to_vec(&doc).expect("model state serialises"))
}

/// Every label a camera's configuration names (labels, filters, zones) must be one of its
/// model's: a filter on a label the model does not have would never match.
pub(crate) fn check_labels(
    camera: &str,
    settings: &crate::config::CameraSettings,
    model: &Model,
) -> Result<(), String> {
    if settings.collect.is_some() && model.manifest.task == crate::model::manifest::Task::Classify {
        return Err(format!(
            "cameras.{camera}.collect: collection saves boxes as pre-labels, and {} {} is a classifier: \
             remove [cameras.{camera}.collect] (collection is for detectors)",
            model.manifest.name, model.manifest.version
        ));
    }
    let missing: Vec<String> =
        labels_named(settings).into_iter().filter(|l| !model.manifest.labels.contains(l)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "cameras.{camera}: names label(s) {} that {} {} does not have",
        missing.iter().map(|l| shown(l.as_bytes())).collect::<Vec<_>>().join(", "),
        model.manifest.name,
        model.manifest.version
    ))
}

/// The labels a camera's configuration names: its label list, filters and zone labels.
fn labels_named(settings: &crate::config::CameraSettings) -> Vec<String> {
    let mut labels: Vec<String> = settings.labels.clone();
    labels.extend(settings.filters.keys().cloned());
    labels.extend(settings.zones.iter().flat_map(|z| z.labels.iter().cloned()));
    labels.sort();
    labels.dedup();
    labels
}

fn qos(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn on_off(on: bool) -> Vec<u8> {
    if on {
        b"ON".to_vec()
    } else {
        b"OFF".to_vec()
    }
}

fn latest(topic: String, payload: Vec<u8>) -> Message {
    Message { topic, payload, qos: QoS::AtLeastOnce, retain: true, class: Class::Latest }
}

fn availability(topics: &Topics, state: &str) -> Message {
    Message {
        topic: topics.availability(),
        payload: state.as_bytes().to_vec(),
        qos: QoS::AtLeastOnce,
        retain: true,
        class: Class::Latest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reload whose loading panics is refused like a bad configuration.
    #[tokio::test]
    async fn a_panic_while_reloading_refuses_the_reload() {
        let task = tokio::spawn(async { panic!("an absurd model") });
        let e = reload_outcome(task.await).unwrap_err();
        assert_eq!(e.to_string(), "loading it failed: an absurd model");
        let task = tokio::spawn(async { panic!("{} anchors", 7) });
        assert!(reload_outcome(task.await).unwrap_err().to_string().contains("7 anchors"));
    }

    /// The select loop's watch on the publisher: nothing while it runs; its end (a panic, or
    /// returning while it should run) is an error naming it, once (the handle is not polled
    /// again), which `run` returns after stopping the rest (exit 1 for systemd's Restart=).
    #[tokio::test]
    async fn a_publisher_that_ends_stops_the_daemon_naming_it() {
        async fn waits(publisher: &mut Option<tokio::task::JoinHandle<()>>) -> bool {
            tokio::time::timeout(Duration::from_millis(100), publisher_end(publisher)).await.is_err()
        }
        let mut publisher = Some(tokio::spawn(std::future::pending::<()>()));
        assert!(waits(&mut publisher).await, "a running publisher is no error");
        assert!(publisher.is_some(), "kept for the stop");
        let mut publisher = Some(tokio::spawn(async { panic!("attempt to add with overflow") }));
        let e = publisher_end(&mut publisher).await;
        assert_eq!(e.to_string(), "the MQTT publisher task failed: attempt to add with overflow");
        assert!(matches!(e, DaemonError::Died(_)) && publisher.is_none());
        assert!(waits(&mut publisher).await, "said once");
        let mut publisher = Some(tokio::spawn(async {}));
        let e = publisher_end(&mut publisher).await;
        assert_eq!(e.to_string(), "the MQTT publisher task ended while vigil was running");
    }
}
