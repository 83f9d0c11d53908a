//! The host's side of a deploy (`vigil deploy`, `vigil rollback`): publish a bundle
//! (retained, so a device that is offline takes it when it comes back) or a rollback request
//! on the devices' and groups' deploy topics, then collect each device's answer from its
//! retained `<prefix>/<device>/deploy/state`.
//!
//! Who answers: every device named, and for a group the devices whose last state lists the
//! group (the broker keeps that state retained), plus any other device that answers; or
//! at least `expect` devices when given.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, Transport};

use crate::mqtt::payload::{DeployAction, DeployResult, DeployState, ModelInfo, RollbackRequest};
use crate::mqtt::{self, Topics};

/// How to reach the broker.
#[derive(Debug, Clone)]
pub struct BrokerAddress {
    /// `mqtt://host[:port]` or `mqtts://host[:port]`.
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM CA for `mqtts://`, and an optional client certificate and key.
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

/// What to send.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A bundle's bytes, with the model name and version its header claims.
    Bundle { bytes: Vec<u8>, name: String, version: String },
    /// Roll back the named model ("": the only model each device serves).
    Rollback { name: String },
}

/// Where to send it and how long to wait.
#[derive(Debug, Clone)]
pub struct Request {
    pub payload: Payload,
    pub devices: Vec<String>,
    pub groups: Vec<String>,
    /// Device topics are `<prefix>/<device>/deploy…` (the devices' default `mqtt.topic_prefix`
    /// is `vigil/<device_id>`).
    pub prefix: String,
    /// Group topics are `<group_prefix>/<group>/deploy…` (`deploy.group_prefix`).
    pub group_prefix: String,
    pub expect: Option<usize>,
    pub timeout: Duration,
}

/// One device's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub device: String,
    pub result: DeployResult,
    pub reason: Option<String>,
    /// The model serving after it.
    pub serving: Option<ModelInfo>,
    pub previous: Option<String>,
    pub cameras: Vec<String>,
    /// Since the request was published.
    pub after: Duration,
}

impl Answer {
    pub fn refused(&self) -> bool {
        self.result == DeployResult::Refused
    }
}

/// What happens, for a progress display.
#[derive(Debug, Clone)]
pub enum Progress {
    Connected,
    Published {
        topic: String,
        bytes: usize,
    },
    Answer(Answer),
    /// Once a second while devices are awaited: those known not to have answered yet, and
    /// how many have.
    Waiting {
        pending: Vec<String>,
        answered: usize,
        elapsed: Duration,
    },
}

/// Every answer, and the devices expected that did not answer in time.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub answers: Vec<Answer>,
    pub missing: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("--broker {url}: {why}")]
    Url { url: String, why: String },
    #[error("{0}")]
    Tls(String),
    #[error("MQTT broker {broker}: {error}")]
    Connection { broker: String, error: String },
    #[error("MQTT broker {broker}: refused {what}: {code}")]
    Refused { broker: String, what: String, code: String },
    #[error("no answer from the broker {broker} within {secs} s")]
    Timeout { broker: String, secs: u64 },
    /// The connection ended while the broker was taking a large message: most likely its
    /// size limit (MQTT 3.1.1 has no way to say so but closing the connection).
    #[error(
        "MQTT broker {broker} closed the connection while taking the {bytes}-byte message ({error}): a broker \
         drops a client whose message is over its size limit. vigil's embedded broker takes messages up to the \
         device's mqtt.max_packet_size (default 64 MiB), Mosquitto up to its message_size_limit: raise the limit \
         on the broker's side"
    )]
    Dropped { broker: String, bytes: usize, error: String },
}

/// The largest deploy state read; a device's is well under 1 KiB.
const MAX_STATE: usize = 64 << 10;

