//! The connection to the broker: rumqttc options (TLS through rustls, credentials, the
//! last will), and the one task that does nothing but poll rumqttc's event loop.
//!
//! That task also keeps QoS 1 messages across reconnects. When a connection fails, rumqttc
//! moves the publishes the broker has not acknowledged (and the requests still queued) into
//! `EventLoop::pending`, but clears that list again if the next session is a new one — which
//! it always is with a clean session, or after a broker restart. The task therefore keeps a
//! copy of the unacknowledged publishes when a connection fails and puts them back after
//! the next CONNACK: at-least-once, as QoS 1 promises.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Packet, QoS, Request, Transport};
use tokio::sync::{mpsc, watch};

use super::payload::RollbackRequest;
use super::publisher::Echo;
use super::Topics;
use crate::config::MqttSettings;
use crate::service::logging::shown;

/// What the rest of the daemon sees of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LinkState {
    pub connected: bool,
    /// Counts CONNACKs: a change means "(re)connected, announce everything again".
    pub sessions: u64,
}

/// A command received on a `…/<camera>/<setting>/set` topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub camera: String,
    pub kind: CommandKind,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CommandKind {
    Detect(bool),
    Threshold(f32),
    /// `…/<camera>/collect/set`: the camera's collection of frames for labelling.
    Collect(CollectCommand),
    /// Unknown setting or unreadable value: answered with an error in the log.
    Invalid {
        setting: String,
        why: String,
    },
    /// A deploy bundle, from the device's or a group's deploy topic (`camera` is empty).
    /// `retained`: the broker's stored copy, delivered on subscribing. Any size: the
    /// deploy worker refuses one over `deploy.max_bundle_bytes`, and says so on its state topic.
    Deploy {
        bytes: Bytes,
        retained: bool,
    },
    /// A rollback request naming a model ("": the only one served), from a rollback topic;
    /// `id` (from `vigil rollback`) makes the same request arriving on several topics count once.
    Rollback {
        name: String,
        id: Option<String>,
    },
}

impl CommandKind {
    /// A rollback payload in one of its documented forms ([`RollbackRequest::parse`]), or
    /// `Invalid` saying why not.
    pub fn rollback(payload: &[u8]) -> CommandKind {
        match RollbackRequest::parse(payload) {
            Ok(r) => CommandKind::Rollback { name: r.model, id: r.id },
            Err(why) => CommandKind::Invalid { setting: "rollback".into(), why: format!("{} {why}", shown(payload)) },
        }
    }

    pub fn parse(setting: &str, payload: &[u8]) -> CommandKind {
        let text = String::from_utf8_lossy(payload);
        let text = text.trim();
        let invalid = |why: &str| CommandKind::Invalid {
            setting: shown(setting.as_bytes()),
            why: format!("{} {why}", shown(payload)),
        };
        match setting {
            "detect" => match text.to_ascii_uppercase().as_str() {
                "ON" | "TRUE" | "1" => CommandKind::Detect(true),
                "OFF" | "FALSE" | "0" => CommandKind::Detect(false),
                _ => invalid("is not ON or OFF"),
            },
            "collect" => match text.to_ascii_uppercase().as_str() {
                "ON" => CommandKind::Collect(CollectCommand::On),
                "OFF" => CommandKind::Collect(CollectCommand::Off),
                "NOW" => CommandKind::Collect(CollectCommand::Now),
                _ => invalid("is not ON, OFF or NOW"),
            },
            "threshold" => match text.parse::<f32>() {
                Ok(v) if (0.0..=1.0).contains(&v) => CommandKind::Threshold(v),
                _ => invalid("is not a number between 0 and 1"),
            },
            _ => CommandKind::Invalid {
                setting: shown(setting.as_bytes()),
                why: "unknown setting (detect, threshold, collect)".into(),
            },
        }
    }
}

/// What a `collect/set` command asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CollectCommand {
    /// Collect on the camera's rules.
    On,
    /// Stop collecting on the rules (a frame asked for is still saved).
    Off,
    /// Save the next inferred frame, whatever the rules say.
    Now,
}

/// The client half handed to the publisher, and the state the link reports.
pub struct Link {
    pub client: AsyncClient,
    pub state: watch::Receiver<LinkState>,
    pub task: tokio::task::JoinHandle<()>,
}

/// Why the MQTT settings could not be turned into a connection.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("mqtt TLS: cannot read {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("mqtt TLS: {0}")]
    Tls(String),
}

