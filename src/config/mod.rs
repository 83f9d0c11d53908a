//! The daemon's configuration: a TOML file plus `VIGIL__SECTION__KEY` environment overrides,
//! read in two phases. [`raw`] holds the serde structs exactly as written (unknown keys are
//! collected, not silently dropped); [`Config::load`] merges, deserialises section by section
//! and checks every value, so one run reports every problem with its key path.
//!
//! The keys are documented one by one in docs/config.md.

mod raw;

pub(crate) use raw::parse_url;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::detect::motion::MotionSettings;
use crate::detect::{LabelFilter, Polygon, TrackerSettings, Zone};

/// Why a configuration was refused: every problem found, each naming its key.
#[derive(Debug, thiserror::Error)]
#[error("configuration {path} has {} problem(s):\n  - {}", problems.len(), problems.join("\n  - "))]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<String>,
}

/// A checked configuration: every path exists, every number is in range.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub device_id: String,
    pub log_level: log::LevelFilter,
    pub mqtt: MqttSettings,
    pub broker: Option<BrokerSettings>,
    pub service: ServiceSettings,
    /// Keyed by camera id (the name used in topics).
    pub cameras: BTreeMap<String, CameraSettings>,
    /// Model deploys over MQTT; None when no key is trusted.
    pub deploy: Option<DeploySettings>,
}

