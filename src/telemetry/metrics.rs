//! HTTP request metrics, as OPA exports them: `http_request_duration_seconds` (histogram) and
//! `http_request_cancellations` (counter), both labelled `code`, `handler`, `method`.
//!
//! The hot path is lock-free and allocation-free: a request's series is found by indexing a fixed
//! table with the handler label (OPA's fixed set), the method (client_golang's fixed set) and the
//! status code (the common ones); the series is allocated once, on first use, and an observation
//! is two relaxed atomic additions (its bucket and the nanosecond sum). Labels outside the table
//! (an unusual status code, a plugin's own handler label) go to a map behind a lock, which only
//! such rare requests touch. Nothing is computed until a scrape reads the table.
//!
//! Cancellation: OPA counts a request as cancelled when its context is done once the handler has
//! returned, i.e. the client went away (or its connection failed) while the request was being
//! served; the `code` is what the handler wrote (200 if nothing was written) and `method` is the
//! raw request method (`"POST"`, unlike the histogram's lower-cased one). Here the same happens in
//! two ways: the connection dies while the handler is waiting (hyper drops the request future, and
//! [`InFlight`]'s drop records the request with code 200), or the request body ends in a transport
//! error (the client vanished mid-upload; the handler still answers, usually 400, and that code
//! is recorded). Both also observe the duration histogram, as OPA's wrapper does.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::body::{Body, HttpBody as _};
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use http_body_util::BodyExt;

use super::family::{Collector, Metric, MetricFamily, MetricType, MetricValue};

pub const DURATION_NAME: &str = "http_request_duration_seconds";
pub const DURATION_HELP: &str = "A histogram of duration for requests.";
pub const CANCELLATIONS_NAME: &str = "http_request_cancellations";
pub const CANCELLATIONS_HELP: &str = "A count of cancelled requests.";

/// OPA's `handler` label values, in table order.
const HANDLERS: [&str; 11] = [
    "index",
    "v0/data",
    "v1/data",
    "v1/policies",
    "v1/query",
    "v1/compile",
    "v1/config",
    "v1/status",
    "health",
    "catchall",
    "authz",
];

/// client_golang's sanitised `method` label values; anything else is `unknown`.
const METHODS: [&str; 11] = [
    "get", "put", "head", "post", "delete", "connect", "options", "notify", "trace", "patch",
    "unknown",
];
/// The raw method each slot stands for (the cancellation counter's `method` label).
const RAW_METHODS: [&str; 10] = [
    "GET", "PUT", "HEAD", "POST", "DELETE", "CONNECT", "OPTIONS", "NOTIFY", "TRACE", "PATCH",
];
const UNKNOWN_METHOD: usize = 10;

/// Status codes with a slot in the table; others take the locked rare path.
const CODES: [u16; 20] = [
    200, 201, 204, 301, 304, 400, 401, 403, 404, 405, 406, 409, 413, 415, 429, 500, 501, 502, 503,
    504,
];

fn handler_slot(handler: &str) -> Option<usize> {
    Some(match handler {
        "index" => 0,
        "v0/data" => 1,
        "v1/data" => 2,
        "v1/policies" => 3,
        "v1/query" => 4,
        "v1/compile" => 5,
        "v1/config" => 6,
        "v1/status" => 7,
        "health" => 8,
        "catchall" => 9,
        "authz" => 10,
        _ => return None,
    })
}

/// client_golang's method sanitising: the known methods in either case, else `unknown`.
fn method_slot(method: &Method) -> usize {
    match method.as_str() {
        "GET" | "get" => 0,
        "PUT" | "put" => 1,
        "HEAD" | "head" => 2,
        "POST" | "post" => 3,
        "DELETE" | "delete" => 4,
        "CONNECT" | "connect" => 5,
        "OPTIONS" | "options" => 6,
        "NOTIFY" | "notify" => 7,
        "TRACE" | "trace" => 8,
        "PATCH" | "patch" => 9,
        _ => UNKNOWN_METHOD,
    }
}

fn code_slot(code: u16) -> Option<usize> {
    Some(match code {
        200 => 0,
        201 => 1,
        204 => 2,
        301 => 3,
        304 => 4,
        400 => 5,
        401 => 6,
        403 => 7,
        404 => 8,
        405 => 9,
        406 => 10,
        409 => 11,
        413 => 12,
        415 => 13,
        429 => 14,
        500 => 15,
        501 => 16,
        502 => 17,
        503 => 18,
        504 => 19,
        _ => return None,
    })
}

