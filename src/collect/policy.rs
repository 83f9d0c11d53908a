//! Which inferred frames to save: pure decisions over a frame's detections and the camera's
//! recent history, made on the reporter thread (cheap: no pixel is read here). The near-
//! duplicate check, which reads pixels, runs on the collector's own thread.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::item::Why;
use super::settings::CollectSettings;
use crate::model::Detection;

const HOUR: Duration = Duration::from_secs(3600);

/// A camera's collection rules and what it saved recently.
#[derive(Debug)]
pub struct Policy {
    settings: CollectSettings,
    last_saved: Option<Instant>,
    last_background: Option<Instant>,
    /// When frames with each label among their pre-labels were saved, this last hour.
    per_label: HashMap<String, VecDeque<Instant>>,
}

impl Policy {
    pub fn new(settings: CollectSettings) -> Policy {
        Policy { settings, last_saved: None, last_background: None, per_label: HashMap::new() }
    }

    pub fn settings(&self) -> &CollectSettings {
        &self.settings
    }

    /// Why the frame inferred at `now` is to be saved, or `None`. `collecting`: the rules
    /// apply (collection is ON); `requested`: a frame was asked for (saved whatever the
    /// rules say); `new_track`: a track began on this frame.
    pub fn consider(
        &mut self,
        now: Instant,
        detections: &[Detection],
        new_track: bool,
        collecting: bool,
        requested: bool,
    ) -> Option<Vec<Why>> {
        let s = &self.settings;
        let mut why = Vec::new();
        if requested {
            why.push(Why::Requested);
        }
        if collecting {
            if let Some((lo, hi)) = s.uncertain {
                if detections.iter().any(|d| (lo..=hi).contains(&d.score)) {
                    why.push(Why::Uncertain);
                }
            }
            if s.new_tracks && new_track {
                why.push(Why::NewTrack);
            }
            if let Some(every) = s.background_every {
                // The first background frame comes one interval after the start.
                let since = *self.last_background.get_or_insert(now);
                if now.saturating_duration_since(since) >= every {
                    why.push(Why::Background);
                }
            }
        }
        if why.is_empty() {
            return None;
        }
        for times in self.per_label.values_mut() {
            while times.front().is_some_and(|t| now.saturating_duration_since(*t) >= HOUR) {
                times.pop_front();
            }
        }
        let labels: Vec<&str> = {
            let mut l: Vec<&str> =
                detections.iter().filter(|d| d.score >= s.prelabel_score).map(|d| d.label.as_str()).collect();
            l.sort_unstable();
            l.dedup();
            l
        };
        if !requested {
            if self.last_saved.is_some_and(|t| now.saturating_duration_since(t) < s.min_interval) {
                return None;
            }
            let cap = s.max_per_label_per_hour as usize;
            let full = |l: &&str| self.per_label.get(*l).is_some_and(|t| t.len() >= cap);
            if !labels.is_empty() && labels.iter().all(full) {
                return None;
            }
        }
        self.last_saved = Some(now);
        if why.contains(&Why::Background) {
            self.last_background = Some(now);
        }
        for label in labels {
            self.per_label.entry(label.to_string()).or_default().push_back(now);
        }
        Some(why)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BBox;

    fn settings() -> CollectSettings {
        let mut problems = Vec::new();
        let s = super::super::settings::check(
            serde_json::json!({"background_every_s": 600, "min_interval_s": 10, "max_per_label_per_hour": 2}),
            "c",
            "door",
            std::path::Path::new("/"),
            std::path::Path::new("/c"),
            &mut problems,
        );
        s.unwrap()
    }

    fn car(score: f32) -> Detection {
        Detection {
            label: "car".into(),
            class_id: 2,
            score,
            bbox: BBox { x1: 0.0, y1: 0.0, x2: 10.0, y2: 10.0 },
            keypoints: Default::default(),
        }
    }

    #[test]
    fn each_rule_and_each_limit() {
        let mut p = Policy::new(settings());
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(p.consider(at(0), &[car(0.9)], false, true, false), None, "sure, old track: nothing to learn");
        assert_eq!(p.consider(at(1), &[car(0.55)], false, true, false), Some(vec![Why::Uncertain]));
        assert_eq!(p.consider(at(5), &[car(0.55)], true, true, false), None, "within min_interval");
        assert_eq!(p.consider(at(5), &[car(0.55)], false, true, true), Some(vec![Why::Requested, Why::Uncertain]));
        // Two frames with a car pre-label this hour already: the cap.
        assert_eq!(p.consider(at(30), &[car(0.9)], true, true, false), None, "car's cap reached");
        let below = p.consider(at(30), &[car(0.4)], false, true, false);
        assert_eq!(below, Some(vec![Why::Uncertain]), "below prelabel_score: no car pre-label, no cap");
        // An hour on, the cap is free again; the background sample is due too.
        assert_eq!(p.consider(at(3700), &[car(0.9)], true, true, false), Some(vec![Why::NewTrack, Why::Background]));
        assert_eq!(p.consider(at(3720), &[], false, true, false), None);
        assert_eq!(p.consider(at(4300), &[], false, true, false), Some(vec![Why::Background]), "empty frames too");
        // OFF: only a request saves.
        assert_eq!(p.consider(at(9000), &[car(0.45)], true, false, false), None);
        assert_eq!(p.consider(at(9000), &[], false, false, true), Some(vec![Why::Requested]));
    }
}
