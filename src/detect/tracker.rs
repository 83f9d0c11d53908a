//! An IoU tracker: matches each frame's observations to the tracks of the frames before,
//! gives confirmed tracks ids, and reports their life as events.
//!
//! - **new**: a track seen in `min_hits` consecutive inferred frames;
//! - **update**: its box moved (IoU with the last reported box below `move_iou`) or its
//!   zones changed; an object standing still produces no updates;
//! - **end**: not seen for more than `max_misses` inferred frames.

use serde::Serialize;

use super::Observation;
use crate::model::nms::iou;
use crate::model::{BBox, Keypoints};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackerSettings {
    /// Least IoU between a track's box and a detection for them to be the same object.
    pub iou: f32,
    pub min_hits: u32,
    pub max_misses: u32,
    pub move_iou: f32,
}

impl Default for TrackerSettings {
    fn default() -> Self {
        TrackerSettings { iou: 0.3, min_hits: 2, max_misses: 5, move_iou: 0.7 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    New,
    Update,
    End,
}

/// A tracked object's state when something happened to it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrackEvent {
    #[serde(rename = "type")]
    pub kind: EventKind,
    pub track_id: u64,
    pub label: String,
    pub score: f32,
    /// Highest score over the track's life.
    pub top_score: f32,
    #[serde(rename = "box")]
    pub bbox: BBox,
    /// The keypoints of the object's latest detection (for models that give them).
    #[serde(skip_serializing_if = "Keypoints::is_empty")]
    pub keypoints: Keypoints,
    pub zones: Vec<String>,
    /// Unix milliseconds.
    pub first_seen: u64,
    pub last_seen: u64,
}

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    label: String,
    bbox: BBox,
    keypoints: Keypoints,
    reported: BBox,
    score: f32,
    top_score: f32,
    zones: Vec<String>,
    first_seen: u64,
    last_seen: u64,
    hits: u32,
    misses: u32,
    confirmed: bool,
}

impl Track {
    fn event(&self, kind: EventKind) -> TrackEvent {
        TrackEvent {
            kind,
            track_id: self.id,
            label: self.label.clone(),
            score: self.score,
            top_score: self.top_score,
            bbox: self.bbox,
            keypoints: self.keypoints.clone(),
            zones: self.zones.clone(),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
        }
    }
}

/// One camera's tracks. Ids are given at confirmation, so subscribers see 1, 2, 3, …
/// with no gaps (a gap means a lost event).
#[derive(Debug, Clone)]
pub struct Tracker {
    settings: TrackerSettings,
    tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    pub fn new(settings: TrackerSettings) -> Tracker {
        Tracker { settings, tracks: Vec::new(), next_id: 1 }
    }

