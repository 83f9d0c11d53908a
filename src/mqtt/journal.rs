//! The event journal: every event on disk from the moment the publisher takes it until the
//! broker is known to have it, so that a restart, a crash or a power cut loses none.
//!
//! A checksummed append-only log in segment files under `mqtt.spool_dir`
//! (`<segment number, 16 hex digits>.log`, numbered in the order they were started). Each
//! record is
//!
//! ```text
//! 0xE5 | kind | body length u32 LE | crc32 of body u32 LE | body
//! b'E' an event:          seq u64 LE | topic length u16 LE | topic | payload
//! b'A' acknowledged:      seq u64 LE
//! b'R' numbers reserved:  u64 LE, every seq below it may have been handed out
//! ```
//!
//! An event is acknowledged when the broker delivers it back to vigil (the link subscribes
//! to its own events topic): proof that the broker took it. At start-up the segments are read
//! in order and every event without its acknowledgement is sent again (at least once: a
//! subscriber may see an event twice, never zero times). A record that is cut short or
//! fails its checksum (a write torn by a power cut) ends the reading of its segment with a
//! warning, and reading resumes at the next record whose checksum holds (a flipped bit
//! costs one record); garbage at the end of the last segment is truncated so new records
//! follow good ones. A lock file keeps a second vigil out of the folder.
//!
//! Event numbers never repeat, even across a power cut that loses the journal's last
//! records: numbers are reserved in blocks of [`RESERVE_BLOCK`], each reservation on the disk
//! before its numbers are used, and a start continues after the highest reservation (so a
//! restart may skip up to a block of numbers: a jump, never a repeat).
//!
//! Durability cadence: each record is written to the file as it comes (so a crash or a
//! `kill -9` of vigil loses nothing the publisher had taken) and flushed to the disk
//! (fdatasync) at most every [`SYNC_EVERY`] — group commit, so a burst of events costs one
//! flush, and a power cut loses at most the events of the last 100 ms. A segment is deleted once it and
//! every older one hold only acknowledged events; when the journal passes its byte bound the
//! oldest segment is deleted anyway and its unacknowledged events are counted as lost.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Flush to the disk at most this often.
pub const SYNC_EVERY: Duration = Duration::from_millis(100);

const MAGIC: u8 = 0xE5;
const EVENT: u8 = b'E';
const ACK: u8 = b'A';
const RESERVE: u8 = b'R';

/// Event numbers reserved at a time (one flush to the disk each).
pub const RESERVE_BLOCK: u64 = 1000;
/// Records before the body: magic, kind, length, crc.
const HEAD: usize = 10;
/// The largest record body read back: an event is one MQTT message, far below this.
const MAX_BODY: usize = 16 << 20;

/// An event kept until the broker has it.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEvent {
    pub seq: u64,
    pub topic: String,
    pub payload: Vec<u8>,
}

struct Segment {
    path: PathBuf,
    bytes: u64,
    /// Events in this segment not yet acknowledged.
    open: BTreeSet<u64>,
}

pub struct EventJournal {
    dir: PathBuf,
    /// Held for the journal's life: the folder is this process's.
    _lock: File,
    /// Every number below this may have been handed out (on the disk).
    reserved: u64,
    max_bytes: u64,
    segment_bytes: u64,
    segments: Vec<Segment>,
    writer: BufWriter<File>,
    /// Each unacknowledged event, and which segment (by index in `segments`) holds it. The
    /// journal is the spool: what is sent comes from here.
    held: BTreeMap<u64, (usize, JournalEvent)>,
    next_seq: u64,
    dirty: bool,
    /// Unacknowledged events deleted with a segment to keep the byte bound.
    pub lost: u64,
}

/// What opening found.
pub struct Opened {
    pub journal: EventJournal,
    /// Events to send again, oldest first.
    pub pending: Vec<JournalEvent>,
    /// Warnings about damaged records (already logged).
    pub damaged: usize,
}

fn io_error(what: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what)
}

