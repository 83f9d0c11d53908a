//! Classification metrics: confusion matrix, top-k accuracy, per-class precision, recall
//! and F1, with macro and weighted averages — pure functions over class indices — and the
//! report files written from them. Shared by the trainer and `vigil eval`, so that both
//! report the same numbers in the same files. Detection metrics (COCO's mAP) are in
//! [`detection`].

pub mod detection;

use serde::Serialize;

/// Counts of (true class, predicted class).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfusionMatrix {
    /// `counts[truth][predicted]`.
    pub counts: Vec<Vec<u64>>,
}

impl ConfusionMatrix {
    pub fn new(classes: usize) -> ConfusionMatrix {
        ConfusionMatrix { counts: vec![vec![0; classes]; classes] }
    }

    pub fn add(&mut self, truth: usize, predicted: usize) {
        self.counts[truth][predicted] += 1;
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }

    /// As CSV: a header of predicted labels, then one row per true label.
    pub fn to_csv(&self, labels: &[String]) -> String {
        let mut out = String::from("truth\\predicted");
        for l in labels {
            out += &format!(",{}", csv_field(l));
        }
        out.push('\n');
        for (l, row) in labels.iter().zip(&self.counts) {
            out += &csv_field(l);
            for c in row {
                out += &format!(",{c}");
            }
            out.push('\n');
        }
        out
    }
}

/// Precision, recall and F1 of one class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassMetrics {
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// How many samples truly belong to the class.
    pub support: u64,
}

/// Everything reported about one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    pub samples: u64,
    pub top1: f64,
    pub top5: f64,
    pub per_class: Vec<ClassMetrics>,
    pub macro_avg: ClassMetrics,
    pub weighted_avg: ClassMetrics,
    pub confusion: ConfusionMatrix,
}

/// Evaluates predictions given as per-sample class rankings (best first) against the
/// true classes. Precision of a class never predicted, and recall of a class with no
/// samples, count as 0 (as scikit-learn's `zero_division=0`).
pub fn evaluate(truth: &[usize], rankings: &[Vec<usize>], classes: usize) -> Evaluation {
    assert_eq!(truth.len(), rankings.len(), "one ranking per sample");
    let mut confusion = ConfusionMatrix::new(classes);
    let (mut top1, mut top5) = (0u64, 0u64);
    for (&t, r) in truth.iter().zip(rankings) {
        confusion.add(t, r[0]);
        top1 += u64::from(r[0] == t);
        top5 += u64::from(r.iter().take(5).any(|&p| p == t));
    }
    let n = truth.len() as u64;
    let per_class: Vec<ClassMetrics> = (0..classes)
        .map(|c| {
            let tp = confusion.counts[c][c] as f64;
            let predicted: u64 = (0..classes).map(|t| confusion.counts[t][c]).sum();
            let support: u64 = confusion.counts[c].iter().sum();
            let precision = if predicted > 0 { tp / predicted as f64 } else { 0.0 };
            let recall = if support > 0 { tp / support as f64 } else { 0.0 };
            let f1 = if precision + recall > 0.0 { 2.0 * precision * recall / (precision + recall) } else { 0.0 };
            ClassMetrics { precision, recall, f1, support }
        })
        .collect();
    let mean = |f: fn(&ClassMetrics) -> f64, w: &dyn Fn(&ClassMetrics) -> f64| {
        let total: f64 = per_class.iter().map(w).sum();
        if total == 0.0 {
            0.0
        } else {
            per_class.iter().map(|m| f(m) * w(m)).sum::<f64>() / total
        }
    };
    let avg = |w: &dyn Fn(&ClassMetrics) -> f64| ClassMetrics {
        precision: mean(|m| m.precision, w),
        recall: mean(|m| m.recall, w),
        f1: mean(|m| m.f1, w),
        support: n,
    };
    let ratio = |k: u64| if n == 0 { 0.0 } else { k as f64 / n as f64 };
    Evaluation {
        samples: n,
        top1: ratio(top1),
        top5: ratio(top5),
        macro_avg: avg(&|_| 1.0),
        weighted_avg: avg(&|m| m.support as f64),
        per_class,
        confusion,
    }
}

