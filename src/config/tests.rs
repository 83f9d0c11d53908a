use super::*;
use crate::source::SourceSettings;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

const GOOD: &str = r#"
device_id = "garage"
[mqtt]
url = "mqtt://broker.lan:1884"
[cameras.front]
model = "models/nanodet-m.toml"
fps = 2
labels = ["person", "car"]
[cameras.front.source]
kind = "replay"
path = "tests/photos"
fps = 4
[cameras.front.filters.person]
min_score = 0.5
min_area = 0.001
[[cameras.front.zones]]
name = "drive"
points = [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]
"#;

#[test]
fn a_good_config_loads_with_defaults() {
    let c = Config::from_toml(GOOD, &root(), &[]).unwrap();
    assert_eq!(c.device_id, "garage");
    assert_eq!((c.mqtt.host.as_str(), c.mqtt.port), ("broker.lan", 1884));
    assert_eq!(c.mqtt.topic_prefix, "vigil/garage");
    assert_eq!(c.mqtt.client_id, "vigil-garage");
    assert_eq!(c.mqtt.qos, 1);
    let front = &c.cameras["front"];
    assert_eq!(front.fps, 2.0);
    assert_eq!(front.zones[0].name, "drive");
    match &front.source {
        SourceSettings::Replay(r) => {
            assert!(r.files.len() >= 7, "the folder's photos: {:?}", r.files);
            assert!(r.looped);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn environment_overrides_keys() {
    let env = vec![
        ("VIGIL__MQTT__URL".to_string(), "mqtts://secure.lan".to_string()),
        ("VIGIL__MQTT__CA_FILE".to_string(), "tests/photos/chelsea.png".to_string()),
        ("VIGIL__CAMERAS__FRONT__FPS".to_string(), "7.5".to_string()),
        ("VIGIL_TORCHVISION_DIR".to_string(), "/ignored/not/a/key".to_string()),
    ];
    let c = Config::from_toml(GOOD, &root(), &env).unwrap();
    assert_eq!((c.mqtt.host.as_str(), c.mqtt.port), ("secure.lan", 8883));
    assert!(c.mqtt.tls.is_some());
    assert_eq!(c.cameras["front"].fps, 7.5);
}

#[test]
fn every_problem_is_listed_with_its_key() {
    let bad = r#"
device_id = "my garage"
colour = "blue"
[mqtt]
url = "http://broker"
qos = 3
stats_interval_s = 0
[service]
drain_timeout_s = "soon"
[cameras.front]
model = "models/missing.toml"
fps = 0
[cameras.front.source]
kind = "v4l2"
device = "/dev/video-vigil-missing"
loop = true
[cameras.back]
model = "models/nanodet-m.toml"
tracker = { iou = 2.0, speed = 1 }
[cameras.back.source]
kind = "replay"
path = "no/such/folder"
[[cameras.back.zones]]
name = "x"
points = [[0, 0], [2, 0]]
"#;
    let problems = Config::from_toml(bad, &root(), &[]).unwrap_err();
    let all = problems.join("\n");
    for expected in [
        "device_id: \"my garage\"",
        "colour: unknown key",
        "mqtt.url: \"http://broker\" must start with mqtt:// or mqtts://",
        "mqtt.qos: 3 is not 0, 1 or 2",
        "service.drain_timeout_s: invalid type: string \"soon\"",
        "mqtt.stats_interval_s: 0 must be between 0.01 and 86400 seconds",
        "cameras.front.model: the model manifest",
        "cameras.front.fps: 0",
        "cameras.front.source.device: camera device /dev/video-vigil-missing does not exist",
        "cameras.front.source.loop: not a key of a v4l2 source",
        "cameras.back.tracker.speed: unknown key",
        "cameras.back.tracker.iou: 2 must be between 0 and 1",
        "cameras.back.source.path: ",
        "cameras.back.zones[0].points: a polygon needs at least 3 points",
        "outside the frame",
    ] {
        assert!(all.contains(expected), "missing {expected:?} in:\n{all}");
    }
    assert!(problems.len() >= 14, "{all}");
}

#[test]
fn a_camera_cannot_take_the_deploy_topics() {
    let text = GOOD.replace("cameras.front", "cameras.deploy");
    let all = Config::from_toml(&text, &root(), &[]).unwrap_err().join("\n");
    assert!(all.contains("cameras.deploy: \"deploy\" is taken by the deploy topics"), "{all}");
}

#[test]
fn broker_urls_are_checked() {
    assert_eq!(raw::parse_url("mqtt://h").unwrap(), (false, "h".into(), 1883));
    assert_eq!(raw::parse_url("mqtts://h:9000").unwrap(), (true, "h".into(), 9000));
    assert_eq!(raw::parse_url("mqtt://[::1]:1884").unwrap(), (false, "::1".into(), 1884));
    for bad in ["tcp://h", "mqtt://", "mqtt://h:0", "mqtt://h:port", "mqtt://user:pw@h", "mqtt://h/topic"] {
        assert!(raw::parse_url(bad).is_err(), "{bad} accepted");
    }
}

#[test]
fn a_missing_file_is_one_clear_problem() {
    let e = Config::load(Path::new("/nonexistent/vigil.toml")).unwrap_err();
    assert_eq!(e.problems.len(), 1);
    assert!(e.to_string().contains("/nonexistent/vigil.toml"), "{e}");
}

#[test]
fn non_finite_numbers_are_refused_not_defaulted() {
    let text = GOOD.replace("fps = 2", "fps = nan");
    let text = text.replacen("[mqtt]", "[mqtt]\nstats_interval_s = inf", 1);
    let all = Config::from_toml(&text, &root(), &[]).unwrap_err().join("\n");
    assert!(all.contains("cameras.front.fps: NaN is not a finite number"), "{all}");
    assert!(all.contains("mqtt.stats_interval_s: inf is not a finite number"), "{all}");
    let env = vec![("VIGIL__CAMERAS__FRONT__FPS".to_string(), "-inf".to_string())];
    let all = Config::from_toml(GOOD, &root(), &env).unwrap_err().join("\n");
    assert!(all.starts_with("VIGIL__CAMERAS__FRONT__FPS: -inf reads as a number that is not finite"), "{all}");
}

#[test]
fn a_frame_rate_too_slow_for_a_duration_is_refused() {
    let text = GOOD.replace("fps = 2", "fps = 1e-300");
    let all = Config::from_toml(&text, &root(), &[]).unwrap_err().join("\n");
    assert!(all.contains("cameras.front.fps: 0.000") && all.contains("must be between 0.001 and 1000"), "{all}");
}

#[test]
fn the_environment_is_read_as_bytes() {
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;
    let vars = vec![
        (OsString::from("LANG_JUNK"), OsString::from_vec(vec![0xff, 0xfe])),
        (OsString::from_vec(b"OTHER_\xff".to_vec()), OsString::from("x")),
        (OsString::from("VIGIL__MQTT__URL"), OsString::from_vec(b"mqtt://h\xff".to_vec())),
        (OsString::from_vec(b"VIGIL__\xff".to_vec()), OsString::from("x")),
        (OsString::from("VIGIL__DEVICE_ID"), OsString::from("porch")),
    ];
    let (env, problems) = super::overrides(vars.into_iter());
    assert_eq!(env, [("VIGIL__DEVICE_ID".to_string(), "porch".to_string())]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("VIGIL__MQTT__URL: the environment variable's value is not UTF-8"));
    assert!(problems[1].contains("whose name is not UTF-8"));
}

#[test]
fn a_type_error_in_a_camera_is_one_problem() {
    let text = GOOD.replacen("[cameras.front]", "[cameras.front]\nsnapshots = \"yes\"", 1);
    let problems = Config::from_toml(&text, &root(), &[]).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("cameras.front.snapshots: invalid type"), "{problems:?}");
}

#[test]
fn topic_ids_and_prefixes_with_wildcards_or_control_characters_are_refused() {
    let text = GOOD.replacen("[mqtt]", "[mqtt]\ntopic_prefix = \"vigil/a\\u0000b\"", 1);
    let all = Config::from_toml(&text, &root(), &[]).unwrap_err().join("\n");
    assert!(all.contains("mqtt.topic_prefix: \"vigil/a\\0b\" must be 1 to 1024 bytes"), "{all}");
    let long = GOOD.replace("device_id = \"garage\"", &format!("device_id = \"{}\"", "d".repeat(70_000)));
    let all = Config::from_toml(&long, &root(), &[]).unwrap_err().join("\n");
    assert!(all.contains("device_id: \"ddd") && all.contains("(70000 bytes) must be 1 to 128"), "{all}");
    assert!(all.len() < 1000, "the id is cut in the message");
}

/// GOOD with `keys` in its camera's table and `tables` after it.
fn camera_with(keys: &str, tables: &str) -> String {
    format!("{}{tables}", GOOD.replacen("fps = 2\n", &format!("fps = 2\n{keys}\n"), 1))
}

#[test]
fn threads_in_flight_and_motion_are_read_and_checked() {
    let c = Config::from_toml(GOOD, &root(), &[]).unwrap();
    let front = &c.cameras["front"];
    assert_eq!((front.threads, front.in_flight, front.motion), (Count::Auto, Count::Auto, None));

    let good = camera_with(
        "threads = 4\nin_flight = \"auto\"",
        "[cameras.front.motion]\nthreshold = 30\nmax_interval_s = 2\n",
    );
    let front = Config::from_toml(&good, &root(), &[]).unwrap().cameras["front"].clone();
    assert_eq!((front.threads, front.in_flight), (Count::Fixed(4), Count::Auto));
    let motion = front.motion.unwrap();
    assert_eq!((motion.threshold, motion.min_area), (30.0, MotionSettings::default().min_area));
    assert_eq!(motion.max_interval, Duration::from_secs(2));
    let off = camera_with("", "[cameras.front.motion]\nenabled = false\n");
    assert_eq!(Config::from_toml(&off, &root(), &[]).unwrap().cameras["front"].motion, None);
    let env = vec![("VIGIL__CAMERAS__FRONT__THREADS".to_string(), "3".to_string())];
    assert_eq!(Config::from_toml(GOOD, &root(), &env).unwrap().cameras["front"].threads, Count::Fixed(3));

    let bad = camera_with(
        "threads = 2\nin_flight = 3",
        "[cameras.front.motion]\nthreshold = 0\nmin_area = 1.5\nmax_interval_s = -1\nsize = 3\n",
    );
    let problems = Config::from_toml(&bad, &root(), &[]).unwrap_err();
    for key in [
        "cameras.front.in_flight: 3 frames",
        "cameras.front.motion.threshold: 0",
        "cameras.front.motion.min_area: 1.5",
        "cameras.front.motion.max_interval_s: -1",
        "cameras.front.motion.size: unknown key",
    ] {
        assert!(problems.iter().any(|p| p.starts_with(key)), "{key} missing from {problems:#?}");
    }
    let nan = camera_with("", "[cameras.front.motion]\nmin_area = nan\n");
    let all = Config::from_toml(&nan, &root(), &[]).unwrap_err().join("\n");
    assert!(all.contains("cameras.front.motion.min_area: NaN"), "{all}");
    for value in ["0", "257", "-1", "1.5", "\"many\"", "true"] {
        let bad = camera_with(&format!("threads = {value}"), "");
        let problems = Config::from_toml(&bad, &root(), &[]).unwrap_err();
        assert_eq!(problems.len(), 1, "{value}: {problems:?}");
        assert!(problems[0].starts_with("cameras.front.threads: must be \"auto\""), "{problems:?}");
    }
}
