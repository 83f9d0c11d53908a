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
//! follow good ones. A record whose checksum holds but whose content vigil never writes (a
//! number above [`MAX_NUMBER`], an unknown kind: a crafted file, a bad restore) is skipped
//! whole with the same warning. A lock file keeps a second vigil out of the folder. A
//! segment that cannot be one (a folder, a device, a file larger than any segment, one
//! that cannot be written) stops the opening with a [`JournalError`] naming it.
//!
//! Event numbers never repeat, even across a power cut that loses the journal's last
//! records: numbers are reserved in blocks of [`RESERVE_BLOCK`], each reservation on the disk
//! before its numbers are used, and a start continues after the highest reservation (so a
//! restart may skip up to a block of numbers: a jump, never a repeat). Numbers stay at most
//! [`MAX_NUMBER`], so no arithmetic on them overflows.
//!
//! Durability cadence: each record is written to the file as it comes (so a crash or a
//! `kill -9` of vigil loses nothing the publisher had taken) and flushed to the disk
//! (fdatasync) at most every [`SYNC_EVERY`] — group commit, so a burst of events costs one
//! flush, and a power cut loses at most the events of the last 100 ms. A segment is deleted once it and
//! every older one hold only acknowledged events; when the journal passes its byte bound the
//! oldest segment is deleted anyway and its unacknowledged events are counted as lost.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
/// The largest number a record (an event's or an acknowledgement's `seq`, a reservation) or
/// a segment's file name holds: 2^63. No journal reaches it (a million events a second for
/// 290 000 years), so a record holding more is damaged and refused, and `+ 1` on what was
/// read cannot overflow. Events are numbered below it: past its last number the numbering
/// stops ([`Sequence::take`]).
pub const MAX_NUMBER: u64 = 1 << 63;
/// Records before the body: magic, kind, length, crc.
const HEAD: usize = 10;
/// The largest record body written or read back: an event is one MQTT message, far below this.
const MAX_BODY: usize = 16 << 20;
/// The largest segment size before a new one is started, whatever `max_bytes` (a journal
/// written with another bound is read back too).
const MAX_SEGMENT_BYTES: u64 = 4 << 20;
/// The largest segment file: a new segment is started before a record is written past
/// [`MAX_SEGMENT_BYTES`], so a segment is that plus one record at most.
const MAX_SEGMENT_FILE: u64 = MAX_SEGMENT_BYTES + HEAD as u64 + MAX_BODY as u64;
/// Checksum work when reading a segment, per byte of it: its good records take one, looking
/// for the next good record after damage the rest (a crafted file of overlapping record
/// heads, each claiming a large body, would otherwise cost hours at start-up).
const RESYNC_WORK: usize = 4;

/// An event kept until the broker has it.
#[derive(Debug, Clone, PartialEq)]
pub struct JournalEvent {
    pub seq: u64,
    pub topic: String,
    pub payload: Vec<u8>,
}

/// Why the journal cannot be opened: the file or folder in `mqtt.spool_dir` that is wrong,
/// and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct JournalError {
    pub path: PathBuf,
    pub problem: String,
}

impl JournalError {
    fn new(path: &Path, problem: impl Into<String>) -> JournalError {
        JournalError { path: path.to_path_buf(), problem: problem.into() }
    }

    /// A failed file operation on `path`: `what` could not be done, and the system's reason.
    fn io<'a>(path: &'a Path, what: &'static str) -> impl FnOnce(std::io::Error) -> JournalError + 'a {
        move |e| JournalError::new(path, format!("{what}: {e}"))
    }
}

