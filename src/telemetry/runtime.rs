//! Runtime figures, the honest Rust counterpart of OPA's `go_*` families: the process (procfs,
//! with client_golang's `process_*` names and help strings), the allocator (jemalloc's own
//! statistics), the async runtime (tokio's stable runtime metrics) and a build-info gauge.
//!
//! Everything is read when a scrape asks for it; nothing polls in the background. Reading a
//! figure that the platform does not offer (no `/proc`, no jemalloc statistics) leaves that
//! figure out rather than reporting a made-up zero.

use tikv_jemalloc_ctl::{epoch, epoch_mib, raw, stats};

use super::family::{Collector, Metric, MetricFamily, MetricType, MetricValue};
use crate::build;

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    MetricFamily {
        name: name.into(),
        help: help.into(),
        kind,
        metrics,
    }
}

fn single(name: &str, help: &str, kind: MetricType, value: f64) -> MetricFamily {
    let value = match kind {
        MetricType::Counter => MetricValue::Counter(value),
        _ => MetricValue::Gauge(value),
    };
    family(
        name,
        help,
        kind,
        vec![Metric {
            labels: Vec::new(),
            value,
        }],
    )
}

/// A limit from `/proc/self/limits`; "unlimited" reads as the largest u64, as Go's procfs does.
fn limit_value(limit: &procfs::process::LimitValue) -> f64 {
    match limit {
        procfs::process::LimitValue::Unlimited => u64::MAX as f64,
        procfs::process::LimitValue::Value(v) => *v as f64,
    }
}

/// `process_*`: CPU, memory, file descriptors, threads and start time of this process.
pub struct ProcessCollector {
    ticks_per_second: f64,
    page_size: f64,
    /// Seconds since the epoch; fixed for the life of the process, so read once.
    start_time: Option<f64>,
}

