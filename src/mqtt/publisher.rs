//! The publisher task: takes the pipeline's messages and hands them to rumqttc, holding what
//! must not be lost while the broker is away.
//!
//! Each [`Message`] has a [`Class`] that says what happens to it without a broker:
//! - `Event`: written to the event journal ([`super::journal`], on disk) and kept there until
//!   the broker delivers it back to the device's own subscription; sent in order, again after
//!   a reload or a restart if it had not come back. Bounded by `mqtt.spool_events` and
//!   `mqtt.spool_bytes` (oldest lost first when full, counted in stats);
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

use super::journal::{lock, JournalEvent, SharedJournal};
use super::LinkState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// An event, with its number in the device's sequence (its payload's `seq`).
    Event {
        seq: u64,
    },
    Latest,
    Transient,
}

/// An event the broker delivered back to the device: its number and its bytes (compared with
/// the journal's copy before the event counts as delivered).
#[derive(Debug, Clone)]
pub struct Echo {
    pub seq: u64,
    pub payload: bytes::Bytes,
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
    /// Events the journal dropped to stay within `mqtt.spool_bytes`.
    pub journal_lost: AtomicU64,
    pub skipped: AtomicU64,
    pub reconnects: AtomicU64,
}

pub struct Publisher {
    client: AsyncClient,
    link: watch::Receiver<LinkState>,
    journal: SharedJournal,
    /// Journal events not yet handed to rumqttc in this connection, oldest first.
    spool: VecDeque<u64>,
    capacity: usize,
    latest: BTreeMap<String, Message>,
    /// `Latest` topics whose newest message rumqttc refused (its queue was full): retried.
    unsent: BTreeSet<String>,
    stats: Arc<PublisherStats>,
    /// When an event was sent that has not come back yet (None: all came back), and
    /// whether the "nothing comes back" warning was given.
    awaiting_since: Option<std::time::Instant>,
    warned_no_echo: bool,
    /// Events under this prefix come back to the link's subscription; others (journaled
    /// before `topic_prefix` changed) cannot, and count as delivered once sent.
    echoed_prefix: String,
    /// The journal's `lost` when the spool was last pruned of events it dropped.
    lost_seen: u64,
}

/// How long sent events may go without coming back before the warning.
const ECHO_WARNING: Duration = Duration::from_secs(60);

/// When the publisher must be done after its input closes: set by whoever stops it.
pub type Deadline = Arc<OnceLock<tokio::time::Instant>>;

impl Publisher {
    /// Every event still in the journal (from before a restart or a reload) is sent first.
    pub fn new(
        client: AsyncClient,
        link: watch::Receiver<LinkState>,
        journal: SharedJournal,
        topics: &super::Topics,
        capacity: usize,
    ) -> Publisher {
        let spool: VecDeque<u64> = lock(&journal).pending_seqs().into();
        if !spool.is_empty() {
            log::info!("events={} events from the journal not yet delivered are sent again", spool.len());
        }
        Publisher {
            client,
            link,
            journal,
            spool,
            capacity,
            latest: BTreeMap::new(),
            unsent: BTreeSet::new(),
            stats: Arc::new(PublisherStats::default()),
            awaiting_since: None,
            warned_no_echo: false,
            echoed_prefix: format!("{}/", topics.prefix),
            lost_seen: 0,
        }
    }

    pub fn stats(&self) -> Arc<PublisherStats> {
        self.stats.clone()
    }

