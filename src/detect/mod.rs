//! What happens to a frame's detections after the model: per-label filters, masks and zones
//! ([`FrameFilter`]), then the IoU tracker that gives them track ids and turns them into
//! new / update / end events ([`tracker`]). All pure functions over plain data.

pub mod motion;
pub mod tracker;

use crate::model::{BBox, Detection};

pub use tracker::{EventKind, TrackEvent, Tracker, TrackerSettings};

/// Per-label limits; areas are fractions of the frame's area.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LabelFilter {
    pub min_score: Option<f32>,
    pub min_area: f32,
    pub max_area: f32,
}

/// A polygon in frame fractions (0..1 on both axes, origin top-left).
#[derive(Debug, Clone, PartialEq)]
pub struct Polygon {
    points: Vec<(f32, f32)>,
}

impl Polygon {
    pub fn new(points: Vec<(f32, f32)>) -> Polygon {
        Polygon { points }
    }

    /// Even-odd rule; points on an edge may fall either way.
    pub fn contains(&self, x: f32, y: f32) -> bool {
        let mut inside = false;
        let n = self.points.len();
        for i in 0..n {
            let (xi, yi) = self.points[i];
            let (xj, yj) = self.points[(i + n - 1) % n];
            if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
                inside = !inside;
            }
        }
        inside
    }
}

/// A named area of the frame; `labels` limits which objects count in it (empty: all).
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    pub name: String,
    pub area: Polygon,
    pub labels: Vec<String>,
}

/// A detection that passed the filters, with the zones it is in and, once the tracker has
/// confirmed it, its track id.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub detection: Detection,
    pub zones: Vec<String>,
    pub track_id: Option<u64>,
}

/// A camera's filters. An object's position is the bottom-centre of its box (where it
/// stands), as fractions of the frame.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FrameFilter {
    /// Only these labels (empty: all).
    pub labels: Vec<String>,
    pub min_score: Option<f32>,
    pub per_label: std::collections::BTreeMap<String, LabelFilter>,
    pub masks: Vec<Polygon>,
    pub zones: Vec<Zone>,
}

impl FrameFilter {
    /// Keeps the detections that pass, in order, each with its zones.
    pub fn apply(&self, detections: Vec<Detection>, width: u32, height: u32) -> Vec<Observation> {
        let frame_area = (width as f32 * height as f32).max(1.0);
        detections
            .into_iter()
            .filter(|d| self.labels.is_empty() || self.labels.contains(&d.label))
            .filter(|d| self.min_score.is_none_or(|s| d.score >= s))
            .filter(|d| {
                self.per_label.get(&d.label).is_none_or(|f| {
                    let area = d.bbox.area() / frame_area;
                    f.min_score.is_none_or(|s| d.score >= s) && area >= f.min_area && area <= f.max_area
                })
            })
            .filter_map(|d| {
                let (x, y) = foot(&d.bbox, width, height);
                if self.masks.iter().any(|m| m.contains(x, y)) {
                    return None;
                }
                let zones = self
                    .zones
                    .iter()
                    .filter(|z| z.labels.is_empty() || z.labels.contains(&d.label))
                    .filter(|z| z.area.contains(x, y))
                    .map(|z| z.name.clone())
                    .collect();
                Some(Observation { detection: d, zones, track_id: None })
            })
            .collect()
    }
}

/// The bottom-centre of a box, as fractions of the frame.
fn foot(b: &BBox, width: u32, height: u32) -> (f32, f32) {
    ((b.x1 + b.x2) / 2.0 / width.max(1) as f32, b.y2 / height.max(1) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(label: &str, score: f32, x1: f32, y1: f32, x2: f32, y2: f32) -> Detection {
        Detection {
            label: label.into(),
            class_id: 0,
            score,
            bbox: BBox { x1, y1, x2, y2 },
            keypoints: Default::default(),
        }
    }

    fn square(x0: f32, y0: f32, x1: f32, y1: f32) -> Polygon {
        Polygon::new(vec![(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
    }

    #[test]
    fn polygon_contains_inside_points_only() {
        let tri = Polygon::new(vec![(0.0, 0.0), (1.0, 0.0), (0.0, 1.0)]);
        assert!(tri.contains(0.2, 0.2));
        assert!(!tri.contains(0.8, 0.8));
        assert!(!tri.contains(-0.1, 0.5));
    }

    #[test]
    fn filters_labels_scores_areas_masks_and_zones() {
        let mut filter = FrameFilter {
            labels: vec!["person".into(), "car".into()],
            min_score: Some(0.4),
            masks: vec![square(0.0, 0.0, 0.3, 1.0)],
            zones: vec![
                Zone { name: "drive".into(), area: square(0.5, 0.5, 1.0, 1.0), labels: vec![] },
                Zone { name: "door".into(), area: square(0.5, 0.5, 1.0, 1.0), labels: vec!["car".into()] },
            ],
            ..FrameFilter::default()
        };
        filter.per_label.insert("car".into(), LabelFilter { min_score: Some(0.8), min_area: 0.01, max_area: 0.5 });
        let dets = vec![
            det("person", 0.9, 60.0, 60.0, 80.0, 90.0), // in both zones' area; "door" is for cars
            det("dog", 0.9, 60.0, 60.0, 80.0, 90.0),    // label not wanted
            det("person", 0.3, 60.0, 60.0, 80.0, 90.0), // below min_score
            det("person", 0.9, 5.0, 60.0, 20.0, 90.0),  // foot inside the mask
            det("car", 0.7, 60.0, 60.0, 80.0, 90.0),    // below the car's own min_score
            det("car", 0.9, 60.0, 60.0, 61.0, 61.0),    // too small
            det("car", 0.9, 55.0, 40.0, 95.0, 80.0),    // kept, in both zones
        ];
        let kept = filter.apply(dets, 100, 100);
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(kept[0].detection.label, "person");
        assert_eq!(kept[0].zones, vec!["drive".to_string()]);
        assert_eq!(kept[1].detection.label, "car");
        assert_eq!(kept[1].zones, vec!["drive".to_string(), "door".to_string()]);
    }
}
