//! Per-request timers returned with `?metrics` (`timer_<name>_ns`), recorded only when asked for
//! so that ordinary requests pay nothing.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

#[derive(Debug, Default, Serialize)]
#[serde(transparent)]
pub struct Timers(BTreeMap<&'static str, u64>);

/// Timers that are either collected or ignored, decided once per request.
pub struct RequestTimers {
    enabled: bool,
    timers: Timers,
}

impl RequestTimers {
    pub fn new(enabled: bool) -> Self {
        RequestTimers {
            enabled,
            timers: Timers::default(),
        }
    }

    pub fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        if !self.enabled {
            return f();
        }
        let start = Instant::now();
        let out = f();
        self.record(name, start.elapsed());
        out
    }

    pub fn record(&mut self, name: &'static str, elapsed: Duration) {
        if self.enabled {
            let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            *self.timers.0.entry(name).or_default() += ns;
        }
    }

    /// The timers to put in the response, if the client asked for them.
    pub fn into_reported(self) -> Option<Timers> {
        self.enabled.then_some(self.timers)
    }
}
