//! The publisher task: takes the pipeline's messages and hands them to rumqttc, holding what
//! must not be lost while the broker is away.
//!
//! Each [`Message`] has a [`Class`] that says what happens to it without a broker:
//! - `Event`: kept in a bounded spool (`mqtt.spool_events`, oldest lost first when full,
//!   counted in stats) and sent in order after the reconnect;
//! - `Latest`: only the newest per topic matters (counts, settings, availability,
//!   discovery): kept, and *all* of them are published again after every reconnect, so a
//!   broker that lost its retained messages is brought back up to date;
//! - `Transient`: per-frame detections and stats, stale by the time the broker returns:
//!   skipped (and counted) while away.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rumqttc::{AsyncClient, QoS};
use tokio::sync::{mpsc, watch};

use super::LinkState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Event,
    Latest,
    Transient,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    pub qos: QoS,
    pub retain: bool,
    pub class: Class,
}

/// Counters the stats task reads.
#[derive(Debug, Default)]
pub struct PublisherStats {
    pub spooled: AtomicUsize,
    pub spool_lost: AtomicU64,
    pub skipped: AtomicU64,
    pub reconnects: AtomicU64,
}

pub struct Publisher {
    client: AsyncClient,
    link: watch::Receiver<LinkState>,
    spool: VecDeque<Message>,
    capacity: usize,
    latest: BTreeMap<String, Message>,
    /// `Latest` topics whose newest message rumqttc refused (its queue was full): retried.
    unsent: BTreeSet<String>,
    stats: Arc<PublisherStats>,
}

/// When the publisher must be done after its input closes: set by whoever stops it.
pub type Deadline = Arc<OnceLock<tokio::time::Instant>>;

impl Publisher {
    pub fn new(client: AsyncClient, link: watch::Receiver<LinkState>, capacity: usize) -> Publisher {
        Publisher {
            client,
            link,
            spool: VecDeque::new(),
            capacity,
            latest: BTreeMap::new(),
            unsent: BTreeSet::new(),
            stats: Arc::new(PublisherStats::default()),
        }
    }

    pub fn stats(&self) -> Arc<PublisherStats> {
        self.stats.clone()
    }

    /// Runs until `messages` closes (every pipeline sender dropped), then sends what is
    /// left until `deadline` (or 5 s if it was not set), publishes `farewell` (the
    /// availability "offline") and disconnects.
    pub async fn run(mut self, mut messages: mpsc::Receiver<Message>, farewell: Message, deadline: Deadline) {
        let mut sessions_seen = 0;
        let mut retry = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                message = messages.recv() => match message {
                    Some(m) => self.accept(m),
                    None => break,
                },
                changed = self.link.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let state = *self.link.borrow_and_update();
                    if state.connected && state.sessions != sessions_seen {
                        if sessions_seen > 0 {
                            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                        }
                        sessions_seen = state.sessions;
                        self.announce();
                    }
                }
                _ = retry.tick(), if !self.spool.is_empty() || !self.unsent.is_empty() => {}
            }
            self.flush();
        }
        // The pipeline has stopped: send what is left, then say goodbye.
        let deadline = *deadline.get_or_init(|| tokio::time::Instant::now() + Duration::from_secs(5));
        let deadline = deadline - Duration::from_millis(100); // leave time for the goodbye
        while !(self.spool.is_empty() && self.unsent.is_empty()) && tokio::time::Instant::now() < deadline {
            self.flush();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !self.spool.is_empty() {
            log::error!("events={} the broker is unreachable; unsent events are lost at shutdown", self.spool.len());
        }
        let _ = self.client.try_publish(farewell.topic, farewell.qos, farewell.retain, farewell.payload);
        let _ = self.client.try_disconnect();
    }

    fn connected(&self) -> bool {
        self.link.borrow().connected
    }

    fn accept(&mut self, message: Message) {
        match message.class {
            Class::Event => {
                if self.spool.len() >= self.capacity {
                    self.spool.pop_front();
                    let lost = self.stats.spool_lost.fetch_add(1, Ordering::Relaxed) + 1;
                    if lost.is_power_of_two() {
                        log::error!(
                            "lost={lost} capacity={} the event spool is full; oldest events are lost",
                            self.capacity
                        );
                    }
                }
                self.spool.push_back(message);
            }
            Class::Latest => {
                let topic = message.topic.clone();
                self.latest.insert(topic.clone(), message);
                if self.connected() {
                    self.send_latest(&topic);
                }
            }
            Class::Transient => {
                if self.connected() {
                    self.send_or_skip(message);
                } else {
                    self.stats.skipped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        self.stats.spooled.store(self.spool.len(), Ordering::Relaxed);
    }

    /// After every (re)connect: every `Latest` message again, in topic order.
    fn announce(&mut self) {
        log::debug!("messages={} announcing state", self.latest.len());
        let topics: Vec<String> = self.latest.keys().cloned().collect();
        for topic in topics {
            self.send_latest(&topic);
        }
    }

    /// Sends the newest message of a `Latest` topic, or remembers to retry it.
    fn send_latest(&mut self, topic: &str) {
        let m = &self.latest[topic];
        if self.client.try_publish(m.topic.clone(), m.qos, m.retain, m.payload.clone()).is_ok() {
            self.unsent.remove(topic);
        } else {
            self.unsent.insert(topic.to_string());
        }
    }

    fn send_or_skip(&self, m: Message) {
        if self.client.try_publish(m.topic, m.qos, m.retain, m.payload).is_err() {
            self.stats.skipped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Moves spooled events into rumqttc while connected; stops at the first refusal
    /// (its channel is full) and tries again on the next tick.
    fn flush(&mut self) {
        if self.connected() {
            let retry: Vec<String> = self.unsent.iter().cloned().collect();
            for topic in retry {
                self.send_latest(&topic);
            }
        }
        while self.connected() {
            let Some(m) = self.spool.pop_front() else { break };
            let (topic, payload) = (m.topic.clone(), m.payload.clone());
            if self.client.try_publish(topic, m.qos, m.retain, payload).is_err() {
                self.spool.push_front(m);
                break;
            }
        }
        self.stats.spooled.store(self.spool.len(), Ordering::Relaxed);
    }
}