impl From<JournalError> for std::io::Error {
    fn from(e: JournalError) -> std::io::Error {
        std::io::Error::other(e.to_string())
    }
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
    /// Opens (creating) the journal in `dir`, bounded to `max_bytes` on disk. The error
    /// names the file or folder that cannot be used.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Opened, JournalError> {
        std::fs::create_dir_all(dir).map_err(JournalError::io(dir, "cannot be created"))?;
        let mut names: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(JournalError::io(dir, "cannot be listed"))? {
            let path = entry.map_err(JournalError::io(dir, "cannot be listed"))?.path();
            if let Some(number) = segment_number(&path) {
                if number > MAX_NUMBER {
                    return Err(JournalError::new(
                        &path,
                        "a segment numbered above 2^63, which vigil never reaches: move it out of the folder",
                    ));
                }
                names.push((number, path));
            }
        }
        names.sort();
        let lock_path = dir.join("lock");
        let lock = File::create(&lock_path).map_err(JournalError::io(&lock_path, "cannot be created"))?;
        lock.try_lock().map_err(|_| JournalError::new(dir, "in use by another vigil (its lock file is held)"))?;
        let mut events: Vec<(usize, JournalEvent)> = Vec::new();
        let mut acked = BTreeSet::new();
        let mut reserved = 0u64;
        let mut segments = Vec::new();
        let mut damaged = 0;
        let last = names.len().saturating_sub(1);
        for (i, (_, path)) in names.iter().enumerate() {
            let (segment, file_len) = read_segment(path)?;
            for (offset, why) in &segment.damage {
                damaged += 1;
                log::warn!(
                    "path={} offset={offset} event journal record damaged ({why}); skipped to the next good record",
                    path.display()
                );
            }
            let good_len = segment.good_len;
            if i == last && good_len < file_len {
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|f| f.set_len(good_len))
                    .map_err(JournalError::io(path, "cannot be truncated to its last good record"))?;
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
        // Every number read is at most MAX_NUMBER: `+ 1` cannot overflow (saturating all the same).
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
        let current = &segments.last().expect("one segment at least").path;
        let writer = OpenOptions::new()
            .create(true)
            .append(true)
            .open(current)
            .map_err(JournalError::io(current, "cannot be opened for writing"))?;
        // Eight segments or more within the bound, so dropping the oldest frees an eighth.
        let segment_bytes = (max_bytes / 8).clamp(4 << 10, MAX_SEGMENT_BYTES);
        let mut journal = EventJournal {
            dir: dir.to_path_buf(),
            _lock: lock,
            reserved,
            max_bytes,
            segment_bytes,
            segments,
            writer: BufWriter::new(writer),
            held,
            next_seq,
            dirty: false,
            lost: 0,
        };
        crate::files::sync_dir(dir).map_err(JournalError::io(dir, "cannot be flushed to the disk"))?;
        journal.compact()?;
        Ok(Opened { journal, pending, damaged })
    }

