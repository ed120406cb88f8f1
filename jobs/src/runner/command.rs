//! Runs one job command as a supervised process group.
//!
//! [`run_command`] starts the command directly (no shell) in a process group of its own,
//! captures its output within a budget, and enforces the timeout and cancellation by
//! signalling the *whole group*, so helpers a job forks off (`sh -c 'worker & wait'`) go
//! down with it. The process-group id is handed to the caller right after spawn so it
//! can be persisted; after a runner crash, [`kill_process_group`] finishes the job off.
//!
//! Kill sequence (timeout, cancel): `SIGTERM` (+ `SIGCONT`, so stopped members can act
//! on it) to the group → wait up to [`RunLimits::kill_grace`] → `SIGKILL` to the group.
//! Whatever way the leader ends, the group gets one more `SIGKILL` afterwards to reap
//! stragglers, and the output pipes are drained for at most [`OUTPUT_DRAIN_TIMEOUT`].
//!
//! Limits of the approach (see the process-supervision research notes): a process that leaves
//! the group (`setsid`, double fork into a new session) is not reached, and because
//! `unsafe` is forbidden there is no `PR_SET_PDEATHSIG`, so if the runner itself is
//! SIGKILLed the job keeps running until crash recovery kills its group.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::pin::Pin;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::{Pid, getpgrp};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, ChildStderr, ChildStdout, Command};
use tokio_util::sync::CancellationToken;

use super::output::{BoundedOutput, DEFAULT_OUTPUT_LIMIT};

/// Default time a job gets between `SIGTERM` and `SIGKILL`.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);

/// Default size of the stderr tail kept as the stack trace of a failed run.
pub const DEFAULT_STACK_TRACE_LIMIT: usize = 8 * 1024;

/// How long output is still read after the group was killed.
///
/// Normally the pipes reach EOF at once, because every writer is dead. Only a process
/// that escaped the group (e.g. via `setsid`) can keep them open; this bounds the wait.
pub const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_millis(500);

/// Exit code reported when the program could not be found (shell convention).
const EXIT_NOT_FOUND: i32 = 127;
/// Exit code reported when the program was found but could not be started (shell
/// convention); also used for an unusable working directory.
const EXIT_CANNOT_EXECUTE: i32 = 126;

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CommandSpec {
    /// Program followed by its arguments. The program is looked up in `PATH` unless it
    /// contains a `/`; no shell is involved, so nothing is expanded or split.
    pub argv: Vec<String>,
    /// Variables added to (or overriding) the runner's own environment.
    pub env: BTreeMap<String, String>,
    /// Directory to start in; the runner's own when `None`.
    pub working_dir: Option<String>,
}

/// Bounds on one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLimits {
    /// Wall-clock time after which the job is terminated and reported as timed out.
    pub timeout: Duration,
    /// Time between `SIGTERM` and `SIGKILL`, so a job can clean up before it is killed.
    pub kill_grace: Duration,
    /// Budget of the combined stdout+stderr log (half head, half tail).
    pub output_limit: usize,
    /// Budget of the stderr tail kept as the stack trace.
    pub stack_trace_limit: usize,
}

impl RunLimits {
    /// Limits with the given timeout and the default grace and output budgets.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            kill_grace: DEFAULT_KILL_GRACE,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            stack_trace_limit: DEFAULT_STACK_TRACE_LIMIT,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    /// The program exited with status 0.
    Completed,
    /// The program exited non-zero, was killed by a signal it did not get from the
    /// runner, or could not be started at all.
    Failed,
    /// The runner killed the program because it ran past [`RunLimits::timeout`].
    TimedOut,
    /// The runner killed the program because the cancel token fired (user cancel or
    /// worker shutdown).
    Cancelled,
}

/// Everything the runner learned about one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    /// How the run ended.
    pub kind: OutcomeKind,
    /// Exit code, or `128 + signal` when the program died from a signal; 127/126 when it
    /// could not be started; `None` if no status could be obtained.
    pub exit_code: Option<i32>,
    /// Human-readable explanation for anything but a clean exit.
    pub message: Option<String>,
    /// Combined stdout and stderr in arrival order, bounded by
    /// [`RunLimits::output_limit`].
    pub output: String,
    /// Last bytes of stderr alone, for `Failed` and `TimedOut` runs that wrote any.
    pub stack_trace: Option<String>,
    /// Wall-clock time from start to the end of output collection.
    pub duration: Duration,
    /// Process-group id (= pid of the program), if it was started.
    pub pgid: Option<u32>,
}

/// Why [`kill_process_group`] refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum KillGroupError {
    /// The id cannot belong to a job's group: 0 and 1 have special meanings to `kill(2)`
    /// and values above `i32::MAX` are not pids.
    #[error("{0} is not a valid job process-group id")]
    InvalidPgid(u32),
    /// The id is the runner's own group; signalling it would kill the runner.
    #[error("process group {0} is the runner's own group")]
    OwnGroup(u32),
    /// The kernel refused the signal (typically `EPERM`).
    #[error("could not send SIGKILL to process group {pgid}")]
    Signal {
        /// The group that was targeted.
        pgid: u32,
        /// The error from `killpg(2)`.
        #[source]
        source: Errno,
    },
}

