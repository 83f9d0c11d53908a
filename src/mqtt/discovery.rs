//! Home Assistant MQTT discovery: retained configs under `<discovery_prefix>/<component>/
//! <device_id>/<object>/config` that make each camera appear as a device with its entities:
//! object counts (one sensor per configured label, or one for all objects), a detection
//! switch, a score-threshold number, fps and inference-time sensors, and a camera entity
//! showing the last snapshot when snapshots are on.

use serde_json::{json, Value};

use super::Topics;
use crate::config::{CameraSettings, Config};

/// (topic, payload) for every entity of every camera.
pub fn configs(config: &Config, topics: &Topics) -> Vec<(String, Value)> {
    let device_id = &config.device_id;
    let prefix = &config.mqtt.discovery_prefix;
    let device = json!({
        "identifiers": [format!("vigil_{device_id}")],
        "name": format!("vigil {device_id}"),
        "manufacturer": "vigil",
        "model": "vigil edge camera daemon",
        "sw_version": env!("CARGO_PKG_VERSION"),
    });
    let mut out = Vec::new();
    for (camera, settings) in &config.cameras {
        let mut entity = |component: &str, object: &str, name: String, mut fields: Value| {
            let unique_id = format!("vigil_{device_id}_{camera}_{object}");
            let obj = fields.as_object_mut().expect("fields is an object");
            obj.insert("name".into(), json!(name));
            obj.insert("unique_id".into(), json!(unique_id));
            obj.insert("object_id".into(), json!(unique_id));
            obj.insert("availability_topic".into(), json!(topics.availability()));
            obj.insert("device".into(), device.clone());
            out.push((format!("{prefix}/{component}/{device_id}/{camera}_{object}/config"), fields));
        };
        for (label, object, template) in count_sensors(settings) {
            entity(
                "sensor",
                &object,
                format!("{camera} {label}"),
                json!({
                    "state_topic": topics.counts(camera),
                    "value_template": template,
                    "unit_of_measurement": "objects",
                    "state_class": "measurement",
                    "icon": "mdi:cctv",
                }),
            );
        }
        entity(
            "switch",
            "detect",
            format!("{camera} detection"),
            json!({
                "command_topic": topics.command(camera, "detect"),
                "state_topic": topics.state(camera, "detect"),
                "payload_on": "ON",
                "payload_off": "OFF",
                "icon": "mdi:motion-sensor",
            }),
        );
        entity(
            "number",
            "threshold",
            format!("{camera} score threshold"),
            json!({
                "command_topic": topics.command(camera, "threshold"),
                "state_topic": topics.state(camera, "threshold"),
                "min": 0.0, "max": 1.0, "step": 0.05, "mode": "slider",
            }),
        );
        entity(
            "sensor",
            "fps",
            format!("{camera} inference rate"),
            json!({
                "state_topic": topics.stats(),
                "value_template": format!("{{{{ value_json.cameras['{camera}'].fps | round(1) }}}}"),
                "unit_of_measurement": "fps",
                "state_class": "measurement",
                "entity_category": "diagnostic",
            }),
        );
        entity(
            "sensor",
            "inference",
            format!("{camera} inference time"),
            json!({
                "state_topic": topics.stats(),
                "value_template": format!("{{{{ value_json.cameras['{camera}'].inference_ms_p50 | round(1) }}}}"),
                "unit_of_measurement": "ms",
                "state_class": "measurement",
                "entity_category": "diagnostic",
            }),
        );
        if settings.snapshots {
            entity("camera", "snapshot", format!("{camera} snapshot"), json!({ "topic": topics.snapshot(camera) }));
        }
    }
    out
}

/// (label shown, object id, value template): one per configured label, or one total.
fn count_sensors(settings: &CameraSettings) -> Vec<(String, String, String)> {
    if settings.labels.is_empty() {
        return vec![("objects".into(), "objects".into(), "{{ value_json.counts.values() | sum }}".into())];
    }
    settings
        .labels
        .iter()
        .map(|label| {
            let object: String = label.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
            (label.clone(), format!("{object}_count"), format!("{{{{ value_json.counts['{label}'] | default(0) }}}}"))
        })
        .collect()
}