/// MQTT options for a short-lived host client: no last will, a clean session, packets big
/// enough for the bundle.
pub fn options(address: &BrokerAddress, largest: usize) -> Result<MqttOptions, RemoteError> {
    let url_error = |why: String| RemoteError::Url { url: address.url.clone(), why };
    let (tls, host, port) = crate::config::parse_url(&address.url).map_err(url_error)?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
    let id = format!("vigil-deploy-{}-{nanos:08x}", std::process::id());
    let mut options = MqttOptions::new(id, host, port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_clean_session(true);
    // Incoming: deploy states, small, but anything is read so that one oversized message
    // (refused below) does not end the connection. Outgoing: the bundle.
    options.set_max_packet_size(mqtt::MQTT_MAX_PACKET, largest + 64 * 1024);
    if let Some(user) = &address.username {
        options.set_credentials(user.clone(), address.password.clone().unwrap_or_default());
    }
    match (tls, &address.ca_file) {
        (false, _) => {}
        (true, None) => return Err(url_error("mqtts:// needs --ca (the broker's CA certificate, PEM)".into())),
        (true, Some(ca)) => {
            let settings = crate::config::TlsSettings { ca_file: ca.clone(), client_cert: address.client_cert.clone() };
            let config = crate::mqtt::link::tls_config(&settings).map_err(|e| RemoteError::Tls(e.to_string()))?;
            options.set_transport(Transport::Tls(config.into()));
        }
    }
    Ok(options)
}

/// The topics a request is published on.
pub fn topics(request: &Request) -> Vec<String> {
    let devices = request.devices.iter().map(|d| Topics::of_device(&request.prefix, d).deploy());
    let groups = request.groups.iter().map(|g| mqtt::group_deploy(&request.group_prefix, g));
    let deploys = devices.chain(groups);
    match request.payload {
        Payload::Bundle { .. } => deploys.collect(),
        Payload::Rollback { .. } => deploys.map(|t| mqtt::rollback_of(&t)).collect(),
    }
}

/// Publishes the request and waits for the answers (see the module comment for who is
/// waited for). Returns when everyone expected has answered, or at the timeout.
pub async fn send(
    request: &Request,
    options: MqttOptions,
    mut progress: impl FnMut(Progress),
) -> Result<Report, RemoteError> {
    let broker = {
        let (host, port) = options.broker_address();
        format!("{host}:{port}")
    };
    let filters = state_filters(request);
    let publish_topics = topics(request);
    let (bytes, retain) = match &request.payload {
        Payload::Bundle { bytes, .. } => (bytes.clone(), true),
        Payload::Rollback { name } => (rollback_payload(name).into_bytes(), false),
    };
    // Room for every subscribe and publish at once, so queuing them never waits.
    let (client, mut eventloop) = AsyncClient::new(options, filters.len() + publish_topics.len() + 8);
    // Writing a large bundle can take longer than rumqttc's default 5 s flush limit.
    let mut network = rumqttc::NetworkOptions::new();
    network.set_connection_timeout(10 + (bytes.len() >> 20) as u64);
    eventloop.set_network_options(network);
    // The event loop runs in a task of its own (its poll is not safe to cancel, and
    // requests are only sent while it polls); events come here through a channel.
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            let event = eventloop.poll().await;
            let failed = event.is_err();
            if events_tx.send(event).is_err() || failed {
                return;
            }
        }
    });
    let result =
        exchange(request, &client, &mut events, &filters, &publish_topics, &bytes, retain, &broker, &mut progress)
            .await;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(event)) = events.recv().await {
            if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                break;
            }
        }
    })
    .await;
    driver.abort();
    result
}

