//! The source of the current time, injectable so cron arithmetic and retry schedules can
//! be tested exactly instead of with sleeps.

use chrono::{DateTime, SubsecRound, Utc};
use std::sync::{Arc, Mutex};

/// Something that tells the time. Production code uses [`SystemClock`].
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant, truncated to milliseconds (the precision CronFlow stores).
    fn now(&self) -> DateTime<Utc>;

    /// Whether this is the real wall clock, the one the queue compares due times with.
    /// Work that relies on the queue releasing a task at a future time (firing slots
    /// ahead of time) is only done with the wall clock.
    fn is_wall_clock(&self) -> bool {
        true
    }
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(3)
    }
}

/// A clock that only moves when told to; for tests.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    /// A clock stopped at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Arc::new(Mutex::new(at.trunc_subsecs(3))))
    }

    /// Moves the clock to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = at.trunc_subsecs(3);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_wall_clock(&self) -> bool {
        false
    }
}
