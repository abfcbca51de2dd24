//! A lock-free fixed-bucket histogram for the Prometheus text format: observing is a few
//! relaxed atomic adds, so the verifier thread can record every batch.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Counts of observations per upper bound, in an integer base unit (shares, microseconds)
/// exported after multiplying by `scale`.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    buckets: Box<[AtomicU64]>,
    sum: AtomicU64,
    scale: f64,
}

impl Histogram {
    /// Buckets at `bounds` (ascending) plus +Inf; exported values are `value * scale`.
    pub fn new(bounds: &'static [u64], scale: f64) -> Self {
        Self {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    /// Records one value.
    pub fn observe(&self, value: u64) {
        let i = self.bounds.partition_point(|&b| b < value);
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(value, Ordering::Relaxed);
    }

    /// A guard that records the microseconds until it is dropped.
    pub fn timer_micros(&self) -> Timer<'_> {
        Timer {
            histogram: self,
            started: Instant::now(),
        }
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    /// Writes `name_bucket{le=..}`, `name_sum` and `name_count` lines (cumulative buckets).
    pub fn write(&self, out: &mut String, name: &str) {
        // Dividing by 1e6 rather than multiplying by 1e-6 (not exact in binary) prints 0.05,
        // not 0.049999999999999996.
        let export = |v: u64| {
            if self.scale < 1.0 {
                v as f64 / (1.0 / self.scale).round()
            } else {
                v as f64 * self.scale
            }
        };
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Ordering::Relaxed);
            match self.bounds.get(i) {
                Some(&b) => {
                    let le = export(b);
                    let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
                }
                None => {
                    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
                }
            }
        }
        let sum = export(self.sum.load(Ordering::Relaxed));
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {cumulative}");
    }
}

/// See [`Histogram::timer_micros`].
#[derive(Debug)]
pub struct Timer<'a> {
    histogram: &'a Histogram,
    started: Instant,
}

impl Drop for Timer<'_> {
    fn drop(&mut self) {
        let us = self.started.elapsed().as_micros();
        self.histogram
            .observe(u64::try_from(us).unwrap_or(u64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_bounds_inclusive() {
        let h = Histogram::new(&[1, 4, 16], 1.0);
        for v in [1, 2, 4, 5, 100] {
            h.observe(v);
        }
        let mut out = String::new();
        h.write(&mut out, "x");
        assert_eq!(
            out,
            "x_bucket{le=\"1\"} 1\nx_bucket{le=\"4\"} 3\nx_bucket{le=\"16\"} 4\n\
             x_bucket{le=\"+Inf\"} 5\nx_sum 112\nx_count 5\n"
        );
        assert_eq!(h.count(), 5);
    }

    #[test]
    fn scale_converts_the_unit() {
        let h = Histogram::new(&[500, 1000], 1e-6);
        h.observe(250);
        let mut out = String::new();
        h.write(&mut out, "t");
        assert!(out.starts_with("t_bucket{le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("t_sum 0.00025\n"), "{out}");
        // Bounds print as written, without binary-fraction noise.
        let h = Histogram::new(&[100, 50_000, 100_000], 1e-6);
        let mut out = String::new();
        h.write(&mut out, "t");
        for le in ["0.0001", "0.05", "0.1"] {
            assert!(out.contains(&format!("le=\"{le}\"")), "{out}");
        }
    }

    #[test]
    fn timer_records_once_on_drop() {
        let h = Histogram::new(&[1_000_000], 1e-6);
        {
            let _t = h.timer_micros();
            assert_eq!(h.count(), 0);
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        assert_eq!(h.count(), 1);
        assert!(h.sum.load(Ordering::Relaxed) >= 2_000);
    }
}
