//! Scheduling policy: which of a job's due slots run, which are recorded as missed, and
//! what state a new run starts in. Pure functions; the store writes what they decide.

use super::{CatchUpPolicy, Job, OverlapPolicy, RunOrigin, RunState};
use chrono::{DateTime, Duration, Utc};

/// A slot older than this when the scheduler sees it counts as missed during downtime
/// (and falls to the job's catch-up policy) rather than merely late.
pub const MISFIRE_GRACE: Duration = Duration::seconds(10);
/// `catch_up = all` runs at most this many missed slots per stretch (the newest ones);
/// older ones are recorded as missed. Bounds the burst after a long outage.
pub const MAX_CATCH_UP_RUNS: usize = 100;
/// Slots are enumerated one by one up to this many per job and pass; beyond it (a
/// per-second schedule after a day of downtime) the rest is skipped in one step and
/// the missed row's count is a lower bound.
pub const MAX_SLOTS_SCANNED: usize = 100_000;
/// The longest delay before a job's retry.
pub const MAX_RETRY_DELAY: Duration = Duration::hours(1);

/// The slots of a job that are due, and what to do with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirePlan {
    /// Slots to run, oldest first, with their origin.
    pub fire: Vec<(DateTime<Utc>, RunOrigin)>,
    /// A stretch of slots not run: (first, last, count).
    pub missed: Option<(DateTime<Utc>, DateTime<Utc>, i64)>,
    /// The job's next fire time after this pass.
    pub next: Option<DateTime<Utc>>,
}

/// Decides, from the job's first due slot, which slots run (those due by `until`, which
/// is `now` or, ahead of time, later) and which are recorded as missed, following its
/// catch-up policy: slots more than [`MISFIRE_GRACE`] old were missed during downtime;
/// `none` runs none of them, `latest` the newest (only if no slot is on time), `all` the
/// newest [`MAX_CATCH_UP_RUNS`]; the rest make one missed stretch.
pub fn plan_slots(job: &Job, first_due: DateTime<Utc>, now: DateTime<Utc>, until: DateTime<Utc>) -> FirePlan {
    let schedule = &job.spec.schedule;
    let mut slots = vec![first_due];
    let mut next = schedule.next_after(first_due);
    while let Some(t) = next.filter(|t| *t <= until) {
        if slots.len() >= MAX_SLOTS_SCANNED {
            // Jump past the rest of the outage in one step.
            next = schedule.next_after(now);
            break;
        }
        slots.push(t);
        next = schedule.next_after(t);
    }
    let cut = now - MISFIRE_GRACE;
    let split = slots.partition_point(|t| *t < cut);
    let (stale, on_time) = slots.split_at(split);
    let kept: &[DateTime<Utc>] = match job.spec.catch_up {
        CatchUpPolicy::None => &[],
        CatchUpPolicy::Latest if on_time.is_empty() => &stale[stale.len().saturating_sub(1)..],
        CatchUpPolicy::Latest => &[],
        CatchUpPolicy::All => &stale[stale.len().saturating_sub(MAX_CATCH_UP_RUNS)..],
    };
    let dropped = &stale[..stale.len() - kept.len()];
    let fire = kept
        .iter()
        .map(|t| (*t, RunOrigin::CatchUp))
        .chain(on_time.iter().map(|t| (*t, RunOrigin::Schedule)))
        .collect();
    let missed = match (dropped.first(), dropped.last()) {
        (Some(first), Some(last)) => Some((*first, *last, dropped.len() as i64)),
        _ => None,
    };
    FirePlan { fire, missed, next }
}

/// The state a new run of a job with `overlap` starts in, given whether the job has an
/// unfinished run: `allow` always runs, `skip` records it skipped, `queue` queues it.
pub fn start_state(overlap: OverlapPolicy, active: bool) -> RunState {
    match (overlap, active) {
        (_, false) | (OverlapPolicy::Allow, true) => RunState::Scheduled,
        (OverlapPolicy::Skip, true) => RunState::Skipped,
        (OverlapPolicy::Queue, true) => RunState::Queued,
    }
}

/// Whether a run that ended in `state` on its `attempt` (1-based) is retried, for a job
/// that allows `max_retries` retries: failures and timeouts are, while retries remain.
pub fn retries(state: RunState, attempt: u32, max_retries: u32) -> bool {
    matches!(state, RunState::Failed | RunState::TimedOut) && attempt <= max_retries
}