impl ProcessCollector {
    pub fn new() -> Self {
        let ticks_per_second = procfs::ticks_per_second() as f64;
        let start_time = procfs::process::Process::myself()
            .and_then(|p| p.stat())
            .ok()
            .zip(procfs::boot_time_secs().ok())
            .map(|(stat, boot)| boot as f64 + stat.starttime as f64 / ticks_per_second);
        ProcessCollector {
            ticks_per_second,
            page_size: procfs::page_size() as f64,
            start_time,
        }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

impl Collector for ProcessCollector {
    fn collect(&self, out: &mut Vec<MetricFamily>) {
        use MetricType::{Counter, Gauge};
        let Ok(me) = procfs::process::Process::myself() else {
            return;
        };
        if let Ok(stat) = me.stat() {
            out.push(single(
                "process_cpu_seconds_total",
                "Total user and system CPU time spent in seconds.",
                Counter,
                (stat.utime + stat.stime) as f64 / self.ticks_per_second,
            ));
            out.push(single(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                Gauge,
                stat.vsize as f64,
            ));
            out.push(single(
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                Gauge,
                stat.rss as f64 * self.page_size,
            ));
            out.push(single(
                "process_threads",
                "Number of OS threads in the process.",
                Gauge,
                stat.num_threads as f64,
            ));
        }
        if let Ok(fds) = me.fd_count() {
            out.push(single(
                "process_open_fds",
                "Number of open file descriptors.",
                Gauge,
                fds as f64,
            ));
        }
        if let Ok(limits) = me.limits() {
            out.push(single(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                Gauge,
                limit_value(&limits.max_open_files.soft_limit),
            ));
            out.push(single(
                "process_virtual_memory_max_bytes",
                "Maximum amount of virtual memory available in bytes.",
                Gauge,
                limit_value(&limits.max_address_space.soft_limit),
            ));
        }
        if let Some(start) = self.start_time {
            out.push(single(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                Gauge,
                start,
            ));
        }
    }
}

/// jemalloc's byte gauges: (metric name, help).
const JEMALLOC_BYTES: [(&str, &str); 6] = [
    (
        "jemalloc_allocated_bytes",
        "Bytes allocated by the application and not yet freed (jemalloc stats.allocated).",
    ),
    (
        "jemalloc_active_bytes",
        "Bytes in active pages allocated by the application (jemalloc stats.active).",
    ),
    (
        "jemalloc_resident_bytes",
        "Bytes in physically resident data pages mapped by the allocator (jemalloc stats.resident).",
    ),
    (
        "jemalloc_mapped_bytes",
        "Bytes in active extents mapped by the allocator (jemalloc stats.mapped).",
    ),
    (
        "jemalloc_retained_bytes",
        "Bytes in virtual memory mappings retained for reuse instead of being returned to the \
         operating system (jemalloc stats.retained).",
    ),
    (
        "jemalloc_metadata_bytes",
        "Bytes dedicated to allocator metadata (jemalloc stats.metadata).",
    ),
];

/// jemalloc's operation counters over all arenas: (metric name, help, ctl suffix).
const JEMALLOC_COUNTS: [(&str, &str, &str); 3] = [
    (
        "jemalloc_allocations_total",
        "Objects handed out by the arenas, by size class; small objects are counted as thread \
         caches are filled (jemalloc stats.arenas.<all>.<class>.nmalloc).",
        "nmalloc",
    ),
    (
        "jemalloc_deallocations_total",
        "Objects returned to the arenas, by size class; small objects are counted as thread \
         caches are flushed (jemalloc stats.arenas.<all>.<class>.ndalloc).",
        "ndalloc",
    ),
    (
        "jemalloc_allocation_requests_total",
        "Allocation requests served, including those served from thread caches, by size class \
         (jemalloc stats.arenas.<all>.<class>.nrequests).",
        "nrequests",
    ),
];

const SIZE_CLASSES: [&str; 2] = ["small", "large"];

/// Management-info-base paths, resolved once so a scrape does no name lookups.
struct JemallocMibs {
    epoch: epoch_mib,
    allocated: stats::allocated_mib,
    active: stats::active_mib,
    resident: stats::resident_mib,
    mapped: stats::mapped_mib,
    retained: stats::retained_mib,
    metadata: stats::metadata_mib,
    /// `[counter][size class]` arena-merged counters.
    counts: Vec<Vec<[usize; 5]>>,
}

impl JemallocMibs {
    fn resolve() -> Option<Self> {
        let mut counts = Vec::new();
        for (_, _, stat) in JEMALLOC_COUNTS {
            let mut per_class = Vec::new();
            for class in SIZE_CLASSES {
                // 4096 is MALLCTL_ARENAS_ALL: the statistics merged over every arena.
                let name = format!("stats.arenas.4096.{class}.{stat}\0");
                let mut mib = [0usize; 5];
                raw::name_to_mib(name.as_bytes(), &mut mib).ok()?;
                per_class.push(mib);
            }
            counts.push(per_class);
        }
        Some(JemallocMibs {
            epoch: epoch::mib().ok()?,
            allocated: stats::allocated::mib().ok()?,
            active: stats::active::mib().ok()?,
            resident: stats::resident::mib().ok()?,
            mapped: stats::mapped::mib().ok()?,
            retained: stats::retained::mib().ok()?,
            metadata: stats::metadata::mib().ok()?,
            counts,
        })
    }
}

/// `jemalloc_*`: the allocator's own view of memory. jemalloc caches its statistics; each scrape
/// advances its epoch first so the figures are current.
pub struct JemallocCollector {
    mibs: Option<JemallocMibs>,
}

impl JemallocCollector {
    pub fn new() -> Self {
        JemallocCollector {
            mibs: JemallocMibs::resolve(),
        }
    }
}

impl Default for JemallocCollector {
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes allocated and not yet freed, fresh (advances jemalloc's statistics epoch). What
/// `/metrics/alloc_bytes` reports; `None` when the allocator keeps no statistics.
pub fn allocated_bytes() -> Option<u64> {
    epoch::advance().ok()?;
    stats::allocated::read().ok().map(|b| b as u64)
}

impl Collector for JemallocCollector {
    fn collect(&self, out: &mut Vec<MetricFamily>) {
        let Some(m) = &self.mibs else {
            return;
        };
        if m.epoch.advance().is_err() {
            return;
        }
        let bytes = [
            m.allocated.read(),
            m.active.read(),
            m.resident.read(),
            m.mapped.read(),
            m.retained.read(),
            m.metadata.read(),
        ];
        for ((name, help), value) in JEMALLOC_BYTES.iter().zip(bytes) {
            if let Ok(value) = value {
                out.push(single(name, help, MetricType::Gauge, value as f64));
            }
        }
        for ((name, help, _), mibs) in JEMALLOC_COUNTS.iter().zip(&m.counts) {
            let metrics = SIZE_CLASSES
                .iter()
                .zip(mibs)
                .filter_map(|(class, mib)| {
                    // SAFETY: these statistics are `uint64_t` in jemalloc's mallctl namespace.
                    let value: u64 = unsafe { raw::read_mib(mib) }.ok()?;
                    Some(Metric {
                        labels: vec![("size_class".into(), (*class).into())],
                        value: MetricValue::Counter(value as f64),
                    })
                })
                .collect();
            out.push(family(name, help, MetricType::Counter, metrics));
        }
    }
}

/// `tokio_*`: the async runtime serving the main listeners and the plugins (the one
/// [`TokioCollector::current`] is called from), from tokio's stable runtime metrics.
pub struct TokioCollector {
    handle: tokio::runtime::Handle,
}

impl TokioCollector {
    /// The runtime this is called from, if any.
    pub fn current() -> Option<Self> {
        tokio::runtime::Handle::try_current()
            .ok()
            .map(|handle| TokioCollector { handle })
    }
}

impl Collector for TokioCollector {
    fn collect(&self, out: &mut Vec<MetricFamily>) {
        use MetricType::{Counter, Gauge};
        let metrics = self.handle.metrics();
        let workers = metrics.num_workers();
        out.push(single(
            "tokio_workers",
            "Number of worker threads the async runtime runs tasks on.",
            Gauge,
            workers as f64,
        ));
        out.push(single(
            "tokio_alive_tasks",
            "Number of tasks alive in the async runtime.",
            Gauge,
            metrics.num_alive_tasks() as f64,
        ));
        out.push(single(
            "tokio_global_queue_depth",
            "Number of tasks waiting in the async runtime's global queue.",
            Gauge,
            metrics.global_queue_depth() as f64,
        ));
        let per_worker = |value: &dyn Fn(usize) -> f64| -> Vec<Metric> {
            (0..workers)
                .map(|worker| Metric {
                    labels: vec![("worker".into(), worker.to_string())],
                    value: MetricValue::Counter(value(worker)),
                })
                .collect()
        };
        out.push(family(
            "tokio_worker_busy_seconds_total",
            "Time the worker thread has spent running tasks (not parked), in seconds.",
            Counter,
            per_worker(&|w| metrics.worker_total_busy_duration(w).as_secs_f64()),
        ));
        out.push(family(
            "tokio_worker_parks_total",
            "Number of times the worker thread parked for lack of work.",
            Counter,
            per_worker(&|w| metrics.worker_park_count(w) as f64),
        ));
    }
}

/// `regent_build_info`: constant 1, labelled with what was built (the counterpart of `go_info`).
pub struct BuildInfo;

impl Collector for BuildInfo {
    fn collect(&self, out: &mut Vec<MetricFamily>) {
        out.push(family(
            "regent_build_info",
            "A metric with a constant '1' value labeled by the version, commit and policy engine \
             regent was built with.",
            MetricType::Gauge,
            vec![Metric {
                labels: vec![
                    ("commit".into(), build::COMMIT.into()),
                    ("engine".into(), "regorus".into()),
                    ("version".into(), build::VERSION.into()),
                ],
                value: MetricValue::Gauge(1.0),
            }],
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(collector: &dyn Collector) -> Vec<String> {
        let mut out = Vec::new();
        collector.collect(&mut out);
        out.into_iter().map(|f| f.name).collect()
    }

    #[test]
    fn process_figures_are_read() {
        let mut out = Vec::new();
        ProcessCollector::new().collect(&mut out);
        let get = |name: &str| match out.iter().find(|f| f.name == name) {
            Some(f) => match f.metrics[0].value {
                MetricValue::Counter(v) | MetricValue::Gauge(v) => v,
                _ => panic!("{name} is not a scalar"),
            },
            None => panic!("{name} missing"),
        };
        assert!(get("process_resident_memory_bytes") > 0.0);
        assert!(get("process_open_fds") >= 3.0);
        assert!(get("process_threads") >= 1.0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = get("process_start_time_seconds");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0,
            "{start} vs {now}"
        );
        assert!(get("process_max_fds") >= get("process_open_fds"));
    }

    #[test]
    fn jemalloc_and_build_info_families() {
        let jemalloc = names(&JemallocCollector::new());
        assert!(
            jemalloc.contains(&"jemalloc_allocated_bytes".to_string()),
            "{jemalloc:?}"
        );
        assert!(jemalloc.contains(&"jemalloc_allocations_total".to_string()));
        assert_eq!(names(&BuildInfo), ["regent_build_info"]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tokio_figures_cover_every_worker() {
        let collector = TokioCollector::current().expect("inside a runtime");
        let mut out = Vec::new();
        collector.collect(&mut out);
        let busy = out
            .iter()
            .find(|f| f.name == "tokio_worker_busy_seconds_total")
            .unwrap();
        assert_eq!(busy.metrics.len(), 2);
        assert_eq!(
            out.iter()
                .find(|f| f.name == "tokio_workers")
                .unwrap()
                .metrics[0]
                .value,
            MetricValue::Gauge(2.0)
        );
    }
}
