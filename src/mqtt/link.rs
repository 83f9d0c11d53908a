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

use rumqttc::{AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Packet, QoS, Request, Transport};
use tokio::sync::{mpsc, watch};

use super::Topics;
use crate::config::MqttSettings;

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
    /// Unknown setting or unreadable value: answered with an error in the log.
    Invalid {
        setting: String,
        why: String,
    },
    /// A deploy bundle, from the device's or a group's deploy topic (`camera` is empty).
    /// `retained`: the broker's stored copy, delivered on subscribing.
    Deploy {
        bytes: Vec<u8>,
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
    /// A rollback payload: a model name as plain text (or nothing), or
    /// `{"model": NAME, "id": ID}` as `vigil rollback` sends it.
    pub fn rollback(payload: &[u8]) -> CommandKind {
        let text = String::from_utf8_lossy(payload).trim().to_string();
        match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(doc) if doc.is_object() => CommandKind::Rollback {
                name: doc["model"].as_str().unwrap_or_default().to_string(),
                id: doc["id"].as_str().map(str::to_string),
            },
            _ => CommandKind::Rollback { name: text, id: None },
        }
    }

    pub fn parse(setting: &str, payload: &[u8]) -> CommandKind {
        let text = String::from_utf8_lossy(payload).trim().to_string();
        let invalid = |why: String| CommandKind::Invalid { setting: setting.to_string(), why };
        match setting {
            "detect" => match text.to_ascii_uppercase().as_str() {
                "ON" | "TRUE" | "1" => CommandKind::Detect(true),
                "OFF" | "FALSE" | "0" => CommandKind::Detect(false),
                _ => invalid(format!("\"{text}\" is not ON or OFF")),
            },
            "threshold" => match text.parse::<f32>() {
                Ok(v) if (0.0..=1.0).contains(&v) => CommandKind::Threshold(v),
                _ => invalid(format!("\"{text}\" is not a number between 0 and 1")),
            },
            _ => invalid("unknown setting (detect, threshold)".into()),
        }
    }
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
    #[error("mqtt TLS: cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("mqtt TLS: {0}")]
    Tls(String),
}

/// rumqttc's request channel: bounded, so a stuck connection pushes back on the publisher
/// (which then keeps events in its own spool) instead of growing without limit.
const REQUEST_CHANNEL: usize = 1024;

pub fn options(settings: &MqttSettings, topics: &Topics) -> Result<MqttOptions, LinkError> {
    let mut options = MqttOptions::new(settings.client_id.clone(), settings.host.clone(), settings.port);
    options.set_keep_alive(settings.keep_alive);
    options.set_max_packet_size(settings.max_packet_size, settings.max_packet_size);
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

fn read(path: &std::path::Path) -> Result<Vec<u8>, LinkError> {
    std::fs::read(path).map_err(|e| LinkError::Read { path: path.display().to_string(), source: e })
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
pub fn start(
    options: MqttOptions,
    topics: Topics,
    commands: mpsc::Sender<Command>,
    deploy_topics: DeployTopics,
) -> Link {
    let (client, eventloop) = AsyncClient::new(options, REQUEST_CHANNEL);
    let (state_tx, state) = watch::channel(LinkState::default());
    let task = tokio::spawn(drive(eventloop, client.clone(), topics, deploy_topics, state_tx, commands));
    Link { client, state, task }
}

async fn drive(
    mut eventloop: EventLoop,
    client: AsyncClient,
    topics: Topics,
    deploy_topics: DeployTopics,
    state: watch::Sender<LinkState>,
    commands: mpsc::Sender<Command>,
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
                let deploys = deploy_topics.bundles.iter().chain(&deploy_topics.rollbacks).cloned();
                for filter in std::iter::once(topics.command_filter()).chain(deploys) {
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
                let command = if deploy_topics.bundles.contains(&p.topic) {
                    if p.payload.is_empty() {
                        continue; // a cleared retained bundle
                    }
                    let kind = CommandKind::Deploy { bytes: p.payload.to_vec(), retained: p.retain };
                    Command { camera: String::new(), kind }
                } else if deploy_topics.rollbacks.contains(&p.topic) {
                    if p.retain {
                        // A retained rollback would roll back again after every reconnect.
                        log::warn!(
                            "topic={} a retained rollback request is ignored: publish it without retain",
                            p.topic
                        );
                        continue;
                    }
                    Command { camera: String::new(), kind: CommandKind::rollback(&p.payload) }
                } else {
                    let Some((camera, setting)) = topics.parse_command(&p.topic) else { continue };
                    Command { camera: camera.to_string(), kind: CommandKind::parse(setting, &p.payload) }
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
                        if let Request::Publish(p) = request {
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
    }
}
