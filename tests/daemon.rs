//! `vigil run` end to end, against a real Mosquitto broker (Debian's, installed by
//! scripts/setup-system.sh; each test starts its own on a free port), with the bundled
//! NanoDet model on the bundled photos replayed as a camera, and a Unix datagram socket
//! standing in for systemd's NOTIFY_SOCKET.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{root, scratch};
use rumqttc::{Client, Event, MqttOptions, Packet, QoS};
use serde_json::Value;

/// One daemon at a time: each runs NanoDet continuously, and this machine has two cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Mosquitto broker of the test's own, persisting sessions across its restarts (as a
/// production broker would), on a free loopback port.
struct Mosquitto {
    port: u16,
    conf: PathBuf,
    child: Option<Child>,
}

impl Mosquitto {
    fn start(dir: &Path) -> Mosquitto {
        Mosquitto::start_with(dir, "")
    }

    /// With more configuration (another listener, say) appended. The free port found may be
    /// taken by someone else before mosquitto binds it: then mosquitto exits, and another
    /// port is tried.
    fn start_with(dir: &Path, extra: &str) -> Mosquitto {
        let conf = dir.join("mosquitto.conf");
        for _ in 0..5 {
            let port = free_port();
            std::fs::write(
                &conf,
                format!(
                    "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                     autosave_interval 1\npersistence_location {}/\nlog_dest file {}/mosquitto.log\n{extra}",
                    dir.display(),
                    dir.display()
                ),
            )
            .unwrap();
            let mut m = Mosquitto { port, conf: conf.clone(), child: None };
            if m.try_start() {
                return m;
            }
        }
        panic!("mosquitto could not bind a free port in five tries (see {}/mosquitto.log)", dir.display());
    }

    fn binary() -> &'static str {
        ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("mosquitto is not installed: run scripts/setup-system.sh")
    }

    fn restart(&mut self) {
        assert!(self.try_start(), "mosquitto could not listen on port {} again", self.port);
    }

    /// Starts mosquitto and waits until it listens; false if it exited (its port was taken).
    fn try_start(&mut self) -> bool {
        let mut child = Command::new(Self::binary()).arg("-c").arg(&self.conf).stderr(Stdio::null()).spawn().unwrap();
        let started = Instant::now();
        loop {
            if child.try_wait().unwrap().is_some() {
                return false;
            }
            // Listening, and still this mosquitto (not another process on the port).
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() && child.try_wait().unwrap().is_none() {
                self.child = Some(child);
                return true;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "mosquitto did not listen within 10 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn signal(&self, name: &str) {
        signal(self.child.as_ref().expect("mosquitto is running"), name);
    }

    fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.wait().unwrap();
        }
    }

    /// SIGTERM, so it saves its sessions like a broker being restarted for an upgrade.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, "TERM");
            child.wait().unwrap();
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn signal(child: &Child, name: &str) {
    let ok = Command::new("kill").arg(format!("-{name}")).arg(child.id().to_string()).status().unwrap().success();
    assert!(ok, "kill -{name} failed");
}

#[derive(Debug, Clone)]
struct Received {
    topic: String,
    payload: Vec<u8>,
    retain: bool,
    at: Instant,
}

impl Received {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| panic!("{}: not JSON ({e})", self.topic))
    }
}

/// A subscriber with a persistent session that reconnects by itself and keeps everything.
#[derive(Clone)]
struct Subscriber {
    got: Arc<Mutex<Vec<Received>>>,
    client: Client,
}