/// rumqttc's request channel: bounded, so a stuck connection pushes back on the publisher
/// (which then keeps events in its own spool) instead of growing without limit.
const REQUEST_CHANNEL: usize = 1024;

pub fn options(settings: &MqttSettings, topics: &Topics) -> Result<MqttOptions, LinkError> {
    let mut options = MqttOptions::new(settings.client_id.clone(), settings.host.clone(), settings.port);
    options.set_keep_alive(settings.keep_alive);
    // Every message the broker may send is read (up to MQTT's own limit), so that one over
    // `max_packet_size` can be refused on its own: rumqttc drops the connection on a larger
    // packet than it was told to take, and a retained one would then come back after every
    // reconnect, for ever. Messages are refused in [`drive`].
    options.set_max_packet_size(super::MQTT_MAX_PACKET, settings.max_packet_size);
    options.set_clean_session(true);
    options.set_last_will(LastWill::new(topics.availability(), "offline", QoS::AtLeastOnce, true));
    if let Some(user) = &settings.username {
        options.set_credentials(user.clone(), settings.password.clone().unwrap_or_default());
    }
    if let Some(tls) = &settings.tls {
        options.set_transport(Transport::Tls(tls_config(tls)?.into()));
    }
    Ok(options)
}

/// The largest certificate or key file read (a chain of a few PEM certificates is some KiB).
const MAX_PEM_FILE: u64 = 1 << 20;

fn read(path: &std::path::Path) -> Result<Vec<u8>, LinkError> {
    crate::files::read_capped(path, MAX_PEM_FILE)
        .map_err(|e| LinkError::Read { path: path.display().to_string(), error: e })
}

/// A rustls client configuration with the ring provider (no aws-lc build), the configured
/// CA and, when given, a client certificate.
pub(crate) fn tls_config(tls: &crate::config::TlsSettings) -> Result<tokio_rustls::rustls::ClientConfig, LinkError> {
    use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer, RootCertStore};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    let ca_name = tls.ca_file.display().to_string();
    for cert in rustls_pemfile::certs(&mut read(&tls.ca_file)?.as_slice()) {
        let cert = cert.map_err(|e| LinkError::Tls(format!("{ca_name}: {e}")))?;
        roots.add(cert).map_err(|e| LinkError::Tls(format!("{ca_name}: {e}")))?;
    }
    if roots.is_empty() {
        return Err(LinkError::Tls(format!("{ca_name} holds no PEM certificate")));
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| LinkError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    match &tls.client_cert {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut read(cert)?.as_slice()).collect();
            let certs = certs.map_err(|e| LinkError::Tls(format!("{}: {e}", cert.display())))?;
            let key: PrivateKeyDer = rustls_pemfile::private_key(&mut read(key)?.as_slice())
                .map_err(|e| LinkError::Tls(format!("{}: {e}", key.display())))?
                .ok_or_else(|| LinkError::Tls(format!("{} holds no private key", key.display())))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| LinkError::Tls(e.to_string()))
        }
    }
}

/// The deploy topics a device listens on (none when deploys are off).
#[derive(Debug, Clone, Default)]
pub struct DeployTopics {
    /// Where bundles arrive: the device's and each group's.
    pub bundles: Vec<String>,
    /// Where rollback requests arrive.
    pub rollbacks: Vec<String>,
}

/// Connects (lazily: the first poll dials) and starts the event-loop task. Commands go to
/// `commands`; the task ends when `client.disconnect()` has gone out or the client is dropped.
/// Messages over `max_message` bytes are refused (a warning each), except bundles (see
/// [`CommandKind::Deploy`]).
/// Events the broker delivers back (the link subscribes to `<prefix>/+/events`) go to
/// `echoes`: the proof of delivery the event journal waits for.
pub fn start(
    options: MqttOptions,
    topics: Topics,
    commands: mpsc::Sender<Command>,
    echoes: mpsc::Sender<Echo>,
    deploy_topics: DeployTopics,
    max_message: usize,
) -> Link {
    let (client, eventloop) = AsyncClient::new(options, REQUEST_CHANNEL);
    let (state_tx, state) = watch::channel(LinkState::default());
    let incoming = Incoming { topics, deploy_topics, max_message };
    let task = tokio::spawn(drive(eventloop, client.clone(), incoming, state_tx, commands, echoes));
    Link { client, state, task }
}

/// What the link subscribes to, and how it reads what arrives.
struct Incoming {
    topics: Topics,
    deploy_topics: DeployTopics,
    max_message: usize,
}