/// Sends `SIGKILL` to process group `pgid`, for crash recovery of runs whose pgid was
/// persisted. Returns `Ok(false)` if no such group exists (any more).
///
/// The caller must make sure the group still belongs to the job (same boot, leader
/// start time) before calling this: once all members are dead, the number may be reused.
/// [`kill_recorded_group`] does both.
pub fn kill_process_group(pgid: u32) -> Result<bool, KillGroupError> {
    let raw = i32::try_from(pgid)
        .ok()
        .filter(|&raw| raw > 1)
        .ok_or(KillGroupError::InvalidPgid(pgid))?;
    let group = Pid::from_raw(raw);
    if group == getpgrp() {
        return Err(KillGroupError::OwnGroup(pgid));
    }
    match killpg(group, Signal::SIGKILL) {
        Ok(()) => Ok(true),
        Err(Errno::ESRCH) => Ok(false),
        Err(source) => Err(KillGroupError::Signal { pgid, source }),
    }
}

/// A command's process group as recorded for crash recovery: what tells, later, whether
/// a group with this id is still the job's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedGroup {
    /// The group's id (the pid of its leader, the job's program).
    pub pgid: u32,
    /// The host boot it was recorded in: in another boot the number means nothing.
    pub boot_id: String,
    /// When the leader started ([`process_start_time`]); `None` if it could not be read
    /// (the leader had already exited), and then the group is never killed.
    pub leader_start: Option<u64>,
}

/// What [`kill_recorded_group`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryKill {
    /// The group was still the job's, and was sent `SIGKILL`.
    Killed,
    /// No process is in the group any more: nothing to do.
    Gone,
    /// Recorded in another boot (or this host's boot id is unknown): not touched.
    OtherBoot,
    /// The id now belongs to processes the job did not start (a leader that started at
    /// another time, or members older than the job), or the job's start time is
    /// unknown: not touched.
    NotTheJobs,
}

/// When process `pid` started, in clock ticks since boot (field 22 of
/// `/proc/<pid>/stat`), or `None` if there is no such process.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ..." : comm may hold anything, so count fields after the last ')'.
    // Field 22 is the 20th after it (fields 3, 4, … are the 1st, 2nd, …).
    stat.rsplit_once(')')?.1.split_whitespace().nth(19)?.parse().ok()
}

/// The live (non-zombie) members of process group `pgid` and their start times (as
/// [`process_start_time`] gives them), from `/proc`.
pub fn live_group_members(pgid: u32) -> Vec<(u32, u64)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let (state, group, start) = (fields.first()?, fields.get(2)?, fields.get(19)?);
            (*state != "Z" && group.parse::<u32>().ok()? == pgid).then_some((pid, start.parse().ok()?))
        })
        .collect()
}

/// Sends `SIGKILL` to a recorded process group after a runner crash, but only while it is
/// still the job's. A group id is a pid, and pids are reused: once every member of the
/// job's group is dead, the number can name another process's group, within the same
/// boot (sooner when thousands of runs start per second). So the group is killed only if
/// it was recorded in this boot (`this_boot`), and its leader is either the job's
/// program (its start time is the recorded one) or gone, with every remaining member
/// started no earlier than the job (members the job forked; a process older than the
/// job cannot be one of them).
pub fn kill_recorded_group(group: &RecordedGroup, this_boot: &str) -> Result<RecoveryKill, KillGroupError> {
    if this_boot.is_empty() || group.boot_id != this_boot {
        return Ok(RecoveryKill::OtherBoot);
    }
    let Some(job_start) = group.leader_start else {
        return Ok(RecoveryKill::NotTheJobs);
    };
    let members = live_group_members(group.pgid);
    if members.is_empty() {
        return Ok(RecoveryKill::Gone);
    }
    let leader_is_the_jobs = match members.iter().find(|(pid, _)| *pid == group.pgid) {
        Some((_, start)) => *start == job_start,
        None => members.iter().all(|(_, start)| *start >= job_start),
    };
    if !leader_is_the_jobs {
        return Ok(RecoveryKill::NotTheJobs);
    }
    Ok(if kill_process_group(group.pgid)? {
        RecoveryKill::Killed
    } else {
        RecoveryKill::Gone
    })
}

