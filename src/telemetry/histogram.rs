//! A lock-free duration histogram for regent's own series: classic buckets, optionally an
//! exemplar slot per bucket and native (exponential) buckets.
//!
//! An observation is relaxed atomic additions into preallocated counters: no lock, no
//! allocation. An exemplar is replaced at most once per [`EXEMPLAR_INTERVAL`] per bucket; only
//! the one observation that wins that slot builds its exemplar (and allocates), so callers pass
//! a closure that runs for that observation alone.
//!
//! Native buckets use schema 3 (eight buckets per power of two, about 9% wide) over a fixed
//! range, `2^-20` s (about 1 µs, the zero bucket's width) to `2^10` s, so they too live in a
//! preallocated array; observations beyond the top land in the top bucket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;

use super::family::{Exemplar, MetricValue, NativeBuckets, RichHistogram};

/// Minimum time between two exemplars of the same bucket.
pub const EXEMPLAR_INTERVAL: Duration = Duration::from_secs(1);

pub const NATIVE_SCHEMA: i32 = 3;
/// `2^-20` seconds: observations up to this go in the zero bucket.
pub const NATIVE_ZERO_THRESHOLD: f64 = 1.0 / 1_048_576.0;
/// Index of the first bucket above the zero bucket: `(2^(-20 - 1/8), 2^-20]` is all zero bucket.
const NATIVE_MIN_INDEX: i32 = -20 * 8 + 1;
/// Index of the bucket ending at `2^10` seconds.
const NATIVE_MAX_INDEX: i32 = 10 * 8;

/// What every series of one family shares: the classic bounds and which extras are kept.
pub struct Shape {
    bounds: Box<[f64]>,
    exemplars: bool,
    native: bool,
    epoch: Instant,
}

impl Shape {
    /// `bounds`: increasing upper bounds in seconds, without `+Inf`.
    pub fn new(bounds: &[f64], exemplars: bool, native: bool) -> Self {
        Shape {
            bounds: bounds.iter().copied().filter(|b| b.is_finite()).collect(),
            exemplars,
            native,
            epoch: Instant::now(),
        }
    }
}

struct ExemplarSlot {
    /// Milliseconds since [`Shape::epoch`] from which the slot may be replaced.
    due_ms: AtomicU64,
    current: ArcSwapOption<Exemplar>,
}

pub struct Histogram {
    /// Non-cumulative count per classic bucket; the last one is `+Inf`.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
    exemplars: Box<[ExemplarSlot]>,
    /// The zero bucket, then buckets `NATIVE_MIN_INDEX..=NATIVE_MAX_INDEX`; empty when off.
    native: Box<[AtomicU64]>,
}

impl Histogram {
    pub fn new(shape: &Shape) -> Self {
        let slots = shape.bounds.len() + 1;
        let native = if shape.native {
            (NATIVE_MIN_INDEX - 1..=NATIVE_MAX_INDEX)
                .map(|_| AtomicU64::new(0))
                .collect()
        } else {
            Box::default()
        };
        Histogram {
            counts: (0..slots).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            exemplars: if shape.exemplars {
                (0..slots)
                    .map(|_| ExemplarSlot {
                        due_ms: AtomicU64::new(0),
                        current: ArcSwapOption::empty(),
                    })
                    .collect()
            } else {
                Box::default()
            },
            native,
        }
    }