/// What an incoming message is.
enum Inbound {
    Command(Command),
    Echo(Echo),
}

impl Incoming {
    /// The filters to subscribe to: commands, the device's own events (delivery proofs),
    /// bundles and rollbacks.
    fn filters(&self) -> Vec<String> {
        let deploys = self.deploy_topics.bundles.iter().chain(&self.deploy_topics.rollbacks).cloned();
        [self.topics.command_filter(), self.topics.events("+")].into_iter().chain(deploys).collect()
    }

    /// What a message carries, or None (with a warning where it is refused).
    fn read(&self, p: &rumqttc::Publish) -> Option<Inbound> {
        if let Some(echo) = self.echo(p) {
            return Some(Inbound::Echo(echo));
        }
        self.command(p).map(Inbound::Command)
    }

    /// One of this device's events, delivered back: an events topic under its prefix and a
    /// `seq`. The publisher compares the bytes with the journal's before counting it, so
    /// someone else's message there acknowledges nothing.
    fn echo(&self, p: &rumqttc::Publish) -> Option<Echo> {
        if !self.is_event_topic(&p.topic) || p.payload.len() > self.max_message {
            return None;
        }
        let doc: super::payload::EventEcho = serde_json::from_slice(&p.payload).ok()?;
        Some(Echo { seq: doc.seq, payload: p.payload.clone() })
    }

    /// `<prefix>/<camera>/events`.
    fn is_event_topic(&self, topic: &str) -> bool {
        let camera = topic.strip_prefix(self.topics.prefix.as_str()).and_then(|t| t.strip_prefix('/'));
        camera.and_then(|c| c.strip_suffix("/events")).is_some_and(|c| !c.is_empty() && !c.contains('/'))
    }

    /// The command a message carries, or None (with a warning where it is refused).
    fn command(&self, p: &rumqttc::Publish) -> Option<Command> {
        let deploy = &self.deploy_topics;
        if deploy.bundles.contains(&p.topic) {
            if p.payload.is_empty() {
                return None; // a cleared retained bundle
            }
            let kind = CommandKind::Deploy { bytes: p.payload.clone(), retained: p.retain };
            return Some(Command { camera: String::new(), kind });
        }
        if p.payload.len() > self.max_message {
            log::warn!(
                "topic={} bytes={} a message over mqtt.max_packet_size ({}) is refused",
                shown(p.topic.as_bytes()),
                p.payload.len(),
                self.max_message
            );
            return None;
        }
        if deploy.rollbacks.contains(&p.topic) {
            if p.retain {
                // A retained rollback would roll back again after every reconnect.
                log::warn!("topic={} a retained rollback request is ignored: publish it without retain", p.topic);
                return None;
            }
            return Some(Command { camera: String::new(), kind: CommandKind::rollback(&p.payload) });
        }
        let (camera, setting) = self.topics.parse_command(&p.topic)?;
        Some(Command { camera: camera.to_string(), kind: CommandKind::parse(setting, &p.payload) })
    }
}