/// Class indices ordered by descending score (ties by index).
pub fn ranking(scores: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

impl Evaluation {
    /// Per-class metrics as CSV, then the macro and weighted averages.
    pub fn to_csv(&self, labels: &[String]) -> String {
        let mut out = String::from("class,precision,recall,f1,support\n");
        let row = |name: &str, m: &ClassMetrics| {
            format!("{},{:.6},{:.6},{:.6},{}\n", csv_field(name), m.precision, m.recall, m.f1, m.support)
        };
        for (l, m) in labels.iter().zip(&self.per_class) {
            out += &row(l, m);
        }
        out += &row("macro avg", &self.macro_avg);
        out += &row("weighted avg", &self.weighted_avg);
        out
    }

    /// metrics.csv, confusion.csv, confusion.png and evaluation.json in `out`.
    pub fn write_reports(&self, out: &std::path::Path, labels: &[String]) -> anyhow::Result<()> {
        use anyhow::Context;
        std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let write = |name: &str, text: String| {
            let path = out.join(name);
            std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
        };
        write("metrics.csv", self.to_csv(labels))?;
        write("confusion.csv", self.confusion.to_csv(labels))?;
        write("evaluation.json", serde_json::to_string_pretty(self)?)?;
        let chart = crate::plot::confusion_chart(&self.confusion.counts, labels)?;
        crate::plot::save(&chart, &out.join("confusion.png"))
    }

    /// A short human-readable summary.
    pub fn summary(&self, labels: &[String]) -> String {
        let mut out = format!(
            "{} samples: top-1 accuracy {:.4}, top-5 accuracy {:.4}\n\n{:<20} {:>9} {:>9} {:>9} {:>8}\n",
            self.samples, self.top1, self.top5, "class", "precision", "recall", "f1", "support"
        );
        let line = |name: &str, m: &ClassMetrics| {
            format!("{:<20} {:>9.4} {:>9.4} {:>9.4} {:>8}\n", name, m.precision, m.recall, m.f1, m.support)
        };
        for (l, m) in labels.iter().zip(&self.per_class) {
            out += &line(l, m);
        }
        out += &line("macro avg", &self.macro_avg);
        out += &line("weighted avg", &self.weighted_avg);
        out
    }
}

pub(crate) fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_of_a_known_confusion() {
        // 3 classes. Truth/prediction pairs chosen so each number can be checked by hand:
        // class 0: 2 samples, both right; class 1: 2 samples, 1 right, 1 → class 0;
        // class 2: 1 sample, predicted 1.
        let truth = [0, 0, 1, 1, 2];
        let top1 = [0, 0, 1, 0, 1];
        let rankings: Vec<Vec<usize>> = top1.iter().map(|&p| vec![p, (p + 1) % 3, (p + 2) % 3]).collect();
        let e = evaluate(&truth, &rankings, 3);
        assert_eq!(e.samples, 5);
        assert!((e.top1 - 0.6).abs() < 1e-12);
        assert!((e.top5 - 1.0).abs() < 1e-12);
        assert_eq!(e.confusion.counts, vec![vec![2, 0, 0], vec![1, 1, 0], vec![0, 1, 0]]);
        let p = &e.per_class;
        assert!((p[0].precision - 2.0 / 3.0).abs() < 1e-12 && (p[0].recall - 1.0).abs() < 1e-12);
        assert!((p[0].f1 - 0.8).abs() < 1e-12);
        assert!((p[1].precision - 0.5).abs() < 1e-12 && (p[1].recall - 0.5).abs() < 1e-12);
        assert_eq!((p[2].precision, p[2].recall, p[2].f1), (0.0, 0.0, 0.0));
        assert!((e.macro_avg.f1 - (0.8 + 0.5 + 0.0) / 3.0).abs() < 1e-12);
        assert!((e.weighted_avg.recall - (2.0 * 1.0 + 2.0 * 0.5) / 5.0).abs() < 1e-12);
        let labels: Vec<String> = ["a", "b,c", "d"].iter().map(|s| s.to_string()).collect();
        let csv = e.confusion.to_csv(&labels);
        assert_eq!(csv.lines().nth(2).unwrap(), "\"b,c\",1,1,0");
        assert!(e.to_csv(&labels).contains("macro avg,"));
    }

    #[test]
    fn ranking_orders_by_score() {
        assert_eq!(ranking(&[0.1, 0.7, 0.2]), [1, 2, 0]);
    }
}