/// The conversation: connect, subscribe to the answers, publish, collect.
#[allow(clippy::too_many_arguments)]
async fn exchange(
    request: &Request,
    client: &AsyncClient,
    events: &mut tokio::sync::mpsc::UnboundedReceiver<Result<Event, rumqttc::ConnectionError>>,
    filters: &[String],
    publish_topics: &[String],
    bytes: &[u8],
    retain: bool,
    broker: &str,
    progress: &mut impl FnMut(Progress),
) -> Result<Report, RemoteError> {
    let connection =
        |e: rumqttc::ConnectionError| RemoteError::Connection { broker: broker.to_string(), error: e.to_string() };
    let refused =
        |what: &str, code: String| RemoteError::Refused { broker: broker.to_string(), what: what.into(), code };
    // A topic rumqttc will not send (checked before, in `check_topic_word`), or a closed queue.
    let connection_error =
        |e: rumqttc::ClientError| RemoteError::Connection { broker: broker.to_string(), error: e.to_string() };
    // Connecting, subscribing and handing the bundle to the broker: 30 s, and a second more
    // per MiB.
    let setup = Duration::from_secs(30 + (bytes.len() >> 20) as u64);
    let setup_limit = Instant::now() + setup;
    let mut wait = Waiting::new(request);
    let mut subscribed = 0;
    let mut published: BTreeMap<u16, String> = BTreeMap::new();
    let mut unacked = publish_topics.len();
    let mut started: Option<Instant> = None;
    // Between queuing the publishes and the broker's acknowledgement of the last.
    let mut publishing = false;
    let mut last_tick = Instant::now();
    loop {
        let limit = started.map_or(setup_limit, |t| t + request.timeout);
        let next_tick = (last_tick + Duration::from_secs(1)).min(limit);
        let left = next_tick.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Err(_) => {}
            Ok(None) => {
                return Err(RemoteError::Connection {
                    broker: broker.to_string(),
                    error: "the connection ended".into(),
                })
            }
            Ok(Some(Err(e))) if publishing && matches!(request.payload, Payload::Bundle { .. }) => {
                return Err(RemoteError::Dropped {
                    broker: broker.to_string(),
                    bytes: bytes.len(),
                    error: e.to_string(),
                })
            }
            Ok(Some(Err(e))) => return Err(connection(e)),
            Ok(Some(Ok(event))) => match event {
                Event::Incoming(Packet::ConnAck(ack)) => {
                    if ack.code != rumqttc::ConnectReturnCode::Success {
                        return Err(refused("the connection", format!("{:?}", ack.code)));
                    }
                    progress(Progress::Connected);
                    for filter in filters {
                        client.subscribe(filter.clone(), QoS::AtLeastOnce).await.map_err(connection_error)?;
                    }
                }
                Event::Incoming(Packet::SubAck(ack)) => {
                    if let Some(code) =
                        ack.return_codes.iter().find(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    {
                        return Err(refused("the subscription to deploy states", format!("{code:?}")));
                    }
                    subscribed += 1;
                    // Subscribed to every answer: now publish, so none is missed.
                    if subscribed == filters.len() {
                        publishing = true;
                        for topic in publish_topics {
                            client
                                .publish(topic.clone(), QoS::AtLeastOnce, retain, bytes.to_vec())
                                .await
                                .map_err(connection_error)?;
                        }
                    }
                }
                // rumqttc sends requests in the order they were queued.
                Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => {
                    if let Some(topic) = publish_topics.get(published.len()) {
                        published.insert(pkid, topic.clone());
                    }
                }
                Event::Incoming(Packet::PubAck(ack)) => {
                    if let Some(topic) = published.get(&ack.pkid) {
                        progress(Progress::Published { topic: topic.clone(), bytes: bytes.len() });
                        unacked -= 1;
                        if unacked == 0 {
                            started = Some(Instant::now());
                            publishing = false;
                        }
                    }
                }
                Event::Incoming(Packet::Publish(p)) if p.payload.len() > MAX_STATE => {}
                Event::Incoming(Packet::Publish(p)) => {
                    if let (Some(device), Ok(state)) =
                        (device_of(&p.topic, &request.prefix), serde_json::from_slice::<DeployState>(&p.payload))
                    {
                        if p.retain {
                            // The device's last state from before this request: only who is in a group.
                            wait.member(&device, &state);
                        } else if let Some(answer) = answer_to(&request.payload, &device, &state, started) {
                            if wait.answer(answer.clone()) {
                                progress(Progress::Answer(answer));
                            }
                        }
                    }
                }
                _ => {}
            },
        }
        let now = Instant::now();
        if started.is_some() && wait.complete() {
            break;
        }
        if started.is_none() && now >= setup_limit {
            return Err(RemoteError::Timeout { broker: broker.to_string(), secs: setup.as_secs() });
        }
        if started.is_some_and(|t| now >= t + request.timeout) {
            break;
        }
        if now >= last_tick + Duration::from_secs(1) {
            last_tick = now;
            if let Some(t) = started {
                progress(Progress::Waiting {
                    pending: wait.pending(),
                    answered: wait.answers.len(),
                    elapsed: t.elapsed(),
                });
            }
        }
    }
    Ok(Report { missing: wait.pending(), answers: std::mem::take(&mut wait.answers).into_values().collect() })
}