impl EventJournal {
    /// Opens (creating) the journal in `dir`, bounded to `max_bytes` on disk.
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<Opened> {
        std::fs::create_dir_all(dir)?;
        let mut names: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "log") && segment_seq(p).is_some())
            .collect();
        names.sort();
        let lock = File::create(dir.join("lock"))?;
        lock.try_lock()
            .map_err(|_| io_error(format!("{} is in use by another vigil (its lock file is held)", dir.display())))?;
        let mut events: Vec<(usize, JournalEvent)> = Vec::new();
        let mut acked = BTreeSet::new();
        let mut reserved = 0u64;
        let mut segments = Vec::new();
        let mut damaged = 0;
        let last = names.len().saturating_sub(1);
        for (i, path) in names.iter().enumerate() {
            let segment = read_segment(path)?;
            for (offset, why) in &segment.damage {
                damaged += 1;
                log::warn!(
                    "path={} offset={offset} event journal record damaged ({why}); skipped to the next good record",
                    path.display()
                );
            }
            let good_len = segment.good_len;
            if i == last && good_len < std::fs::metadata(path)?.len() {
                OpenOptions::new().write(true).open(path)?.set_len(good_len)?;
            }
            for record in segment.records {
                match record {
                    Record::Event(e) => events.push((i, e)),
                    Record::Ack(seq) => {
                        acked.insert(seq);
                    }
                    Record::Reserve(upto) => reserved = reserved.max(upto),
                }
            }
            segments.push(Segment { path: path.clone(), bytes: good_len, open: BTreeSet::new() });
        }
        let seen = events.iter().map(|(_, e)| e.seq).chain(acked.iter().copied()).max();
        let next_seq = seen.map_or(1, |s| s.saturating_add(1)).max(reserved).max(1);
        let mut held = BTreeMap::new();
        let mut pending = Vec::new();
        for (i, e) in events {
            if !acked.contains(&e.seq) && !held.contains_key(&e.seq) {
                segments[i].open.insert(e.seq);
                pending.push(e.clone());
                held.insert(e.seq, (i, e));
            }
        }
        if segments.is_empty() {
            segments.push(Segment { path: segment_path(dir, 1), bytes: 0, open: BTreeSet::new() });
        }
        let current = segments.last().expect("one segment at least");
        let writer = BufWriter::new(OpenOptions::new().create(true).append(true).open(&current.path)?);
        // Eight segments or more within the bound, so dropping the oldest frees an eighth.
        let segment_bytes = (max_bytes / 8).clamp(4 << 10, 4 << 20);
        let mut journal = EventJournal {
            dir: dir.to_path_buf(),
            _lock: lock,
            reserved,
            max_bytes,
            segment_bytes,
            segments,
            writer,
            held,
            next_seq,
            dirty: false,
            lost: 0,
        };
        crate::files::sync_dir(dir)?;
        journal.compact()?;
        Ok(Opened { journal, pending, damaged })
    }

    /// The sequence number the next event gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Every number below `upto` may be handed out: recorded and flushed to the disk before
    /// it is.
    pub fn reserve(&mut self, upto: u64) -> std::io::Result<()> {
        if upto > self.reserved {
            self.write(RESERVE, &upto.to_le_bytes(), None)?;
            self.sync()?;
            self.reserved = upto;
        }
        Ok(())
    }

    /// Events not yet acknowledged.
    pub fn pending(&self) -> usize {
        self.held.len()
    }

    /// The sequence numbers of the events not yet acknowledged, oldest first.
    pub fn pending_seqs(&self) -> Vec<u64> {
        self.held.keys().copied().collect()
    }

    /// An event not yet acknowledged.
    pub fn event(&self, seq: u64) -> Option<&JournalEvent> {
        self.held.get(&seq).map(|(_, e)| e)
    }

    /// The oldest event not yet acknowledged.
    pub fn oldest(&self) -> Option<u64> {
        self.held.keys().next().copied()
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.bytes).sum()
    }

    /// Records an event (its `seq` from [`EventJournal::next_seq`] or later). The event is
    /// held (to be sent, until acknowledged) even when writing it fails: the error says it
    /// would not survive a restart.
    pub fn append(&mut self, event: &JournalEvent) -> std::io::Result<()> {
        let topic = event.topic.as_bytes();
        let mut body = Vec::with_capacity(10 + topic.len() + event.payload.len());
        body.extend_from_slice(&event.seq.to_le_bytes());
        body.extend_from_slice(&(topic.len().min(u16::MAX as usize) as u16).to_le_bytes());
        body.extend_from_slice(topic);
        body.extend_from_slice(&event.payload);
        self.next_seq = self.next_seq.max(event.seq + 1);
        if topic.len() > u16::MAX as usize {
            self.hold(event);
            return Err(io_error("topic longer than 65535 bytes".into()));
        }
        // Rotation (inside `write`) comes first, so the event is held by the segment it is
        // written to.
        let written = self.write(EVENT, &body, Some(event));
        if !self.held.contains_key(&event.seq) {
            self.hold(event);
        }
        written
    }

    fn hold(&mut self, event: &JournalEvent) {
        let at = self.segments.len() - 1;
        self.segments[at].open.insert(event.seq);
        self.held.insert(event.seq, (at, event.clone()));
    }

    /// Records that the broker has event `seq`. Unknown or repeated numbers are ignored.
    pub fn acknowledge(&mut self, seq: u64) -> std::io::Result<()> {
        let Some((at, _)) = self.held.remove(&seq) else { return Ok(()) };
        self.segments[at].open.remove(&seq);
        self.write(ACK, &seq.to_le_bytes(), None)?;
        self.compact()
    }

    /// Writes a record; `event` is held by the segment it goes to (before the byte bound may
    /// drop old segments, so its own bookkeeping is in place).
    fn write(&mut self, kind: u8, body: &[u8], event: Option<&JournalEvent>) -> std::io::Result<()> {
        if self.segments.last().is_some_and(|s| s.bytes >= self.segment_bytes) {
            self.rotate()?;
        }
        if let Some(event) = event {
            self.hold(event);
        }
        let mut record = Vec::with_capacity(HEAD + body.len());
        record.push(MAGIC);
        record.push(kind);
        record.extend_from_slice(&(body.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        record.extend_from_slice(body);
        // Into the kernel at once (a crash of vigil loses nothing); onto the disk by `sync`.
        self.writer.write_all(&record)?;
        self.writer.flush()?;
        self.segments.last_mut().expect("one segment at least").bytes += record.len() as u64;
        self.dirty = true;
        // Never the segment being written: a record larger than the whole bound stays.
        while self.bytes() > self.max_bytes && self.segments.len() > 1 {
            self.drop_oldest()?;
        }
        Ok(())
    }

    /// Flushes what was written to the disk (the publisher calls it every [`SYNC_EVERY`],
    /// and at a stop).
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.dirty {
            self.writer.flush()?;
            self.writer.get_ref().sync_data()?;
            self.dirty = false;
        }
        Ok(())
    }

    /// Starts a new segment (the old one flushed first).
    fn rotate(&mut self) -> std::io::Result<()> {
        self.sync()?;
        let number = self.segments.last().and_then(|s| segment_seq(&s.path)).unwrap_or(0).saturating_add(1);
        let path = segment_path(&self.dir, number);
        self.writer = BufWriter::new(OpenOptions::new().create(true).append(true).open(&path)?);
        crate::files::sync_dir(&self.dir)?;
        self.segments.push(Segment { path, bytes: 0, open: BTreeSet::new() });
        Ok(())
    }

    /// Deletes the oldest segments while they hold nothing unacknowledged (never the one
    /// being written).
    fn compact(&mut self) -> std::io::Result<()> {
        while self.segments.len() > 1 && self.segments[0].open.is_empty() {
            self.remove_first()?;
        }
        Ok(())
    }

    /// Over the byte bound: the oldest segment goes, acknowledged or not.
    fn drop_oldest(&mut self) -> std::io::Result<()> {
        let lost = self.segments[0].open.len() as u64;
        if lost > 0 {
            self.lost += lost;
            log::error!(
                "lost={lost} max_bytes={} the event journal is full; its oldest unsent events are dropped",
                self.max_bytes
            );
        }
        self.remove_first()
    }

    fn remove_first(&mut self) -> std::io::Result<()> {
        let first = self.segments.remove(0);
        for seq in &first.open {
            self.held.remove(seq);
        }
        for (at, _) in self.held.values_mut() {
            *at -= 1;
        }
        std::fs::remove_file(&first.path)?;
        crate::files::sync_dir(&self.dir)
    }
}