/// Runs `spec` to completion within `limits`; never panics and never returns an error:
/// every way a run can end is a [`CommandOutcome`].
///
/// `on_spawn` is called with the process-group id right after the program started and
/// before any waiting, so the caller can persist it for crash recovery. It is not called
/// if the program could not be started or `cancel` had already fired.
///
/// Dropping the returned future kills the whole process group.
pub async fn run_command(
    spec: &CommandSpec,
    limits: &RunLimits,
    cancel: &CancellationToken,
    on_spawn: impl FnOnce(u32),
) -> CommandOutcome {
    let started = Instant::now();
    if cancel.is_cancelled() {
        return not_started(
            OutcomeKind::Cancelled,
            None,
            "cancelled before the command was started",
            started,
        );
    }
    let mut child = match spawn(spec).await {
        Ok(child) => child,
        Err((code, message)) => return not_started(OutcomeKind::Failed, Some(code), &message, started),
    };
    // The pid is only `None` once the child has been reaped, which cannot have happened yet.
    let Some((pgid, pgid_u32)) = child
        .id()
        .and_then(|id| Some((Pid::from_raw(i32::try_from(id).ok()?), id)))
    else {
        let _ = child.start_kill();
        return not_started(
            OutcomeKind::Failed,
            None,
            "the started program has no usable pid",
            started,
        );
    };
    let mut group = GroupGuard { pgid: Some(pgid) };
    tracing::debug!(pgid = pgid_u32, program = ?spec.argv.first(), "command started");
    on_spawn(pgid_u32);

    let mut combined = BoundedOutput::new(limits.output_limit);
    let mut stderr_tail = BoundedOutput::with_split(0, limits.stack_trace_limit);
    let ending = {
        let pump = pump_output(
            child.stdout.take(),
            child.stderr.take(),
            &mut combined,
            &mut stderr_tail,
        );
        tokio::pin!(pump);
        let mut pump_done = false;
        let ending = supervise(&mut child, &group, pump.as_mut(), &mut pump_done, limits, cancel).await;

        // Background members may outlive the leader and hold the pipes open: kill them,
        // then read whatever is left for a bounded time.
        group.kill_remaining();
        if !pump_done && tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, pump).await.is_err() {
            tracing::warn!(
                pgid = pgid_u32,
                "output still open after the group was killed; stopped reading"
            );
        }
        ending
    };

    let (kind, message) = ending.describe(limits);
    let stack_trace = match kind {
        OutcomeKind::Failed | OutcomeKind::TimedOut if !stderr_tail.is_empty() => {
            Some(stderr_tail.tail(limits.stack_trace_limit))
        }
        _ => None,
    };
    CommandOutcome {
        kind,
        exit_code: ending.status.as_ref().ok().and_then(exit_code_of),
        message,
        output: combined.render(),
        stack_trace,
        duration: started.elapsed(),
        pgid: Some(pgid_u32),
    }
}

/// Why the runner stepped in before the program exited.
#[derive(Debug, Clone, Copy)]
enum Stop {
    TimedOut,
    Cancelled,
}

/// How the leader ended, and what the runner did to end it.
struct Ending {
    status: io::Result<ExitStatus>,
    /// `Some` if the runner terminated the group.
    stop: Option<Stop>,
    /// Whether SIGTERM was not enough and the group had to be SIGKILLed.
    escalated: bool,
}

impl Ending {
    /// The outcome kind and the message explaining it.
    fn describe(&self, limits: &RunLimits) -> (OutcomeKind, Option<String>) {
        let how = if self.escalated {
            format!(
                "sent SIGTERM to the process group, then SIGKILL after the {:?} grace",
                limits.kill_grace
            )
        } else {
            "sent SIGTERM to the process group".to_owned()
        };
        match (self.stop, &self.status) {
            (Some(Stop::TimedOut), _) => (
                OutcomeKind::TimedOut,
                Some(format!("timed out after {:?}; {how}", limits.timeout)),
            ),
            (Some(Stop::Cancelled), _) => (OutcomeKind::Cancelled, Some(format!("cancelled; {how}"))),
            (None, Ok(status)) if status.success() => (OutcomeKind::Completed, None),
            (None, Ok(status)) => (OutcomeKind::Failed, Some(describe_status(status))),
            (None, Err(err)) => (
                OutcomeKind::Failed,
                Some(format!("could not wait for the command: {err}")),
            ),
        }
    }
}

/// Waits for the leader to exit, enforcing the timeout and cancellation with the kill
/// sequence, while `pump` keeps reading output.
async fn supervise<P: Future<Output = ()>>(
    child: &mut Child,
    group: &GroupGuard,
    mut pump: Pin<&mut P>,
    pump_done: &mut bool,
    limits: &RunLimits,
    cancel: &CancellationToken,
) -> Ending {
    let interrupt = async {
        tokio::select! {
            () = tokio::time::sleep(limits.timeout) => Stop::TimedOut,
            () = cancel.cancelled() => Stop::Cancelled,
        }
    };
    let stop = match wait_pumping(child, pump.as_mut(), pump_done, interrupt).await {
        Waited::Exited(status) => {
            return Ending {
                status,
                stop: None,
                escalated: false,
            };
        }
        Waited::Interrupted(stop) => stop,
    };

    tracing::info!(pgid = group.raw(), ?stop, "terminating process group");
    group.signal(Signal::SIGTERM);
    // A stopped process would only act on SIGTERM once continued.
    group.signal(Signal::SIGCONT);
    let grace = tokio::time::sleep(limits.kill_grace);
    if let Waited::Exited(status) = wait_pumping(child, pump.as_mut(), pump_done, grace).await {
        return Ending {
            status,
            stop: Some(stop),
            escalated: false,
        };
    }

    tracing::info!(pgid = group.raw(), "grace period over, killing process group");
    group.signal(Signal::SIGKILL);
    let never = std::future::pending::<Infallible>();
    let Waited::Exited(status) = wait_pumping(child, pump, pump_done, never).await;
    Ending {
        status,
        stop: Some(stop),
        escalated: true,
    }
}

