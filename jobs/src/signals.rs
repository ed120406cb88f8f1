//! Wake-up signals within one process: tasks were pushed (the run or the delivery worker
//! should fetch now rather than at its next poll), or a job's schedule changed (the
//! scheduler should recompute how long to sleep). Whoever commits a change raises the
//! matching signal after the commit; the workers' wake-up streams (`crate::wake`) and the
//! scheduler wait on them. Changes made by other processes are seen through Postgres's
//! notifications or the next poll. The store carries one `Signals` (shared by its
//! clones), so every path that pushes tasks signals the same listeners.

use std::sync::Arc;
use tokio::sync::Notify;

/// The wake-up signals of one process.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    runs: Arc<Notify>,
    deliveries: Arc<Notify>,
    schedule: Arc<Notify>,
}

impl Signals {
    /// Fresh signals, with nobody listening yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Run tasks were pushed (due now).
    pub(crate) fn runs_pushed(&self) {
        self.runs.notify_one();
    }

    /// Delivery tasks were pushed (due now).
    pub(crate) fn deliveries_pushed(&self) {
        self.deliveries.notify_one();
    }

    /// A job was created, rescheduled, paused or resumed.
    pub(crate) fn schedule_changed(&self) {
        self.schedule.notify_one();
    }

    /// Wakes the run worker at `at` (this process's monotonic clock): the due time of
    /// run tasks queued ahead of their slot.
    pub(crate) fn wake_runs_at(&self, at: tokio::time::Instant) {
        let runs = self.runs.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            runs.notify_one();
        });
    }

    /// What the run worker's wake-ups wait on.
    pub(crate) fn runs(&self) -> Arc<Notify> {
        self.runs.clone()
    }

    /// What the delivery worker's wake-ups wait on.
    pub(crate) fn deliveries(&self) -> Arc<Notify> {
        self.deliveries.clone()
    }

    /// What the scheduler's sleep waits on.
    pub fn schedule(&self) -> Arc<Notify> {
        self.schedule.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_timed_wake_up_comes_at_its_instant_and_not_before() {
        let s = Signals::new();
        let runs = s.runs();
        let start = tokio::time::Instant::now();
        s.wake_runs_at(start + std::time::Duration::from_millis(300));
        runs.notified().await;
        assert!(start.elapsed() >= std::time::Duration::from_millis(300));
    }

    #[tokio::test]
    async fn a_signal_raised_before_anyone_waits_is_kept_for_the_next_wait() {
        let s = Signals::new();
        s.deliveries_pushed();
        tokio::time::timeout(std::time::Duration::from_secs(5), s.deliveries().notified())
            .await
            .expect("the stored permit wakes the first waiter");
    }
}