/// The journal, shared by the publishers of successive configurations (one at a time) and
/// the event numbering.
pub type SharedJournal = Arc<Mutex<EventJournal>>;

/// The journal, whatever a panicking holder left: its state is consistent between calls.
pub fn lock(journal: &SharedJournal) -> MutexGuard<'_, EventJournal> {
    journal.lock().unwrap_or_else(|e| e.into_inner())
}

/// The device's event numbering, shared by its cameras and kept across reloads: each number
/// handed out is covered by a reservation already on the disk.
pub struct Sequence {
    next: AtomicU64,
    reserved: AtomicU64,
    journal: SharedJournal,
}

impl Sequence {
    pub fn new(journal: SharedJournal) -> Sequence {
        let next = lock(&journal).next_seq();
        Sequence { next: AtomicU64::new(next), reserved: AtomicU64::new(0), journal }
    }

    /// The next event number. Every [`RESERVE_BLOCK`] numbers this waits for one flush to
    /// the disk (it runs on a camera's inference thread, never on the async workers).
    pub fn take(&self) -> u64 {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        if n >= self.reserved.load(Ordering::Acquire) {
            let upto = n.saturating_add(RESERVE_BLOCK);
            if let Err(e) = lock(&self.journal).reserve(upto) {
                log::error!("seq={n} the event journal cannot reserve event numbers: {e}");
            }
            self.reserved.fetch_max(upto, Ordering::Release);
        }
        n
    }
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016x}.log"))
}