/// Result of [`wait_pumping`].
enum Waited<T> {
    Exited(io::Result<ExitStatus>),
    Interrupted(T),
}

/// Starts the program, or explains (exit code, message) why it could not be started.
async fn spawn(spec: &CommandSpec) -> Result<Child, (i32, String)> {
    let Some((program, args)) = spec.argv.split_first() else {
        return Err((
            EXIT_NOT_FOUND,
            "the command is empty: no program to run".to_owned(),
        ));
    };
    if let Some(dir) = &spec.working_dir {
        // Checked up front because a failing chdir reports the same ENOENT as a missing
        // program, which would produce a misleading message.
        match tokio::fs::metadata(dir).await {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err((
                    EXIT_CANNOT_EXECUTE,
                    format!("working directory `{dir}` is not a directory"),
                ));
            }
            Err(err) => {
                return Err((
                    EXIT_CANNOT_EXECUTE,
                    format!("working directory `{dir}` is unusable: {err}"),
                ));
            }
        }
    }

    let mut command = Command::new(program);
    command
        .args(args)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // pgid = pid; lets us signal every process the job forks. No pre_exec needed.
        .process_group(0)
        // Only reaches the leader; `GroupGuard` covers the rest of the group.
        .kill_on_drop(true);
    if let Some(dir) = &spec.working_dir {
        command.current_dir(dir);
    }
    command.spawn().map_err(|err| match err.kind() {
        io::ErrorKind::NotFound if program.contains('/') => {
            (EXIT_NOT_FOUND, format!("program `{program}` not found"))
        }
        io::ErrorKind::NotFound => (EXIT_NOT_FOUND, format!("program `{program}` not found in PATH")),
        io::ErrorKind::PermissionDenied => (
            EXIT_CANNOT_EXECUTE,
            format!("permission denied: cannot execute `{program}`"),
        ),
        _ => (EXIT_CANNOT_EXECUTE, format!("cannot execute `{program}`: {err}")),
    })
}

/// An outcome for a run whose program never ran.
fn not_started(kind: OutcomeKind, exit_code: Option<i32>, message: &str, started: Instant) -> CommandOutcome {
    CommandOutcome {
        kind,
        exit_code,
        message: Some(message.to_owned()),
        output: String::new(),
        stack_trace: None,
        duration: started.elapsed(),
        pgid: None,
    }
}

/// Waits for the leader to exit while keeping the pipes drained (so a chatty child never
/// blocks on a full pipe), unless `interrupt` completes first.
async fn wait_pumping<P, I>(
    child: &mut Child,
    mut pump: Pin<&mut P>,
    pump_done: &mut bool,
    interrupt: I,
) -> Waited<I::Output>
where
    P: Future<Output = ()>,
    I: Future,
{
    tokio::pin!(interrupt);
    loop {
        tokio::select! {
            // Biased: an exit that races with the timeout counts as an exit.
            biased;
            () = pump.as_mut(), if !*pump_done => *pump_done = true,
            status = child.wait() => return Waited::Exited(status),
            reason = &mut interrupt => return Waited::Interrupted(reason),
        }
    }
}

/// Reads stdout and stderr until both reach EOF. Both go into `combined` in the order the
/// chunks arrive; stderr also goes into `stderr_tail`.
///
/// Cancel-safe at every await: dropping it loses no byte that was already read.
async fn pump_output(
    mut stdout: Option<ChildStdout>,
    mut stderr: Option<ChildStderr>,
    combined: &mut BoundedOutput,
    stderr_tail: &mut BoundedOutput,
) {
    let mut out_buf = vec![0u8; 8 * 1024];
    let mut err_buf = vec![0u8; 8 * 1024];
    while stdout.is_some() || stderr.is_some() {
        tokio::select! {
            read = read_chunk(stdout.as_mut(), &mut out_buf) => match read {
                Some(n) => combined.push(&out_buf[..n]),
                None => stdout = None,
            },
            read = read_chunk(stderr.as_mut(), &mut err_buf) => match read {
                Some(n) => {
                    combined.push(&err_buf[..n]);
                    stderr_tail.push(&err_buf[..n]);
                }
                None => stderr = None,
            },
        }
    }
}

/// One read: `Some(n)` with data, `None` at EOF or on error; pending forever for a
/// stream that is already closed, so `select!` simply ignores it.
async fn read_chunk<R: AsyncRead + Unpin>(reader: Option<&mut R>, buf: &mut [u8]) -> Option<usize> {
    let Some(reader) = reader else {
        return std::future::pending().await;
    };
    match reader.read(buf).await {
        Ok(0) => None,
        Ok(n) => Some(n),
        Err(err) => {
            tracing::warn!(%err, "reading command output failed; treating it as EOF");
            None
        }
    }
}