/// `[deploy]`: who may deploy models to this device, and where they are kept.
#[derive(Debug, Clone, PartialEq)]
pub struct DeploySettings {
    pub trusted_keys: Vec<ed25519_dalek::VerifyingKey>,
    /// Groups this device belongs to (bundles for a group reach all its devices).
    pub groups: Vec<String>,
    pub max_bundle_bytes: usize,
    /// Versioned model store: `<store>/<model name>/<version>/`.
    pub store: PathBuf,
    /// Group deploy topics are `<group_prefix>/<group>/deploy`.
    pub group_prefix: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MqttSettings {
    pub host: String,
    pub port: u16,
    pub tls: Option<TlsSettings>,
    pub client_id: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub topic_prefix: String,
    pub qos: u8,
    pub keep_alive: Duration,
    pub max_packet_size: usize,
    /// Events held until the broker has them (the event journal's count bound).
    pub spool_events: usize,
    /// The event journal's folder, and its bound on disk.
    pub spool_dir: PathBuf,
    pub spool_bytes: u64,
    pub stats_interval: Duration,
    pub discovery: bool,
    pub discovery_prefix: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    /// PEM CA bundle; None: the built-in webpki roots are not bundled, so a CA is required.
    pub ca_file: PathBuf,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// The embedded broker (rumqttd).
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerSettings {
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSettings {
    /// A camera whose pipeline makes no progress for this long stops the watchdog pings.
    pub stall_timeout: Duration,
    /// How long SIGTERM waits for the pipeline and the publisher to finish.
    pub drain_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CameraSettings {
    pub source: crate::source::SourceSettings,
    /// The model manifest.
    pub model: PathBuf,
    /// Most inferences per second.
    pub fps: f64,
    pub detect: bool,
    /// Only these labels are reported (empty: all).
    pub labels: Vec<String>,
    /// Minimum score for every label (default: the model's threshold).
    pub min_score: Option<f32>,
    pub filters: BTreeMap<String, LabelFilter>,
    pub zones: Vec<Zone>,
    pub masks: Vec<Polygon>,
    pub tracker: TrackerSettings,
    pub snapshots: bool,
    pub snapshot_quality: u8,
    /// CPU threads this camera's inference uses.
    pub threads: Count,
    /// Frames inferred at once (each on its share of `threads`).
    pub in_flight: Count,
    /// Motion gating; `None`: the model runs on every frame.
    pub motion: Option<MotionSettings>,
    /// Collection of frames for labelling; `None`: no `[cameras.<id>.collect]` table.
    pub collect: Option<crate::collect::CollectSettings>,
}

/// A count that is either given or left to vigil.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    Auto,
    Fixed(usize),
}

impl Config {
    /// Reads `path`, applies `VIGIL__…` overrides from the process environment and checks it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let (env, problems) = overrides(std::env::vars_os());
        let loaded = Config::load_with_env(path, &env);
        match (loaded, problems.is_empty()) {
            (loaded, true) => loaded,
            (Ok(_), false) => Err(ConfigError { path: path.to_path_buf(), problems }),
            (Err(mut e), false) => {
                e.problems.splice(0..0, problems);
                Err(e)
            }
        }
    }

    /// As [`Config::load`], with the environment given.
    pub fn load_with_env(path: &Path, env: &[(String, String)]) -> Result<Config, ConfigError> {
        let fail = |problems: Vec<String>| ConfigError { path: path.to_path_buf(), problems };
        let bytes =
            crate::files::read_capped(path, MAX_FILE).map_err(|e| fail(vec![format!("cannot read the file: {e}")]))?;
        let text =
            String::from_utf8(bytes).map_err(|_| fail(vec!["cannot read the file: it is not UTF-8 text".into()]))?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let dir = if dir.as_os_str().is_empty() { PathBuf::from(".") } else { dir };
        Config::from_toml(&text, &dir, env).map_err(fail)
    }

    /// Parses and checks TOML text; relative paths are taken from `dir`.
    pub fn from_toml(text: &str, dir: &Path, env: &[(String, String)]) -> Result<Config, Vec<String>> {
        let value = merge(text, env)?;
        raw::check(value, dir)
    }
}

/// The largest configuration file read.
const MAX_FILE: u64 = 1 << 20;

/// The environment variables that override configuration keys: `VIGIL__MQTT__URL` sets
/// `mqtt.url`, `VIGIL__CAMERAS__FRONT__FPS` sets `cameras.front.fps`.
const ENV_PREFIX: &str = "VIGIL__";

/// The `VIGIL__…` variables of an environment as text, and a problem for each that is not
/// UTF-8 (named with the invalid bytes replaced). Other variables are none of vigil's business,
/// whatever their bytes.
fn overrides(
    vars: impl Iterator<Item = (std::ffi::OsString, std::ffi::OsString)>,
) -> (Vec<(String, String)>, Vec<String>) {
    use std::os::unix::ffi::OsStrExt;
    let mut env = Vec::new();
    let mut problems = Vec::new();
    for (key, value) in vars {
        if !key.as_bytes().starts_with(ENV_PREFIX.as_bytes()) {
            continue;
        }
        match (key.into_string(), value.into_string()) {
            (Ok(k), Ok(v)) => env.push((k, v)),
            (Ok(k), Err(_)) => problems.push(format!("{k}: the environment variable's value is not UTF-8")),
            (Err(k), _) => problems.push(format!(
                "{}: an environment variable whose name is not UTF-8",
                crate::service::logging::shown(k.as_bytes())
            )),
        }
    }
    (env, problems)
}

/// Every number that is NaN or infinite, by key: they cannot pass through the JSON tree the
/// checks read (they would become "unset", and so a default), so they are refused here.
fn non_finite(text: &str, env: &[(String, String)]) -> Vec<String> {
    fn walk(value: &toml::Value, key: &str, problems: &mut Vec<String>) {
        match value {
            toml::Value::Float(f) if !f.is_finite() => problems.push(format!("{key}: {f} is not a finite number")),
            toml::Value::Table(t) => t.iter().for_each(|(k, v)| walk(v, &format!("{key}.{k}"), problems)),
            toml::Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| walk(v, &format!("{key}[{i}]"), problems)),
            _ => {}
        }
    }
    let mut problems = Vec::new();
    if let Ok(table) = toml::from_str::<toml::Table>(text) {
        for (k, v) in &table {
            walk(v, k, &mut problems);
        }
    }
    for (k, v) in env.iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)) {
        // The override is parsed as a number when it reads as one, and "nan" or "inf" do.
        if v.trim().parse::<f64>().is_ok_and(|f| !f.is_finite()) {
            problems.push(format!(
                "{k}: {v} reads as a number that is not finite (set such text in the file, not the environment)"
            ));
        }
    }
    problems
}

/// The file and the environment overrides, merged by the `config` crate into one JSON tree.
fn merge(text: &str, env: &[(String, String)]) -> Result<serde_json::Value, Vec<String>> {
    let problems = non_finite(text, env);
    if !problems.is_empty() {
        return Err(problems);
    }
    let overrides: config::Map<String, String> =
        env.iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).map(|(k, v)| (k.clone(), v.clone())).collect();
    let merged = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .add_source(
            config::Environment::with_prefix("VIGIL")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(overrides)),
        )
        .build()
        .map_err(|e| vec![format!("not valid TOML: {e}")])?;
    merged.try_deserialize::<serde_json::Value>().map_err(|e| vec![format!("{e}")])
}

#[cfg(test)]
mod tests;