fn segment_seq(path: &Path) -> Option<u64> {
    let stem = path.file_stem()?.to_str()?;
    (stem.len() == 16).then(|| u64::from_str_radix(stem, 16).ok()).flatten()
}

enum Record {
    Event(JournalEvent),
    Ack(u64),
    Reserve(u64),
}

/// What a segment holds.
struct ReadSegment {
    records: Vec<Record>,
    /// Where the last good record ends: anything after it is garbage.
    good_len: u64,
    /// Where a damaged stretch starts, and why.
    damage: Vec<(u64, String)>,
}

/// The good records of a segment. After a damaged record, reading goes on at the next offset
/// where a whole record with a good checksum starts.
fn read_segment(path: &Path) -> std::io::Result<ReadSegment> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut out = ReadSegment { records: Vec::new(), good_len: 0, damage: Vec::new() };
    let mut at = 0usize;
    while at < bytes.len() {
        match parse_record(&bytes[at..]) {
            Ok((record, len)) => {
                out.records.push(record);
                at += len;
                out.good_len = at as u64;
            }
            Err(why) => {
                out.damage.push((at as u64, why));
                let next = (at + 1..bytes.len()).find(|&i| bytes[i] == MAGIC && parse_record(&bytes[i..]).is_ok());
                match next {
                    Some(i) => at = i,
                    None => break,
                }
            }
        }
    }
    Ok(out)
}