/// One `{code, handler, method}` combination.
struct Series {
    /// Non-cumulative count per bucket; the last one is the `+Inf` overflow. The histogram's
    /// `_count` is their sum, so `_count` always equals the `+Inf` bucket in a scrape.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
    /// Cancellations recorded with this series' labels (and the slot's raw method).
    cancelled: AtomicU64,
}

impl Series {
    fn new(buckets: usize) -> Self {
        Series {
            buckets: (0..buckets).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
        }
    }
}

/// Key of a series outside the fixed table.
type RareKey = (&'static str, usize, u16);

pub struct HttpMetrics {
    enabled: bool,
    bounds: Vec<f64>,
    /// `[handler][method][code]`, each series allocated on first use.
    table: Box<[OnceLock<Box<Series>>]>,
    rare: RwLock<HashMap<RareKey, Box<Series>>>,
    /// Cancellations of requests whose raw method has no slot: `(code, handler, method)`.
    rare_cancellations: Mutex<BTreeMap<(u16, &'static str, String), u64>>,
}

impl HttpMetrics {
    /// `buckets`: upper bounds in seconds, increasing, without `+Inf`. With `enabled` false,
    /// requests are not observed at all (a diagnostic knob for measuring the instrumentation).
    pub fn new(buckets: &[f64], enabled: bool) -> Self {
        let bounds: Vec<f64> = buckets.iter().copied().filter(|b| b.is_finite()).collect();
        HttpMetrics {
            enabled,
            bounds,
            table: (0..HANDLERS.len() * METHODS.len() * CODES.len())
                .map(|_| OnceLock::new())
                .collect(),
            rare: RwLock::default(),
            rare_cancellations: Mutex::default(),
        }
    }

    pub fn buckets(&self) -> &[f64] {
        &self.bounds
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Starts observing a request that OPA's router would instrument with `handler`.
    pub fn start(&self, handler: &'static str, method: &Method) -> InFlight<'_> {
        InFlight {
            armed: self.enabled.then(|| Armed {
                metrics: self,
                handler,
                method: method.clone(),
                started: Instant::now(),
                body_failed: false,
            }),
        }
    }

    fn record(
        &self,
        handler: &'static str,
        method: &Method,
        code: u16,
        elapsed: Duration,
        cancelled: bool,
    ) {
        let slot = method_slot(method);
        let seconds = elapsed.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(self.bounds.len());
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        // The cancellation counter keeps the raw method; a slot stands for its upper-case form.
        let raw_matches = RAW_METHODS.get(slot) == Some(&method.as_str());
        self.with_series(handler, slot, code, |series| {
            series.buckets[bucket].fetch_add(1, Ordering::Relaxed);
            series.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
            if cancelled && raw_matches {
                series.cancelled.fetch_add(1, Ordering::Relaxed);
            }
        });
        if cancelled && !raw_matches {
            *self
                .rare_cancellations
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry((code, handler, method.as_str().to_string()))
                .or_default() += 1;
        }
    }

    fn new_series(&self) -> Box<Series> {
        Box::new(Series::new(self.bounds.len() + 1))
    }

    fn with_series(
        &self,
        handler: &'static str,
        method: usize,
        code: u16,
        f: impl FnOnce(&Series),
    ) {
        if let (Some(h), Some(c)) = (handler_slot(handler), code_slot(code)) {
            let index = (h * METHODS.len() + method) * CODES.len() + c;
            f(self.table[index].get_or_init(|| self.new_series()));
            return;
        }
        let key = (handler, method, code);
        if let Some(series) = self
            .rare
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            f(series);
            return;
        }
        let mut rare = self.rare.write().unwrap_or_else(PoisonError::into_inner);
        f(rare.entry(key).or_insert_with(|| self.new_series()));
    }

    /// Every series with at least one observation: `(code, handler, method slot, series)`.
    fn each_series(&self, mut f: impl FnMut(u16, &str, usize, &Series)) {
        for (index, slot) in self.table.iter().enumerate() {
            if let Some(series) = slot.get() {
                let code = CODES[index % CODES.len()];
                let method = (index / CODES.len()) % METHODS.len();
                let handler = HANDLERS[index / (CODES.len() * METHODS.len())];
                f(code, handler, method, series);
            }
        }
        for ((handler, method, code), series) in self
            .rare
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            f(*code, handler, *method, series);
        }
    }
}

fn labels(code: u16, handler: &str, method: &str) -> Vec<(String, String)> {
    vec![
        ("code".into(), code.to_string()),
        ("handler".into(), handler.into()),
        ("method".into(), method.into()),
    ]
}

impl Collector for HttpMetrics {
    fn collect(&self, out: &mut Vec<MetricFamily>) {
        let mut durations = Vec::new();
        let mut cancellations = Vec::new();
        self.each_series(|code, handler, method, series| {
            let mut cumulative = 0;
            let mut buckets = Vec::with_capacity(self.bounds.len());
            for (i, count) in series.buckets.iter().enumerate() {
                cumulative += count.load(Ordering::Relaxed);
                if let Some(bound) = self.bounds.get(i) {
                    buckets.push((*bound, cumulative));
                }
            }
            durations.push(Metric {
                labels: labels(code, handler, METHODS[method]),
                value: MetricValue::Histogram {
                    buckets,
                    count: cumulative,
                    sum: series.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
                },
            });
            let cancelled = series.cancelled.load(Ordering::Relaxed);
            if cancelled > 0 {
                cancellations.push(Metric {
                    labels: labels(code, handler, RAW_METHODS[method]),
                    value: MetricValue::Counter(cancelled as f64),
                });
            }
        });
        for ((code, handler, method), count) in self
            .rare_cancellations
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            cancellations.push(Metric {
                labels: labels(*code, handler, method),
                value: MetricValue::Counter(*count as f64),
            });
        }
        out.push(MetricFamily {
            name: DURATION_NAME.into(),
            help: DURATION_HELP.into(),
            kind: MetricType::Histogram,
            metrics: durations,
        });
        out.push(MetricFamily {
            name: CANCELLATIONS_NAME.into(),
            help: CANCELLATIONS_HELP.into(),
            kind: MetricType::Counter,
            metrics: cancellations,
        });
    }
}

tokio::task_local! {
    /// Set when the request body being read inside [`InFlight::watch`] ended in a transport error.
    static BODY_FAILED: Cell<bool>;
}

/// One request being observed. Dropped without [`finish`](InFlight::finish) or
/// [`discard`](InFlight::discard), it is recorded as cancelled: its future was dropped because the
/// connection went away.
pub struct InFlight<'a> {
    armed: Option<Armed<'a>>,
}