    /// The sequence number the next event gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Every number below `upto` (at most [`MAX_NUMBER`]) may be handed out: recorded and
    /// flushed to the disk before it is.
    pub fn reserve(&mut self, upto: u64) -> std::io::Result<()> {
        let upto = upto.min(MAX_NUMBER);
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
    /// would not survive a restart. So is one the journal could not read back (a `seq`
    /// above [`MAX_NUMBER`], a topic over 65 535 bytes, a record over 16 MiB): it is not written.
    pub fn append(&mut self, event: &JournalEvent) -> std::io::Result<()> {
        let topic = event.topic.as_bytes();
        let mut body = Vec::with_capacity(10 + topic.len() + event.payload.len());
        body.extend_from_slice(&event.seq.to_le_bytes());
        body.extend_from_slice(&(topic.len().min(u16::MAX as usize) as u16).to_le_bytes());
        body.extend_from_slice(topic);
        body.extend_from_slice(&event.payload);
        self.next_seq = self.next_seq.max(event.seq.saturating_add(1));
        let unreadable = if event.seq > MAX_NUMBER {
            Some(format!("event number {} is above 2^63", event.seq))
        } else if topic.len() > u16::MAX as usize {
            Some("topic longer than 65535 bytes".to_string())
        } else if body.len() > MAX_BODY {
            Some(format!("an event of {} bytes, over the journal's {MAX_BODY}", body.len()))
        } else {
            None
        };
        if let Some(why) = unreadable {
            self.hold(event);
            return Err(io_error(why));
        }
        // Rotation (inside `write`) comes first, so the event is held by the segment it is
        // written to.
        let written = self.write(EVENT, &body, Some(event));
        if !self.held.contains_key(&event.seq) {
            self.hold(event);
        }
        written
    }

    /// Holds an event in the segment being written. Another event held under the same
    /// number (only once the numbering has stopped at its limit) is replaced: its segment
    /// no longer waits for it.
    fn hold(&mut self, event: &JournalEvent) {
        let at = self.segments.len() - 1;
        if let Some((before, _)) = self.held.insert(event.seq, (at, event.clone())) {
            self.segments[before].open.remove(&event.seq);
        }
        self.segments[at].open.insert(event.seq);
    }

    /// Records that the broker has event `seq`. Unknown or repeated numbers are ignored.
    pub fn acknowledge(&mut self, seq: u64) -> std::io::Result<()> {
        let Some((at, _)) = self.held.remove(&seq) else { return Ok(()) };
        self.segments[at].open.remove(&seq);
        self.write(ACK, &seq.to_le_bytes(), None)?;
        Ok(self.compact()?)
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

    /// Starts a new segment (the old one flushed first), numbered one more than the last.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.sync()?;
        let last = self.segments.last().and_then(|s| segment_number(&s.path)).unwrap_or(0);
        let Some(number) = last.checked_add(1).filter(|n| *n <= MAX_NUMBER) else {
            return Err(JournalError::new(&segment_path(&self.dir, last), "the last segment number there is").into());
        };
        let path = segment_path(&self.dir, number);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(JournalError::io(&path, "cannot be created"))?;
        self.writer = BufWriter::new(file);
        crate::files::sync_dir(&self.dir).map_err(JournalError::io(&self.dir, "cannot be flushed to the disk"))?;
        self.segments.push(Segment { path, bytes: 0, open: BTreeSet::new() });
        Ok(())
    }

    /// Deletes the oldest segments while they hold nothing unacknowledged (never the one
    /// being written).
    fn compact(&mut self) -> Result<(), JournalError> {
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
        Ok(self.remove_first()?)
    }

    fn remove_first(&mut self) -> Result<(), JournalError> {
        let first = self.segments.remove(0);
        for seq in &first.open {
            self.held.remove(seq);
        }
        for (at, _) in self.held.values_mut() {
            *at -= 1;
        }
        std::fs::remove_file(&first.path).map_err(JournalError::io(&first.path, "cannot be deleted"))?;
        crate::files::sync_dir(&self.dir).map_err(JournalError::io(&self.dir, "cannot be flushed to the disk"))
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
    /// Whether the numbering reached [`MAX_NUMBER`] (and said so).
    exhausted: AtomicBool,
    journal: SharedJournal,
}

impl Sequence {
    pub fn new(journal: SharedJournal) -> Sequence {
        let next = lock(&journal).next_seq();
        Sequence { next: AtomicU64::new(next), reserved: AtomicU64::new(0), exhausted: AtomicBool::new(false), journal }
    }

    /// The next event number. Every [`RESERVE_BLOCK`] numbers this waits for one flush to
    /// the disk (it runs on a camera's inference thread, never on the async workers).
    ///
    /// Numbers stay below [`MAX_NUMBER`]. Only a journal with numbers no device reaches
    /// (crafted, or damaged with good checksums) gets there; then every event gets the last
    /// number, `MAX_NUMBER - 1`, and an error says so once.
    pub fn take(&self) -> u64 {
        let n = self.next.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_add(1)));
        let n = n.unwrap_or_else(|n| n);
        if n >= MAX_NUMBER {
            if !self.exhausted.swap(true, Ordering::Relaxed) {
                log::error!(
                    "path={} the event numbering has reached its limit (2^63, which no device reaches: the \
                     journal's numbers were crafted or restored wrongly); every further event gets number {}: \
                     stop vigil and empty mqtt.spool_dir to number from 1 again",
                    lock(&self.journal).dir.display(),
                    MAX_NUMBER - 1
                );
            }
            return MAX_NUMBER - 1;
        }
        if n >= self.reserved.load(Ordering::Acquire) {
            let upto = n.saturating_add(RESERVE_BLOCK).min(MAX_NUMBER);
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

/// The number of a segment file's name (`<16 hex digits>.log`), any of them.
fn segment_number(path: &Path) -> Option<u64> {
    if path.extension().is_none_or(|e| e != "log") {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    (stem.len() == 16).then(|| u64::from_str_radix(stem, 16).ok()).flatten()
}

/// A record, as read back.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Event(JournalEvent),
    /// The broker has this event.
    Ack(u64),
    /// Every event number below this may have been handed out.
    Reserve(u64),
}

/// What a segment's bytes hold ([`decode_records`]).
#[derive(Debug, Default)]
pub struct Decoded {
    /// The good records, in order.
    pub records: Vec<Record>,
    /// Where the last good record ends: anything after it is garbage.
    pub good_len: u64,
    /// Where each damaged stretch or refused record starts, and why.
    pub damage: Vec<(u64, String)>,
}

/// Reads a segment's bytes. A damaged record (cut short, a checksum that fails) is noted and
/// reading goes on at the next offset where a whole record with a good checksum starts; a
/// whole record whose content vigil never writes (a number above [`MAX_NUMBER`], an unknown
/// kind, a topic that is not UTF-8) is noted and skipped. Never panics, whatever `bytes` holds.
pub fn decode_records(bytes: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    // Checksum work left for looking for good records after damage (the good records
    // themselves take at most the segment's length of it).
    let mut work = bytes.len().saturating_mul(RESYNC_WORK).max(MAX_BODY);
    let mut at = 0usize;
    while let Some(rest) = bytes.get(at..).filter(|r| !r.is_empty()) {
        match frame(rest, &mut work) {
            Ok((kind, body)) => {
                let end = at + HEAD + body.len();
                match record(kind, body) {
                    Ok(record) => {
                        out.records.push(record);
                        out.good_len = end as u64;
                    }
                    Err(why) => out.damage.push((at as u64, why)),
                }
                at = end;
            }
            Err(why) => {
                out.damage.push((at as u64, why));
                let mut next = None;
                for i in at + 1..bytes.len() {
                    if bytes[i] != MAGIC {
                        continue;
                    }
                    if work == 0 {
                        out.damage.push((i as u64, "too much damage: the rest of the segment is not read".into()));
                        break;
                    }
                    if frame(&bytes[i..], &mut work).is_ok() {
                        next = Some(i);
                        break;
                    }
                }
                match next {
                    Some(i) => at = i,
                    None => break,
                }
            }
        }
    }
    out
}

/// A record's kind and body, once its head, length and checksum hold. The checksum's cost
/// (the body's length) is taken from `work`.
fn frame<'a>(bytes: &'a [u8], work: &mut usize) -> Result<(u8, &'a [u8]), String> {
    let Some((head, rest)) = bytes.split_first_chunk::<HEAD>() else {
        return Err(format!("{} bytes, too short for a record", bytes.len()));
    };
    if head[0] != MAGIC {
        return Err(format!("byte {:#04x} where a record starts", head[0]));
    }
    let len = u32::from_le_bytes([head[2], head[3], head[4], head[5]]);
    let body = usize::try_from(len).ok().filter(|&l| l <= MAX_BODY).and_then(|l| rest.get(..l));
    let Some(body) = body else {
        return Err(format!("a body of {len} bytes, {} left in the file", rest.len()));
    };
    *work = work.saturating_sub(body.len().max(1));
    if crc32fast::hash(body) != u32::from_le_bytes([head[6], head[7], head[8], head[9]]) {
        return Err("checksum mismatch".into());
    }
    Ok((head[1], body))
}

/// A record's content, refused when it holds what vigil never writes.
fn record(kind: u8, body: &[u8]) -> Result<Record, String> {
    let number = |bytes: &[u8; 8], what: &str| {
        let n = u64::from_le_bytes(*bytes);
        if n > MAX_NUMBER {
            Err(format!("{what} {n} is above 2^63, which no journal reaches"))
        } else {
            Ok(n)
        }
    };
    match (kind, body.split_first_chunk::<8>()) {
        (ACK, Some((seq, []))) => Ok(Record::Ack(number(seq, "acknowledged event number")?)),
        (RESERVE, Some((upto, []))) => Ok(Record::Reserve(number(upto, "reservation")?)),
        (EVENT, Some((seq, rest))) => {
            let seq = number(seq, "event number")?;
            let (topic_len, rest) = rest.split_first_chunk::<2>().ok_or("an event too short for its topic length")?;
            let (topic, payload) = rest
                .split_at_checked(u16::from_le_bytes(*topic_len) as usize)
                .ok_or("a topic longer than its record")?;
            let topic = std::str::from_utf8(topic).map_err(|_| "a topic that is not UTF-8")?;
            Ok(Record::Event(JournalEvent { seq, topic: topic.to_string(), payload: payload.to_vec() }))
        }
        _ => Err(format!("record kind {kind:#04x} of {} bytes", body.len())),
    }
}

/// The records of a segment file, and its length; a file that cannot be a segment (not a
/// regular file, larger than any segment) is refused.
fn read_segment(path: &Path) -> Result<(Decoded, u64), JournalError> {
    let bytes = crate::files::read_capped(path, MAX_SEGMENT_FILE)
        .map_err(JournalError::io(path, "cannot be read as an event journal segment"))?;
    Ok((decode_records(&bytes), bytes.len() as u64))
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

    /// A record as the journal frames it (magic, kind, length, checksum), whatever it holds.
    fn raw_record(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut r = vec![MAGIC, kind];
        r.extend_from_slice(&(body.len() as u32).to_le_bytes());
        r.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
        r.extend_from_slice(body);
        r
    }

    fn raw_event(e: &JournalEvent) -> Vec<u8> {
        let mut body = e.seq.to_le_bytes().to_vec();
        body.extend_from_slice(&(e.topic.len() as u16).to_le_bytes());
        body.extend_from_slice(e.topic.as_bytes());
        body.extend_from_slice(&e.payload);
        raw_record(EVENT, &body)
    }

    /// Checksummed records holding numbers no journal reaches (a crafted file, a bad
    /// restore) are refused as damaged: the numbering goes on after the good ones, and the
    /// publisher's append does not overflow (it panicked with `attempt to add with overflow`).
    #[test]
    fn numbers_no_journal_reaches_are_refused_and_never_overflow() {
        let d = dir("limits");
        std::fs::create_dir_all(&d).unwrap();
        let above = (1u64 << 63) + 1;
        let mut bytes = raw_event(&event(1));
        for crafted in [
            raw_record(RESERVE, &u64::MAX.to_le_bytes()),
            raw_event(&event(u64::MAX)),
            raw_record(ACK, &u64::MAX.to_le_bytes()),
            raw_event(&event(above)),
            raw_record(RESERVE, &above.to_le_bytes()),
        ] {
            bytes.extend(crafted);
        }
        bytes.extend(raw_event(&event(2)));
        let file = d.join("0000000000000001.log");
        std::fs::write(&file, &bytes).unwrap();
        let opened = EventJournal::open(&d, 1 << 20).unwrap();
        // What the daemon does next: the numbering hands out a number, the publisher
        // journals the event under it.
        let journal: SharedJournal = Arc::new(Mutex::new(opened.journal));
        let sequence = Sequence::new(journal.clone());
        let seq = sequence.take();
        lock(&journal).append(&event(seq)).unwrap();
        assert_eq!(opened.damaged, 5);
        assert_eq!(opened.pending, vec![event(1), event(2)]);
        assert_eq!(seq, 3);
        lock(&journal).sync().unwrap();
        drop(sequence);
        drop(journal);
        let opened = EventJournal::open(&d, 1 << 20).unwrap();
        assert_eq!(opened.pending, vec![event(1), event(2), event(3)]);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A reservation at the limit itself is accepted: the numbering then stops at its last
    /// number instead of passing it (or wrapping to 0).
    #[test]
    fn the_numbering_stops_at_its_limit() {
        let d = dir("exhausted");
        std::fs::create_dir_all(&d).unwrap();
        let limit = 1u64 << 63;
        std::fs::write(d.join("0000000000000001.log"), raw_record(RESERVE, &limit.to_le_bytes())).unwrap();
        let opened = EventJournal::open(&d, 1 << 20).unwrap();
        assert_eq!((opened.damaged, opened.journal.next_seq()), (0, limit));
        let journal: SharedJournal = Arc::new(Mutex::new(opened.journal));
        let sequence = Sequence::new(journal.clone());
        let taken = [sequence.take(), sequence.take()];
        assert_eq!(taken, [limit - 1, limit - 1]);
        for seq in taken {
            lock(&journal).append(&event(seq)).unwrap();
        }
        // One event held under the number (the newest), and nothing left once it is
        // acknowledged.
        assert_eq!(lock(&journal).pending(), 1);
        lock(&journal).acknowledge(limit - 1).unwrap();
        assert_eq!(lock(&journal).pending(), 0);
        lock(&journal).sync().unwrap();
        drop(sequence);
        drop(journal);
        let opened = EventJournal::open(&d, 1 << 20).unwrap();
        assert_eq!((opened.damaged, opened.pending.len()), (0, 0));
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A segment that is a folder, too large to be one, or numbered past the limit stops
    /// the opening with an error naming it (it said "Is a directory (os error 21)").
    #[test]
    fn a_segment_that_cannot_be_one_is_refused_naming_it() {
        let d = dir("unusable");
        let folder = d.join("0000000000000001.log");
        std::fs::create_dir_all(&folder).unwrap();
        let e = EventJournal::open(&d, 1 << 20).err().expect("a folder for a segment is refused");
        let expected = format!("{}: cannot be read as an event journal segment", folder.display());
        assert!(e.to_string().contains(&expected), "{e}");
        std::fs::remove_dir(&folder).unwrap();
        // Sparse: 64 MiB on the disk's say-so, none of it written.
        let huge = d.join("0000000000000002.log");
        std::fs::File::create(&huge).unwrap().set_len(64 << 20).unwrap();
        let e = EventJournal::open(&d, 1 << 20).err().expect("a 64 MiB segment is refused");
        assert!(e.to_string().contains(&format!("{}: ", huge.display())), "{e}");
        assert!(e.to_string().contains("larger than"), "{e}");
        std::fs::remove_file(&huge).unwrap();
        let past = d.join("8000000000000001.log");
        std::fs::write(&past, raw_event(&event(1))).unwrap();
        let e = EventJournal::open(&d, 1 << 20).err().expect("a segment numbered past 2^63 is refused");
        assert!(e.to_string().contains(&format!("{}: ", past.display())), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// A segment of overlapping record heads, each claiming a 2 MiB body whose checksum
    /// fails, after a damaged first byte: looking for the next good record is bounded (it
    /// checksummed 2 MiB per head: 13.6 s for these 4 MiB here, growing with the square of
    /// the size).
    #[test]
    fn looking_past_damage_is_bounded() {
        let d = dir("resync");
        std::fs::create_dir_all(&d).unwrap();
        let mut head = vec![MAGIC, EVENT];
        head.extend_from_slice(&(2u32 << 20).to_le_bytes());
        let mut bytes = vec![0];
        while bytes.len() < 4 << 20 {
            bytes.extend_from_slice(&head);
        }
        std::fs::write(d.join("0000000000000001.log"), &bytes).unwrap();
        let started = std::time::Instant::now();
        let opened = EventJournal::open(&d, 1 << 20).unwrap();
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        assert!(opened.pending.is_empty() && opened.damaged >= 1);
        drop(opened);
        std::fs::remove_dir_all(&d).unwrap();
    }

    /// The decoder at the numbers' limits: 0 and 2^63 are taken, anything above is refused
    /// whole (the next record is read), lengths past the file are damage.
    #[test]
    fn records_are_decoded_up_to_the_limits() {
        let limit = MAX_NUMBER;
        let mut bytes = Vec::new();
        for r in [
            raw_event(&event(0)),
            raw_record(ACK, &limit.to_le_bytes()),
            raw_record(RESERVE, &limit.to_le_bytes()),
            raw_record(ACK, &(limit + 1).to_le_bytes()),
            raw_record(RESERVE, &u64::MAX.to_le_bytes()),
            raw_event(&event(limit)),
            raw_event(&event(u64::MAX)),
        ] {
            bytes.extend(r);
        }
        let decoded = decode_records(&bytes);
        assert_eq!(
            decoded.records,
            [Record::Event(event(0)), Record::Ack(limit), Record::Reserve(limit), Record::Event(event(limit))]
        );
        assert_eq!(decoded.damage.len(), 3, "{:?}", decoded.damage);
        assert!(decoded.damage.iter().all(|(_, why)| why.contains("above 2^63")), "{:?}", decoded.damage);
        // Refused whole: the good record after the refused ones ends the good length.
        assert_eq!(decoded.good_len, (bytes.len() - raw_event(&event(u64::MAX)).len()) as u64);
        // A body length of u32::MAX, a topic length of u16::MAX.
        let mut long = vec![MAGIC, EVENT];
        long.extend_from_slice(&u32::MAX.to_le_bytes());
        long.extend_from_slice(&[0; 4]);
        let decoded = decode_records(&long);
        assert!(decoded.records.is_empty() && decoded.damage[0].1.contains("4294967295"), "{:?}", decoded.damage);
        let mut body = 1u64.to_le_bytes().to_vec();
        body.extend_from_slice(&u16::MAX.to_le_bytes());
        body.extend_from_slice(b"vigil");
        let decoded = decode_records(&raw_record(EVENT, &body));
        assert_eq!(decoded.damage, [(0, "a topic longer than its record".to_string())]);
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