/// How long after a failed `attempt` (1-based) its retry runs: `base × 2^(attempt-1)`,
/// at most [`MAX_RETRY_DELAY`].
pub fn retry_delay(base: Duration, attempt: u32) -> Duration {
    let exp = 2_i32.saturating_pow(attempt.saturating_sub(1).min(20));
    (base * exp).min(MAX_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{
        CommandTarget, Environment, JobId, JobSpec, Schedule, Target,
        job::{JobName, Tags},
    };
    use proptest::prelude::*;

    fn job(expr: &str, catch_up: CatchUpPolicy) -> Job {
        let spec = JobSpec {
            name: JobName::parse("j").unwrap(),
            schedule: Schedule::parse(expr, "UTC").unwrap(),
            target: Target::Command(
                CommandTarget::parse(vec!["true".into()], Default::default(), None).unwrap(),
            ),
            timeout_seconds: 60,
            max_retries: 0,
            environment: Environment::default(),
            overlap_policy: OverlapPolicy::Allow,
            catch_up,
            tags: Tags::parse(Vec::new()).unwrap(),
            watch: Default::default(),
            alert_after_failures: 0,
        };
        Job {
            id: JobId::generate(),
            spec,
            paused: false,
            next_run_at: None,
            created_at: DateTime::UNIX_EPOCH,
            updated_at: DateTime::UNIX_EPOCH,
            failure_streak: 0,
            failure_alerted: false,
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    #[test]
    fn a_slot_due_now_fires_on_schedule_and_the_next_slot_follows() {
        let j = job("* * * * *", CatchUpPolicy::None);
        let p = plan_slots(&j, at(600), at(600), at(600));
        assert_eq!(p.fire, vec![(at(600), RunOrigin::Schedule)]);
        assert_eq!(p.missed, None);
        assert_eq!(p.next, Some(at(660)));
    }

    #[test]
    fn catch_up_latest_runs_only_the_newest_missed_slot_and_records_the_rest() {
        let j = job("* * * * *", CatchUpPolicy::Latest);
        let p = plan_slots(&j, at(600), at(900), at(900 - 1));
        assert_eq!(p.fire, vec![(at(840), RunOrigin::CatchUp)]);
        assert_eq!(p.missed, Some((at(600), at(780), 4)));
    }

    #[test]
    fn catch_up_latest_runs_no_missed_slot_when_one_is_on_time() {
        let j = job("* * * * *", CatchUpPolicy::Latest);
        let p = plan_slots(&j, at(600), at(900), at(900));
        assert_eq!(p.fire, vec![(at(900), RunOrigin::Schedule)]);
        assert_eq!(p.missed, Some((at(600), at(840), 5)));
    }

    #[test]
    fn the_overlap_policy_decides_a_new_runs_state_only_when_a_run_is_active() {
        for o in [OverlapPolicy::Allow, OverlapPolicy::Skip, OverlapPolicy::Queue] {
            assert_eq!(start_state(o, false), RunState::Scheduled);
        }
        assert_eq!(start_state(OverlapPolicy::Allow, true), RunState::Scheduled);
        assert_eq!(start_state(OverlapPolicy::Skip, true), RunState::Skipped);
        assert_eq!(start_state(OverlapPolicy::Queue, true), RunState::Queued);
    }

    #[test]
    fn job_retries_back_off_exponentially_up_to_an_hour() {
        let base = Duration::seconds(10);
        assert_eq!(retry_delay(base, 1), Duration::seconds(10));
        assert_eq!(retry_delay(base, 2), Duration::seconds(20));
        assert_eq!(retry_delay(base, 4), Duration::seconds(80));
        assert_eq!(retry_delay(base, 30), MAX_RETRY_DELAY);
        assert!(retries(RunState::Failed, 2, 2));
        assert!(retries(RunState::TimedOut, 1, 2));
        assert!(!retries(RunState::Failed, 3, 2));
        assert!(!retries(RunState::Completed, 1, 2));
        assert!(!retries(RunState::Cancelled, 1, 2));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever the outage and policy: never more than MAX_CATCH_UP_RUNS catch-up runs,
        /// every slot fired lies within the stretch (first due .. until), slots fire in
        /// order, and every slot is either fired or counted missed (while under the scan
        /// limit).
        #[test]
        fn a_plan_stays_within_the_stretch_and_bounds_catch_up(
            outage in 0_i64..3_000,
            ahead in 0_i64..120,
            policy in prop_oneof![Just(CatchUpPolicy::None), Just(CatchUpPolicy::Latest), Just(CatchUpPolicy::All)],
        ) {
            let j = job("* * * * * *", policy);
            let first = at(1_000_000);
            let now = first + Duration::seconds(outage);
            let until = now + Duration::seconds(ahead);
            let p = plan_slots(&j, first, now, until);
            let catch_up = p.fire.iter().filter(|(_, o)| *o == RunOrigin::CatchUp).count();
            prop_assert!(catch_up <= MAX_CATCH_UP_RUNS);
            prop_assert!(p.fire.iter().all(|(t, _)| *t >= first && *t <= until));
            prop_assert!(p.fire.windows(2).all(|w| w[0].0 < w[1].0));
            let missed = p.missed.map_or(0, |m| m.2);
            prop_assert_eq!(p.fire.len() as i64 + missed, outage + ahead + 1);
            prop_assert!(p.next.is_some_and(|n| n > until));
        }

        #[test]
        fn a_retry_delay_is_never_above_the_cap(base_s in 0_i64..100_000, attempt in 0_u32..u32::MAX) {
            let d = retry_delay(Duration::seconds(base_s), attempt);
            prop_assert!(d <= MAX_RETRY_DELAY && d >= Duration::zero());
        }
    }
}