/// A rollback request's payload: the model name and an id, so that a device reached on
/// several topics (its own and a group's) rolls back once.
fn rollback_payload(name: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
    let request = RollbackRequest { model: name.to_string(), id: Some(format!("{}-{nanos:x}", std::process::id())) };
    serde_json::to_string(&request).expect("a rollback request serialises")
}

/// The state topics to watch: each named device's, or every device's when groups are named.
fn state_filters(request: &Request) -> Vec<String> {
    if request.groups.is_empty() {
        request.devices.iter().map(|d| Topics::of_device(&request.prefix, d).deploy_state()).collect()
    } else {
        vec![Topics::of_device(&request.prefix, "+").deploy_state()]
    }
}

/// `<prefix>/<device>/deploy/state` → device.
fn device_of(topic: &str, prefix: &str) -> Option<String> {
    let rest = topic.strip_prefix(prefix)?.strip_prefix('/')?;
    let (device, _) = rest.split_once('/')?;
    (!device.is_empty() && topic == Topics::of_device(prefix, device).deploy_state()).then(|| device.to_string())
}

/// A device's state read as its answer to `payload`, if it is one.
fn answer_to(payload: &Payload, device: &str, state: &DeployState, started: Option<Instant>) -> Option<Answer> {
    let relevant = match payload {
        Payload::Bundle { name, version, .. } => {
            state.action == DeployAction::Deploy
                && state.name.as_ref() == Some(name)
                && state.version.as_ref() == Some(version)
        }
        Payload::Rollback { name } => {
            state.action == DeployAction::Rollback && (name.is_empty() || state.name.as_ref() == Some(name))
        }
    };
    if !relevant {
        return None;
    }
    Some(Answer {
        device: device.to_string(),
        result: state.result,
        reason: state.reason.clone(),
        serving: state.serving.clone(),
        previous: state.previous.clone(),
        cameras: state.cameras.clone(),
        after: started.map(|t| t.elapsed()).unwrap_or_default(),
    })
}

/// Who is awaited, and who has answered.
struct Waiting {
    expected: BTreeSet<String>,
    groups: Vec<String>,
    expect: Option<usize>,
    answers: BTreeMap<String, Answer>,
}

impl Waiting {
    fn new(request: &Request) -> Waiting {
        Waiting {
            expected: request.devices.iter().cloned().collect(),
            groups: request.groups.clone(),
            expect: request.expect,
            answers: BTreeMap::new(),
        }
    }

    /// A retained state: the device is awaited if it is in one of the groups.
    fn member(&mut self, device: &str, state: &DeployState) {
        if state.groups.iter().any(|g| self.groups.contains(g)) {
            self.expected.insert(device.to_string());
        }
    }

    /// Records an answer; false for a second answer from the same device.
    fn answer(&mut self, answer: Answer) -> bool {
        if self.answers.contains_key(&answer.device) {
            return false;
        }
        self.answers.insert(answer.device.clone(), answer);
        true
    }

    fn pending(&self) -> Vec<String> {
        self.expected.iter().filter(|d| !self.answers.contains_key(*d)).cloned().collect()
    }

