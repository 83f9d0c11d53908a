//! Motion gating: a cheap change detector that decides whether a frame is worth the model.
//!
//! Each frame is shrunk to a grey grid of at most [`GRID`] cells on its longer side (the mean
//! luma of a few samples per cell) and compared with a background: the running average of
//! the grids before it (each frame weighs [`BACKGROUND_WEIGHT`]). A cell has changed when
//! it differs from the background by more than `threshold` grey levels; the frame has
//! motion when the changed cells cover at least `min_area` of the cells outside the
//! camera's masks. Slow changes (daylight, a cloud) are absorbed by the background before
//! they reach the threshold; a moving object is not.
//!
//! [`MotionGate`] runs the model on a frame with motion, on every frame while the tracker
//! is still deciding about an object (a new one not yet confirmed, a known one missed),
//! and at least every `max_interval` so that objects standing still are seen again.

use std::time::{Duration, Instant};

use image::RgbImage;

use super::Polygon;

/// Cells on the grid's longer side.
pub const GRID: usize = 160;
/// A frame's weight in the running-average background.
pub const BACKGROUND_WEIGHT: f32 = 0.1;
/// Samples per cell side at most (a 1920-pixel frame's 12-pixel cells are sampled every
/// third pixel).
const SAMPLES: usize = 4;

/// A camera's `[motion]` table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MotionSettings {
    /// Grey levels (0–255) a cell must differ from the background by to count as changed.
    pub threshold: f32,
    /// Fraction of the unmasked frame that must change for motion.
    pub min_area: f32,
    /// The model runs at least this often, motion or not.
    pub max_interval: Duration,
}

impl Default for MotionSettings {
    fn default() -> Self {
        MotionSettings { threshold: 20.0, min_area: 0.002, max_interval: Duration::from_secs(10) }
    }
}

/// The grid a frame size maps to, with the cells the masks leave.
#[derive(Debug, Clone, PartialEq)]
struct Grid {
    width: u32,
    height: u32,
    cell: usize,
    cols: usize,
    rows: usize,
    /// Per cell: outside every mask.
    watched: Vec<bool>,
    watched_count: usize,
}

impl Grid {
    fn new(width: u32, height: u32, masks: &[Polygon]) -> Grid {
        let (w, h) = (width as usize, height as usize);
        let cell = w.max(h).div_ceil(GRID).max(1);
        let (cols, rows) = (w.div_ceil(cell), h.div_ceil(cell));
        let mut watched = Vec::with_capacity(cols * rows);
        for r in 0..rows {
            for c in 0..cols {
                let x = ((c * cell) as f32 + cell as f32 / 2.0).min(w as f32) / w as f32;
                let y = ((r * cell) as f32 + cell as f32 / 2.0).min(h as f32) / h as f32;
                watched.push(!masks.iter().any(|m| m.contains(x, y)));
            }
        }
        let watched_count = watched.iter().filter(|&&w| w).count();
        Grid { width, height, cell, cols, rows, watched, watched_count }
    }

    /// Mean luma per cell (BT.601 weights in integers), from a strided sample of its pixels.
    fn luma(&self, image: &RgbImage, out: &mut Vec<f32>) {
        let (w, h) = (self.width as usize, self.height as usize);
        let raw = image.as_raw();
        let step = self.cell.div_ceil(SAMPLES).max(1);
        out.clear();
        for r in 0..self.rows {
            let (y0, y1) = (r * self.cell, ((r + 1) * self.cell).min(h));
            for c in 0..self.cols {
                let (x0, x1) = (c * self.cell, ((c + 1) * self.cell).min(w));
                let (mut sum, mut n) = (0u32, 0u32);
                for y in (y0..y1).step_by(step) {
                    let row = &raw[y * w * 3..(y + 1) * w * 3];
                    for x in (x0..x1).step_by(step) {
                        let p = &row[x * 3..x * 3 + 3];
                        sum += (77 * p[0] as u32 + 150 * p[1] as u32 + 29 * p[2] as u32) >> 8;
                        n += 1;
                    }
                }
                out.push(sum as f32 / n.max(1) as f32);
            }
        }
    }
}