fn parse_record(bytes: &[u8]) -> Result<(Record, usize), String> {
    if bytes.len() < HEAD {
        return Err(format!("{} bytes, too short for a record", bytes.len()));
    }
    if bytes[0] != MAGIC {
        return Err(format!("byte {:#04x} where a record starts", bytes[0]));
    }
    let len = u32::from_le_bytes(bytes[2..6].try_into().expect("4 bytes")) as usize;
    if len > MAX_BODY || bytes.len() - HEAD < len {
        return Err(format!("a body of {len} bytes, {} left in the file", bytes.len() - HEAD));
    }
    let crc = u32::from_le_bytes(bytes[6..10].try_into().expect("4 bytes"));
    let body = &bytes[HEAD..HEAD + len];
    if crc32fast::hash(body) != crc {
        return Err("checksum mismatch".into());
    }
    let seq = |b: &[u8]| b.get(..8).map(|s| u64::from_le_bytes(s.try_into().expect("8 bytes")));
    let record = match bytes[1] {
        ACK if len == 8 => Record::Ack(seq(body).expect("8 bytes")),
        RESERVE if len == 8 => Record::Reserve(seq(body).expect("8 bytes")),
        EVENT if len >= 10 => {
            let topic_len = u16::from_le_bytes([body[8], body[9]]) as usize;
            let topic = body.get(10..10 + topic_len).ok_or("a topic longer than its record")?;
            let topic = std::str::from_utf8(topic).map_err(|_| "a topic that is not UTF-8")?;
            Record::Event(JournalEvent {
                seq: seq(body).expect("8 bytes"),
                topic: topic.to_string(),
                payload: body[10 + topic_len..].to_vec(),
            })
        }
        kind => return Err(format!("record kind {kind:#04x} of {len} bytes")),
    };
    Ok((record, HEAD + len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vigil-journal-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn logs(d: &Path) -> usize {
        std::fs::read_dir(d)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "log"))
            .count()
    }

    /// A journal in `d` holding events 1 to `n`, closed; its segment file.
    fn written(d: &Path, n: u64) -> PathBuf {
        let mut j = EventJournal::open(d, 1 << 20).unwrap().journal;
        for seq in 1..=n {
            j.append(&event(seq)).unwrap();
        }
        j.sync().unwrap();
        drop(j);
        std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "log"))
            .unwrap()
    }

    fn event(seq: u64) -> JournalEvent {
        JournalEvent { seq, topic: "vigil/d/yard/events".into(), payload: format!("{{\"seq\":{seq}}}").into_bytes() }
    }

    #[test]
    fn unacknowledged_events_come_back_in_order_after_a_restart() {
        let d = dir("restart");
        let mut j = EventJournal::open(&d, 1 << 20).unwrap().journal;
        assert_eq!(j.next_seq(), 1);
        for seq in 1..=5 {
            j.append(&event(seq)).unwrap();
        }
        j.acknowledge(2).unwrap();
        j.acknowledge(4).unwrap();
        j.acknowledge(4).unwrap();
        j.sync().unwrap();
        drop(j);
        let opened = EventJournal::open(&d, 1 << 20).unwrap();
        assert_eq!(opened.pending, vec![event(1), event(3), event(5)]);
        assert_eq!(opened.journal.next_seq(), 6);
        assert_eq!(opened.damaged, 0);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_torn_or_corrupt_tail_is_skipped_and_truncated() {
        let d = dir("torn");
        let file = written(&d, 3);
        let good = std::fs::read(&file).unwrap();
        // A power cut in the middle of the fourth record.
        let mut torn = good.clone();
        torn.extend_from_slice(&[MAGIC, EVENT, 200, 0, 0, 0, 1, 2]);
        std::fs::write(&file, &torn).unwrap();
        let opened = EventJournal::open(&d, 1 << 20).unwrap();
        assert_eq!(opened.pending.len(), 3);
        assert_eq!(opened.damaged, 1);
        assert_eq!(std::fs::read(&file).unwrap(), good, "truncated back to the good records");
        drop(opened);
        // A flipped bit in the third record: the first two survive.
        let mut flipped = good.clone();
        let at = flipped.len() - 3;
        flipped[at] ^= 0x10;
        std::fs::write(&file, &flipped).unwrap();
        let mut opened = EventJournal::open(&d, 1 << 20).unwrap();
        assert_eq!(opened.pending, vec![event(1), event(2)]);
        // And appending goes on after the good records.
        opened.journal.append(&event(9)).unwrap();
        opened.journal.sync().unwrap();
        drop(opened);
        assert_eq!(EventJournal::open(&d, 1 << 20).unwrap().pending, vec![event(1), event(2), event(9)]);
        // Garbage of any kind never panics.
        for junk in [vec![], vec![MAGIC], vec![0; 64], vec![MAGIC, ACK, 255, 255, 255, 255, 0, 0, 0, 0]] {
            std::fs::write(&file, &junk).unwrap();
            EventJournal::open(&d, 1 << 20).unwrap();
        }
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn segments_rotate_are_deleted_once_acknowledged_and_stay_within_the_bound() {
        let d = dir("segments");
        let big = |seq| JournalEvent { seq, topic: "t".into(), payload: vec![b'x'; 10_000] };
        let mut j = EventJournal::open(&d, 1 << 20).unwrap().journal;
        for seq in 1..=30 {
            j.append(&big(seq)).unwrap();
        }
        let segments = logs(&d);
        assert!(segments >= 3, "{segments} segments for 300 kB with 128 kB segments");
        assert!(j.bytes() <= 1 << 20);
        for seq in 1..=30 {
            j.acknowledge(seq).unwrap();
        }
        assert_eq!(logs(&d), 1, "only the segment being written is left");
        assert_eq!(j.pending(), 0);
        // Past the bound the oldest unacknowledged events go, counted.
        for seq in 31..=200 {
            j.append(&big(seq)).unwrap();
        }
        assert!(j.bytes() <= 1 << 20, "{} bytes", j.bytes());
        assert!(j.lost > 0 && j.pending() as u64 + j.lost == 170, "{} pending, {} lost", j.pending(), j.lost);
        j.sync().unwrap();
        drop(j);
        let opened = EventJournal::open(&d, 1 << 20).unwrap();
        assert_eq!(opened.pending.last().unwrap().seq, 200);
        assert!(opened.pending.windows(2).all(|w| w[0].seq < w[1].seq));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn numbers_never_repeat_even_when_the_last_records_are_lost() {
        let d = dir("reserve");
        let journal: SharedJournal = Arc::new(Mutex::new(EventJournal::open(&d, 1 << 20).unwrap().journal));
        let sequence = Sequence::new(journal.clone());
        let taken: Vec<u64> = (0..3).map(|_| sequence.take()).collect();
        assert_eq!(taken, [1, 2, 3]);
        // Nothing of the events reached the journal (a power cut before the publisher wrote
        // them): the reservation did, and the next start continues after it.
        drop(sequence);
        drop(journal);
        let opened = EventJournal::open(&d, 1 << 20).unwrap();
        assert_eq!(opened.journal.next_seq(), 1 + RESERVE_BLOCK);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_damaged_record_in_the_middle_costs_that_record_only() {
        let d = dir("middle");
        let file = written(&d, 5);
        let mut bytes = std::fs::read(&file).unwrap();
        let second = bytes.windows(8).position(|w| w == 2u64.to_le_bytes()).unwrap();
        bytes[second + 12] ^= 0x01; // a byte of event 2's payload
        std::fs::write(&file, &bytes).unwrap();
        let opened = EventJournal::open(&d, 1 << 20).unwrap();
        assert_eq!(opened.pending, vec![event(1), event(3), event(4), event(5)]);
        assert_eq!(opened.damaged, 1);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_second_vigil_cannot_open_the_same_journal() {
        let d = dir("lock");
        let first = EventJournal::open(&d, 1 << 20).unwrap();
        let Err(second) = EventJournal::open(&d, 1 << 20) else { panic!("opened twice") };
        assert!(second.to_string().contains("in use by another vigil"), "{second}");
        drop(first);
        EventJournal::open(&d, 1 << 20).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
    }
}