impl Subscriber {
    fn start(port: u16, id: &str) -> Subscriber {
        let mut options = MqttOptions::new(id, "127.0.0.1", port);
        options.set_clean_session(false);
        options.set_keep_alive(Duration::from_secs(5));
        options.set_max_packet_size(16 << 20, 16 << 20);
        let (client, mut connection) = Client::new(options, 64);
        let got = Arc::new(Mutex::new(Vec::new()));
        let (c, g) = (client.clone(), got.clone());
        std::thread::spawn(move || {
            for event in connection.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        c.try_subscribe("vigil/#", QoS::AtLeastOnce).unwrap();
                        c.try_subscribe("homeassistant/#", QoS::AtLeastOnce).unwrap();
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => g.lock().unwrap().push(Received {
                        topic: p.topic.clone(),
                        payload: p.payload.to_vec(),
                        retain: p.retain,
                        at: Instant::now(),
                    }),
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        Subscriber { got, client }
    }

    fn on(&self, topic: &str) -> Vec<Received> {
        self.got.lock().unwrap().iter().filter(|r| r.topic == topic).cloned().collect()
    }

    fn wait_for(&self, what: &str, limit: Duration, ok: impl Fn(&[Received]) -> bool) {
        wait_until(what, limit, || ok(&self.got.lock().unwrap()));
    }

    fn publish(&self, topic: &str, payload: &str) {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec()).unwrap();
    }
}

/// Every label device "test"'s `camera` has published detections of.
fn labels_seen(sub: &Subscriber, camera: &str) -> BTreeSet<String> {
    sub.on(&format!("vigil/test/{camera}/detections"))
        .iter()
        .flat_map(|r| {
            let d = r.json();
            d["detections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["label"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// vigil with the embedded broker on `port`, stats every second and the `[cameras.*]`
/// tables given, and a subscriber to everything once the broker listens.
fn start_with_cameras(dir: &Path, port: u16, cameras: &str, client: &str) -> (Daemon, Subscriber) {
    let config = dir.join("vigil.toml");
    let head = format!(
        "device_id = \"test\"\n[broker]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n[mqtt]\nstats_interval_s = 1\n"
    );
    std::fs::write(&config, head + cameras).unwrap();
    start_embedded(&config, port, client)
}

/// vigil with `config`, whose embedded broker listens on `port`, and once it does a
/// subscriber to everything.
fn start_embedded(config: &Path, port: u16, client: &str) -> (Daemon, Subscriber) {
    let daemon = Daemon::start(config, &[]);
    wait_until("the embedded broker", Duration::from_secs(60), || TcpStream::connect(("127.0.0.1", port)).is_ok());
    (daemon, Subscriber::start(port, client))
}

/// A camera whose source never delivered: not running, no frame, no detection published.
fn assert_refused(sub: &Subscriber, stats: &serde_json::Value, camera: &str) {
    assert_eq!(
        (&stats["cameras"][camera]["source_running"], &stats["cameras"][camera]["frames"]),
        (&serde_json::json!(false), &serde_json::json!(0)),
        "{camera}: {stats}"
    );
    assert!(sub.on(&format!("vigil/test/{camera}/detections")).is_empty());
}

/// Two bundled photos replayed as a camera: the motorcycle, then the group of people,
/// each held for `repeat` frames.
fn write_config(dir: &Path, port: u16, extra: &str) -> PathBuf {
    let photos = dir.join("photos");
    std::fs::create_dir_all(&photos).unwrap();
    std::fs::copy(root().join("tests/photos/motorcycle_left.png"), photos.join("1-motorcycle.png")).unwrap();
    std::fs::copy(root().join("tests/photos/group.png"), photos.join("2-group.png")).unwrap();
    let config = dir.join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            r#"device_id = "test"
log_level = "debug"
{extra}
[mqtt]
url = "mqtt://127.0.0.1:{port}"
stats_interval_s = 1

[service]
stall_timeout_s = 20
drain_timeout_s = 5

[cameras.yard]
model = "{model}"
fps = 20
labels = ["person", "motorcycle"]
snapshots = true
[cameras.yard.source]
kind = "replay"
path = "photos"
fps = 5
repeat = 6
[cameras.yard.tracker]
min_hits = 2
max_misses = 1
"#,
            model = root().join("models/nanodet-m.toml").display()
        ),
    )
    .unwrap();
    config
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// The log goes beside the config (`vigil.toml` → `vigil.log`); the event journal goes in
    /// the config's folder too (`STATE_DIRECTORY`, as systemd sets it), so a test's daemons
    /// share it and other tests' do not.
    fn start(config: &Path, env: &[(&str, String)]) -> Daemon {
        let log = config.with_extension("log");
        let mut cmd = common::vigil_command();
        cmd.args(["run", "--config"]).arg(config).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap());
        cmd.env_remove("NOTIFY_SOCKET").env_remove("JOURNAL_STREAM").env_remove("WATCHDOG_USEC");
        cmd.env("STATE_DIRECTORY", config.parent().unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        Daemon { child: cmd.spawn().unwrap(), log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and a clean exit (0) within 20 s.
    fn stop(&mut self) {
        signal(&self.child, "TERM");
        assert_eq!(self.wait_exit(Duration::from_secs(20)), 0, "{}", self.log());
    }

    fn wait_exit(&mut self, limit: Duration) -> i32 {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(started.elapsed() < limit, "vigil did not exit within {limit:?}; log:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything a subscriber of one camera sees, then the notify protocol, commands, and a
/// clean stop.
#[test]
fn publishes_the_mqtt_contract_and_speaks_sd_notify() {
    let _serial = serial();
    let dir = scratch("daemon-contract");
    let broker = Mosquitto::start(&dir);
    let sub = Subscriber::start(broker.port, "test-contract");
    let config = write_config(&dir, broker.port, "");
    let notify_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let notes = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let notes = notes.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                if let Ok(n) = notify.recv(&mut buf) {
                    notes.lock().unwrap().push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        });
    }
    let mut daemon = Daemon::start(
        &config,
        &[("NOTIFY_SOCKET", notify_path.display().to_string()), ("WATCHDOG_USEC", "1000000".into())],
    );
    let limit = Duration::from_secs(90);
    let p = "vigil/test";

    // READY=1 once the model is loaded; WATCHDOG=1 pings follow (WatchdogSec=1 s → every 0.5 s).
    wait_until("READY=1", limit, || notes.lock().unwrap().iter().any(|n| n.contains("READY=1")));
    wait_until("three WATCHDOG=1", limit, || {
        notes.lock().unwrap().iter().filter(|n| n.contains("WATCHDOG=1")).count() >= 3
    });

    sub.wait_for("availability online", limit, |g| {
        g.iter().any(|r| r.topic == format!("{p}/availability") && r.payload == b"online")
    });
    // Detections with the right labels for both photos, and events with track ids.
    sub.wait_for("a motorcycle and persons", limit, |g| {
        let labels: BTreeSet<String> = g
            .iter()
            .filter(|r| r.topic == format!("{p}/yard/detections"))
            .flat_map(|r| r.json()["detections"].as_array().cloned().unwrap_or_default())
            .map(|d| d["label"].as_str().unwrap().to_string())
            .collect();
        labels.contains("motorcycle") && labels.contains("person")
    });
    sub.wait_for("new and end events", limit, |g| {
        let kinds: BTreeSet<String> = g
            .iter()
            .filter(|r| r.topic == format!("{p}/yard/events"))
            .map(|r| r.json()["type"].as_str().unwrap().to_string())
            .collect();
        kinds.contains("new") && kinds.contains("end")
    });
    sub.wait_for("stats", limit, |g| g.iter().any(|r| r.topic == format!("{p}/stats")));

    let detections = sub.on(&format!("{p}/yard/detections"));
    let d = detections.last().unwrap().json();
    assert_eq!(d["v"], 1);
    assert_eq!(d["camera"], "yard");
    assert_eq!(d["model"]["name"], "nanodet-m");
    assert_eq!(d["model"]["version"], "1.0.0");
    assert_eq!(d["model"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(d["model"]["engine"], "tract");
    assert!(d["frame"].as_u64().unwrap() >= 1 && d["inference_ms"].as_f64().unwrap() > 0.0, "{d}");
    assert!(d["ts"].as_u64().unwrap() >= d["captured_at"].as_u64().unwrap());
    for det in detections.iter().flat_map(|r| r.json()["detections"].as_array().cloned().unwrap()) {
        let label = det["label"].as_str().unwrap();
        assert!(label == "person" || label == "motorcycle", "labels = [person, motorcycle] filters {label}");
    }
    let events: Vec<Value> = sub.on(&format!("{p}/yard/events")).iter().map(Received::json).collect();
    let e = events.iter().find(|e| e["type"] == "new").unwrap();
    assert!(e["track_id"].as_u64().unwrap() >= 1 && e["box"]["x2"].as_f64().unwrap() > 0.0, "{e}");
    assert_eq!(e["model"]["name"], "nanodet-m");
    let tracked = detections.iter().flat_map(|r| r.json()["detections"].as_array().cloned().unwrap());
    assert!(tracked.into_iter().any(|d| d["track_id"].as_u64().is_some()), "detections carry track ids");
    // Counts go out on their own topic, so they may trail the detections and events above.
    sub.wait_for("at least two persons counted", limit, |g| {
        g.iter()
            .any(|r| r.topic == format!("{p}/yard/counts") && r.json()["counts"]["person"].as_u64().unwrap_or(0) >= 2)
    });
    let stats = sub.on(&format!("{p}/stats")).last().unwrap().json();
    assert!(stats["cameras"]["yard"]["inferred"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(stats["cameras"]["yard"]["failed"], 0, "{stats}");
    assert!(stats["memory_bytes"].as_u64().unwrap() > 1 << 20, "{stats}");
    assert!(stats["cameras"]["yard"]["inference_ms_p95"].as_f64().is_some(), "{stats}");
    // A snapshot (JPEG) on a new object.
    sub.wait_for("a snapshot", limit, |g| g.iter().any(|r| r.topic == format!("{p}/yard/snapshot")));
    assert_eq!(&sub.on(&format!("{p}/yard/snapshot"))[0].payload[..2], &[0xFF, 0xD8], "a JPEG");
    // Retained model state.
    let model = sub.on(&format!("{p}/yard/model"));
    assert_eq!(model[0].json()["name"], "nanodet-m");

    // Home Assistant discovery.
    let discovery: BTreeMap<String, Value> = sub
        .got
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.topic.starts_with("homeassistant/"))
        .map(|r| (r.topic.clone(), r.json()))
        .collect();
    for t in [
        "homeassistant/sensor/test/yard_person_count/config",
        "homeassistant/sensor/test/yard_motorcycle_count/config",
        "homeassistant/switch/test/yard_detect/config",
        "homeassistant/number/test/yard_threshold/config",
        "homeassistant/sensor/test/yard_fps/config",
        "homeassistant/camera/test/yard_snapshot/config",
    ] {
        let c = discovery.get(t).unwrap_or_else(|| panic!("no {t} in {:?}", discovery.keys()));
        assert_eq!(c["availability_topic"], format!("{p}/availability"));
        assert_eq!(c["device"]["identifiers"][0], "vigil_test");
    }
    assert_eq!(
        discovery["homeassistant/switch/test/yard_detect/config"]["command_topic"],
        format!("{p}/yard/detect/set")
    );

    // Commands, confirmed on …/state.
    sub.publish(&format!("{p}/yard/threshold/set"), "0.9");
    sub.wait_for("threshold state 0.9", limit, |g| {
        g.iter().any(|r| r.topic == format!("{p}/yard/threshold/state") && r.payload == b"0.9")
    });
    sub.publish(&format!("{p}/yard/detect/set"), "OFF");
    sub.wait_for("detect state OFF", limit, |g| {
        g.iter().any(|r| r.topic == format!("{p}/yard/detect/state") && r.payload == b"OFF")
    });
    // A frame already being inferred may still be published; no frame captured after the
    // command took effect is (the state was confirmed after it did).
    let off_at = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    std::thread::sleep(Duration::from_millis(2000));
    let before = sub.on(&format!("{p}/yard/detections")).len();
    let late: Vec<u64> = sub
        .on(&format!("{p}/yard/detections"))
        .iter()
        .map(|r| r.json()["captured_at"].as_u64().unwrap())
        .filter(|&t| t > off_at)
        .collect();
    assert!(late.is_empty(), "detection OFF stops detections: frames captured after it: {late:?}");
    sub.wait_for("turning detection off ends the tracks", limit, |g| {
        g.iter()
            .rev()
            .find(|r| r.topic == format!("{p}/yard/counts"))
            .is_some_and(|r| r.json()["counts"] == serde_json::json!({}))
    });
    sub.publish(&format!("{p}/yard/detect/set"), "ON");
    sub.wait_for("detections again", limit, |g| {
        g.iter().filter(|r| r.topic == format!("{p}/yard/detections")).count() > before
    });
    // A score threshold of 0.9 keeps weak detections out.
    let after_on: Vec<Value> =
        sub.on(&format!("{p}/yard/detections")).iter().skip(before).map(Received::json).collect();
    for d in after_on.iter().flat_map(|d| d["detections"].as_array().cloned().unwrap()) {
        assert!(d["score"].as_f64().unwrap() >= 0.9 - 1e-6, "{d}");
    }

    // SIGTERM: STOPPING=1, availability offline, exit 0.
    signal(&daemon.child, "TERM");
    let code = daemon.wait_exit(Duration::from_secs(20));
    assert_eq!(code, 0, "log:\n{}", daemon.log());
    assert!(notes.lock().unwrap().iter().any(|n| n.contains("STOPPING=1")));
    assert!(notes.lock().unwrap().iter().any(|n| n.contains("STATUS=")));
    sub.wait_for("availability offline", limit, |g| {
        g.iter().any(|r| r.topic == format!("{p}/availability") && r.payload == b"offline")
    });
}

/// The broker goes away mid-run and comes back: the daemon reconnects, announces its
/// state again and delivers every event it made meanwhile; killed, its last will says
/// offline.
#[test]
fn survives_a_broker_restart_without_losing_events() {
    let _serial = serial();
    let dir = scratch("daemon-outage");
    let mut broker = Mosquitto::start(&dir);
    let sub = Subscriber::start(broker.port, "test-outage");
    let config = write_config(&dir, broker.port, "");
    let mut daemon = Daemon::start(&config, &[]);
    let limit = Duration::from_secs(90);
    let p = "vigil/test";
    let events =
        |sub: &Subscriber| -> Vec<Value> { sub.on(&format!("{p}/yard/events")).iter().map(Received::json).collect() };
    sub.wait_for("two new events", limit, |g| {
        g.iter().filter(|r| r.topic == format!("{p}/yard/events") && r.json()["type"] == "new").count() >= 2
    });

    broker.stop();
    let outage_started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    std::thread::sleep(Duration::from_secs(5));
    let outage_ended = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    let restarted = Instant::now();
    broker.restart();

    // Re-announced after the reconnect: a live (not retained) "online".
    sub.wait_for("availability re-announced", limit, |g| {
        g.iter()
            .any(|r| r.topic == format!("{p}/availability") && r.payload == b"online" && !r.retain && r.at > restarted)
    });
    // Events made during the outage arrive, and nothing is missing: every track id from 1
    // to the highest has its "new", and every ended track had one.
    sub.wait_for("events from the outage", limit, |g| {
        g.iter().filter(|r| r.topic == format!("{p}/yard/events")).any(|r| {
            let ts = r.json()["ts"].as_u64().unwrap();
            ts > outage_started && ts < outage_ended
        })
    });
    // Wait (on the condition, not a clock) for an event made well after the outage and for
    // every track id from 1 to the highest to have its "new": a lost event leaves a gap that
    // never closes, and the wait times out.
    wait_until("events after the outage, with no track id missing", limit, || {
        let all = events(&sub);
        all.iter().any(|e| e["ts"].as_u64().unwrap() > outage_ended + 1000) && new_ids_contiguous(&all)
    });
    let all = events(&sub);
    let ids_new: BTreeSet<u64> =
        all.iter().filter(|e| e["type"] == "new").map(|e| e["track_id"].as_u64().unwrap()).collect();
    let ids_end: BTreeSet<u64> =
        all.iter().filter(|e| e["type"] == "end").map(|e| e["track_id"].as_u64().unwrap()).collect();
    assert!(ids_end.is_subset(&ids_new), "an end without its new: {ids_end:?} vs {ids_new:?}");
    let during = all.iter().filter(|e| (outage_started..outage_ended).contains(&e["ts"].as_u64().unwrap())).count();
    assert!(during >= 2, "events during the 5 s outage were delivered: {during}");
    assert!(daemon.log().contains("lost the MQTT connection"), "{}", daemon.log());

    // Stats say it reconnected and lost nothing.
    sub.wait_for("stats after the reconnect", limit, |g| {
        g.iter().any(|r| r.topic == format!("{p}/stats") && r.json()["mqtt"]["reconnects"].as_u64() >= Some(1))
    });
    let stats = sub.on(&format!("{p}/stats")).last().unwrap().json();
    assert_eq!(stats["mqtt"]["spool_lost"], 0, "{stats}");

    // A broker that hangs, then dies: events published while it hung were written to the
    // socket but never acknowledged. The daemon must send them again after reconnecting to
    // the restarted (new-session) broker.
    broker.signal("STOP");
    std::thread::sleep(Duration::from_secs(3));
    broker.signal("KILL");
    broker.reap();
    broker.restart();
    wait_until("the resend of unacknowledged publishes", limit, || {
        daemon.log().contains("publishes the broker had not acknowledged")
    });
    let resent = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    wait_until("events after the resend, with no track id missing (one sent to the hung broker)", limit, || {
        let all = events(&sub);
        all.iter().any(|e| e["ts"].as_u64().unwrap() > resent + 1000) && new_ids_contiguous(&all)
    });

    // Killed without a goodbye: the broker publishes the last will.
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    sub.wait_for("offline through the last will", limit, |g| {
        g.iter().any(|r| r.topic == format!("{p}/availability") && r.payload == b"offline")
    });
}

/// Every track id from 1 to the highest seen has its "new" event.
fn new_ids_contiguous(events: &[Value]) -> bool {
    let ids: BTreeSet<u64> =
        events.iter().filter(|e| e["type"] == "new").map(|e| e["track_id"].as_u64().unwrap()).collect();
    ids.iter().max().is_some_and(|&highest| ids.len() as u64 == highest && ids.first() == Some(&1))
}

fn sh(dir: &Path, script: &str) {
    let out = Command::new("sh").arg("-ec").arg(script).current_dir(dir).output().unwrap();
    assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
}

/// TLS with a private CA and a client certificate the broker requires (mosquitto's
/// `require_certificate`), the certificates made by openssl for this test.
#[test]
fn connects_over_tls_with_a_client_certificate() {
    let _serial = serial();
    let dir = scratch("daemon-tls");
    sh(
        &dir,
        "openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=vigil-test-ca 2>/dev/null
         openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null
         printf 'subjectAltName=IP:127.0.0.1\n' > san.ext
         openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext 2>/dev/null
         openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=vigil-test 2>/dev/null
         printf 'extendedKeyUsage=clientAuth\n' > client.ext
         openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 -extfile client.ext 2>/dev/null",
    );
    let tls_port = free_port();
    let d = dir.display();
    let broker = Mosquitto::start_with(
        &dir,
        &format!(
            "listener {tls_port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n\
             require_certificate true\n"
        ),
    );
    wait_until("the TLS listener", Duration::from_secs(10), || TcpStream::connect(("127.0.0.1", tls_port)).is_ok());
    let sub = Subscriber::start(broker.port, "test-tls");
    let config = write_config(&dir, tls_port, "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("url = \"mqtt://127.0.0.1:{tls_port}\"\n"),
        &format!(
            "url = \"mqtts://127.0.0.1:{tls_port}\"\nca_file = \"ca.pem\"\nclient_cert = \"client.pem\"\n\
             client_key = \"client.key\"\n"
        ),
    );
    std::fs::write(&config, text).unwrap();
    let mut daemon = Daemon::start(&config, &[]);
    sub.wait_for("detections over TLS", Duration::from_secs(90), |g| {
        g.iter().any(|r| r.topic == "vigil/test/yard/detections")
    });
    assert!(daemon.log().contains(&format!("broker=127.0.0.1:{tls_port} connected")), "{}", daemon.log());
    signal(&daemon.child, "TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)), 0, "{}", daemon.log());
}

/// `[broker] enabled = true`: a single box needs no other broker.
#[test]
fn the_embedded_broker_serves_subscribers() {
    let _serial = serial();
    let dir = scratch("daemon-embedded");
    let port = free_port();
    let config = write_config(&dir, port, &format!("[broker]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n"));
    // No mqtt.url: it defaults to the embedded broker. A second camera runs a classifier.
    let mut text =
        std::fs::read_to_string(&config).unwrap().replace(&format!("url = \"mqtt://127.0.0.1:{port}\"\n"), "");
    text.push_str(&format!(
        "\n[cameras.desk]\nmodel = \"{}\"\nfps = 2\n[cameras.desk.source]\nkind = \"replay\"\npath = \"{}\"\nfps = 2\n",
        root().join("models/mobilenet-v2.toml").display(),
        root().join("tests/photos/chelsea.png").display()
    ));
    std::fs::write(&config, text).unwrap();
    let mut daemon = Daemon::start(&config, &[]);
    wait_until("the embedded broker", Duration::from_secs(60), || TcpStream::connect(("127.0.0.1", port)).is_ok());
    let sub = Subscriber::start(port, "test-embedded");
    sub.wait_for("detections through rumqttd", Duration::from_secs(90), |g| {
        g.iter().any(|r| r.topic == "vigil/test/yard/detections")
    });
    assert!(sub.on("vigil/test/availability").iter().any(|r| r.payload == b"online"));
    sub.wait_for("the classifier camera", Duration::from_secs(60), |g| {
        g.iter().any(|r| r.topic == "vigil/test/desk/detections")
    });
    let desk = sub.on("vigil/test/desk/detections")[0].json();
    assert_eq!(desk["model"]["name"], "mobilenet-v2", "{desk}");
    assert_eq!(desk["classes"][0]["label"], "Egyptian cat", "{desk}");
    assert!(desk.get("detections").is_none(), "{desk}");
    signal(&daemon.child, "TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)), 0, "{}", daemon.log());
}

/// SIGHUP reloads: a bad new configuration is refused and the old one keeps running; a
/// good one takes effect without restarting the process.
#[test]
fn sighup_reloads_and_refuses_a_bad_config() {
    let _serial = serial();
    let dir = scratch("daemon-reload");
    let broker = Mosquitto::start(&dir);
    let sub = Subscriber::start(broker.port, "test-reload");
    let config = write_config(&dir, broker.port, "");
    let mut daemon = Daemon::start(&config, &[]);
    let limit = Duration::from_secs(90);
    sub.wait_for("detections", limit, |g| g.iter().any(|r| r.topic == "vigil/test/yard/detections"));

    let good = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, good.replace("fps = 20", "fps = \"fast\"")).unwrap();
    signal(&daemon.child, "HUP");
    wait_until("the refusal in the log", limit, || daemon.log().contains("the new configuration is refused"));
    assert!(daemon.log().contains("cameras.yard.fps"), "{}", daemon.log());
    // A rate so slow that converting it to a frame interval used to panic the reload.
    std::fs::write(&config, good.replace("fps = 20", "fps = 1e-300")).unwrap();
    signal(&daemon.child, "HUP");
    wait_until("the second refusal", limit, || daemon.log().matches("the new configuration is refused").count() == 2);
    assert!(daemon.log().contains("must be between 0.001 and 1000"), "{}", daemon.log());
    let n = sub.on("vigil/test/yard/detections").len();
    sub.wait_for("detections still flowing", limit, |g| {
        g.iter().filter(|r| r.topic == "vigil/test/yard/detections").count() > n + 2
    });

    std::fs::write(&config, good.replace("labels = [\"person\", \"motorcycle\"]", "labels = [\"person\"]")).unwrap();
    let reloaded = Instant::now();
    signal(&daemon.child, "HUP");
    sub.wait_for("detections after the reload", limit, |g| {
        g.iter().filter(|r| r.topic == "vigil/test/yard/detections" && r.at > reloaded + Duration::from_secs(2)).count()
            > 8
    });
    let late: Vec<Value> = sub
        .on("vigil/test/yard/detections")
        .iter()
        .filter(|r| r.at > reloaded + Duration::from_secs(2))
        .map(Received::json)
        .collect();
    for d in late.iter().flat_map(|d| d["detections"].as_array().cloned().unwrap()) {
        assert_eq!(d["label"], "person", "the reloaded labels filter applies");
    }
    assert!(daemon.child.try_wait().unwrap().is_none(), "still the same process");
    signal(&daemon.child, "TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)), 0);
}

/// `vigil validate` (ExecStartPre) lists every problem and exits 78; `vigil run` refuses a
/// model that is not ONNX with exit 3, naming the camera.
#[test]
fn bad_configs_and_models_are_refused_clearly() {
    let _serial = serial();
    let dir = scratch("daemon-refusals");
    let config = write_config(&dir, 1883, "");
    let (code, out, err) = common::vigil(&["validate", "--config", config.to_str().unwrap(), "--models"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("configuration is valid (1 camera(s), models load)"), "{out}");

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        r#"
[mqtt]
url = "mqtt//broker:1883"
[cameras.front]
model = "missing.toml"
[cameras.front.source]
kind = "v4l2"
device = "/dev/video-vigil-no-such-camera"
[cameras.back]
model = "missing.toml"
frame_rate = 3
"#,
    )
    .unwrap();
    let (code, _, err) = common::vigil(&["validate", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 78, "{err}");
    for expected in [
        "6 problem(s)",
        "mqtt.url: \"mqtt//broker:1883\" must start with mqtt:// or mqtts://",
        "cameras.front.model: the model manifest",
        "cameras.front.source.device: camera device /dev/video-vigil-no-such-camera does not exist",
        "cameras.back.frame_rate: unknown key",
        "cameras.back.source: missing",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
    let (code, _, err) = common::vigil(&["run", "--config", bad.to_str().unwrap()]);
    assert_eq!(code, 78, "run refuses the same config: {err}");

    // A manifest whose ONNX file is not a model.
    let not_onnx = dir.join("not-a-model.onnx");
    std::fs::write(&not_onnx, "this is text, not a protobuf").unwrap();
    let manifest = std::fs::read_to_string(root().join("models/nanodet-m.toml"))
        .unwrap()
        .replace("model = \"nanodet-m.onnx\"", &format!("model = \"{}\"", not_onnx.display()))
        .replace(
            "file = \"labels/coco-80.txt\"",
            &format!("file = \"{}\"", root().join("models/labels/coco-80.txt").display()),
        );
    std::fs::write(dir.join("broken.toml"), manifest).unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let model_line = text.lines().find(|l| l.starts_with("model = ")).unwrap().to_string();
    std::fs::write(&config, text.replace(&model_line, "model = \"broken.toml\"")).unwrap();
    let (code, _, err) = common::vigil(&["run", "--config", config.to_str().unwrap()]);
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains("camera yard") && err.contains("not-a-model.onnx") && err.contains("not a usable ONNX model"),
        "{err}"
    );
}

/// A manifest for the bundled BlazeFace under another version, in `dir`.
fn blazeface_version(dir: &Path, version: &str) -> PathBuf {
    let text = std::fs::read_to_string(root().join("models/blazeface.toml"))
        .unwrap()
        .replace("version = \"1.0.0\"", &format!("version = \"{version}\""))
        .replace(
            "model = \"blazeface.onnx\"",
            &format!("model = \"{}\"", root().join("models/blazeface.onnx").display()),
        );
    let path = dir.join(format!("blazeface-{version}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// Like [`blazeface_version`], with its own ONNX file: the same graph and weights, re-encoded
/// with another doc string, so it computes the same but has another sha256.
fn blazeface_rebuilt(dir: &Path, version: &str) -> PathBuf {
    use prost::Message;
    let bytes = std::fs::read(root().join("models/blazeface.onnx")).unwrap();
    let mut model = tract_onnx::pb::ModelProto::decode(bytes.as_slice()).unwrap();
    model.doc_string = format!("BlazeFace, re-encoded for version {version}");
    let onnx = dir.join(format!("blazeface-{version}.onnx"));
    std::fs::write(&onnx, model.encode_to_vec()).unwrap();
    let manifest = blazeface_version(dir, version);
    let text = std::fs::read_to_string(&manifest)
        .unwrap()
        .replace(root().join("models/blazeface.onnx").to_str().unwrap(), onnx.to_str().unwrap());
    std::fs::write(&manifest, text).unwrap();
    manifest
}

/// A device "test" in group "porch" that trusts `key`, with BlazeFace 1.0.0 on each of
/// `cameras` (the astronaut photo replayed at `fps`), its model store in `dir`/store.
fn deploy_config(dir: &Path, port: u16, key: &ed25519_dalek::SigningKey, cameras: &[&str], fps: u32) -> PathBuf {
    let mut text = format!(
        r#"device_id = "test"
[mqtt]
url = "mqtt://127.0.0.1:{port}"
[deploy]
trusted_keys = ["{public}"]
groups = ["porch"]
store = "store"
"#,
        public = vigil::deploy::keys::hex(key.verifying_key().as_bytes()),
    );
    for camera in cameras {
        text += &format!(
            r#"[cameras.{camera}]
model = "{model}"
fps = {fps}
[cameras.{camera}.source]
kind = "replay"
path = "{photo}"
fps = {fps}
"#,
            model = root().join("models/blazeface.toml").display(),
            photo = root().join("tests/photos/astronaut.png").display(),
        );
    }
    let path = dir.join("vigil.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// (frame, model version) of each detections message of `camera`, in arrival order.
fn versions_seen(sub: &Subscriber, camera: &str) -> Vec<(u64, String)> {
    sub.on(&format!("vigil/test/{camera}/detections"))
        .iter()
        .map(|r| {
            let d = r.json();
            (d["frame"].as_u64().unwrap(), d["model"]["version"].as_str().unwrap().to_string())
        })
        .collect()
}

/// A signed bundle reaches the device over MQTT and goes live between two frames with no
/// restart; bad ones are refused with their reason while the old model keeps serving; a
/// restart keeps the deployed version.
#[test]
fn deploys_a_signed_model_without_a_restart() {
    use ed25519_dalek::SigningKey;
    use vigil::deploy::{bundle, Target};
    let _serial = serial();
    let dir = scratch("daemon-deploy");
    let broker = Mosquitto::start(&dir);
    let sub = Subscriber::start(broker.port, "test-deploy");
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let config = deploy_config(&dir, broker.port, &key, &["door"], 10);
    let mut daemon = Daemon::start(&config, &[]);
    let limit = Duration::from_secs(60);
    let versions = |sub: &Subscriber| versions_seen(sub, "door");
    sub.wait_for("detections from 1.0.0", limit, |g| g.iter().any(|r| r.topic == "vigil/test/door/detections"));
    let states =
        |sub: &Subscriber| -> Vec<Value> { sub.on("vigil/test/deploy/state").iter().map(Received::json).collect() };
    let send = |bytes: Vec<u8>, retain: bool, topic: &str| {
        sub.client.publish(topic, QoS::AtLeastOnce, retain, bytes).unwrap();
    };
    let expect_refusal = |bytes: Vec<u8>, reason: &str| {
        let before = states(&sub).len();
        send(bytes, false, "vigil/test/deploy");
        sub.wait_for(reason, limit, |g| g.iter().filter(|r| r.topic == "vigil/test/deploy/state").count() > before);
        let state = states(&sub).pop().unwrap();
        assert_eq!(state["result"], "refused", "{state}");
        assert!(state["reason"].as_str().unwrap().contains(reason), "{state}");
    };

    let v110 = blazeface_version(&dir, "1.1.0");
    let good = bundle::build(&v110, &key, Target::default(), 1e-4).unwrap();
    // Refused, each with its reason; the old model keeps serving.
    let stranger = SigningKey::from_bytes(&[9u8; 32]);
    expect_refusal(bundle::build(&v110, &stranger, Target::default(), 1e-4).unwrap(), "not trusted");
    let mut tampered = good.clone();
    let at = tampered.len() - 300_000;
    tampered[at] ^= 1;
    expect_refusal(tampered, "sha256");
    let elsewhere = Target { devices: vec!["garage".into()], groups: vec![] };
    expect_refusal(bundle::build(&v110, &key, elsewhere, 1e-4).unwrap(), "not for device test");
    let n = versions(&sub).len();
    sub.wait_for("detections still flowing", limit, |g| {
        g.iter().filter(|r| r.topic == "vigil/test/door/detections").count() > n + 3
    });
    assert!(versions(&sub).iter().all(|(_, v)| v == "1.0.0"));

    // The good bundle, retained on the group's topic: live without a restart.
    send(good.clone(), true, "vigil/groups/porch/deploy");
    sub.wait_for("acceptance", limit, |g| {
        g.iter().any(|r| r.topic == "vigil/test/deploy/state" && r.json()["result"] == "accepted")
    });
    let state = states(&sub).pop().unwrap();
    assert_eq!(state["serving"]["version"], "1.1.0", "{state}");
    assert_eq!(state["previous"], "1.0.0", "{state}");
    assert_eq!(state["cameras"], serde_json::json!(["door"]));
    sub.wait_for("detections from 1.1.0", limit, |g| {
        let of_110 = |r: &&Received| r.topic == "vigil/test/door/detections" && r.json()["model"]["version"] == "1.1.0";
        g.iter().filter(of_110).count() >= 3
    });
    // Every frame answered by one version, and the switch happens once, between two frames.
    let mut seen = versions(&sub);
    seen.sort();
    let switch = seen.iter().position(|(_, v)| v == "1.1.0").unwrap();
    assert!(
        seen[..switch].iter().all(|(_, v)| v == "1.0.0") && seen[switch..].iter().all(|(_, v)| v == "1.1.0"),
        "{seen:?}"
    );
    assert_eq!(std::fs::read_to_string(dir.join("store/blazeface/current")).unwrap().trim(), "1.1.0");
    assert!(dir.join("store/blazeface/1.1.0/model.onnx").is_file());
    assert!(dir.join("store/blazeface/1.0.0/model.onnx").is_file(), "the configured version is kept too");
    assert!(sub.on("vigil/test/door/model").iter().any(|r| r.json()["version"] == "1.1.0"));
    // A replay of an older version is refused.
    expect_refusal(bundle::build(&blazeface_version(&dir, "0.9.0"), &key, Target::default(), 1e-4).unwrap(), "older");

    // A restart serves the deployed version; the retained bundle, delivered again, is
    // recognised as the one in service (no new state).
    signal(&daemon.child, "TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)), 0, "{}", daemon.log());
    let states_before = states(&sub).len();
    let restarted = Instant::now();
    let mut daemon = Daemon::start(&config, &[]);
    sub.wait_for("detections after the restart", limit, |g| {
        g.iter().any(|r| r.topic == "vigil/test/door/detections" && r.at > restarted)
    });
    let after: Vec<Value> =
        sub.on("vigil/test/door/detections").iter().filter(|r| r.at > restarted).map(Received::json).collect();
    assert!(after.iter().all(|d| d["model"]["version"] == "1.1.0"), "{after:?}");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(states(&sub).len(), states_before, "the retained bundle is not deployed twice");
    assert!(daemon.log().contains("serving the deployed version from the store"), "{}", daemon.log());
    signal(&daemon.child, "TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)), 0);
}

/// `vigil deploy` or `vigil rollback` as a child process, its output kept.
struct HostCommand {
    child: Child,
    out: PathBuf,
}

impl HostCommand {
    fn start(dir: &Path, name: &str, args: &[&str]) -> HostCommand {
        let out = dir.join(format!("{name}.out"));
        let file = std::fs::File::create(&out).unwrap();
        let child = common::vigil_command().args(args).stdout(file.try_clone().unwrap()).stderr(file).spawn().unwrap();
        HostCommand { child, out }
    }

    /// Its exit code and everything it printed.
    fn finish(mut self, limit: Duration) -> (i32, String) {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), std::fs::read_to_string(&self.out).unwrap());
            }
            if started.elapsed() > limit {
                let _ = self.child.kill();
                panic!("vigil did not finish within {limit:?}:\n{}", std::fs::read_to_string(&self.out).unwrap());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `vigil deploy` publishes a bundle while the device is offline; the device takes the
/// retained bundle when it comes up and `vigil deploy` reports its answer. `vigil rollback`
/// returns it to the configured version, which a restart keeps (the retained bundle of the
/// withdrawn version is not applied again), and a rollback with nothing below is refused.
#[test]
fn deploy_command_reaches_an_offline_device_and_rollback_returns() {
    use ed25519_dalek::SigningKey;
    use vigil::deploy::{bundle, Target};
    let _serial = serial();
    let dir = scratch("daemon-deploy-command");
    let broker = Mosquitto::start(&dir);
    let sub = Subscriber::start(broker.port, "test-deploy-command");
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let config = deploy_config(&dir, broker.port, &key, &["door"], 10);
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let file = dir.join("blazeface-1.1.0.bundle");
    std::fs::write(&file, bundle::build(&blazeface_version(&dir, "1.1.0"), &key, Target::default(), 1e-4).unwrap())
        .unwrap();
    let file = file.to_str().unwrap();
    let limit = Duration::from_secs(60);

    // The device is offline: the bundle waits on the broker, and so does `vigil deploy`.
    let deploy = HostCommand::start(
        &dir,
        "deploy",
        &["deploy", "--bundle", file, "--device", "test", "--broker", &url, "--timeout", "90"],
    );
    sub.wait_for("the retained bundle", limit, |g| g.iter().any(|r| r.topic == "vigil/test/deploy"));
    std::thread::sleep(Duration::from_secs(1));
    let mut daemon = Daemon::start(&config, &[]);
    let (code, out) = deploy.finish(Duration::from_secs(120));
    assert_eq!(code, 0, "{out}\n{}", daemon.log());
    assert!(
        out.contains("test: accepted after")
            && out.contains("serving blazeface 1.1.0")
            && out.contains("previous 1.0.0"),
        "{out}"
    );
    let state = sub.on("vigil/test/deploy/state").pop().unwrap().json();
    assert_eq!((state["action"].as_str(), state["result"].as_str()), (Some("deploy"), Some("accepted")), "{state}");
    assert_eq!(state["groups"], serde_json::json!(["porch"]));
    sub.wait_for("detections from 1.1.0", limit, |g| {
        g.iter().any(|r| r.topic == "vigil/test/door/detections" && r.json()["model"]["version"] == "1.1.0")
    });

    // Rollback: back to the configured 1.0.0, which the store kept. Asked on the device's
    // topic and its group's, it is done once.
    let rollback = |name: &str| {
        HostCommand::start(&dir, name, &["rollback", "--device", "test", "--broker", &url, "--timeout", "60"])
    };
    let asked = Instant::now();
    let both = ["rollback", "--device", "test", "--group", "porch", "--broker", &url, "--timeout", "60"];
    let (code, out) = HostCommand::start(&dir, "rollback", &both).finish(Duration::from_secs(90));
    assert_eq!(code, 0, "{out}\n{}", daemon.log());
    assert!(
        out.contains("test: rolled back after")
            && out.contains("serving blazeface 1.0.0")
            && out.contains("previous 1.1.0"),
        "{out}"
    );
    let state = sub.on("vigil/test/deploy/state").pop().unwrap().json();
    assert_eq!(
        (state["action"].as_str(), state["result"].as_str()),
        (Some("rollback"), Some("rolled_back")),
        "{state}"
    );
    assert_eq!(state["serving"]["version"], "1.0.0");
    wait_until("the second copy of the request", limit, || daemon.log().contains("the same rollback request again"));
    let state = sub.on("vigil/test/deploy/state").pop().unwrap().json();
    assert_eq!(state["result"], "rolled_back", "rolled back once only: {state}");
    sub.wait_for("detections from 1.0.0 again", limit, |g| {
        g.iter()
            .filter(|r| {
                r.topic == "vigil/test/door/detections" && r.at > asked && r.json()["model"]["version"] == "1.0.0"
            })
            .count()
            >= 3
    });
    let mut seen = versions_seen(&sub, "door");
    seen.sort();
    let back = seen.iter().rposition(|(_, v)| v == "1.1.0").unwrap();
    assert!(seen[back + 1..].iter().all(|(_, v)| v == "1.0.0"), "one switch back: {seen:?}");
    assert_eq!(std::fs::read_to_string(dir.join("store/blazeface/current")).unwrap().trim(), "1.0.0");
    assert_eq!(std::fs::read_to_string(dir.join("store/blazeface/withdrawn")).unwrap().trim(), "1.1.0");

    // Nothing below the first version.
    let (code, out) = rollback("rollback-again").finish(Duration::from_secs(90));
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("refused") && out.contains("no earlier version"), "{out}");

    // A restart: the retained 1.1.0 bundle comes again and is not applied (withdrawn).
    signal(&daemon.child, "TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)), 0, "{}", daemon.log());
    let restarted = Instant::now();
    let states_before = sub.on("vigil/test/deploy/state").len();
    let mut daemon = Daemon::start(&config, &[]);
    sub.wait_for("detections after the restart", limit, |g| {
        g.iter().filter(|r| r.topic == "vigil/test/door/detections" && r.at > restarted).count() >= 3
    });
    let after: Vec<Value> =
        sub.on("vigil/test/door/detections").iter().filter(|r| r.at > restarted).map(Received::json).collect();
    assert!(after.iter().all(|d| d["model"]["version"] == "1.0.0"), "{after:?}");
    assert!(
        daemon.log().contains("retained bundle not applied") && daemon.log().contains("rolled back"),
        "{}",
        daemon.log()
    );
    assert_eq!(sub.on("vigil/test/deploy/state").len(), states_before, "no new state for a stale bundle");

    // Deployed again on purpose, the withdrawn version is refused with its reason.
    let (code, out) = HostCommand::start(
        &dir,
        "redeploy",
        &["deploy", "--bundle", file, "--device", "test", "--broker", &url, "--timeout", "60"],
    )
    .finish(Duration::from_secs(90));
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("was rolled back on this device"), "{out}");
    signal(&daemon.child, "TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)), 0);
}

/// Three cameras share a model; a group deploy swaps all three while frames keep coming:
/// every frame around the deploy is answered (none dropped while the bundle is checked),
/// every frame by exactly one version, each camera switches once, between two consecutive
/// frames, and detections carry the new model's hash from the swap on.
#[test]
fn swaps_under_load_on_several_cameras() {
    use ed25519_dalek::SigningKey;
    use vigil::deploy::{bundle, Target};
    let _serial = serial();
    let dir = scratch("daemon-deploy-load");
    let broker = Mosquitto::start(&dir);
    let sub = Subscriber::start(broker.port, "test-deploy-load");
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let cameras = ["east", "north", "west"];
    let config = deploy_config(&dir, broker.port, &key, &cameras, 10);
    let file = dir.join("blazeface-2.0.0.bundle");
    let target = Target { devices: vec![], groups: vec!["porch".into()] };
    std::fs::write(&file, bundle::build(&blazeface_rebuilt(&dir, "2.0.0"), &key, target, 1e-4).unwrap()).unwrap();
    let limit = Duration::from_secs(60);
    let mut daemon = Daemon::start(&config, &[]);
    let detections = |g: &[Received], camera: &str| {
        g.iter().filter(|r| r.topic == format!("vigil/test/{camera}/detections")).count()
    };
    sub.wait_for("every camera running", limit, |g| cameras.iter().all(|c| detections(g, c) >= 5));

    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let published = Instant::now();
    let args = [
        "deploy",
        "--bundle",
        file.to_str().unwrap(),
        "--group",
        "porch",
        "--expect",
        "1",
        "--broker",
        &url,
        "--timeout",
        "60",
    ];
    let (code, out) = HostCommand::start(&dir, "deploy", &args).finish(Duration::from_secs(90));
    assert_eq!(code, 0, "{out}\n{}", daemon.log());
    assert!(out.contains("cameras east, north, west"), "{out}");
    let state = sub.on("vigil/test/deploy/state").pop().unwrap();
    let (accepted, new_sha) = (state.at, state.json()["serving"]["sha256"].as_str().unwrap().to_string());
    sub.wait_for("2.0.0 on every camera", limit, |g| {
        cameras.iter().all(|c| {
            g.iter()
                .filter(|r| r.topic == format!("vigil/test/{c}/detections") && r.json()["model"]["version"] == "2.0.0")
                .count()
                >= 3
        })
    });
    signal(&daemon.child, "TERM");
    assert_eq!(daemon.wait_exit(Duration::from_secs(20)), 0, "{}", daemon.log());

    for camera in cameras {
        let mut seen = versions_seen(&sub, camera);
        let n = seen.len();
        seen.sort();
        seen.dedup_by_key(|(frame, _)| *frame);
        assert_eq!(seen.len(), n, "camera {camera}: a frame answered twice");
        let switch = seen.iter().position(|(_, v)| v == "2.0.0").unwrap();
        assert!(switch > 0, "camera {camera}: no frame on 1.0.0");
        assert!(
            seen[..switch].iter().all(|(_, v)| v == "1.0.0") && seen[switch..].iter().all(|(_, v)| v == "2.0.0"),
            "camera {camera}: {seen:?}"
        );
        assert_eq!(seen[switch].0, seen[switch - 1].0 + 1, "camera {camera}: a frame lost at the swap: {seen:?}");
        // From just before the bundle was published to just after it went live, the camera
        // kept answering every frame: the check ran beside inference, not in its way.
        let (from, to) = (published - Duration::from_millis(300), accepted + Duration::from_millis(300));
        let mut around: Vec<u64> = sub
            .on(&format!("vigil/test/{camera}/detections"))
            .iter()
            .filter(|r| r.at > from && r.at < to)
            .map(|r| r.json()["frame"].as_u64().unwrap())
            .collect();
        around.sort();
        assert!(around.len() >= 3, "camera {camera}: detections stopped around the deploy: {around:?}");
        assert!(
            around.windows(2).all(|w| w[1] == w[0] + 1),
            "camera {camera}: frames dropped around the deploy: {around:?}"
        );
        // Detections carry the model's hash with its version: the new file's from the swap on.
        let shas: BTreeSet<(String, String)> = sub
            .on(&format!("vigil/test/{camera}/detections"))
            .iter()
            .map(|r| {
                let m = r.json()["model"].clone();
                (m["version"].as_str().unwrap().to_string(), m["sha256"].as_str().unwrap().to_string())
            })
            .collect();
        let new: Vec<&String> = shas.iter().filter(|(v, _)| v == "2.0.0").map(|(_, s)| s).collect();
        let old: Vec<&String> = shas.iter().filter(|(v, _)| v == "1.0.0").map(|(_, s)| s).collect();
        assert_eq!(new, [&new_sha], "camera {camera}");
        assert!(old.len() == 1 && old[0] != &new_sha, "camera {camera}: {shas:?}");
    }
}

/// A bundle bigger than a megabyte (MobileNetV2, 14 MB) goes out whole and stays retained;
/// a device that never answers is named, with exit status 5.
#[test]
fn deploy_command_sends_a_large_bundle_and_names_a_silent_device() {
    use ed25519_dalek::SigningKey;
    use vigil::deploy::{bundle, Target};
    let _serial = serial();
    let dir = scratch("daemon-deploy-large");
    let broker = Mosquitto::start(&dir);
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let bytes = bundle::build(&root().join("models/mobilenet-v2.toml"), &key, Target::default(), 1e-4).unwrap();
    assert!(bytes.len() > 8 << 20, "{} bytes", bytes.len());
    let file = dir.join("mobilenet.bundle");
    std::fs::write(&file, &bytes).unwrap();
    let url = format!("mqtt://127.0.0.1:{}", broker.port);
    let args = ["deploy", "--bundle", file.to_str().unwrap(), "--device", "shed", "--broker", &url, "--timeout", "2"];
    let (code, out) = HostCommand::start(&dir, "deploy", &args).finish(Duration::from_secs(60));
    assert_eq!(code, 5, "{out}");
    assert!(out.contains(&format!("published on vigil/shed/deploy ({} bytes)", bytes.len())), "{out}");
    assert!(
        out.contains("no answer from shed") && out.contains("take the retained bundle when they reconnect"),
        "{out}"
    );
    // A client that connects afterwards (the device, coming back) gets it from the broker.
    let late = Subscriber::start(broker.port, "test-deploy-late");
    late.wait_for("the retained bundle", Duration::from_secs(30), |g| g.iter().any(|r| r.topic == "vigil/shed/deploy"));
    let kept = late.on("vigil/shed/deploy").pop().unwrap();
    assert!(kept.retain && kept.payload == bytes, "the broker keeps the whole bundle, retained");
}

/// A device on the embedded broker, defaults throughout, serving the bundled MobileNetV2:
/// `max_packet_size` (when given) set under `[mqtt]`.
fn embedded_mobilenet_device(
    dir: &Path,
    port: u16,
    key: &ed25519_dalek::SigningKey,
    max_packet: Option<usize>,
) -> PathBuf {
    let config = dir.join("vigil.toml");
    let mqtt = max_packet.map(|n| format!("[mqtt]\nmax_packet_size = {n}\n")).unwrap_or_default();
    let text = format!(
        r#"device_id = "test"
[broker]
enabled = true
listen = "127.0.0.1:{port}"
{mqtt}[deploy]
trusted_keys = ["{public}"]
store = "store"
[cameras.door]
model = "{model}"
fps = 2
[cameras.door.source]
kind = "replay"
path = "{photo}"
fps = 2
"#,
        public = vigil::deploy::keys::hex(key.verifying_key().as_bytes()),
        model = root().join("models/mobilenet-v2.toml").display(),
        photo = root().join("tests/photos/chelsea.png").display(),
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// The bundled MobileNetV2 as a version 9.0.0 bundle (14 MB, more than the old 8 MiB
/// default packet limit), written to `dir`.
fn mobilenet_bundle(dir: &Path, key: &ed25519_dalek::SigningKey) -> (PathBuf, usize) {
    let text = std::fs::read_to_string(root().join("models/mobilenet-v2.toml")).unwrap();
    let version = text.lines().find_map(|l| l.strip_prefix("version = ")).unwrap().to_string();
    let models = root().join("models");
    let text = text
        .replace(&format!("version = {version}"), "version = \"9.0.0\"")
        .replace("model = \"", &format!("model = \"{}/", models.display()))
        .replace("file = \"labels/", &format!("file = \"{}/labels/", models.display()));
    let manifest = dir.join("mobilenet-v2-9.toml");
    std::fs::write(&manifest, text).unwrap();
    let bytes = vigil::deploy::bundle::build(&manifest, key, vigil::deploy::Target::default(), 1e-4).unwrap();
    let file = dir.join("mobilenet-9.bundle");
    std::fs::write(&file, &bytes).unwrap();
    (file, bytes.len())
}

/// The bundled MobileNetV2 (a 14 MB bundle) deploys to a device on the embedded broker with
/// every limit at its default: accepted, and its detections then carry the new version.
#[test]
fn the_bundled_model_deploys_through_the_embedded_broker_with_the_defaults() {
    let _serial = serial();
    let dir = scratch("daemon-deploy-embedded");
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let port = free_port();
    let config = embedded_mobilenet_device(&dir, port, &key, None);
    let (mut daemon, sub) = start_embedded(&config, port, "test-deploy-embedded");
    let limit = Duration::from_secs(90);
    sub.wait_for("detections", limit, |g| g.iter().any(|r| r.topic == "vigil/test/door/detections"));
    let (bundle, bytes) = mobilenet_bundle(&dir, &key);
    assert!(bytes > 8 << 20, "{bytes} bytes");
    let url = format!("mqtt://127.0.0.1:{port}");
    let args =
        ["deploy", "--bundle", bundle.to_str().unwrap(), "--device", "test", "--broker", &url, "--timeout", "60"];
    let (code, out) = HostCommand::start(&dir, "deploy", &args).finish(Duration::from_secs(120));
    assert_eq!(code, 0, "{out}\n{}", daemon.log());
    assert!(out.contains("test: accepted"), "{out}");
    sub.wait_for("detections from 9.0.0", limit, |g| {
        g.iter().any(|r| r.topic == "vigil/test/door/detections" && r.json()["model"]["version"] == "9.0.0")
    });
    daemon.stop();
}

/// A bundle over the embedded broker's limit (`mqtt.max_packet_size` set to 4 MiB): the
/// broker drops the sender, and both sides say so naming the key that raises it.
#[test]
fn a_bundle_over_the_embedded_brokers_limit_is_named_on_both_sides() {
    let _serial = serial();
    let dir = scratch("daemon-deploy-embedded-limit");
    let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let port = free_port();
    let config = embedded_mobilenet_device(&dir, port, &key, Some(4 << 20));
    let (daemon, _sub) = start_embedded(&config, port, "test-deploy-embedded-limit");
    let (bundle, bytes) = mobilenet_bundle(&dir, &key);
    let url = format!("mqtt://127.0.0.1:{port}");
    let args =
        ["deploy", "--bundle", bundle.to_str().unwrap(), "--device", "test", "--broker", &url, "--timeout", "10"];
    let (code, out) = HostCommand::start(&dir, "deploy", &args).finish(Duration::from_secs(120));
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains(&format!("closed the connection while taking the {bytes}-byte message"))
            && out.contains("mqtt.max_packet_size"),
        "{out}"
    );
    wait_until("the device's log", Duration::from_secs(30), || {
        daemon.log().contains("the embedded MQTT broker dropped a client sending a message over mqtt.max_packet_size")
    });
    assert!(daemon.log().contains("max_packet_size=4194304"), "{}", daemon.log());
}

/// Hostile messages on the topics a device subscribes to: a retained message larger than
/// `mqtt.max_packet_size` on the deploy topic and on a command topic costs one refused
/// message each — the connection stays up (no reconnect loop), the oversized bundle is
/// refused on the state topic — and a rollback request with a misspelt key is refused
/// with a warning instead of rolling back "the only model".
#[test]
fn oversized_and_malformed_messages_cost_one_refusal_not_the_connection() {
    use ed25519_dalek::SigningKey;
    let _serial = serial();
    let dir = scratch("daemon-hostile");
    let broker = Mosquitto::start(&dir);
    let sub = Subscriber::start(broker.port, "test-hostile");
    let key = SigningKey::from_bytes(&[7u8; 32]);
    let config = deploy_config(&dir, broker.port, &key, &["door"], 10);
    let text = std::fs::read_to_string(&config).unwrap().replace("[mqtt]\n", "[mqtt]\nmax_packet_size = 131072\n");
    std::fs::write(&config, text).unwrap();
    // Waiting on the broker before the device connects, retained.
    let junk = vec![b'x'; 200_000];
    sub.client.publish("vigil/test/deploy", QoS::AtLeastOnce, true, junk.clone()).unwrap();
    sub.client.publish("vigil/test/door/detect/set", QoS::AtLeastOnce, true, junk).unwrap();
    sub.wait_for("both retained messages", Duration::from_secs(10), |g| {
        g.iter().any(|r| r.topic == "vigil/test/deploy") && g.iter().any(|r| r.topic == "vigil/test/door/detect/set")
    });

    let mut daemon = Daemon::start(&config, &[]);
    let limit = Duration::from_secs(60);
    sub.wait_for("detections", limit, |g| g.iter().any(|r| r.topic == "vigil/test/door/detections"));
    sub.wait_for("the bundle's refusal", limit, |g| g.iter().any(|r| r.topic == "vigil/test/deploy/state"));
    let state = sub.on("vigil/test/deploy/state").pop().unwrap().json();
    assert_eq!(state["result"], "refused", "{state}");
    assert!(state["reason"].as_str().unwrap().contains("bundle is 200000 bytes, above the limit of 65536"), "{state}");
    wait_until("the command's refusal", limit, || {
        daemon.log().contains("bytes=200000 a message over mqtt.max_packet_size (131072) is refused")
    });

    // A misspelt rollback request changes nothing and answers nothing.
    sub.publish("vigil/test/deploy/rollback", r#"{"modle":"blazeface"}"#);
    wait_until("the rollback's refusal", limit, || daemon.log().contains("setting=rollback command refused"));
    // The connection is the first one still, and commands still work.
    sub.publish("vigil/test/door/detect/set", "OFF");
    sub.wait_for("detect state OFF", limit, |g| {
        g.iter().any(|r| r.topic == "vigil/test/door/detect/state" && r.payload == b"OFF")
    });
    let log = daemon.log();
    assert_eq!(log.matches("connected to the MQTT broker").count(), 1, "no reconnect:\n{log}");
    assert!(!log.contains("lost the MQTT connection"), "{log}");
    assert!(sub.on("vigil/test/deploy/state").iter().all(|r| r.json()["action"] == "deploy"), "no rollback state");
    assert_eq!(sub.on("vigil/test/availability").iter().filter(|r| r.payload == b"offline").count(), 0);
    daemon.stop();
}

/// The `seq` of every event a daemon's log says it made.
fn event_seqs_logged(log: &str) -> BTreeSet<u64> {
    log.lines()
        .filter(|l| l.contains(" object "))
        .filter_map(|l| l.split_whitespace().find_map(|w| w.strip_prefix("seq=")))
        .map(|s| s.parse().unwrap())
        .collect()
}

/// Events survive a crash: with the broker away, a replay makes its events, vigil is killed
/// with SIGKILL and started again (same state directory), and once the broker is back every
/// event the first process made arrives, by its `seq`.
#[test]
fn events_survive_a_crash_while_the_broker_is_away() {
    let _serial = serial();
    let dir = scratch("daemon-crash");
    let mut broker = Mosquitto::start(&dir);
    let sub = Subscriber::start(broker.port, "test-crash");
    // The subscriber's session exists (and persists) before the broker goes away: a retained
    // probe reaches it once it has subscribed.
    sub.client.publish("vigil/probe", QoS::AtLeastOnce, true, "x").unwrap();
    sub.wait_for("the probe", Duration::from_secs(30), |g| g.iter().any(|r| r.topic == "vigil/probe"));
    broker.stop();
    let config = write_config(&dir, broker.port, "");
    let text = std::fs::read_to_string(&config).unwrap().replace("repeat = 6", "repeat = 6\nloop = false");
    std::fs::write(&config, text).unwrap();
    let limit = Duration::from_secs(90);

    let mut first = Daemon::start(&config, &[]);
    wait_until("the replay to finish", limit, || first.log().contains("replay finished"));
    wait_until("the pipeline to stop", limit, || first.log().contains("pipeline stopped"));
    // Every event it made is in the journal (the publisher logs each at debug level).
    wait_until("every event journaled", limit, || {
        let log = first.log();
        event_seqs_logged(&log).iter().all(|s| log.contains(&format!("seq={s} event journaled")))
    });
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let made = event_seqs_logged(&first.log());
    assert!(made.len() >= 4, "events made while the broker was away: {made:?}\n{}", first.log());

    let second_config = dir.join("vigil-2.toml");
    std::fs::copy(&config, &second_config).unwrap();
    let mut second = Daemon::start(&second_config, &[]);
    wait_until("the journal to be read", limit, || second.log().contains("event journal opened"));
    assert!(second.log().contains(&format!("pending={} ", made.len())), "{}", second.log());
    broker.restart();
    let received = |sub: &Subscriber| -> BTreeSet<u64> {
        sub.on("vigil/test/yard/events").iter().map(|r| r.json()["seq"].as_u64().unwrap()).collect()
    };
    wait_until("every event of the killed process", limit, || made.is_subset(&received(&sub)));
    assert!(second.log().contains("not yet delivered are sent again"), "{}", second.log());
    // Numbering goes on from the journal: the second process's events are new numbers.
    wait_until("events from the second process", limit, || !event_seqs_logged(&second.log()).is_empty());
    let later = event_seqs_logged(&second.log());
    assert!(later.iter().all(|s| s > made.iter().max().unwrap()), "{made:?} then {later:?}");
    signal(&second.child, "TERM");
    assert_eq!(second.wait_exit(Duration::from_secs(20)), 0, "{}", second.log());
}

/// A journal record as vigil frames it (magic 0xE5, kind, body length, crc32 of the body),
/// whatever its body holds: docs/mqtt.md "Reconnects and what is kept".
fn journal_record(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut r = vec![0xE5, kind];
    r.extend_from_slice(&(body.len() as u32).to_le_bytes());
    r.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    r.extend_from_slice(body);
    r
}

/// A journal segment holding checksummed records whose numbers no journal reaches (as a
/// crafted file or a bad restore leaves them): a reservation, an event and an
/// acknowledgement at 2^64 - 1. They panicked the publisher task (`attempt to add with
/// overflow`) and vigil ran on without publishing an event; now they are refused with a
/// warning naming the file and offset, and the events go out numbered from 1.
#[test]
fn journal_records_with_numbers_past_the_limit_are_refused_and_events_go_on() {
    let _serial = serial();
    let dir = scratch("daemon-journal-limit");
    let broker = Mosquitto::start(&dir);
    let sub = Subscriber::start(broker.port, "test-journal-limit");
    let config = write_config(&dir, broker.port, "");
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let mut event = u64::MAX.to_le_bytes().to_vec();
    let topic = b"vigil/test/yard/events";
    event.extend_from_slice(&(topic.len() as u16).to_le_bytes());
    event.extend_from_slice(topic);
    event.extend_from_slice(br#"{"crafted":true}"#);
    let segment = spool.join("0000000000000001.log");
    let records = [
        journal_record(b'R', &u64::MAX.to_le_bytes()),
        journal_record(b'E', &event),
        journal_record(b'A', &u64::MAX.to_le_bytes()),
    ];
    std::fs::write(&segment, records.concat()).unwrap();

    let mut daemon = Daemon::start(&config, &[]);
    let limit = Duration::from_secs(90);
    let made = |sub: &Subscriber| -> Vec<Value> {
        sub.on("vigil/test/yard/events").iter().map(Received::json).filter(|e| e["type"] == "new").collect()
    };
    wait_until("two events made by this vigil", limit, || {
        assert!(daemon.child.try_wait().unwrap().is_none(), "vigil exited:\n{}", daemon.log());
        made(&sub).len() >= 2
    });
    let seqs: Vec<u64> = made(&sub).iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.iter().all(|&s| (1..=2 * 1000).contains(&s)), "numbered from 1 again: {seqs:?}");
    assert!(
        sub.on("vigil/test/yard/events").iter().all(|r| r.json()["crafted"].is_null()),
        "the refused event was sent"
    );
    let log = daemon.log();
    for offset in [0, records[0].len(), records[0].len() + records[1].len()] {
        let warning = format!("path={} offset={offset} event journal record damaged", segment.display());
        assert!(log.contains(&warning), "no {warning:?} in:\n{log}");
    }
    assert!(log.contains("above 2^63"), "{log}");
    assert!(!log.contains("panicked"), "{log}");
    daemon.stop();
}

/// A segment `chattr +i` made immutable until this is dropped (then mutable again, so the
/// scratch folder can be removed).
struct Immutable(PathBuf);

impl Immutable {
    /// None where chattr cannot (not root, or a file system without the flag).
    fn set(path: &Path) -> Option<Immutable> {
        let out = Command::new("chattr").arg("+i").arg(path).output().ok()?;
        out.status.success().then(|| Immutable(path.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// A journal segment vigil cannot use stops `vigil run` at start-up with exit 78 (the
/// configuration refused: `mqtt.spool_dir` is the user's to fix) and a message naming the
/// file; it was exit 1 with "Is a directory (os error 21)". A folder in a segment's place,
/// and (as root, on a file system with the flag) an immutable segment.
#[test]
fn an_unusable_journal_segment_is_refused_at_start_naming_it() {
    let _serial = serial();
    let dir = scratch("daemon-journal-unusable");
    let config = write_config(&dir, free_port(), "");
    let segment = dir.join("spool/0000000000000001.log");
    std::fs::create_dir_all(&segment).unwrap();
    let mut daemon = Daemon::start(&config, &[]);
    assert_eq!(daemon.wait_exit(Duration::from_secs(60)), 78, "{}", daemon.log());
    let expected = format!("{}: cannot be read as an event journal segment", segment.display());
    assert_eq!(daemon.log().matches(&expected).count(), 1, "{expected:?} once in:\n{}", daemon.log());

    std::fs::remove_dir(&segment).unwrap();
    std::fs::write(&segment, journal_record(b'R', &1000u64.to_le_bytes())).unwrap();
    let Some(_immutable) = Immutable::set(&segment) else {
        eprintln!(
            "NOT CHECKED: an immutable journal segment (chattr +i {} failed: this needs root and a file \
             system with the flag)",
            segment.display()
        );
        return;
    };
    let mut daemon = Daemon::start(&config, &[]);
    assert_eq!(daemon.wait_exit(Duration::from_secs(60)), 78, "{}", daemon.log());
    let expected = format!("{}: cannot be opened for writing", segment.display());
    assert_eq!(daemon.log().matches(&expected).count(), 1, "{expected:?} once in:\n{}", daemon.log());
}

/// HTTP MJPEG cameras in the daemon, beside a replay: the one with the right password
/// publishes on MQTT the labels the replay of the same JPEG publishes, and goes on after its
/// stream is cut in the middle of a frame; the one with a wrong password is reported not
/// running, and the log says why without showing the password, while the others run.
#[test]
fn mjpeg_cameras_publish_like_a_replay_and_a_refused_one_says_why() {
    let _serial = serial();
    let dir = scratch("daemon-mjpeg");
    let port = free_port();
    let jpeg = common::mjpeg::jpeg_of("motorcycle_left.png");
    std::fs::write(dir.join("motorcycle.jpg"), &jpeg).unwrap();
    let camera = common::mjpeg::serve(jpeg.clone(), jpeg, 10);
    let (camera_port, streams) = (camera.port, camera.streams);
    let model = root().join("models/nanodet-m.toml");
    let cameras = format!(
        r#"[cameras.yard]
model = {model:?}
fps = 4
source = {{ kind = "replay", path = "motorcycle.jpg", fps = 4 }}
[cameras.door]
model = {model:?}
fps = 4
source = {{ kind = "mjpeg", url = "http://vigil:s3cret@127.0.0.1:{camera_port}/stream" }}
[cameras.gate]
model = {model:?}
fps = 4
source = {{ kind = "mjpeg", url = "http://vigil:hunter2@127.0.0.1:{camera_port}/stream" }}
"#
    );
    let (mut daemon, sub) = start_with_cameras(&dir, port, &cameras, "test-mjpeg");
    let labels = |camera: &str| labels_seen(&sub, camera);
    // Detections from the door camera's second stream, after the first was cut mid-frame.
    sub.wait_for("door detections after a reconnection", Duration::from_secs(120), |got| {
        let stats = got.iter().rev().find(|r| r.topic == "vigil/test/stats").map(Received::json);
        streams.load(std::sync::atomic::Ordering::Relaxed) == 2
            && stats.is_some_and(|s| {
                s["cameras"]["door"]["source_reconnects"] == 1 && s["cameras"]["door"]["inferred"].as_u64() > Some(4)
            })
    });
    let (yard, door) = (labels("yard"), labels("door"));
    assert!(yard.contains("motorcycle"), "{yard:?}");
    assert_eq!(door, yard, "the MJPEG camera sees what the replay of its JPEG sees");
    let stats = sub.on("vigil/test/stats").last().unwrap().json();
    let cameras = &stats["cameras"];
    assert_eq!(cameras["door"]["source_running"], true, "{stats}");
    assert_eq!(cameras["yard"]["source_running"], true, "{stats}");
    assert_refused(&sub, &stats, "gate");
    let log = daemon.log();
    assert!(
        log.lines().any(|l| l.contains("camera=gate") && l.contains("refused the credentials (HTTP 401)")),
        "the log names the refusal:\n{log}"
    );
    assert!(log.contains("url=http://vigil:***@127.0.0.1:"), "{log}");
    assert!(!log.contains("hunter2") && !log.contains("s3cret"), "a password in the log:\n{log}");
    daemon.stop();
}

/// RTSP cameras over MQTT (GStreamer's RTSP server streaming a photo as H.264 High profile):
/// one publishes the labels a replay of the photo publishes, goes on after the server is
/// killed and started again, with no restart of vigil; one with a wrong password, one with a
/// wrong path and one whose stream is in a codec vigil does not decode (RTP/JPEG) are
/// `source_running: false` with the reason in the log (and no password there), while the
/// others run.
#[test]
fn rtsp_cameras_publish_like_a_replay_outlive_a_server_restart_and_refusals_say_why() {
    let _serial = serial();
    let dir = scratch("daemon-rtsp");
    let port = free_port();
    let mut server = common::rtsp::Server::start("astronaut.png", "digest");
    let rtsp = server.port;
    let model = root().join("models/nanodet-m.toml");
    let photo = root().join("tests/photos/astronaut.png");
    let cameras = format!(
        r#"[cameras.yard]
model = {model:?}
fps = 4
source = {{ kind = "replay", path = {photo:?}, fps = 4 }}
[cameras.door]
model = {model:?}
fps = 4
source = {{ kind = "rtsp", url = "rtsp://vigil:s3cret@127.0.0.1:{rtsp}/stream" }}
[cameras.gate]
model = {model:?}
fps = 4
source = {{ kind = "rtsp", url = "rtsp://vigil:hunter2@127.0.0.1:{rtsp}/stream" }}
[cameras.porch]
model = {model:?}
fps = 4
source = {{ kind = "rtsp", url = "rtsp://vigil:s3cret@127.0.0.1:{rtsp}/no-such-path" }}
[cameras.shed]
model = {model:?}
fps = 4
source = {{ kind = "rtsp", url = "rtsp://vigil:s3cret@127.0.0.1:{rtsp}/jpeg", transport = "udp" }}
"#
    );
    let (mut daemon, sub) = start_with_cameras(&dir, port, &cameras, "test-rtsp");
    let door_inferred = |got: &[Received]| {
        let stats = got.iter().rev().find(|r| r.topic == "vigil/test/stats").map(Received::json);
        stats.map(|s| {
            (s["cameras"]["door"]["inferred"].as_u64().unwrap_or(0), s["cameras"]["door"]["source_reconnects"].clone())
        })
    };
    sub.wait_for("door detections", Duration::from_secs(120), |got| door_inferred(got).is_some_and(|(n, _)| n >= 4));
    server.restart();
    let inferred_before = door_inferred(&sub.on("vigil/test/stats")).unwrap().0;
    sub.wait_for("door detections after the server's restart", Duration::from_secs(120), |got| {
        door_inferred(got).is_some_and(|(n, reconnects)| reconnects == 1 && n >= inferred_before + 4)
    });
    let labels = |camera: &str| labels_seen(&sub, camera);
    let (yard, door) = (labels("yard"), labels("door"));
    assert!(yard.contains("person"), "{yard:?}");
    assert_eq!(door, yard, "the RTSP camera sees what the replay of its photo sees");
    let stats = sub.on("vigil/test/stats").last().unwrap().json();
    let cameras = &stats["cameras"];
    assert_eq!(
        (&cameras["door"]["source_running"], &cameras["yard"]["source_running"]),
        (&serde_json::json!(true), &serde_json::json!(true)),
        "{stats}"
    );
    for refused in ["gate", "porch", "shed"] {
        assert_refused(&sub, &stats, refused);
    }
    let log = daemon.log();
    for (camera, why) in [
        ("gate", "the camera refused the credentials (RTSP 401)"),
        ("porch", "the camera has no stream at this path (RTSP 404)"),
        ("shed", "the camera sends JPEG video, and vigil decodes H.264 only: set the camera's stream"),
    ] {
        assert!(
            log.lines().any(|l| l.contains(&format!("camera={camera}")) && l.contains(why)),
            "{camera}: {why}\n{log}"
        );
    }
    assert!(log.contains("url=rtsp://vigil:***@127.0.0.1:"), "{log}");
    assert!(
        log.lines().any(|l| l.contains("camera=door") && l.contains("stream lost")),
        "the restart is in the log:\n{log}"
    );
    assert!(!log.contains("hunter2") && !log.contains("s3cret"), "a password in the log:\n{log}");
    daemon.stop();
}

/// What became of one hostile camera run by `vigil bench-source`.
struct HostileRun {
    /// The source's log (stderr).
    log: String,
    /// How long until the log said `expected` (or the limit).
    took: Duration,
    /// The process's peak resident memory (VmHWM), in bytes.
    peak: u64,
    /// The most bytes one connection took from the camera.
    taken: u64,
}

/// Runs `vigil bench-source` (the source as the daemon runs it, with no model) on a hostile
/// camera until its log says `expected` or `limit` passes, watching its peak memory.
fn run_hostile(how: common::rtsp::Hostile, expected: &str, limit: Duration) -> HostileRun {
    use std::io::BufRead;
    let camera = common::rtsp::hostile(how);
    let url = format!("rtsp://127.0.0.1:{}/hostile", camera.port);
    let mut child = common::vigil_command()
        .args(["bench-source", &url, "--seconds", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let log = Arc::new(Mutex::new(String::new()));
    let stderr = child.stderr.take().unwrap();
    let lines = log.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut log = lines.lock().unwrap();
            log.push_str(&line);
            log.push('\n');
        }
    });
    let status = format!("/proc/{}/status", child.id());
    let peak = || {
        let status = std::fs::read_to_string(&status).unwrap_or_default();
        let kb = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).and_then(|v| v.trim().strip_suffix("kB"));
        kb.and_then(|kb| kb.trim().parse::<u64>().ok()).unwrap_or(0) * 1024
    };
    let started = Instant::now();
    let mut highest = 0;
    while started.elapsed() < limit && !log.lock().unwrap().contains(expected) {
        highest = highest.max(peak());
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    highest = highest.max(peak());
    let _ = child.kill();
    let _ = child.wait();
    let log = log.lock().unwrap().clone();
    HostileRun { log, took, peak: highest, taken: camera.most_taken.load(std::sync::atomic::Ordering::Relaxed) }
}

/// Hostile RTSP cameras (tests/common/rtsp.rs), each against `vigil bench-source`: an answer
/// with a 2 GB Content-Length and an endless body, a 50 MB SDP line, an answer head that does
/// not end, an H.264 fragment that never ends and packets of one timestamp with no marker
/// are each cut by vigil's guard at its cap within seconds, having taken no more than the cap
/// (and the socket buffers) from the camera and little memory, and the log says which cap;
/// junk in answer is said in one line without retina's hex dump; a camera that never answers,
/// sends no picture or only pictures that cannot be decoded is said in words (not "no the
/// camera's answer …", not OpenH264's debugging text).
#[test]
fn hostile_rtsp_cameras_are_cut_at_vigils_caps_and_each_error_says_what_happened() {
    use common::rtsp::Hostile;
    const MIB: u64 = 1 << 20;
    let unit = "the camera sent over 32 MiB of stream without completing an access unit (vigil's cap for one picture)";
    let cases = [
        (
            Hostile::EndlessAnswer,
            "the camera's RTSP message declares a body of 2000000000 bytes (Content-Length), over vigil's cap of \
             32 MiB for one RTSP message",
        ),
        (Hostile::LongSdpLine, "declares a body of 50000000 bytes (Content-Length), over vigil's cap of 32 MiB"),
        (Hostile::EndlessHead, "the camera sent an RTSP message head of over 64 KiB with no blank line to end it"),
        (Hostile::EndlessFragment, unit),
        (Hostile::NoMarker, unit),
        (Hostile::Junk, "cannot open the stream: the camera sent something that is not RTSP ("),
        (Hostile::Silent, "cannot open the stream: the camera did not answer DESCRIBE in 15 s"),
        (Hostile::NoPictures, "stream lost: the camera sent no picture in 15 s"),
        (
            Hostile::Undecodable,
            "stream lost: no picture decoded in 15 s (the decoder said: OpenH264 cannot decode the access unit: no \
             parameter sets (SPS and PPS) came before it (state ",
        ),
    ];
    // All at once: the slow ones wait out the source's 15 s.
    let runs: Vec<_> = cases
        .iter()
        .map(|&(how, expected)| std::thread::spawn(move || run_hostile(how, expected, Duration::from_secs(40))))
        .collect();
    let runs: Vec<HostileRun> = runs.into_iter().map(|run| run.join().unwrap()).collect();
    // What the process takes anyway (the binary, its libraries): the least of the peaks.
    let baseline = runs.iter().map(|run| run.peak).min().unwrap_or(0);
    let mut wrong = Vec::new();
    for ((how, expected), HostileRun { log, took, peak, taken }) in cases.iter().zip(runs) {
        let summary = format!("{how:?}: took {took:.1?}, peak {} MiB, {} MiB taken", peak / MIB, taken / MIB);
        eprintln!("{summary}");
        let mut check = |ok: bool, what: String| {
            if !ok {
                wrong.push(format!("{summary}: {what}\n{log}"));
            }
        };
        let said = log.lines().find(|l| l.contains("camera=bench") && l.contains(expected));
        eprintln!("  {}", said.unwrap_or("(not said)"));
        check(said.is_some(), format!("no {expected:?}"));
        for unwanted in ["Native:", "Backtraces", "0000:", "buffered", "no the ", "no a "] {
            check(!log.contains(unwanted), format!("{unwanted:?} in the log"));
        }
        if !matches!(how, Hostile::Junk | Hostile::Silent | Hostile::NoPictures | Hostile::Undecodable) {
            check(took < Duration::from_secs(10), "not cut long before the source's 15 s wait".into());
            check(taken < 64 * MIB, "more than the cap and the socket buffers taken from the camera".into());
        }
        let without = baseline / MIB;
        // retina holds a unit's bytes more than once (its read buffer, grown by doubling, and
        // the unit's pieces): a unit cut at the 32 MiB cap cost up to 148 MiB over the least
        // of the runs (seen in CI; 37 MiB in another run). Before the guard: 540 and rising.
        check(peak < baseline + 192 * MIB, format!("memory not bounded ({without} MiB without)"));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

/// A device on the embedded broker whose camera "door" replays the bundled photos through
/// NanoDet-m and collects frames into `dir`/collect with `collect` (the `[collect]` keys).
fn collecting_device(dir: &Path, port: u16, collect: &str) -> PathBuf {
    let config = dir.join("vigil.toml");
    let text = format!(
        r#"device_id = "test"
[broker]
enabled = true
listen = "127.0.0.1:{port}"
[mqtt]
stats_interval_s = 1
[cameras.door]
model = "{model}"
fps = 20
[cameras.door.source]
kind = "replay"
path = "{photos}"
fps = 10
[cameras.door.collect]
path = "collect"
{collect}
"#,
        model = root().join("models/nanodet-m.toml").display(),
        photos = root().join("tests/photos").display(),
    );
    std::fs::write(&config, text).unwrap();
    config
}

/// The items of a collection folder, as `vigil dataset` reads them (every image checked
/// against its sha256), and what it said of the rest.
fn collected(folder: &Path) -> (Vec<vigil::dataset::folder::Item>, Vec<String>) {
    match vigil::dataset::folder::open(folder) {
        Ok(f) => vigil::dataset::folder::items(&f, true),
        Err(_) => (Vec::new(), Vec::new()),
    }
}

/// A camera with `[collect]` saves the frames its rules pick, as the camera's own JPEG (a
/// replayed .jpg is saved byte for byte) with the model's detections as YOLO pre-labels and a
/// sidecar; keeps within `max_images`; reports itself in the stats; and answers
/// `collect/set` OFF, ON and NOW on `collect/state`, NOW with the id of the frame it saved.
#[test]
fn the_daemon_collects_frames_with_prelabels_and_answers_collect_commands() {
    let _serial = serial();
    let dir = scratch("daemon-collect");
    let port = free_port();
    let keys = "uncertain = [0.05, 1.0]\nmin_interval_s = 0.2\nnear_duplicate = 0\nbackground_every_s = 0\n\
                prelabel_score = 0.4\nmax_images = 5";
    let config = collecting_device(&dir, port, keys);
    let (mut daemon, sub) = start_embedded(&config, port, "test-collect");
    let folder = dir.join("collect/door");
    let limit = Duration::from_secs(90);
    sub.wait_for("collection stats", limit, |g| {
        g.iter().any(|r| {
            r.topic == "vigil/test/stats" && r.json()["cameras"]["door"]["collect"]["collected"].as_u64() >= Some(8)
        })
    });
    // OFF: the state says so and nothing more is saved (so the folder holds still to be read).
    sub.publish("vigil/test/door/collect/set", "OFF");
    sub.wait_for("collect OFF", limit, |g| {
        g.iter().any(|r| r.topic == "vigil/test/door/collect/state" && r.json()["enabled"] == false)
    });
    std::thread::sleep(Duration::from_secs(1));
    let (items, problems) = collected(&folder);
    assert!(problems.is_empty(), "{problems:?}");
    assert!((1..=5).contains(&items.len()), "max_images = 5 keeps {} items", items.len());
    let photos: Vec<(String, Vec<u8>)> = ["sample1.jpg", "sample4.jpg"]
        .iter()
        .map(|p| (p.to_string(), std::fs::read(root().join("tests/photos").join(p)).unwrap()))
        .collect();
    for item in &items {
        let s = &item.sidecar;
        assert_eq!(
            (s.camera.as_deref(), s.device.as_deref(), s.model.name.as_str()),
            (Some("door"), Some("test"), "nanodet-m")
        );
        assert!(s.why.contains(&vigil::collect::Why::Uncertain), "{:?}", s.why);
        let labels = item.labels().unwrap();
        let prelabelled = s.detections.iter().filter(|d| d.score >= 0.4).count();
        assert_eq!(labels.lines().count(), prelabelled, "{}: {labels}", s.id);
        let image = std::fs::read(item.image()).unwrap();
        assert!(image.starts_with(&[0xFF, 0xD8]), "a JPEG");
        if let Some((name, _)) = photos.iter().find(|(_, bytes)| *bytes == image) {
            eprintln!("{} is {name}, byte for byte", s.id);
        }
    }
    // NOW saves one frame while OFF, and names it.
    let collected_now = |sub: &Subscriber| {
        sub.on("vigil/test/door/collect/state").last().map(|r| r.json()["collected"].as_u64().unwrap()).unwrap()
    };
    let before = collected_now(&sub);
    std::thread::sleep(Duration::from_secs(2));
    sub.publish("vigil/test/door/collect/set", "NOW");
    sub.wait_for("the requested frame", limit, |g| {
        g.iter().any(|r| r.topic == "vigil/test/door/collect/state" && r.json()["last_requested"].is_string())
    });
    let state = sub.on("vigil/test/door/collect/state").pop().unwrap().json();
    assert_eq!(state["collected"].as_u64(), Some(before + 1), "only the requested frame while OFF: {state}");
    let id = state["last_requested"].as_str().unwrap();
    let sidecar = vigil::collect::item::read_sidecar(&folder.join(format!("items/{id}.json")), id).unwrap();
    assert!(sidecar.why.contains(&vigil::collect::Why::Requested), "{:?}", sidecar.why);
    sub.publish("vigil/test/door/collect/set", "maybe");
    wait_until("the refusal", limit, || daemon.log().contains("command refused: \"maybe\" is not ON, OFF or NOW"));
    daemon.stop();
}

/// `kill -9` while a camera collects as fast as it can: after each kill, every item a reader
/// finds is whole (its image matches its sidecar's sha256); what a kill cut short has no
/// sidecar and is not an item, and the next start deletes it.
#[test]
fn kill_9_during_collection_leaves_no_half_written_item() {
    let _serial = serial();
    let dir = scratch("daemon-collect-kill");
    let port = free_port();
    let keys =
        "uncertain = [0.05, 1.0]\nmin_interval_s = 0\nnear_duplicate = 0\nbackground_every_s = 0\nmax_images = 40";
    let config = collecting_device(&dir, port, keys);
    let folder = dir.join("collect/door");
    for round in 0..4 {
        let mut daemon = Daemon::start(&config, &[]);
        wait_until("items", Duration::from_secs(90), || {
            std::fs::read_dir(folder.join("items")).map(|d| d.count()).unwrap_or(0) > round * 3 + 2
        });
        std::thread::sleep(Duration::from_millis(137 * (round as u64 + 1)));
        signal(&daemon.child, "KILL");
        daemon.wait_exit(Duration::from_secs(10));
        let (items, problems) = collected(&folder);
        assert!(!items.is_empty());
        assert!(problems.iter().all(|p| p.contains("without its item")), "round {round}: {problems:?}");
    }
    // A start cleans up what the last kill cut short.
    let daemon = Daemon::start(&config, &[]);
    wait_until("the collection opened", Duration::from_secs(60), || daemon.log().contains("collection opened"));
    let (_, problems) = collected(&folder);
    assert!(problems.iter().all(|p| p.contains("without its item")), "{problems:?}");
}

/// Variants of the bundled photos (whole and three crops each), as JPEGs in `dir`: frames of
/// a scene that differ, so each is an item of its own.
#[cfg(feature = "train")]
fn scene_frames(dir: &Path) -> usize {
    std::fs::create_dir_all(dir).unwrap();
    let mut n = 0;
    for photo in
        ["astronaut.png", "chelsea.png", "coffee.png", "group.png", "motorcycle_left.png", "sample1.jpg", "sample4.jpg"]
    {
        let image = image::open(root().join("tests/photos").join(photo)).unwrap().into_rgb8();
        let (w, h) = image.dimensions();
        let crops = [
            (0, 0, w, h),
            (0, 0, w * 4 / 5, h * 4 / 5),
            (w / 5, h / 5, w * 4 / 5, h * 4 / 5),
            (w / 8, 0, w * 3 / 4, h),
        ];
        for (x, y, cw, ch) in crops {
            let crop = image::imageops::crop_imm(&image, x, y, cw, ch).to_image();
            crop.save(dir.join(format!("{n:03}.jpg"))).unwrap();
            n += 1;
        }
    }
    n
}

/// The loop vigil exists for, on real parts (issue 28): a device collects frames of its
/// camera with pre-labels → `vigil dataset merge` → a few pre-labels corrected and the items
/// accepted (by `vigil dataset accept` and by the documented edit of a sidecar) → `vigil
/// train` (two epochs at 160 px) reads only the reviewed items → `vigil eval` → `vigil
/// bundle` → `vigil deploy` to the running device over its embedded broker → the device's
/// detections carry the retrained model's version.
#[cfg(feature = "train")]
#[test]
fn from_the_camera_to_a_retrained_model_deployed_on_it() {
    let _serial = serial();
    let dir = scratch("daemon-loop");
    let port = free_port();
    let frames = scene_frames(&dir.join("frames"));
    let run = |args: &[&str]| {
        let (code, out) = HostCommand::start(&dir, args[0], args).finish(Duration::from_secs(300));
        assert_eq!(code, 0, "vigil {}:\n{out}", args.join(" "));
        out
    };
    let key = dir.join("deploy.key");
    run(&["keygen", "--out", key.to_str().unwrap()]);
    let public = std::fs::read_to_string(dir.join("deploy.key.pub")).unwrap().trim().to_string();
    let config = dir.join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            r#"device_id = "test"
[broker]
enabled = true
listen = "127.0.0.1:{port}"
[deploy]
trusted_keys = ["{public}"]
store = "store"
[cameras.door]
model = "{model}"
fps = 20
[cameras.door.source]
kind = "replay"
path = "frames"
fps = 10
[cameras.door.collect]
path = "collect"
uncertain = [0.05, 1.0]
min_interval_s = 0
near_duplicate = 0
background_every_s = 0
max_per_label_per_hour = 100000
"#,
            model = root().join("models/nanodet-m.toml").display(),
        ),
    )
    .unwrap();
    let (mut daemon, sub) = start_embedded(&config, port, "test-loop");
    let collection = dir.join("collect/door");
    // Every frame once at least (the replay loops: later rounds are the same images).
    wait_until("a collected item of every frame", Duration::from_secs(120), || {
        let (items, _) = collected(&collection);
        items.iter().map(|i| i.sidecar.sha256.clone()).collect::<BTreeSet<_>>().len() >= frames
    });

    let set = dir.join("set");
    let out = run(&[
        "dataset",
        "merge",
        "--out",
        set.to_str().unwrap(),
        "--val",
        "0.25",
        "--test",
        "0.25",
        collection.to_str().unwrap(),
    ]);
    assert!(out.contains(&format!("{frames} item(s) added")), "{out}");
    let folder = vigil::dataset::folder::open(&set).unwrap();
    let (items, problems) = vigil::dataset::folder::items(&folder, true);
    assert!(problems.is_empty(), "{problems:?}");
    for split in ["train", "val", "test"] {
        assert!(items.iter().any(|i| i.split == Some(split)), "no {split} item");
    }
    // Corrections: the first item loses its last pre-label, the second is said to be empty.
    let first = &items[0];
    let text = first.labels().unwrap();
    let kept: Vec<&str> = text.lines().collect();
    std::fs::write(
        first.label(),
        kept[..kept.len().saturating_sub(1)].iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    run(&["dataset", "accept", set.to_str().unwrap(), "--negative", &items[1].sidecar.id]);
    // The last item is reviewed by hand, as docs/dataset.md says: the sidecar edited and renamed into place.
    let last = items.last().unwrap();
    let path = last.layout.sidecar(&last.sidecar.id);
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    doc["review"] = serde_json::json!({"status": "reviewed", "revision": 1, "at": 1_765_000_000_000u64});
    let tmp = path.with_file_name(format!(".{}.json.tmp", last.sidecar.id));
    std::fs::write(&tmp, serde_json::to_vec(&doc).unwrap()).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    // Two more left unreviewed: training must skip them.
    let unreviewed: Vec<String> = items[2..4].iter().map(|i| i.sidecar.id.clone()).collect();
    let mut accept = vec!["dataset", "accept", set.to_str().unwrap()];
    let others: Vec<String> = items[..items.len() - 1]
        .iter()
        .skip(2)
        .filter(|i| !unreviewed.contains(&i.sidecar.id))
        .map(|i| i.sidecar.id.clone())
        .collect();
    accept.extend(std::iter::once(items[0].sidecar.id.as_str()).chain(others.iter().map(String::as_str)));
    run(&accept);
    let stats = run(&["dataset", "stats", set.to_str().unwrap(), "--json"]);
    let stats: Value = serde_json::from_str(stats.lines().last().unwrap()).unwrap();
    assert_eq!(stats["review"]["unreviewed"], 2, "{stats}");
    assert_eq!(stats["review"]["negative"], 1, "{stats}");

    let trained = dir.join("run");
    let yaml = set.join("data.yaml");
    let out = run(&[
        "train",
        "--model",
        "models/nanodet-m.toml",
        "--data",
        yaml.to_str().unwrap(),
        "--out",
        trained.to_str().unwrap(),
        "--device",
        "cpu",
        "--size",
        "160",
        "--epochs",
        "2",
        "--batch",
        "8",
        "--name",
        "nanodet-m",
        "--version",
        "2.0.0",
    ]);
    assert!(out.contains("skipped 2 unreviewed"), "{out}");
    let manifest = trained.join("model.toml");
    let out = run(&["eval", "--model", manifest.to_str().unwrap(), "--data", yaml.to_str().unwrap(), "--json"]);
    assert!(out.contains("\"map50\""), "{out}");
    let bundle = dir.join("door-2.bundle");
    run(&[
        "bundle",
        "--model",
        manifest.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--out",
        bundle.to_str().unwrap(),
    ]);
    let url = format!("mqtt://127.0.0.1:{port}");
    let out =
        run(&["deploy", "--bundle", bundle.to_str().unwrap(), "--device", "test", "--broker", &url, "--timeout", "60"]);
    assert!(out.contains("test: accepted") && out.contains("serving nanodet-m 2.0.0"), "{out}");
    sub.wait_for("detections from 2.0.0", Duration::from_secs(60), |g| {
        g.iter().any(|r| r.topic == "vigil/test/door/detections" && r.json()["model"]["version"] == "2.0.0")
    });
    daemon.stop();
}

/// The loop of [`from_the_camera_to_a_retrained_model_deployed_on_it`], longer and with a
/// person's review stood in for by the truth: the camera shows frames with Fashion-MNIST bags
/// pasted on the bundled photos (tests/common/detection_set.rs), which NanoDet-m barely finds
/// as COCO's `handbag`; the device collects them with its pre-labels; the review replaces each
/// item's pre-labels with the true boxes (as `handbag`) and accepts it, or marks it negative;
/// NanoDet-m is fine-tuned on the reviewed items and both models are measured on the data
/// set's test split. Prints the mAP before and after. On demand (about 10 minutes on 2
/// cores): `scripts/from-cameras.sh` (docs/training.md, "From your cameras").
#[cfg(feature = "train")]
#[test]
#[ignore = "on demand, about 10 minutes: scripts/from-cameras.sh"]
fn from_the_camera_long_run_reports_map_before_and_after() {
    let _serial = serial();
    let dir = scratch("daemon-loop-long");
    let port = free_port();
    // The scene: the set's images of every split, as the camera's JPEG frames, with their truth.
    let set = dir.join("scene");
    let placed = common::detection_set::make(&set, &["Bag"], [300, 80, 80], 7);
    let frames = dir.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let mut truth: BTreeMap<String, Vec<common::detection_set::Placed>> = BTreeMap::new();
    for (split, images) in ["train", "val", "test"].iter().zip(&placed) {
        for (n, objects) in images.iter().enumerate() {
            let png = set.join(format!("images/{split}/{split}{n:04}.png"));
            let mut jpeg = std::io::Cursor::new(Vec::new());
            image::open(&png).unwrap().into_rgb8().write_to(&mut jpeg, image::ImageFormat::Jpeg).unwrap();
            let jpeg = jpeg.into_inner();
            truth.insert(vigil::model::sha256_hex(&jpeg), objects.clone());
            std::fs::write(frames.join(format!("{split}{n:04}.jpg")), jpeg).unwrap();
        }
    }
    let run = |args: &[&str]| {
        let (code, out) = HostCommand::start(&dir, args[0], args).finish(Duration::from_secs(3600));
        assert_eq!(code, 0, "vigil {}:\n{out}", args.join(" "));
        out
    };
    let key = dir.join("deploy.key");
    run(&["keygen", "--out", key.to_str().unwrap()]);
    let public = std::fs::read_to_string(dir.join("deploy.key.pub")).unwrap().trim().to_string();
    let config = dir.join("vigil.toml");
    std::fs::write(
        &config,
        format!(
            "device_id = \"test\"\n[broker]\nenabled = true\nlisten = \"127.0.0.1:{port}\"\n[deploy]\n\
             trusted_keys = [\"{public}\"]\nstore = \"store\"\n[cameras.door]\nmodel = \"{model}\"\nfps = 50\n\
             [cameras.door.source]\nkind = \"replay\"\npath = \"frames\"\nfps = 6\n[cameras.door.collect]\n\
             path = \"collect\"\nuncertain = [0.05, 1.0]\nmin_interval_s = 0\nnear_duplicate = 0\nbackground_every_s = 1\n\
             max_images = 2000\nmax_per_label_per_hour = 100000\n",
            model = root().join("models/nanodet-m.toml").display(),
        ),
    )
    .unwrap();
    let (mut daemon, sub) = start_embedded(&config, port, "test-loop-long");
    let collection = dir.join("collect/door");
    wait_until("every frame collected", Duration::from_secs(600), || {
        std::thread::sleep(Duration::from_secs(1));
        let Ok(folder) = vigil::dataset::folder::open(&collection) else { return false };
        let (items, _) = vigil::dataset::folder::items(&folder, false);
        items.iter().map(|i| i.sidecar.sha256.clone()).collect::<BTreeSet<_>>().len() >= truth.len()
    });
    let data = dir.join("set");
    run(&["dataset", "merge", "--out", data.to_str().unwrap(), collection.to_str().unwrap()]);
    // The review: the truth in place of the pre-labels, as `handbag`, a class added at the end
    // of the data set's names if the pre-labels had none (docs/dataset.md).
    let mut folder = vigil::dataset::folder::open(&data).unwrap();
    if !folder.names.iter().any(|n| n == "handbag") {
        let yaml = data.join("data.yaml");
        let text = std::fs::read_to_string(&yaml).unwrap() + "  - \"handbag\"\n";
        std::fs::write(&yaml, text).unwrap();
        folder = vigil::dataset::folder::open(&data).unwrap();
    }
    let handbag = folder.names.iter().position(|n| n == "handbag").unwrap();
    let (items, _) = vigil::dataset::folder::items(&folder, true);
    let mut negatives = Vec::new();
    for item in &items {
        let objects = &truth[&item.sidecar.sha256];
        let boxes: Vec<(usize, vigil::model::BBox)> = objects
            .iter()
            .map(|p| {
                let [x1, y1, x2, y2] = p.bbox.map(|v| v as f32);
                (handbag, vigil::model::BBox { x1, y1, x2, y2 })
            })
            .collect();
        if boxes.is_empty() {
            negatives.push(item.sidecar.id.clone());
        }
        let lines = vigil::collect::item::yolo_lines(&boxes, item.sidecar.width, item.sidecar.height);
        std::fs::write(item.label(), lines).unwrap();
    }
    let mut negative = vec!["dataset", "accept", data.to_str().unwrap(), "--negative"];
    negative.extend(negatives.iter().map(String::as_str));
    if !negatives.is_empty() {
        run(&negative);
    }
    run(&["dataset", "accept", data.to_str().unwrap(), "--all"]);
    let yaml = data.join("data.yaml");
    let map50 = |manifest: &Path| {
        let out = run(&[
            "eval",
            "--model",
            manifest.to_str().unwrap(),
            "--data",
            yaml.to_str().unwrap(),
            "--split",
            "test",
            "--json",
        ]);
        let doc: Value = serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
        doc["map50"].as_f64().unwrap()
    };
    let before = map50(&root().join("models/nanodet-m.toml"));
    let trained = dir.join("run");
    run(&[
        "train",
        "--model",
        "models/nanodet-m.toml",
        "--data",
        yaml.to_str().unwrap(),
        "--out",
        trained.to_str().unwrap(),
        "--device",
        "cpu",
        "--size",
        "192",
        "--epochs",
        "12",
        "--batch",
        "16",
        "--name",
        "nanodet-m",
        "--version",
        "1.1.0",
    ]);
    let after = map50(&trained.join("model.toml"));
    let stats = run(&["dataset", "stats", data.to_str().unwrap()]);
    eprintln!("{stats}");
    eprintln!("handbag mAP50 on the data set's test split: NanoDet-m {before:.3} before, {after:.3} after fine-tuning");
    let bundle = dir.join("door.bundle");
    let manifest = trained.join("model.toml");
    run(&[
        "bundle",
        "--model",
        manifest.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--out",
        bundle.to_str().unwrap(),
    ]);
    let url = format!("mqtt://127.0.0.1:{port}");
    run(&["deploy", "--bundle", bundle.to_str().unwrap(), "--device", "test", "--broker", &url, "--timeout", "60"]);
    sub.wait_for("detections from 1.1.0", Duration::from_secs(60), |g| {
        g.iter().any(|r| r.topic == "vigil/test/door/detections" && r.json()["model"]["version"] == "1.1.0")
    });
    assert!(after > before, "mAP50 {after} after, {before} before");
    daemon.stop();
}
