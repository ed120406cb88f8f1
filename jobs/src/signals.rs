//! Wake-up signals within one process: tasks were pushed (the run or the delivery worker
//! should fetch now rather than at its next poll), or a job's schedule changed (the
//! scheduler should recompute how long to sleep). The store reports each such
//! [`Change`] after its commit to the `Signals` that listens to it
//! ([`Store::listened_by`], wired once per process by the application); the workers'
//! wake-up streams (`crate::wake`) and the scheduler wait on them. Changes made by other
//! processes are seen through Postgres's notifications or the next poll.

use crate::store::{Change, ChangeListener, Store};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio::sync::Notify;

/// How long after a slot fired ahead of time the worker is woken (the queue compares due
/// times in whole seconds of the database's clock; a wake a hair early would find nothing).
const WAKE_MARGIN: std::time::Duration = std::time::Duration::from_millis(2);

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

    /// `store`, reporting its changes to fresh signals, and those signals: what a
    /// process's workers and scheduler wait on.
    pub fn listen_to(store: Store) -> (Store, Signals) {
        let signals = Signals::new();
        (store.listened_by(Arc::new(signals.clone())), signals)
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

    /// Wakes the run worker just after each of `due` (wall-clock times, read against
    /// `now`): the due times of run tasks queued ahead of their slots.
    pub fn wake_runs_when_due(&self, due: &[DateTime<Utc>], now: DateTime<Utc>) {
        let now_instant = tokio::time::Instant::now();
        for at in due {
            let wait = (*at - now).to_std().unwrap_or_default();
            self.wake_runs_at(now_instant + wait + WAKE_MARGIN);
        }
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

impl ChangeListener for Signals {
    fn changed(&self, change: Change) {
        match change {
            Change::RunsPushed => self.runs_pushed(),
            Change::DeliveriesPushed => self.deliveries_pushed(),
            Change::ScheduleChanged => self.schedule_changed(),
        }
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

    #[tokio::test(start_paused = true)]
    async fn runs_due_at_a_wall_clock_time_wake_the_worker_then_and_not_before() {
        let s = Signals::new();
        let runs = s.runs();
        let start = tokio::time::Instant::now();
        let now = Utc::now();
        s.wake_runs_when_due(&[now + chrono::Duration::milliseconds(300)], now);
        runs.notified().await;
        assert!(start.elapsed() >= std::time::Duration::from_millis(300));
    }

    #[test]
    fn each_committed_change_raises_its_signal() {
        let s = Signals::new();
        for (change, notify) in [
            (Change::RunsPushed, s.runs()),
            (Change::DeliveriesPushed, s.deliveries()),
            (Change::ScheduleChanged, s.schedule()),
        ] {
            s.changed(change);
            assert!(
                futures::FutureExt::now_or_never(notify.notified()).is_some(),
                "{change:?} raises its signal"
            );
        }
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