    /// Runs until `messages` closes (every pipeline sender dropped), then sends what is
    /// left until `deadline` (or 5 s if it was not set), publishes `farewell` (the
    /// availability "offline") and disconnects.
    pub async fn run(
        mut self,
        mut messages: mpsc::Receiver<Message>,
        mut echoes: mpsc::Receiver<Echo>,
        farewell: Message,
        deadline: Deadline,
    ) {
        let mut sessions_seen = 0;
        let mut retry = tokio::time::interval(Duration::from_millis(50));
        let mut sync = tokio::time::interval(super::journal::SYNC_EVERY);
        loop {
            tokio::select! {
                message = messages.recv() => match message {
                    Some(m) => self.accept(m),
                    None => break,
                },
                Some(echo) = echoes.recv() => self.delivered(echo),
                _ = sync.tick() => {
                    self.sync();
                    self.warn_if_nothing_comes_back();
                }
                changed = self.link.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let state = *self.link.borrow_and_update();
                    if state.connected && state.sessions != sessions_seen {
                        if sessions_seen > 0 {
                            self.stats.reconnects.fetch_add(1, Ordering::Relaxed);
                            // Events handed to the last connection that did not come back:
                            // again, in order (the link leaves events to the journal).
                            self.spool = lock(&self.journal).pending_seqs().into();
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
        // Leave time for the goodbye.
        let deadline = deadline - Duration::from_millis(100);
        // Until every event has come back from the broker (written to the socket is not
        // enough: a reload's new session takes over the client id, and the broker may drop
        // what it had not read from the old one).
        while !(self.spool.is_empty() && self.unsent.is_empty() && lock(&self.journal).pending() == 0)
            && tokio::time::Instant::now() < deadline
        {
            self.flush();
            while let Ok(echo) = echoes.try_recv() {
                self.delivered(echo);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.sync();
        let kept = lock(&self.journal).pending();
        if kept > 0 {
            log::warn!("events={kept} events not yet delivered stay in the journal; they are sent at the next start");
        }
        let _ = self.client.try_publish(farewell.topic, farewell.qos, farewell.retain, farewell.payload);
        let _ = self.client.try_disconnect();
    }

    fn connected(&self) -> bool {
        self.link.borrow().connected
    }

    fn accept(&mut self, message: Message) {
        match message.class {
            Class::Event { seq } => {
                let event = JournalEvent { seq, topic: message.topic, payload: message.payload };
                let mut journal = lock(&self.journal);
                match journal.append(&event) {
                    Ok(()) => log::debug!("seq={seq} event journaled"),
                    // Not on disk, but held in memory and sent.
                    Err(e) => log::error!("seq={seq} the event journal cannot record an event: {e}"),
                }
                if journal.pending() > self.capacity {
                    if let Some(oldest) = journal.oldest() {
                        let _ = journal.acknowledge(oldest);
                        self.spool.retain(|s| *s != oldest);
                        let lost = self.stats.spool_lost.fetch_add(1, Ordering::Relaxed) + 1;
                        if lost.is_power_of_two() {
                            log::error!(
                                "lost={lost} capacity={} the event spool is full; oldest events are lost",
                                self.capacity
                            );
                        }
                    }
                }
                // Events the journal dropped for its byte bound leave the queue too.
                if journal.lost != self.lost_seen {
                    self.lost_seen = journal.lost;
                    self.spool.retain(|s| journal.event(*s).is_some());
                }
                drop(journal);
                self.spool.push_back(seq);
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
        self.update_stats();
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
            let Some(seq) = self.spool.pop_front() else { break };
            let journal = lock(&self.journal);
            // Delivered or given up meanwhile: nothing to send.
            let Some(e) = journal.event(seq) else { continue };
            // Events are always QoS 1: the link re-sends unacknowledged QoS 1 publishes after
            // a reconnect; a QoS 2 flow cut between PUBREC and PUBREL could not be resumed.
            if self.client.try_publish(e.topic.clone(), QoS::AtLeastOnce, false, e.payload.clone()).is_err() {
                drop(journal);
                self.spool.push_front(seq);
                break;
            }
            if e.topic.starts_with(&self.echoed_prefix) {
                self.awaiting_since.get_or_insert_with(std::time::Instant::now);
            } else {
                log::info!(
                    "seq={seq} topic={} an event from before a topic_prefix change: sent once, unconfirmed",
                    e.topic
                );
                let mut journal = journal;
                let _ = journal.acknowledge(seq);
            }
        }
        self.update_stats();
    }

    /// The broker delivered an event back: if it is the journal's, it is delivered.
    fn delivered(&mut self, echo: Echo) {
        let mut journal = lock(&self.journal);
        if journal.event(echo.seq).is_some_and(|e| e.payload == echo.payload) {
            if let Err(e) = journal.acknowledge(echo.seq) {
                log::error!("seq={} the event journal cannot record a delivery: {e}", echo.seq);
            }
            self.awaiting_since = (journal.pending() > 0).then(std::time::Instant::now);
        }
        drop(journal);
        self.update_stats();
    }

    /// Events go out but none comes back: most likely the broker does not let this client
    /// read its own topics. Said once; the events stay in the journal meanwhile.
    fn warn_if_nothing_comes_back(&mut self) {
        if !self.warned_no_echo && self.connected() && self.awaiting_since.is_some_and(|t| t.elapsed() >= ECHO_WARNING)
        {
            self.warned_no_echo = true;
            log::warn!(
                "events={} events sent a minute ago have not come back from the broker; vigil \
                 subscribes to its own events topic to confirm delivery: let this client read its \
                 topics (ACL readwrite on the prefix). Until then events stay in the journal and \
                 are sent again after each reconnect",
                lock(&self.journal).pending()
            );
        }
    }

    fn sync(&mut self) {
        if let Err(e) = lock(&self.journal).sync() {
            log::error!("the event journal cannot be flushed to the disk: {e}");
        }
    }

    fn update_stats(&self) {
        let journal = lock(&self.journal);
        self.stats.spooled.store(journal.pending(), Ordering::Relaxed);
        self.stats.journal_lost.store(journal.lost, Ordering::Relaxed);
    }
}
