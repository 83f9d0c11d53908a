//! Phase one and two of reading a configuration: serde structs exactly as written, then the
//! checks that turn them into a [`Config`].
//!
//! Each section is deserialised on its own so a type error in one camera does not hide the
//! problems of the others, and unknown keys are collected with `serde_ignored` (rather than
//! `deny_unknown_fields`, which stops at the first one) so all of them are reported together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::*;
use crate::detect::{LabelFilter, Polygon, TrackerSettings, Zone};
use crate::mqtt::is_topic_word;
use crate::service::logging::shown;
use crate::settings::{resolve, section, MIN_FPS};

#[derive(Debug, Default, Deserialize)]
struct RawTop {
    device_id: Option<String>,
    log_level: Option<String>,
    mqtt: Option<Value>,
    broker: Option<Value>,
    service: Option<Value>,
    cameras: Option<BTreeMap<String, Value>>,
    deploy: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct RawDeploy {
    trusted_keys: Option<Vec<String>>,
    groups: Option<Vec<String>>,
    max_bundle_bytes: Option<usize>,
    store: Option<PathBuf>,
    group_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawMqtt {
    url: Option<String>,
    client_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    topic_prefix: Option<String>,
    qos: Option<u8>,
    keep_alive_s: Option<u64>,
    max_packet_size: Option<usize>,
    spool_events: Option<usize>,
    spool_dir: Option<PathBuf>,
    spool_bytes: Option<u64>,
    stats_interval_s: Option<f64>,
    discovery: Option<bool>,
    discovery_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawBroker {
    enabled: Option<bool>,
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct RawService {
    stall_timeout_s: Option<f64>,
    drain_timeout_s: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawCamera {
    source: Option<Value>,
    model: Option<PathBuf>,
    fps: Option<f64>,
    detect: Option<bool>,
    labels: Option<Vec<String>>,
    min_score: Option<f32>,
    filters: Option<BTreeMap<String, RawFilter>>,
    zones: Option<Vec<RawZone>>,
    masks: Option<Vec<RawMask>>,
    tracker: Option<RawTracker>,
    snapshots: Option<bool>,
    snapshot_quality: Option<u8>,
    threads: Option<Value>,
    in_flight: Option<Value>,
    motion: Option<RawMotion>,
    collect: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct RawMotion {
    enabled: Option<bool>,
    threshold: Option<f32>,
    min_area: Option<f32>,
    max_interval_s: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
struct RawFilter {
    min_score: Option<f32>,
    min_area: Option<f32>,
    max_area: Option<f32>,
}

#[derive(Debug, Default, Deserialize)]
struct RawZone {
    name: Option<String>,
    points: Option<Vec<[f64; 2]>>,
    labels: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawMask {
    points: Option<Vec<[f64; 2]>>,
}

#[derive(Debug, Default, Deserialize)]
struct RawTracker {
    iou: Option<f32>,
    min_hits: Option<u32>,
    max_misses: Option<u32>,
    move_iou: Option<f32>,
}

fn empty() -> Value {
    Value::Object(serde_json::Map::new())
}

fn seconds(v: f64, key: &str, problems: &mut Vec<String>) -> Duration {
    if !(0.01..=86_400.0).contains(&v) {
        problems.push(format!("{key}: {v} must be between 0.01 and 86400 seconds"));
        return Duration::from_secs(1);
    }
    Duration::from_secs_f64(v)
}

/// Checks a merged configuration tree; every problem is collected before failing.
pub(super) fn check(value: Value, dir: &Path) -> Result<Config, Vec<String>> {
    let mut problems = Vec::new();
    let top: RawTop = section(value, "", &mut problems).unwrap_or_default();

    let device_id = top.device_id.unwrap_or_else(default_device_id);
    if !is_topic_word(&device_id) {
        problems.push(format!(
            "device_id: {} must be 1 to 128 letters, digits, '-' or '_' (it is part of every topic)",
            shown(device_id.as_bytes())
        ));
    }
    let log_level = match top.log_level.as_deref().unwrap_or("info").parse::<log::LevelFilter>() {
        Ok(l) => l,
        Err(_) => {
            problems.push(format!(
                "log_level: \"{}\" is not one of off, error, warn, info, debug, trace",
                top.log_level.unwrap_or_default()
            ));
            log::LevelFilter::Info
        }
    };

    let broker_raw: RawBroker = section(top.broker.unwrap_or_else(empty), "broker", &mut problems).unwrap_or_default();
    let broker = if broker_raw.enabled.unwrap_or(false) {
        let listen = broker_raw.listen.unwrap_or_else(|| "127.0.0.1:1883".into());
        match listen.parse() {
            Ok(listen) => Some(BrokerSettings { listen }),
            Err(_) => {
                problems.push(format!("broker.listen: \"{listen}\" is not an address:port such as 127.0.0.1:1883"));
                None
            }
        }
    } else {
        None
    };

    let mqtt = check_mqtt(
        section(top.mqtt.unwrap_or_else(empty), "mqtt", &mut problems).unwrap_or_default(),
        &device_id,
        broker.as_ref(),
        dir,
        &mut problems,
    );

    let service_raw: RawService =
        section(top.service.unwrap_or_else(empty), "service", &mut problems).unwrap_or_default();
    let service = ServiceSettings {
        stall_timeout: seconds(service_raw.stall_timeout_s.unwrap_or(30.0), "service.stall_timeout_s", &mut problems),
        drain_timeout: seconds(service_raw.drain_timeout_s.unwrap_or(5.0), "service.drain_timeout_s", &mut problems),
    };

    let raw_deploy: RawDeploy = section(top.deploy.unwrap_or_else(empty), "deploy", &mut problems).unwrap_or_default();
    let deploy = check_deploy(raw_deploy, mqtt.max_packet_size, dir, &mut problems);

    let mut cameras = BTreeMap::new();
    let raw_cameras = top.cameras.unwrap_or_default();
    if raw_cameras.is_empty() {
        problems.push("cameras: no camera is configured (add a [cameras.<id>] table)".into());
    }
    for (id, value) in raw_cameras {
        let key = format!("cameras.{id}");
        if !is_topic_word(&id) {
            problems.push(format!(
                "cameras.{}: the camera id must be 1 to 128 letters, digits, '-' or '_' (it is part of topics)",
                shown(id.as_bytes())
            ));
        }
        if id == "deploy" {
            problems.push(format!(
                "{key}: \"deploy\" is taken by the deploy topics (<prefix>/deploy/…); rename the camera"
            ));
        }
        let Some(raw) = section::<RawCamera>(value, &key, &mut problems) else { continue };
        if let Some(camera) = check_camera(raw, &key, &id, dir, &mut problems) {
            cameras.insert(id, camera);
        }
    }

    if problems.is_empty() {
        Ok(Config { device_id, log_level, mqtt, broker, service, cameras, deploy })
    } else {
        Err(problems)
    }
}

fn default_device_id() -> String {
    // A host name is at most 253 bytes; anything else there is not one.
    let host = crate::files::read_text_capped(Path::new("/etc/hostname"), 4096).unwrap_or_default();
    let host: String =
        host.trim().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
    if host.is_empty() {
        "vigil".into()
    } else {
        host
    }
}

/// The start of MQTT topics ([`crate::mqtt::check_prefix`]).
fn check_prefix(key: &str, prefix: &str, problems: &mut Vec<String>) {
    if let Err(why) = crate::mqtt::check_prefix(prefix) {
        problems.push(format!("{key}: {why}"));
    }
}

fn check_mqtt(
    raw: RawMqtt,
    device_id: &str,
    broker: Option<&BrokerSettings>,
    dir: &Path,
    problems: &mut Vec<String>,
) -> MqttSettings {
    let default_url = match broker {
        Some(b) => format!("mqtt://{}", b.listen),
        None => "mqtt://127.0.0.1:1883".into(),
    };
    let url = raw.url.unwrap_or(default_url);
    let (tls, host, port) = match parse_url(&url) {
        Ok(parts) => parts,
        Err(why) => {
            problems.push(format!("mqtt.url: \"{url}\" {why}"));
            (false, String::new(), 0)
        }
    };
    let existing = |p: &Option<PathBuf>, key: &str, problems: &mut Vec<String>| -> Option<PathBuf> {
        let p = resolve(dir, p.as_ref()?);
        if !p.is_file() {
            problems.push(format!("mqtt.{key}: {} does not exist", p.display()));
        }
        Some(p)
    };
    let ca = existing(&raw.ca_file, "ca_file", problems);
    let cert = existing(&raw.client_cert, "client_cert", problems);
    let key = existing(&raw.client_key, "client_key", problems);
    let client_cert = match (cert, key) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => {
            problems.push("mqtt.client_cert and mqtt.client_key: give both or neither".into());
            None
        }
    };
    let tls = if tls {
        match ca {
            Some(ca_file) => Some(TlsSettings { ca_file, client_cert }),
            None => {
                problems.push(
                    "mqtt.ca_file: an mqtts:// url needs the CA certificate (PEM) that signed the broker's".into(),
                );
                None
            }
        }
    } else {
        if ca.is_some() || client_cert.is_some() {
            problems.push(format!("mqtt.url: \"{url}\" is plain TCP, but TLS files are set: use mqtts://"));
        }
        None
    };
    let mut password = raw.password;
    if let Some(file) = &raw.password_file {
        let file = resolve(dir, file);
        match crate::files::read_capped(&file, 64 << 10) {
            Ok(_) if password.is_some() => {
                problems.push("mqtt.password and mqtt.password_file: give one, not both".into())
            }
            Ok(bytes) => match crate::source::url::password_of(bytes) {
                Ok(p) => password = Some(p),
                Err(why) => problems.push(format!("mqtt.password_file: {} {why}", file.display())),
            },
            Err(e) => problems.push(format!("mqtt.password_file: cannot read {}: {e}", file.display())),
        }
    }
    if password.is_some() && raw.username.is_none() {
        problems.push("mqtt.password: a password needs mqtt.username".into());
    }
    let qos = raw.qos.unwrap_or(1);
    if qos > 2 {
        problems.push(format!("mqtt.qos: {qos} is not 0, 1 or 2"));
    }
    let topic_prefix = raw.topic_prefix.unwrap_or_else(|| format!("vigil/{device_id}"));
    check_prefix("mqtt.topic_prefix", &topic_prefix, problems);
    // Room for a deploy bundle of any bundled model (14-16 MB) and a retrained one several
    // times their size; only what arrives costs memory.
    let max_packet_size = raw.max_packet_size.unwrap_or(64 << 20);
    if max_packet_size < 4096 {
        problems.push(format!("mqtt.max_packet_size: {max_packet_size} bytes is too small (at least 4096)"));
    } else if max_packet_size > crate::mqtt::MQTT_MAX_PACKET {
        problems.push(format!(
            "mqtt.max_packet_size: {max_packet_size} bytes is over MQTT's own limit of {}",
            crate::mqtt::MQTT_MAX_PACKET
        ));
    }
    let keep_alive = raw.keep_alive_s.unwrap_or(30);
    if !(5..=3600).contains(&keep_alive) {
        problems.push(format!("mqtt.keep_alive_s: {keep_alive} is outside 5..=3600"));
    }
    let spool_events = raw.spool_events.unwrap_or(10_000);
    if spool_events == 0 {
        problems.push("mqtt.spool_events: must be at least 1".into());
    }
    let spool_dir = match &raw.spool_dir {
        Some(p) => resolve(dir, p),
        None => state_directory().join("spool"),
    };
    let spool_bytes = raw.spool_bytes.unwrap_or(16 << 20);
    if !(64 << 10..=1 << 40).contains(&spool_bytes) {
        problems.push(format!("mqtt.spool_bytes: {spool_bytes} must be between 65536 (64 KiB) and 1 TiB"));
    }
    let discovery_prefix = raw.discovery_prefix.unwrap_or_else(|| "homeassistant".into());
    check_prefix("mqtt.discovery_prefix", &discovery_prefix, problems);
    MqttSettings {
        host,
        port,
        tls,
        client_id: raw.client_id.unwrap_or_else(|| format!("vigil-{device_id}")),
        username: raw.username,
        password,
        topic_prefix,
        qos,
        keep_alive: Duration::from_secs(keep_alive),
        max_packet_size,
        spool_events,
        spool_dir,
        spool_bytes,
        stats_interval: seconds(raw.stats_interval_s.unwrap_or(30.0), "mqtt.stats_interval_s", problems),
        discovery: raw.discovery.unwrap_or(true),
        discovery_prefix,
    }
}

fn check_deploy(raw: RawDeploy, max_packet: usize, dir: &Path, problems: &mut Vec<String>) -> Option<DeploySettings> {
    let keys = raw.trusted_keys.unwrap_or_default();
    let mut trusted = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        match crate::deploy::keys::parse_public(k) {
            Ok(key) => trusted.push(key),
            Err(e) => problems.push(format!("deploy.trusted_keys[{i}]: {e}")),
        }
    }
    let groups = raw.groups.unwrap_or_default();
    for g in &groups {
        if !is_topic_word(g) {
            problems
                .push(format!("deploy.groups: {} must be 1 to 128 letters, digits, '-' or '_'", shown(g.as_bytes())));
        }
    }
    // A bundle arrives as one MQTT message.
    let headroom = 64 << 10;
    let max_bundle_bytes = raw.max_bundle_bytes.unwrap_or(max_packet.saturating_sub(headroom));
    if max_bundle_bytes + headroom > max_packet {
        problems.push(format!(
            "deploy.max_bundle_bytes: {max_bundle_bytes} does not fit mqtt.max_packet_size {max_packet} \
             (a bundle is one message; leave 64 KiB for the rest)"
        ));
    }
    let group_prefix = raw.group_prefix.unwrap_or_else(|| "vigil/groups".into());
    check_prefix("deploy.group_prefix", &group_prefix, problems);
    let store = match raw.store {
        Some(p) => resolve(dir, &p),
        None => state_directory().join("models"),
    };
    if trusted.is_empty() {
        if !groups.is_empty() {
            problems.push(
                "deploy.groups: set, but deploy.trusted_keys is empty (deploys are off without a trusted key)".into(),
            );
        }
        return None;
    }
    Some(DeploySettings { trusted_keys: trusted, groups, max_bundle_bytes, store, group_prefix })
}

/// Where vigil keeps its state by default: systemd's `StateDirectory=vigil` (the first entry
/// if it lists several), else /var/lib/vigil.
fn state_directory() -> PathBuf {
    match std::env::var_os("STATE_DIRECTORY") {
        Some(s) => {
            use std::os::unix::ffi::OsStrExt;
            let first = s.as_bytes().split(|b| *b == b':').next().unwrap_or_default();
            PathBuf::from(std::ffi::OsStr::from_bytes(first))
        }
        None => PathBuf::from("/var/lib/vigil"),
    }
}

/// `mqtt://host[:port]` or `mqtts://host[:port]` → (tls, host, port).
pub(crate) fn parse_url(url: &str) -> Result<(bool, String, u16), String> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("mqtt://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("mqtts://") {
        (true, r)
    } else {
        return Err("must start with mqtt:// or mqtts://".into());
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') || rest.contains('@') || rest.contains('?') {
        return Err("must be scheme://host[:port] only (credentials go in mqtt.username / mqtt.password)".into());
    }
    let default_port = if tls { 8883 } else { 1883 };
    let port_of = |p: &str| match p.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(format!("has a bad port \"{p}\"")),
    };
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("has an unclosed '['")?;
        match after.strip_prefix(':') {
            Some(p) => (host, port_of(p)?),
            None if after.is_empty() => (host, default_port),
            None => return Err(format!("has text after the address: \"{after}\"")),
        }
    } else {
        match rest.rsplit_once(':') {
            Some((host, p)) => (host, port_of(p)?),
            None => (rest, default_port),
        }
    };
    if host.is_empty() || host.chars().any(|c| c.is_whitespace()) {
        return Err("has no host".into());
    }
    Ok((tls, host.to_string(), port))
}

fn check_camera(raw: RawCamera, key: &str, id: &str, dir: &Path, problems: &mut Vec<String>) -> Option<CameraSettings> {
    let before = problems.len();
    let source = match raw.source {
        Some(v) => crate::source::check(v, &format!("{key}.source"), dir, problems),
        None => {
            problems.push(format!(
                "{key}.source: missing (a table with kind = \"v4l2\", \"rtsp\", \"mjpeg\" or \"replay\")"
            ));
            None
        }
    };
    let model = match raw.model {
        Some(m) => {
            let m = resolve(dir, &m);
            if !m.is_file() {
                problems.push(format!("{key}.model: the model manifest {} does not exist", m.display()));
            }
            m
        }
        None => {
            problems.push(format!("{key}.model: missing (the model manifest, e.g. models/nanodet-m.toml)"));
            PathBuf::new()
        }
    };
    let fps = raw.fps.unwrap_or(5.0);
    if !(MIN_FPS..=1000.0).contains(&fps) {
        problems.push(format!("{key}.fps: {fps} must be between {MIN_FPS} and 1000"));
    }
    let unit = |v: Option<f32>, k: &str, problems: &mut Vec<String>| {
        if let Some(v) = v {
            if !(0.0..=1.0).contains(&v) {
                problems.push(format!("{key}.{k}: {v} must be between 0 and 1"));
            }
        }
        v
    };
    let min_score = unit(raw.min_score, "min_score", problems);
    let mut filters = BTreeMap::new();
    for (label, f) in raw.filters.unwrap_or_default() {
        let k = format!("filters.{label}");
        let filter = LabelFilter {
            min_score: unit(f.min_score, &format!("{k}.min_score"), problems),
            min_area: unit(f.min_area, &format!("{k}.min_area"), problems).unwrap_or(0.0),
            max_area: unit(f.max_area, &format!("{k}.max_area"), problems).unwrap_or(1.0),
        };
        if filter.min_area > filter.max_area {
            problems.push(format!("{key}.{k}: min_area {} is above max_area {}", filter.min_area, filter.max_area));
        }
        filters.insert(label, filter);
    }
    let polygon = |points: Vec<[f64; 2]>, k: &str, problems: &mut Vec<String>| -> Polygon {
        if points.len() < 3 {
            problems.push(format!("{key}.{k}: a polygon needs at least 3 points, not {}", points.len()));
        }
        if let Some(p) = points.iter().find(|p| !p.iter().all(|c| (0.0..=1.0).contains(c))) {
            problems.push(format!(
                "{key}.{k}: point [{}, {}] is outside the frame (coordinates are fractions, 0 to 1)",
                p[0], p[1]
            ));
        }
        Polygon::new(points.into_iter().map(|[x, y]| (x as f32, y as f32)).collect())
    };
    let mut zones = Vec::new();
    for (i, z) in raw.zones.unwrap_or_default().into_iter().enumerate() {
        let k = format!("zones[{i}]");
        let name = z.name.unwrap_or_default();
        if !is_topic_word(&name) {
            problems.push(format!(
                "{key}.{k}.name: {} must be 1 to 128 letters, digits, '-' or '_'",
                shown(name.as_bytes())
            ));
        }
        let area = polygon(z.points.unwrap_or_default(), &format!("{k}.points"), problems);
        zones.push(Zone { name, area, labels: z.labels.unwrap_or_default() });
    }
    let masks = raw
        .masks
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, m)| polygon(m.points.unwrap_or_default(), &format!("masks[{i}].points"), problems))
        .collect();
    let t = raw.tracker.unwrap_or_default();
    let tracker = TrackerSettings {
        iou: unit(t.iou, "tracker.iou", problems).unwrap_or(0.3),
        min_hits: t.min_hits.unwrap_or(2).max(1),
        max_misses: t.max_misses.unwrap_or(5),
        move_iou: unit(t.move_iou, "tracker.move_iou", problems).unwrap_or(0.7),
    };
    let snapshot_quality = raw.snapshot_quality.unwrap_or(80);
    if !(1..=100).contains(&snapshot_quality) {
        problems.push(format!("{key}.snapshot_quality: {snapshot_quality} is outside 1..=100"));
    }
    let threads = count(raw.threads, &format!("{key}.threads"), problems);
    let in_flight = count(raw.in_flight, &format!("{key}.in_flight"), problems);
    if let (Count::Fixed(t), Count::Fixed(f)) = (threads, in_flight) {
        if f > t {
            problems.push(format!("{key}.in_flight: {f} frames at once need at least as many threads, not {t}"));
        }
    }
    let collect_root = state_directory().join("collect");
    let collect = raw
        .collect
        .and_then(|c| crate::collect::settings::check(c, &format!("{key}.collect"), id, dir, &collect_root, problems));
    let motion = raw.motion.and_then(|m| {
        let defaults = MotionSettings::default();
        let threshold = m.threshold.unwrap_or(defaults.threshold);
        if !(1.0..=254.0).contains(&threshold) {
            problems.push(format!("{key}.motion.threshold: {threshold} must be between 1 and 254 grey levels"));
        }
        let min_area = m.min_area.unwrap_or(defaults.min_area);
        if !(min_area > 0.0 && min_area <= 1.0) {
            problems.push(format!("{key}.motion.min_area: {min_area} must be above 0 and at most 1"));
        }
        let max_interval = match m.max_interval_s {
            Some(v) => seconds(v, &format!("{key}.motion.max_interval_s"), problems),
            None => defaults.max_interval,
        };
        m.enabled.unwrap_or(true).then_some(MotionSettings { threshold, min_area, max_interval })
    });
    if problems.len() > before {
        return None;
    }
    Some(CameraSettings {
        source: source?,
        model,
        fps,
        detect: raw.detect.unwrap_or(true),
        labels: raw.labels.unwrap_or_default(),
        min_score,
        filters,
        zones,
        masks,
        tracker,
        snapshots: raw.snapshots.unwrap_or(false),
        snapshot_quality,
        threads,
        in_flight,
        motion,
        collect,
    })
}

/// The most threads or frames in flight one camera may ask for.
const MAX_COUNT: usize = 256;

/// `"auto"` or a whole number from 1 to [`MAX_COUNT`] (absent: auto).
fn count(value: Option<Value>, key: &str, problems: &mut Vec<String>) -> Count {
    let n = match value {
        None => return Count::Auto,
        Some(Value::String(s)) if s == "auto" => return Count::Auto,
        Some(Value::Number(n)) => n.as_u64(),
        // An environment override arrives as text.
        Some(Value::String(s)) => s.parse().ok(),
        Some(_) => None,
    };
    match n {
        Some(n) if (1..=MAX_COUNT as u64).contains(&n) => Count::Fixed(n as usize),
        _ => {
            problems.push(format!("{key}: must be \"auto\" or a whole number from 1 to {MAX_COUNT}"));
            Count::Auto
        }
    }
}