/// The job's process group; `SIGKILL`s it when dropped unless already finished, so an
/// aborted `run_command` (task cancelled, runtime shut down) leaves nothing running.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    /// The group id, for logs (0 once disarmed).
    fn raw(&self) -> i32 {
        self.pgid.map_or(0, Pid::as_raw)
    }

    /// Sends `signal` to the whole group, if still armed.
    fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            signal_group(pgid, signal);
        }
    }

    /// `SIGKILL`s whatever is left of the group and disarms the guard, so the number is
    /// never signalled again after it may have been reused.
    fn kill_remaining(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            signal_group(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.kill_remaining();
    }
}

/// `killpg`, treating "no such group" as success and logging anything else.
fn signal_group(pgid: Pid, signal: Signal) {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => {}
        Err(err) => tracing::warn!(pgid = pgid.as_raw(), %signal, %err, "could not signal process group"),
    }
}

/// The shell's view of a status: the code, or 128 + signal number.
fn exit_code_of(status: &ExitStatus) -> Option<i32> {
    status.code().or_else(|| status.signal().map(|sig| 128 + sig))
}

/// Explains a non-zero status, e.g. `killed by signal 9 (SIGKILL)`.
fn describe_status(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(sig) => {
            let name = Signal::try_from(sig).map_or("unknown signal", Signal::as_str);
            let core = if status.core_dumped() { ", core dumped" } else { "" };
            format!("killed by signal {sig} ({name}{core})")
        }
        None => format!("ended with unrecognised status {status}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use nix::sys::signal::kill;

    use super::*;

    fn sh(script: &str) -> CommandSpec {
        CommandSpec {
            argv: vec!["sh".into(), "-c".into(), script.into()],
            ..CommandSpec::default()
        }
    }

    fn argv(args: &[&str]) -> CommandSpec {
        CommandSpec {
            argv: args.iter().map(|arg| (*arg).to_owned()).collect(),
            ..CommandSpec::default()
        }
    }

    fn limits(timeout: Duration, kill_grace: Duration) -> RunLimits {
        RunLimits {
            kill_grace,
            ..RunLimits::new(timeout)
        }
    }

    const LONG: Duration = Duration::from_secs(30);

    /// Runs `spec` and checks that `on_spawn` saw the same pgid as the outcome.
    async fn run(spec: &CommandSpec, limits: &RunLimits) -> CommandOutcome {
        let seen = Arc::new(Mutex::new(None));
        let seen_in_callback = Arc::clone(&seen);
        let outcome = run_command(spec, limits, &CancellationToken::new(), move |pgid| {
            *seen_in_callback.lock().unwrap() = Some(pgid);
        })
        .await;
        assert_eq!(
            *seen.lock().unwrap(),
            outcome.pgid,
            "on_spawn got the outcome's pgid"
        );
        outcome
    }

    /// Members of group `pgid` that are still running (not zombies), from `/proc`.
    fn live_members(pgid: u32) -> Vec<u32> {
        let mut live = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            // Process may have gone since read_dir.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // "pid (comm) state ppid pgrp ..."; comm may contain anything, so split after ')'.
            let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().collect();
            if fields[2].parse::<u32>() == Ok(pgid) && fields[0] != "Z" {
                live.push(pid);
            }
        }
        live
    }

    /// Asserts that nothing of group `pgid` runs any more, then waits until the group is
    /// gone for good (`kill(-pgid, 0)` → `ESRCH`).
    ///
    /// The second part needs a bounded wait: killed grandchildren are orphans and their
    /// zombies (which `kill` still counts) are reaped by PID 1 whenever it gets to it;
    /// this VM's init does so only about every 1.5 s.
    async fn assert_group_is_dead(pgid: u32) {
        assert_eq!(
            live_members(pgid),
            Vec::<u32>::new(),
            "live members of group {pgid}"
        );
        let raw = Pid::from_raw(-i32::try_from(pgid).unwrap());
        let reaped = tokio::time::timeout(Duration::from_secs(10), async {
            while kill(raw, None) != Err(Errno::ESRCH) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(reaped.is_ok(), "zombies of group {pgid} were never reaped");
    }

    /// Waits (bounded) for a group sent SIGKILL to die, which happens asynchronously, then
    /// asserts it is gone for good.
    async fn assert_killed_group_dies(pgid: u32) {
        let died = tokio::time::timeout(Duration::from_secs(10), async {
            while !live_members(pgid).is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(died.is_ok(), "group {pgid} still has live members");
        assert_group_is_dead(pgid).await;
    }

    #[tokio::test]
    async fn exit_zero_is_completed() {
        let outcome = run(&sh("echo hello"), &RunLimits::new(LONG)).await;
        assert_eq!(outcome.kind, OutcomeKind::Completed);
        assert_eq!(outcome.exit_code, Some(0));
        assert_eq!(outcome.message, None);
        assert_eq!(outcome.output, "hello\n");
        assert_eq!(outcome.stack_trace, None);
        assert!(outcome.pgid.is_some());
    }

    #[tokio::test]
    async fn non_zero_exit_is_failed_with_its_code() {
        let outcome = run(&sh("exit 3"), &RunLimits::new(LONG)).await;
        assert_eq!(outcome.kind, OutcomeKind::Failed);
        assert_eq!(outcome.exit_code, Some(3));
        assert_eq!(outcome.message.as_deref(), Some("exited with code 3"));
    }

    #[tokio::test]
    async fn death_by_signal_is_failed_with_128_plus_the_signal() {
        let outcome = run(&sh("kill -9 $$"), &RunLimits::new(LONG)).await;
        assert_eq!(outcome.kind, OutcomeKind::Failed);
        assert_eq!(outcome.exit_code, Some(137));
        assert_eq!(outcome.message.as_deref(), Some("killed by signal 9 (SIGKILL)"));
    }

    #[tokio::test]
    async fn timeout_terminates_the_whole_group() {
        let limits = limits(Duration::from_millis(300), Duration::from_secs(10));
        let outcome = run(&sh("sleep 1000 & sleep 1000"), &limits).await;
        assert_eq!(outcome.kind, OutcomeKind::TimedOut);
        assert_eq!(outcome.exit_code, Some(128 + 15));
        let message = outcome.message.unwrap();
        assert!(message.starts_with("timed out after 300ms"), "{message}");
        assert!(!message.contains("SIGKILL"), "SIGTERM was enough: {message}");
        assert!(outcome.duration >= Duration::from_millis(300));
        assert!(
            outcome.duration < Duration::from_secs(10),
            "did not wait for the grace"
        );
        assert_group_is_dead(outcome.pgid.unwrap()).await;
    }

    #[tokio::test]
    async fn a_group_ignoring_sigterm_is_killed_after_the_grace() {
        let limits = limits(Duration::from_millis(300), Duration::from_millis(300));
        let outcome = run(&sh("trap '' TERM; sleep 1000 & sleep 1000"), &limits).await;
        assert_eq!(outcome.kind, OutcomeKind::TimedOut);
        assert_eq!(outcome.exit_code, Some(128 + 9));
        let message = outcome.message.unwrap();
        assert!(
            message.contains("then SIGKILL after the 300ms grace"),
            "{message}"
        );
        assert!(outcome.duration >= Duration::from_millis(600));
        assert_group_is_dead(outcome.pgid.unwrap()).await;
    }

    #[tokio::test]
    async fn background_child_holding_the_pipe_is_killed_when_the_leader_exits() {
        let outcome = run(&sh("sleep 1000 & echo started"), &RunLimits::new(LONG)).await;
        assert_eq!(outcome.kind, OutcomeKind::Completed);
        assert_eq!(outcome.output, "started\n");
        assert!(
            outcome.duration < OUTPUT_DRAIN_TIMEOUT,
            "EOF came from the kill, not the drain bound"
        );
        assert_group_is_dead(outcome.pgid.unwrap()).await;
    }

    #[tokio::test]
    async fn process_escaping_the_group_cannot_hang_output_collection() {
        // The escapee leaves the group with `setsid` (and says so through a FIFO before the
        // leader exits), so the final SIGKILL misses it and it keeps the output pipe open;
        // only the drain bound ends the run. It exits by itself after 3 s.
        let script = r#"f=$(mktemp -u); mkfifo "$f"
            setsid sh -c "echo > '$f'; exec sleep 3" &
            read x < "$f"; rm "$f"; echo started"#;
        let outcome = run(&sh(script), &RunLimits::new(LONG)).await;
        assert_eq!(outcome.kind, OutcomeKind::Completed);
        assert_eq!(outcome.output, "started\n");
        assert!(outcome.duration >= OUTPUT_DRAIN_TIMEOUT, "{:?}", outcome.duration);
        assert!(
            outcome.duration < Duration::from_secs(3),
            "{:?}",
            outcome.duration
        );
    }

    #[tokio::test]
    async fn output_over_the_limit_keeps_head_and_tail() {
        let script = "printf HEAD; head -c 100000 /dev/zero | tr '\\0' x; printf TAIL";
        let limits = RunLimits {
            output_limit: 1000,
            ..RunLimits::new(LONG)
        };
        let outcome = run(&sh(script), &limits).await;
        assert_eq!(outcome.kind, OutcomeKind::Completed);
        let head = format!("HEAD{}", "x".repeat(496));
        let tail = format!("{}TAIL", "x".repeat(496));
        assert_eq!(
            outcome.output,
            format!("{head}\n[… 99008 bytes omitted …]\n{tail}")
        );
    }

    #[tokio::test]
    async fn large_output_on_both_streams_does_not_deadlock() {
        let script = "head -c 5000000 /dev/zero; head -c 5000000 /dev/zero >&2; exit 1";
        let outcome = run(&sh(script), &RunLimits::new(LONG)).await;
        assert_eq!(outcome.kind, OutcomeKind::Failed);
        assert!(
            outcome.output.contains("[… 9934464 bytes omitted …]"),
            "10 MB minus 64 KiB cut"
        );
        assert_eq!(outcome.stack_trace.unwrap().len(), DEFAULT_STACK_TRACE_LIMIT);
    }

    #[tokio::test]
    async fn stderr_tail_becomes_the_stack_trace() {
        let script =
            "echo to-stdout; i=0; while [ $i -lt 100 ]; do echo line$i >&2; i=$((i+1)); done; exit 2";
        let limits = RunLimits {
            stack_trace_limit: 20,
            ..RunLimits::new(LONG)
        };
        let outcome = run(&sh(script), &limits).await;
        assert_eq!(outcome.kind, OutcomeKind::Failed);
        let all_stderr: String = (0..100).map(|i| format!("line{i}\n")).collect();
        assert_eq!(
            outcome.stack_trace.as_deref(),
            Some(&all_stderr[all_stderr.len() - 20..])
        );
        assert!(
            outcome.output.contains("to-stdout\n"),
            "stdout is in the combined log"
        );
        assert!(outcome.output.contains("line0\n") && outcome.output.contains("line99\n"));
    }

    #[tokio::test]
    async fn successful_run_has_no_stack_trace() {
        let outcome = run(&sh("echo warning >&2"), &RunLimits::new(LONG)).await;
        assert_eq!(outcome.kind, OutcomeKind::Completed);
        assert_eq!(outcome.output, "warning\n");
        assert_eq!(outcome.stack_trace, None);
    }

    #[tokio::test]
    async fn cancel_terminates_the_group_and_reports_cancelled() {
        let cancel = CancellationToken::new();
        let outcome = run_command(
            &sh("sleep 1000 & sleep 1000"),
            &RunLimits::new(LONG),
            &cancel,
            |_| cancel.cancel(),
        )
        .await;
        assert_eq!(outcome.kind, OutcomeKind::Cancelled);
        assert_eq!(
            outcome.message.as_deref(),
            Some("cancelled; sent SIGTERM to the process group")
        );
        assert_eq!(outcome.stack_trace, None);
        assert_group_is_dead(outcome.pgid.unwrap()).await;
    }

    #[tokio::test]
    async fn cancel_before_start_starts_nothing() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let outcome = run_command(&sh("echo hi"), &RunLimits::new(LONG), &cancel, |_| {
            panic!("must not spawn");
        })
        .await;
        assert_eq!(outcome.kind, OutcomeKind::Cancelled);
        assert_eq!(outcome.pgid, None);
    }

    #[tokio::test]
    async fn missing_program_fails_with_127_and_says_so() {
        let outcome = run(&argv(&["/nonexistent/cronflow-job"]), &RunLimits::new(LONG)).await;
        assert_eq!(outcome.kind, OutcomeKind::Failed);
        assert_eq!(outcome.exit_code, Some(127));
        assert_eq!(
            outcome.message.as_deref(),
            Some("program `/nonexistent/cronflow-job` not found")
        );
        assert_eq!(outcome.pgid, None);

        let outcome = run(&argv(&["cronflow-no-such-program", "arg"]), &RunLimits::new(LONG)).await;
        assert_eq!(outcome.exit_code, Some(127));
        assert_eq!(
            outcome.message.as_deref(),
            Some("program `cronflow-no-such-program` not found in PATH")
        );
    }

    #[tokio::test]
    async fn non_executable_program_fails_with_126() {
        // A directory exists but can never be executed, whoever runs the tests.
        let outcome = run(&argv(&["/"]), &RunLimits::new(LONG)).await;
        assert_eq!(outcome.kind, OutcomeKind::Failed);
        assert_eq!(outcome.exit_code, Some(126));
        assert_eq!(
            outcome.message.as_deref(),
            Some("permission denied: cannot execute `/`")
        );
    }

    #[tokio::test]
    async fn bad_working_directory_is_named_in_the_failure() {
        let spec = CommandSpec {
            working_dir: Some("/nonexistent/dir".into()),
            ..argv(&["true"])
        };
        let outcome = run(&spec, &RunLimits::new(LONG)).await;
        assert_eq!(outcome.kind, OutcomeKind::Failed);
        assert_eq!(outcome.exit_code, Some(126));
        let message = outcome.message.unwrap();
        assert!(
            message.starts_with("working directory `/nonexistent/dir` is unusable"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn empty_command_fails_without_panicking() {
        let outcome = run(&argv(&[]), &RunLimits::new(LONG)).await;
        assert_eq!(outcome.kind, OutcomeKind::Failed);
        assert_eq!(outcome.exit_code, Some(127));
    }

    #[tokio::test]
    async fn env_is_added_and_working_dir_applied_without_a_shell() {
        let spec = CommandSpec {
            argv: vec![
                "sh".into(),
                "-c".into(),
                "echo \"$CRONFLOW_TEST_VAR\"; pwd".into(),
            ],
            env: BTreeMap::from([("CRONFLOW_TEST_VAR".to_owned(), "a b;$(x)".to_owned())]),
            working_dir: Some("/".into()),
        };
        let outcome = run(&spec, &RunLimits::new(LONG)).await;
        assert_eq!(
            outcome.output, "a b;$(x)\n/\n",
            "value passed verbatim, not expanded"
        );

        let outcome = run(&argv(&["sh", "-c", "echo \"[$PATH]\""]), &RunLimits::new(LONG)).await;
        assert_ne!(outcome.output, "[]\n", "the runner's environment is inherited");
    }

    #[tokio::test]
    async fn dropping_the_run_kills_the_whole_group() {
        let (pgid_tx, pgid_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(async move {
            let cancel = CancellationToken::new();
            run_command(
                &sh("sleep 1000 & sleep 1000"),
                &RunLimits::new(LONG),
                &cancel,
                |pgid| {
                    let _ = pgid_tx.send(pgid);
                },
            )
            .await
        });
        let pgid = pgid_rx.await.unwrap();
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert_killed_group_dies(pgid).await;
    }

    #[tokio::test]
    async fn kill_process_group_kills_a_running_job_and_refuses_dangerous_ids() {
        let (pgid_tx, pgid_rx) = tokio::sync::oneshot::channel();
        let run = tokio::spawn(async move {
            let cancel = CancellationToken::new();
            run_command(
                &sh("sleep 1000 & sleep 1000"),
                &RunLimits::new(LONG),
                &cancel,
                |pgid| {
                    let _ = pgid_tx.send(pgid);
                },
            )
            .await
        });
        let pgid = pgid_rx.await.unwrap();
        assert!(kill_process_group(pgid).unwrap(), "the group existed");
        let outcome = run.await.unwrap();
        assert_eq!(outcome.kind, OutcomeKind::Failed);
        assert_eq!(outcome.exit_code, Some(137));

        assert!(
            !kill_process_group(i32::MAX as u32).unwrap(),
            "no such group is not an error"
        );
        for bad in [0, 1, u32::MAX] {
            assert!(matches!(
                kill_process_group(bad),
                Err(KillGroupError::InvalidPgid(_))
            ));
        }
        let own = u32::try_from(getpgrp().as_raw()).unwrap();
        assert!(matches!(
            kill_process_group(own),
            Err(KillGroupError::OwnGroup(_))
        ));
    }

    /// Starts `sleep 1000 & sleep 1000` in its own group, as a run would, and returns
    /// the group id and the task running it.
    async fn long_group() -> (u32, tokio::task::JoinHandle<CommandOutcome>) {
        let (pgid_tx, pgid_rx) = tokio::sync::oneshot::channel();
        let run = tokio::spawn(async move {
            run_command(
                &sh("sleep 1000 & sleep 1000"),
                &RunLimits::new(LONG),
                &CancellationToken::new(),
                |pgid| {
                    let _ = pgid_tx.send(pgid);
                },
            )
            .await
        });
        (pgid_rx.await.unwrap(), run)
    }

    fn this_boot() -> String {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap()
            .trim()
            .to_owned()
    }

    #[tokio::test]
    async fn recovery_kills_a_recorded_group_whose_leader_started_when_recorded() {
        let (pgid, run) = long_group().await;
        let group = RecordedGroup {
            pgid,
            boot_id: this_boot(),
            leader_start: process_start_time(pgid),
        };
        assert!(group.leader_start.is_some());
        assert_eq!(
            kill_recorded_group(&group, &this_boot()).unwrap(),
            RecoveryKill::Killed
        );
        assert_eq!(run.await.unwrap().exit_code, Some(137));
        assert_killed_group_dies(pgid).await;
        assert_eq!(
            kill_recorded_group(&group, &this_boot()).unwrap(),
            RecoveryKill::Gone
        );
    }

    /// The group id names a group whose leader started at another time than the recorded
    /// job's: the number was reused, and the group is not the job's to kill.
    #[tokio::test]
    async fn recovery_spares_a_group_whose_leader_started_at_another_time() {
        let (pgid, run) = long_group().await;
        let start = process_start_time(pgid).unwrap();
        for leader_start in [Some(start + 1), Some(start.saturating_sub(1)), None] {
            let group = RecordedGroup {
                pgid,
                boot_id: this_boot(),
                leader_start,
            };
            assert_eq!(
                kill_recorded_group(&group, &this_boot()).unwrap(),
                RecoveryKill::NotTheJobs,
                "{leader_start:?}"
            );
        }
        let other_boot = RecordedGroup {
            pgid,
            boot_id: "another-boot".into(),
            leader_start: Some(start),
        };
        assert_eq!(
            kill_recorded_group(&other_boot, &this_boot()).unwrap(),
            RecoveryKill::OtherBoot
        );
        assert!(!live_members(pgid).is_empty(), "the group was spared");
        run.abort();
        let _ = run.await;
        assert_killed_group_dies(pgid).await;
    }
}