    /// Records `elapsed`. When the observation's bucket is due a new exemplar, `exemplar` is
    /// called once to give its labels.
    pub fn observe(
        &self,
        shape: &Shape,
        elapsed: Duration,
        exemplar: impl FnOnce() -> Vec<(String, String)>,
    ) {
        let seconds = elapsed.as_secs_f64();
        let bucket = shape
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(shape.bounds.len());
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        if !self.native.is_empty() {
            self.native[native_slot(seconds)].fetch_add(1, Ordering::Relaxed);
        }
        if let Some(slot) = self.exemplars.get(bucket) {
            let now = u64::try_from(shape.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            let due = slot.due_ms.load(Ordering::Relaxed);
            let next = now.saturating_add(EXEMPLAR_INTERVAL.as_millis() as u64);
            if now >= due
                && slot
                    .due_ms
                    .compare_exchange(due, next, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                let timestamp = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64();
                slot.current.store(Some(std::sync::Arc::new(Exemplar {
                    labels: exemplar(),
                    value: seconds,
                    timestamp,
                })));
            }
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The series' current value: a plain histogram, or a rich one when it keeps extras.
    pub fn value(&self, shape: &Shape) -> MetricValue {
        let native = (!self.native.is_empty()).then(|| {
            let mut zero_count = 0;
            let mut positive = Vec::new();
            for (slot, count) in self.native.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if slot == 0 {
                    zero_count = count;
                } else if count > 0 {
                    positive.push((NATIVE_MIN_INDEX + slot as i32 - 1, count));
                }
            }
            NativeBuckets {
                schema: NATIVE_SCHEMA,
                zero_threshold: NATIVE_ZERO_THRESHOLD,
                zero_count,
                positive,
            }
        });
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(shape.bounds.len());
        for (i, count) in self.counts.iter().enumerate() {
            cumulative += count.load(Ordering::Relaxed);
            if let Some(bound) = shape.bounds.get(i) {
                buckets.push((*bound, cumulative));
            }
        }
        let mut count = cumulative;
        if let Some(native) = &native {
            // Concurrent observations may land between the reads of the two sets of counters;
            // a native histogram's count must equal its buckets' total, so that total is the
            // count and no classic bucket may exceed it.
            count = native.zero_count + native.positive.iter().map(|b| b.1).sum::<u64>();
            for bucket in &mut buckets {
                bucket.1 = bucket.1.min(count);
            }
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        if native.is_none() && self.exemplars.is_empty() {
            return MetricValue::Histogram {
                buckets,
                count,
                sum,
            };
        }
        let exemplars = self
            .exemplars
            .iter()
            .map(|slot| slot.current.load_full().map(|e| (*e).clone()))
            .collect();
        MetricValue::RichHistogram(Box::new(RichHistogram {
            buckets,
            count,
            sum,
            exemplars,
            native,
        }))
    }
}

/// The native array slot for an observation of `seconds`: 0 for the zero bucket.
fn native_slot(seconds: f64) -> usize {
    if seconds <= NATIVE_ZERO_THRESHOLD {
        return 0;
    }
    let index = (seconds.log2() * f64::from(1 << NATIVE_SCHEMA)).ceil() as i32;
    (index.clamp(NATIVE_MIN_INDEX, NATIVE_MAX_INDEX) - NATIVE_MIN_INDEX + 1) as usize
}

/// The upper bound of native bucket `index` (for tests and documentation).
pub fn native_upper_bound(index: i32) -> f64 {
    2f64.powf(f64::from(index) / f64::from(1 << NATIVE_SCHEMA))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rich(value: MetricValue) -> RichHistogram {
        match value {
            MetricValue::RichHistogram(h) => *h,
            other => panic!("not rich: {other:?}"),
        }
    }

    #[test]
    fn classic_buckets_count_and_sum() {
        let shape = Shape::new(&[0.001, 0.01], false, false);
        let h = Histogram::new(&shape);
        h.observe(&shape, Duration::from_micros(500), Vec::new);
        h.observe(&shape, Duration::from_millis(1), Vec::new);
        h.observe(&shape, Duration::from_millis(20), Vec::new);
        assert_eq!(
            h.value(&shape),
            MetricValue::Histogram {
                buckets: vec![(0.001, 2), (0.01, 2)],
                count: 3,
                sum: 0.0215,
            }
        );
        assert_eq!(h.count(), 3);
    }

    #[test]
    fn exemplars_are_taken_once_per_interval_per_bucket() {
        let shape = Shape::new(&[0.001], true, false);
        let h = Histogram::new(&shape);
        let mut built = 0;
        for _ in 0..100 {
            h.observe(&shape, Duration::from_micros(10), || {
                built += 1;
                vec![("decision_id".into(), format!("d{built}"))]
            });
        }
        assert_eq!(
            built, 1,
            "only the first observation in the interval builds one"
        );
        h.observe(&shape, Duration::from_secs(2), || {
            vec![("decision_id".into(), "slow".into())]
        });
        let value = rich(h.value(&shape));
        assert_eq!(value.exemplars.len(), 2);
        let first = value.exemplars[0].as_ref().unwrap();
        assert_eq!(
            first.labels,
            [("decision_id".to_string(), "d1".to_string())]
        );
        assert!((first.value - 1e-5).abs() < 1e-12);
        assert!(first.timestamp > 1.6e9);
        let slow = value.exemplars[1].as_ref().unwrap();
        assert_eq!(slow.value, 2.0);
    }

    #[test]
    fn native_buckets_follow_schema_3() {
        let shape = Shape::new(&[1.0], false, true);
        let h = Histogram::new(&shape);
        h.observe(&shape, Duration::ZERO, Vec::new);
        h.observe(&shape, Duration::from_nanos(500), Vec::new);
        h.observe(&shape, Duration::from_millis(500), Vec::new);
        h.observe(&shape, Duration::from_secs(1), Vec::new);
        h.observe(&shape, Duration::from_millis(1001), Vec::new);
        h.observe(&shape, Duration::from_secs(100_000), Vec::new);
        let value = rich(h.value(&shape));
        let native = value.native.unwrap();
        assert_eq!(native.zero_count, 2);
        // 0.5 = 2^-1 is the upper bound of bucket -8; 1 of bucket 0; just above 1 is bucket 1;
        // far above the range is the top bucket.
        assert_eq!(native.positive, [(-8, 1), (0, 1), (1, 1), (80, 1)]);
        assert_eq!(value.count, 6);
        assert!(value.exemplars.is_empty());
        assert!((native_upper_bound(1) - 1.0905).abs() < 1e-4);
        for micros in [1u64, 3, 17, 250, 999, 12_345, 7_000_000] {
            let seconds = micros as f64 / 1e6;
            let index = NATIVE_MIN_INDEX + native_slot(seconds) as i32 - 1;
            assert!(seconds <= native_upper_bound(index) * (1.0 + 1e-12));
            assert!(seconds > native_upper_bound(index - 1) * (1.0 - 1e-12));
        }
    }
}