    /// Matches `observations` (one frame's, taken at `now` Unix ms) to the tracks, sets
    /// their `track_id` where the track is confirmed, and returns what happened.
    pub fn update(&mut self, observations: &mut [Observation], now: u64) -> Vec<TrackEvent> {
        let mut pairs = Vec::new();
        for (t, track) in self.tracks.iter().enumerate() {
            for (o, obs) in observations.iter().enumerate() {
                if obs.detection.label == track.label {
                    let overlap = iou(&track.bbox, &obs.detection.bbox);
                    if overlap >= self.settings.iou {
                        pairs.push((overlap, t, o));
                    }
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut track_taken = vec![false; self.tracks.len()];
        let mut obs_taken = vec![false; observations.len()];
        let mut events = Vec::new();
        for (_, t, o) in pairs {
            if track_taken[t] || obs_taken[o] {
                continue;
            }
            track_taken[t] = true;
            obs_taken[o] = true;
            let track = &mut self.tracks[t];
            let obs = &mut observations[o];
            track.bbox = obs.detection.bbox;
            track.keypoints.clone_from(&obs.detection.keypoints);
            track.score = obs.detection.score;
            track.top_score = track.top_score.max(obs.detection.score);
            track.last_seen = now;
            track.hits += 1;
            track.misses = 0;
            let zones_changed = track.zones != obs.zones;
            track.zones = obs.zones.clone();
            if !track.confirmed && track.hits >= self.settings.min_hits {
                track.confirmed = true;
                track.id = self.next_id;
                self.next_id += 1;
                track.reported = track.bbox;
                events.push(track.event(EventKind::New));
            } else if track.confirmed && (zones_changed || iou(&track.reported, &track.bbox) < self.settings.move_iou) {
                track.reported = track.bbox;
                events.push(track.event(EventKind::Update));
            }
            if track.confirmed {
                obs.track_id = Some(track.id);
            }
        }
        // Tracks not seen this frame: a tentative one is dropped at once, a confirmed one
        // waits up to max_misses frames.
        let mut kept = Vec::with_capacity(self.tracks.len());
        for (t, mut track) in std::mem::take(&mut self.tracks).into_iter().enumerate() {
            if track_taken[t] {
                kept.push(track);
                continue;
            }
            track.misses += 1;
            if !track.confirmed {
                continue;
            }
            if track.misses > self.settings.max_misses {
                events.push(track.event(EventKind::End));
            } else {
                kept.push(track);
            }
        }
        self.tracks = kept;
        for (o, obs) in observations.iter_mut().enumerate() {
            if obs_taken[o] {
                continue;
            }
            let d = &obs.detection;
            let mut track = Track {
                id: 0,
                label: d.label.clone(),
                bbox: d.bbox,
                keypoints: d.keypoints.clone(),
                reported: d.bbox,
                score: d.score,
                top_score: d.score,
                zones: obs.zones.clone(),
                first_seen: now,
                last_seen: now,
                hits: 1,
                misses: 0,
                confirmed: false,
            };
            if self.settings.min_hits <= 1 {
                track.confirmed = true;
                track.id = self.next_id;
                self.next_id += 1;
                obs.track_id = Some(track.id);
                events.push(track.event(EventKind::New));
            }
            self.tracks.push(track);
        }
        events
    }

    /// Every object followed is confirmed and was seen on the last frame: nothing is
    /// waiting on more frames to be reported as new or as gone. (Motion gating may skip
    /// the model only then.)
    pub fn settled(&self) -> bool {
        self.tracks.iter().all(|t| t.confirmed && t.misses == 0)
    }

    /// Confirmed objects in view, per label.
    pub fn counts(&self) -> std::collections::BTreeMap<String, u32> {
        let mut counts = std::collections::BTreeMap::new();
        for t in self.tracks.iter().filter(|t| t.confirmed) {
            *counts.entry(t.label.clone()).or_insert(0) += 1;
        }
        counts
    }

    /// Ends every confirmed track (the camera stopped, or detection was turned off).
    pub fn end_all(&mut self) -> Vec<TrackEvent> {
        std::mem::take(&mut self.tracks).into_iter().filter(|t| t.confirmed).map(|t| t.event(EventKind::End)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Detection;

    fn obs(label: &str, x: f32) -> Observation {
        Observation {
            detection: Detection {
                label: label.into(),
                class_id: 0,
                score: 0.9,
                bbox: BBox { x1: x, y1: 0.0, x2: x + 10.0, y2: 10.0 },
                keypoints: Default::default(),
            },
            zones: vec![],
            track_id: None,
        }
    }

    fn kinds(events: &[TrackEvent]) -> Vec<(EventKind, u64)> {
        events.iter().map(|e| (e.kind, e.track_id)).collect()
    }

    #[test]
    fn confirms_after_min_hits_then_stays_quiet_while_still() {
        let mut tracker = Tracker::new(TrackerSettings { min_hits: 2, ..Default::default() });
        let mut frame = vec![obs("person", 0.0)];
        assert!(tracker.update(&mut frame, 0).is_empty());
        assert_eq!(frame[0].track_id, None, "a tentative track has no id yet");
        let mut frame = vec![obs("person", 1.0)];
        assert_eq!(kinds(&tracker.update(&mut frame, 1)), vec![(EventKind::New, 1)]);
        assert_eq!(frame[0].track_id, Some(1));
        for t in 2..50 {
            let mut frame = vec![obs("person", 1.0)];
            assert!(tracker.update(&mut frame, t).is_empty(), "a still object gives no events");
            assert_eq!(frame[0].track_id, Some(1));
        }
        assert_eq!(tracker.counts().get("person"), Some(&1));
    }

    #[test]
    fn moving_object_updates_and_ends_after_misses() {
        let mut tracker = Tracker::new(TrackerSettings { min_hits: 1, max_misses: 2, ..Default::default() });
        let mut frame = vec![obs("car", 0.0)];
        assert_eq!(kinds(&tracker.update(&mut frame, 0)), vec![(EventKind::New, 1)]);
        // 4 px of a 10 px box: IoU 0.43 with the reported box, below move_iou 0.7.
        let mut frame = vec![obs("car", 4.0)];
        assert_eq!(kinds(&tracker.update(&mut frame, 1)), vec![(EventKind::Update, 1)]);
        assert!(tracker.update(&mut [], 2).is_empty());
        assert!(tracker.update(&mut [], 3).is_empty());
        let events = tracker.update(&mut [], 4);
        assert_eq!(kinds(&events), vec![(EventKind::End, 1)]);
        assert_eq!(events[0].last_seen, 1);
        assert!(tracker.counts().is_empty());
    }

    #[test]
    fn labels_do_not_match_each_other_and_ids_are_unique() {
        let mut tracker = Tracker::new(TrackerSettings { min_hits: 1, ..Default::default() });
        let mut frame = vec![obs("person", 0.0), obs("dog", 0.0), obs("person", 100.0)];
        let events = tracker.update(&mut frame, 0);
        assert_eq!(kinds(&events), vec![(EventKind::New, 1), (EventKind::New, 2), (EventKind::New, 3)]);
        let mut frame = vec![obs("person", 101.0), obs("dog", 1.0), obs("person", 1.0)];
        tracker.update(&mut frame, 1);
        let ids: Vec<_> = frame.iter().map(|o| o.track_id.unwrap()).collect();
        assert_eq!(ids, vec![3, 2, 1]);
        assert_eq!(kinds(&tracker.end_all()).len(), 3);
    }
}