/// The change detector's state: the background grid of the frames seen so far.
#[derive(Debug, Clone)]
pub struct MotionDetector {
    settings: MotionSettings,
    masks: Vec<Polygon>,
    grid: Option<Grid>,
    background: Vec<f32>,
    current: Vec<f32>,
}

impl MotionDetector {
    pub fn new(settings: MotionSettings, masks: Vec<Polygon>) -> MotionDetector {
        MotionDetector { settings, masks, grid: None, background: Vec::new(), current: Vec::new() }
    }

    /// The fraction of the watched frame that changed against the background, which then
    /// takes the frame in. The first frame, and a frame of another size, is all change (1.0):
    /// there is nothing to compare it with. A frame with every cell masked is 0.
    pub fn changed(&mut self, image: &RgbImage) -> f32 {
        let (w, h) = image.dimensions();
        if w == 0 || h == 0 {
            return 0.0;
        }
        let fresh = !self.grid.as_ref().is_some_and(|g| g.width == w && g.height == h);
        if fresh {
            self.grid = Some(Grid::new(w, h, &self.masks));
        }
        let grid = self.grid.as_ref().expect("set above");
        grid.luma(image, &mut self.current);
        if fresh {
            self.background.clone_from(&self.current);
            return if grid.watched_count == 0 { 0.0 } else { 1.0 };
        }
        let mut changed = 0usize;
        for ((bg, &now), &watched) in self.background.iter_mut().zip(&self.current).zip(&grid.watched) {
            if watched && (now - *bg).abs() > self.settings.threshold {
                changed += 1;
            }
            *bg += BACKGROUND_WEIGHT * (now - *bg);
        }
        if grid.watched_count == 0 {
            0.0
        } else {
            changed as f32 / grid.watched_count as f32
        }
    }

    /// Whether the frame has motion (see [`MotionDetector::changed`]).
    pub fn moved(&mut self, image: &RgbImage) -> bool {
        let area = self.changed(image);
        area > 0.0 && area >= self.settings.min_area
    }
}

/// Why the gate let a frame through to the model, or that it did not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Motion,
    /// The tracker has an object it is not sure of yet (or lost sight of).
    Tracking,
    /// `max_interval` passed since the model last ran.
    Due,
    /// Nothing moved: the model is skipped.
    Gated,
}

impl Verdict {
    pub fn runs(self) -> bool {
        self != Verdict::Gated
    }
}

/// Decides per frame whether the model runs.
#[derive(Debug, Clone)]
pub struct MotionGate {
    detector: MotionDetector,
    max_interval: Duration,
    last_run: Option<Instant>,
}

impl MotionGate {
    pub fn new(settings: MotionSettings, masks: Vec<Polygon>) -> MotionGate {
        MotionGate {
            detector: MotionDetector::new(settings, masks),
            max_interval: settings.max_interval,
            last_run: None,
        }
    }