    /// Everyone known answered, and as many as `expect`. With groups and nobody known (no
    /// device has reported on the group yet) and no `expect`, only the timeout ends the wait.
    fn complete(&self) -> bool {
        if self.expected.is_empty() && self.expect.is_none() {
            return false;
        }
        self.pending().is_empty() && self.answers.len() >= self.expect.unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(devices: &[&str], groups: &[&str], expect: Option<usize>) -> Request {
        Request {
            payload: Payload::Bundle { bytes: vec![], name: "m".into(), version: "2".into() },
            devices: devices.iter().map(|s| s.to_string()).collect(),
            groups: groups.iter().map(|s| s.to_string()).collect(),
            prefix: "vigil".into(),
            group_prefix: "vigil/groups".into(),
            expect,
            timeout: Duration::from_secs(1),
        }
    }

    /// A state as a device publishes it, read back through JSON as the host reads it.
    fn state(action: &str, result: &str, version: &str) -> DeployState {
        let doc = serde_json::json!({"v": 1, "device": "d", "ts": 1, "action": action, "result": result,
            "name": "m", "version": version, "groups": ["yard"]});
        serde_json::from_value(doc).unwrap()
    }

    #[test]
    fn topics_and_devices() {
        let r = request(&["garage"], &["yard"], None);
        assert_eq!(topics(&r), ["vigil/garage/deploy", "vigil/groups/yard/deploy"]);
        assert_eq!(state_filters(&r), ["vigil/+/deploy/state"]);
        assert_eq!(device_of("vigil/garage/deploy/state", "vigil").as_deref(), Some("garage"));
        assert_eq!(device_of("vigil/a/b/deploy/state", "vigil"), None);
        let rollback = Request { payload: Payload::Rollback { name: "m".into() }, ..request(&["garage"], &[], None) };
        assert_eq!(topics(&rollback), ["vigil/garage/deploy/rollback"]);
        assert_eq!(state_filters(&rollback), ["vigil/garage/deploy/state"]);
    }

    #[test]
    fn answers_are_matched_to_the_request() {
        let r = request(&["garage"], &[], None);
        assert!(answer_to(&r.payload, "garage", &state("deploy", "accepted", "2"), None).is_some());
        assert!(answer_to(&r.payload, "garage", &state("deploy", "accepted", "1"), None).is_none(), "another version");
        assert!(answer_to(&r.payload, "garage", &state("rollback", "rolled_back", "2"), None).is_none());
        let refused = answer_to(&r.payload, "garage", &state("deploy", "refused", "2"), None).unwrap();
        assert!(refused.refused());
        // Another action or result than the protocol's is not a state at all.
        let odd = serde_json::json!({"v": 1, "device": "d", "ts": 1, "action": "deploy", "result": "maybe"});
        assert!(serde_json::from_value::<DeployState>(odd).is_err());
    }

    #[test]
    fn a_group_waits_for_its_known_members_or_the_expected_count() {
        let r = request(&[], &["yard"], None);
        let mut w = Waiting::new(&r);
        assert!(!w.complete(), "nobody known: only the timeout ends it");
        w.member("shed", &state("deploy", "accepted", "1"));
        w.member("attic", &DeployState { groups: vec!["house".into()], ..state("deploy", "accepted", "1") });
        assert_eq!(w.pending(), ["shed"]);
        let answer = answer_to(&r.payload, "shed", &state("deploy", "accepted", "2"), None).unwrap();
        assert!(w.answer(answer.clone()));
        assert!(!w.answer(answer), "one answer per device");
        assert!(w.complete());
        let mut w = Waiting::new(&request(&[], &["yard"], Some(2)));
        w.answer(answer_to(&r.payload, "shed", &state("deploy", "accepted", "2"), None).unwrap());
        assert!(!w.complete());
        w.answer(answer_to(&r.payload, "barn", &state("deploy", "refused", "2"), None).unwrap());
        assert!(w.complete());
    }
}