async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    incoming: Incoming,
    state: watch::Sender<LinkState>,
    commands: mpsc::Sender<Command>,
    echoes: mpsc::Sender<Echo>,
) {
    let broker = {
        let (host, port) = eventloop.mqtt_options.broker_address();
        format!("{host}:{port}")
    };
    // Publishes to send again, oldest first; fed to rumqttc as its flow control allows.
    let mut resend: VecDeque<Request> = VecDeque::new();
    let mut delay = Duration::from_millis(250);
    let mut failures = 0u64;
    loop {
        if state.borrow().connected {
            feed(&mut eventloop, &mut resend);
        }
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                // Clean session: the broker kept nothing of ours, and rumqttc has just dropped
                // its pending list; what we saved at the failure goes out again.
                if !resend.is_empty() {
                    log::info!("broker={broker} resending={} publishes the broker had not acknowledged", resend.len());
                }
                delay = Duration::from_millis(250);
                for filter in incoming.filters() {
                    if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                        log::error!("topic={filter} cannot subscribe: {e}");
                    }
                }
                log::info!("broker={broker} connected to the MQTT broker");
                state.send_modify(|s| {
                    s.connected = true;
                    s.sessions += 1;
                });
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let command = match incoming.read(&p) {
                    None => continue,
                    Some(Inbound::Echo(echo)) => {
                        // A full queue only delays the event's removal from the journal.
                        let _ = echoes.try_send(echo);
                        continue;
                    }
                    Some(Inbound::Command(command)) => command,
                };
                // Never wait here: this task must keep polling (keep-alive, acks). A full queue
                // (a command flood) or nobody listening (stopping) drops the command.
                if let Err(mpsc::error::TrySendError::Full(c)) = commands.try_send(command) {
                    log::warn!("camera={} too many commands queued; one dropped", c.camera);
                }
            }
            Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                log::debug!("broker={broker} disconnected");
                state.send_modify(|s| s.connected = false);
                return;
            }
            Ok(_) => {}
            Err(ConnectionError::RequestsDone) => return,
            Err(e) => {
                let was_connected = state.borrow().connected;
                if was_connected {
                    log::warn!("broker={broker} lost the MQTT connection: {e}; reconnecting");
                    failures = 0;
                } else if failures == 0 || failures.is_power_of_two() {
                    log::warn!("broker={broker} attempts={} cannot reach the MQTT broker: {e}", failures + 1);
                }
                failures += 1;
                state.send_modify(|s| s.connected = false);
                if was_connected {
                    // rumqttc has just moved the unacknowledged publishes and the requests still
                    // queued into `pending`; keep the publishes for the next session (see the
                    // module comment). Later failed attempts leave `pending` as it is.
                    for request in eventloop.pending.iter() {
                        // Events are the journal's to send again (until they come back).
                        if let Request::Publish(p) = request {
                            if incoming.is_event_topic(&p.topic) {
                                continue;
                            }
                            let mut p = p.clone();
                            p.pkid = 0;
                            p.dup = false;
                            resend.push_back(Request::Publish(p));
                        }
                    }
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Moves saved publishes into rumqttc's pending list while it has room in flight. Pending
/// requests bypass rumqttc's in-flight limit, so handing it hundreds at once would reuse
/// packet ids still awaiting acknowledgement (a collision, which loses publishes).
fn feed(eventloop: &mut EventLoop, resend: &mut VecDeque<Request>) {
    let limit = eventloop.mqtt_options.inflight().saturating_sub(1);
    let queued = eventloop.pending.len() as u16;
    let mut room = limit.saturating_sub(eventloop.state.inflight().saturating_add(queued));
    while room > 0 && eventloop.state.collision.is_none() {
        let Some(request) = resend.pop_front() else { break };
        eventloop.pending.push_back(request);
        room -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse_or_say_why_not() {
        assert_eq!(CommandKind::parse("detect", b"OFF"), CommandKind::Detect(false));
        assert_eq!(CommandKind::parse("detect", b" on\n"), CommandKind::Detect(true));
        assert_eq!(CommandKind::parse("threshold", b"0.55"), CommandKind::Threshold(0.55));
        assert!(matches!(CommandKind::parse("threshold", b"2"), CommandKind::Invalid { .. }));
        assert!(matches!(CommandKind::parse("zoom", b"1"), CommandKind::Invalid { .. }));
        let plain = CommandKind::rollback(b" blazeface\n");
        assert_eq!(plain, CommandKind::Rollback { name: "blazeface".into(), id: None });
        let tagged = CommandKind::rollback(br#"{"model":"","id":"7-1f"}"#);
        assert_eq!(tagged, CommandKind::Rollback { name: String::new(), id: Some("7-1f".into()) });
        assert_eq!(CommandKind::rollback(b""), CommandKind::Rollback { name: String::new(), id: None });
        // Misspelt keys, wrong types, other JSON and odd text are refused, never read as
        // "the only model".
        for bad in [
            &br#"{"modle":"blazeface"}"#[..],
            br#"{"model":5}"#,
            br#"{"model":"blazeface","id":7}"#,
            br#"{"model":"blazeface","force":true}"#,
            br#"{}"#,
            br#"{"model":"../x"}"#,
            br#"["blazeface"]"#,
            br#""blazeface""#,
            b"two words",
            b"\xff\xfe",
        ] {
            let kind = CommandKind::rollback(bad);
            assert!(
                matches!(&kind, CommandKind::Invalid { setting, .. } if setting == "rollback"),
                "{}: {kind:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let CommandKind::Invalid { why, .. } = CommandKind::rollback(&vec![b'a'; 5000]) else { panic!() };
        assert!(why.contains("5000 bytes"), "{why}");
        // Logged payloads are escaped: a newline cannot start a forged log line.
        let CommandKind::Invalid { why, .. } = CommandKind::parse("detect", b"x\nERROR forged") else { panic!() };
        assert!(!why.contains('\n'), "{why}");
    }
}
