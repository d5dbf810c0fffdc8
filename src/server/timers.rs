//! Per-request timers returned with `?metrics` (`timer_<name>_ns`), recorded only when asked for
//! so that ordinary requests pay nothing. A decision's timers also feed the decision stage
//! histograms (`telemetry::decisions`) when decision metrics are on.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::telemetry::decisions::{Stage, Stages};

#[derive(Debug, Default, Serialize)]
#[serde(transparent)]
pub struct Timers(BTreeMap<&'static str, u64>);

/// Timers that are either collected or ignored, decided once per request.
pub struct RequestTimers {
    enabled: bool,
    timers: Timers,
    stages: Stages,
}

impl RequestTimers {
    /// Timers of a request that is not a decision (Query and Policy APIs, data writes).
    pub fn new(enabled: bool) -> Self {
        Self::for_decision(enabled, Stages::new(false))
    }

    /// Timers of a decision: reported when `enabled`, and fed into `stages` (which measure only
    /// when decision metrics are on).
    pub fn for_decision(enabled: bool, stages: Stages) -> Self {
        RequestTimers {
            enabled,
            timers: Timers::default(),
            stages,
        }
    }

    pub fn time<T>(&mut self, name: &'static str, f: impl FnOnce() -> T) -> T {
        let stage = self.stages.on() && Stage::of_timer(name).is_some();
        if !self.enabled && !stage {
            return f();
        }
        let start = Instant::now();
        let out = f();
        self.record(name, start.elapsed());
        out
    }

    pub fn record(&mut self, name: &'static str, elapsed: Duration) {
        if let Some(stage) = Stage::of_timer(name) {
            self.stages.record(stage, elapsed);
        }
        if self.enabled {
            let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
            *self.timers.0.entry(name).or_default() += ns;
        }
    }

    /// The timers to put in the response, if the client asked for them.
    pub fn into_reported(self) -> Option<Timers> {
        self.enabled.then_some(self.timers)
    }

    /// Like [`into_reported`](Self::into_reported), keeping the decision's stages for later
    /// stages (serialising the response that carries these timers).
    pub fn take_reported(&mut self) -> Option<Timers> {
        self.enabled.then(|| std::mem::take(&mut self.timers))
    }

    /// Times a decision stage that has no OPA timer (e.g. serialising the result).
    pub fn stage<T>(&mut self, stage: Stage, f: impl FnOnce() -> T) -> T {
        self.stages.time(stage, f)
    }

    pub fn stages(&self) -> &Stages {
        &self.stages
    }
}
