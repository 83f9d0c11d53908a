//! The MQTT side of the daemon, whose contract is docs/mqtt.md: topic names ([`Topics`]),
//! versioned JSON payloads ([`payload`]), Home Assistant discovery ([`discovery`]), the
//! connection and its event loop ([`link`]) and the publisher with its spool ([`publisher`]).

pub mod discovery;
pub mod journal;
pub mod link;
pub mod payload;
pub mod publisher;

pub use link::{CollectCommand, Command, CommandKind, DeployTopics, Link, LinkState};
pub use publisher::{Class, Message, Publisher, PublisherStats};

/// The largest packet MQTT can carry (its remaining-length field's maximum), bytes.
pub const MQTT_MAX_PACKET: usize = 268_435_455;

/// Every topic vigil uses, from the configured prefix (default `vigil/<device_id>`).
#[derive(Debug, Clone, PartialEq)]
pub struct Topics {
    pub prefix: String,
}

impl Topics {
    pub fn availability(&self) -> String {
        format!("{}/availability", self.prefix)
    }
    pub fn stats(&self) -> String {
        format!("{}/stats", self.prefix)
    }
    pub fn detections(&self, camera: &str) -> String {
        format!("{}/{camera}/detections", self.prefix)
    }
    pub fn events(&self, camera: &str) -> String {
        format!("{}/{camera}/events", self.prefix)
    }
    pub fn counts(&self, camera: &str) -> String {
        format!("{}/{camera}/counts", self.prefix)
    }
    pub fn snapshot(&self, camera: &str) -> String {
        format!("{}/{camera}/snapshot", self.prefix)
    }
    pub fn model(&self, camera: &str) -> String {
        format!("{}/{camera}/model", self.prefix)
    }
    /// Where bundles for this device arrive.
    pub fn deploy(&self) -> String {
        format!("{}/deploy", self.prefix)
    }
    /// The result of the last deploy or rollback (retained).
    pub fn deploy_state(&self) -> String {
        format!("{}/deploy/state", self.prefix)
    }
    /// Where rollback requests for this device arrive.
    pub fn rollback(&self) -> String {
        rollback_of(&self.deploy())
    }

    /// The topics of device `device` when devices' prefixes are `<root>/<device_id>` (the
    /// default, `vigil/<device_id>`): what the deploy host addresses. `+` gives a filter
    /// over every device.
    pub fn of_device(root: &str, device: &str) -> Topics {
        Topics { prefix: format!("{root}/{device}") }
    }
    /// `…/<camera>/<setting>/state`, where the daemon confirms a setting.
    pub fn state(&self, camera: &str, setting: &str) -> String {
        format!("{}/{camera}/{setting}/state", self.prefix)
    }
    /// `…/<camera>/<setting>/set`, where commands arrive.
    pub fn command(&self, camera: &str, setting: &str) -> String {
        format!("{}/{camera}/{setting}/set", self.prefix)
    }
    /// The subscription that receives every command.
    pub fn command_filter(&self) -> String {
        format!("{}/+/+/set", self.prefix)
    }
    /// Splits a command topic into (camera, setting).
    pub fn parse_command<'a>(&self, topic: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = topic.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?;
        let rest = rest.strip_suffix("/set")?;
        let (camera, setting) = rest.split_once('/')?;
        (!camera.is_empty() && !setting.is_empty() && !setting.contains('/')).then_some((camera, setting))
    }
}

/// A single topic level that needs no escaping (a device, camera, group or zone id): 1 to
/// 128 letters, digits, '-' or '_'.
pub fn is_topic_word(s: &str) -> bool {
    (1..=128).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The start of topics (`mqtt.topic_prefix`, a group prefix): non-empty, at most 1 024 bytes
/// (a topic may not pass 65 535), no wildcards, NUL or control characters, no trailing '/'.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty()
        || prefix.len() > 1024
        || prefix.contains(['+', '#'])
        || prefix.chars().any(char::is_control)
        || prefix.ends_with('/')
    {
        return Err(format!(
            "{} must be 1 to 1024 bytes, without '+', '#', control characters or a trailing '/'",
            crate::service::logging::shown(prefix.as_bytes())
        ));
    }
    Ok(())
}

/// Where bundles for a group arrive: `<group_prefix>/<group>/deploy`.
pub fn group_deploy(group_prefix: &str, group: &str) -> String {
    format!("{group_prefix}/{group}/deploy")
}

/// The rollback topic beside a deploy topic (a device's or a group's): `<deploy>/rollback`.
pub fn rollback_of(deploy_topic: &str) -> String {
    format!("{deploy_topic}/rollback")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_topics_round_trip() {
        let t = Topics { prefix: "vigil/garage".into() };
        assert_eq!(t.parse_command(&t.command("front", "detect")), Some(("front", "detect")));
        assert_eq!(t.parse_command("vigil/garage/front/detect/state"), None);
        assert_eq!(t.parse_command("vigil/other/front/detect/set"), None);
        assert_eq!(t.parse_command("vigil/garage/front/a/b/set"), None);
    }

    #[test]
    fn topic_words_and_prefixes_are_checked() {
        assert!(is_topic_word("garage-2_a"));
        for bad in ["", "a/b", "a+", "#", "a b", "é", "a\0"] {
            assert!(!is_topic_word(bad), "{bad:?}");
        }
        assert!(!is_topic_word(&"a".repeat(129)));
        check_prefix("vigil/garage").unwrap();
        for bad in ["", "vigil/", "vigil/+", "a#", "a\0b", "a\nb"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
        assert!(check_prefix(&"a".repeat(70_000)).unwrap_err().contains("(70000 bytes)"));
    }
}