struct Armed<'a> {
    metrics: &'a HttpMetrics,
    handler: &'static str,
    method: Method,
    started: Instant,
    body_failed: bool,
}

impl InFlight<'_> {
    /// Makes a transport error while reading the request body visible to [`watch`]; requests
    /// without a body (and unobserved requests) are passed through untouched.
    ///
    /// [`watch`]: InFlight::watch
    pub fn watch_body(&self, req: Request) -> Request {
        if self.armed.is_none() || req.body().size_hint().exact() == Some(0) {
            return req;
        }
        req.map(|body| {
            Body::new(body.map_err(|err| {
                let _ = BODY_FAILED.try_with(|failed| failed.set(true));
                err
            }))
        })
    }

    /// Runs the handler, noting whether the request body failed while it ran.
    pub async fn watch<F: Future>(&mut self, handler: F) -> F::Output {
        let Some(armed) = self.armed.as_mut() else {
            return handler.await;
        };
        let (output, failed) = BODY_FAILED
            .scope(Cell::new(false), async {
                let output = handler.await;
                (output, BODY_FAILED.with(Cell::get))
            })
            .await;
        armed.body_failed = failed;
        output
    }

    /// The handler answered: records it under `handler` (which may differ from the label the
    /// request started with, e.g. `catchall`) and the status it wrote.
    pub fn finish(mut self, handler: &'static str, code: StatusCode) {
        if let Some(armed) = self.armed.take() {
            armed.metrics.record(
                handler,
                &armed.method,
                code.as_u16(),
                armed.started.elapsed(),
                armed.body_failed,
            );
        }
    }

    /// The request turned out not to be one OPA instruments: record nothing.
    pub fn discard(mut self) {
        self.armed = None;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(armed) = self.armed.take() {
            // Nothing was written: OPA's status capture defaults to 200.
            armed.metrics.record(
                armed.handler,
                &armed.method,
                200,
                armed.started.elapsed(),
                true,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_HTTP_BUCKETS;

    fn gather(m: &HttpMetrics) -> Vec<MetricFamily> {
        let mut out = Vec::new();
        m.collect(&mut out);
        out
    }

    fn find<'a>(
        families: &'a [MetricFamily],
        name: &str,
        labels: &[(&str, &str)],
    ) -> Option<&'a MetricValue> {
        let family = families.iter().find(|f| f.name == name)?;
        family
            .metrics
            .iter()
            .find(|m| {
                labels
                    .iter()
                    .all(|(k, v)| m.labels.iter().any(|(mk, mv)| mk == k && mv == v))
            })
            .map(|m| &m.value)
    }

    #[test]
    fn observations_land_in_their_buckets() {
        let m = HttpMetrics::new(&DEFAULT_HTTP_BUCKETS, true);
        m.record(
            "v1/data",
            &Method::POST,
            200,
            Duration::from_micros(3),
            false,
        );
        m.record(
            "v1/data",
            &Method::POST,
            200,
            Duration::from_micros(700),
            false,
        );
        m.record("v1/data", &Method::POST, 200, Duration::from_secs(2), false);
        m.record(
            "v1/data",
            &Method::GET,
            404,
            Duration::from_millis(1),
            false,
        );
        let families = gather(&m);
        let Some(MetricValue::Histogram {
            buckets,
            count,
            sum,
        }) = find(
            &families,
            DURATION_NAME,
            &[("code", "200"), ("handler", "v1/data"), ("method", "post")],
        )
        else {
            panic!("no series: {families:?}");
        };
        assert_eq!(*count, 3);
        assert!((sum - 2.000703).abs() < 1e-9, "{sum}");
        let cumulative: Vec<u64> = buckets.iter().map(|b| b.1).collect();
        assert_eq!(cumulative, [0, 1, 1, 1, 1, 1, 2, 2, 2, 2]);
        // A bound is inclusive: exactly 1 ms falls in le="0.001".
        let Some(MetricValue::Histogram { buckets, .. }) = find(
            &families,
            DURATION_NAME,
            &[("code", "404"), ("method", "get")],
        ) else {
            panic!("no 404 series");
        };
        assert_eq!(buckets[6], (0.001, 1));
        assert!(families
            .iter()
            .find(|f| f.name == CANCELLATIONS_NAME)
            .unwrap()
            .metrics
            .is_empty());
    }

    #[test]
    fn rare_labels_and_methods_are_kept() {
        let m = HttpMetrics::new(&[0.1], true);
        m.record(
            "custom/route",
            &Method::GET,
            418,
            Duration::from_millis(1),
            false,
        );
        let odd = Method::from_bytes(b"PURGE").unwrap();
        m.record("catchall", &odd, 405, Duration::ZERO, true);
        let families = gather(&m);
        assert!(find(
            &families,
            DURATION_NAME,
            &[("code", "418"), ("handler", "custom/route")]
        )
        .is_some());
        assert!(find(
            &families,
            DURATION_NAME,
            &[("handler", "catchall"), ("method", "unknown")]
        )
        .is_some());
        assert_eq!(
            find(
                &families,
                CANCELLATIONS_NAME,
                &[("handler", "catchall"), ("method", "PURGE")]
            ),
            Some(&MetricValue::Counter(1.0))
        );
    }

    #[test]
    fn dropped_request_counts_as_cancelled_with_raw_method() {
        let m = HttpMetrics::new(&DEFAULT_HTTP_BUCKETS, true);
        drop(m.start("v1/data", &Method::POST));
        m.start("v1/data", &Method::GET)
            .finish("v1/data", StatusCode::OK);
        m.start("v1/data", &Method::GET).discard();
        let odd = Method::from_bytes(b"get").unwrap();
        drop(m.start("v1/data", &odd));
        let families = gather(&m);
        assert_eq!(
            find(
                &families,
                CANCELLATIONS_NAME,
                &[("code", "200"), ("method", "POST")]
            ),
            Some(&MetricValue::Counter(1.0))
        );
        assert_eq!(
            find(
                &families,
                CANCELLATIONS_NAME,
                &[("code", "200"), ("method", "get")]
            ),
            Some(&MetricValue::Counter(1.0))
        );
        assert!(find(&families, CANCELLATIONS_NAME, &[("method", "GET")]).is_none());
        // The dropped POST is also in the histogram, like OPA's wrapper observes it.
        let Some(MetricValue::Histogram { count, .. }) = find(
            &families,
            DURATION_NAME,
            &[("code", "200"), ("method", "post")],
        ) else {
            panic!("no histogram series");
        };
        assert_eq!(*count, 1);
        // The finished GET and the lower-case `get` share the sanitised series; the discarded one is absent.
        let Some(MetricValue::Histogram { count, .. }) = find(
            &families,
            DURATION_NAME,
            &[("code", "200"), ("method", "get")],
        ) else {
            panic!("no get series");
        };
        assert_eq!(*count, 2);
    }

    #[test]
    fn disabled_records_nothing() {
        let m = HttpMetrics::new(&DEFAULT_HTTP_BUCKETS, false);
        drop(m.start("v1/data", &Method::GET));
        m.start("v1/data", &Method::GET)
            .finish("v1/data", StatusCode::OK);
        assert!(gather(&m).iter().all(|f| f.metrics.is_empty()));
    }
}