    /// The verdict on a frame taken at `now`. `settled` gives the tracker's word that every
    /// object it follows is confirmed and was seen on the last inferred frame; it is asked
    /// only when nothing else decides (a pipeline may have to wait for that word).
    pub fn judge(&mut self, image: &RgbImage, now: Instant, settled: impl FnOnce() -> bool) -> Verdict {
        // The background takes in every frame, gated or not.
        let moved = self.detector.moved(image);
        let due = self.last_run.is_none_or(|t| now.saturating_duration_since(t) >= self.max_interval);
        let verdict = if moved {
            Verdict::Motion
        } else if due {
            Verdict::Due
        } else if !settled() {
            Verdict::Tracking
        } else {
            Verdict::Gated
        };
        if verdict.runs() {
            self.last_run = Some(now);
        }
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn scene(width: u32, height: u32) -> RgbImage {
        // A textured, static background: gradients and a checker.
        RgbImage::from_fn(width, height, |x, y| {
            let c = if (x / 16 + y / 16) % 2 == 0 { 40 } else { 0 };
            Rgb([(x % 200) as u8 + c, (y % 180) as u8 + c, 90])
        })
    }

    fn with_box(mut image: RgbImage, x0: u32, y0: u32, size: u32) -> RgbImage {
        for y in y0..y0 + size {
            for x in x0..x0 + size {
                image.put_pixel(x, y, Rgb([250, 250, 250]));
            }
        }
        image
    }

    #[test]
    fn a_static_scene_has_no_motion_and_an_object_entering_has() {
        let mut d = MotionDetector::new(MotionSettings::default(), Vec::new());
        let still = scene(640, 480);
        assert_eq!(d.changed(&still), 1.0, "the first frame is all change");
        for _ in 0..5 {
            assert_eq!(d.changed(&still), 0.0);
        }
        // A 40x40 object: 0.5% of a 640x480 frame, above min_area 0.2%.
        let entered = with_box(still.clone(), 300, 200, 40);
        let area = d.changed(&entered);
        assert!(area > 0.003 && area < 0.01, "changed area {area}");
        assert!(d.moved(&with_box(still.clone(), 320, 200, 40)), "the object moved on");
    }

    #[test]
    fn small_changes_noise_and_slow_light_stay_below_the_gate() {
        let mut d = MotionDetector::new(MotionSettings::default(), Vec::new());
        let still = scene(320, 240);
        d.changed(&still);
        // An object of 8x8 pixels is under 0.1% of the frame.
        assert!(!d.moved(&with_box(still.clone(), 100, 100, 8)));
        // Light rising by 1 grey level a frame, 30 in all (over the threshold of 20): the
        // background follows it, a constant 9 levels behind.
        let mut d = MotionDetector::new(MotionSettings::default(), Vec::new());
        d.changed(&still);
        for step in 1..=30u8 {
            let brighter = RgbImage::from_fn(320, 240, |x, y| {
                let p = still.get_pixel(x, y).0;
                Rgb(p.map(|v| v.saturating_add(step)))
            });
            assert!(!d.moved(&brighter), "step {step}");
        }
    }

    #[test]
    fn change_under_a_mask_is_ignored() {
        let mask = Polygon::new(vec![(0.0, 0.0), (0.5, 0.0), (0.5, 1.0), (0.0, 1.0)]);
        let mut d = MotionDetector::new(MotionSettings::default(), vec![mask]);
        let still = scene(640, 480);
        d.changed(&still);
        assert!(!d.moved(&with_box(still.clone(), 40, 200, 80)), "left half is masked");
        assert!(d.moved(&with_box(still.clone(), 440, 200, 80)), "right half is watched");
        let all = Polygon::new(vec![(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)]);
        let mut d = MotionDetector::new(MotionSettings::default(), vec![all]);
        assert_eq!(d.changed(&still), 0.0, "a frame masked whole never moves");
    }

    #[test]
    fn odd_sizes_and_a_size_change_are_handled() {
        let mut d = MotionDetector::new(MotionSettings::default(), Vec::new());
        assert_eq!(d.changed(&RgbImage::new(0, 0)), 0.0);
        assert_eq!(d.changed(&scene(1, 1)), 1.0);
        assert_eq!(d.changed(&scene(1, 1)), 0.0);
        assert_eq!(d.changed(&scene(1921, 7)), 1.0, "a new size starts over");
        assert_eq!(d.changed(&scene(1921, 7)), 0.0);
    }

    #[test]
    fn the_gate_runs_on_motion_while_tracking_and_when_due() {
        let settings = MotionSettings { max_interval: Duration::from_secs(10), ..Default::default() };
        let mut gate = MotionGate::new(settings, Vec::new());
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let still = scene(320, 240);
        let asked = std::cell::Cell::new(0);
        let settled = |answer: bool| {
            let asked = &asked;
            move || {
                asked.set(asked.get() + 1);
                answer
            }
        };
        assert_eq!(gate.judge(&still, at(0), settled(true)), Verdict::Motion, "first frame");
        assert_eq!(gate.judge(&still, at(1), settled(true)), Verdict::Gated);
        assert_eq!(gate.judge(&still, at(2), settled(false)), Verdict::Tracking);
        assert_eq!(gate.judge(&still, at(11), settled(true)), Verdict::Gated, "10 s after the last run is 12");
        assert_eq!(asked.get(), 3, "the tracker is asked only when nothing else decides");
        assert_eq!(gate.judge(&still, at(12), settled(false)), Verdict::Due);
        assert_eq!(gate.judge(&with_box(still.clone(), 100, 100, 40), at(13), settled(false)), Verdict::Motion);
        assert_eq!(asked.get(), 3);
    }
}
