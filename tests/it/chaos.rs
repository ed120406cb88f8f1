//! Many real `cronflow` processes on one Postgres, killed at random: the promises that
//! every slot fires exactly once and every event reaches its subscribers at least once
//! hold with real processes killed for real.
//!
//! The test starts a private Postgres server (so it can restart it mid-load), `serve` and
//! `worker` processes of the program under test, jobs firing every second (overlap
//! `allow`, `skip` and `queue`; some fail, some time out, some run long enough to outlive
//! a killed worker), and three webhook subscriptions on a receiver on 127.0.0.1, one of
//! which answers 500 a third of the time and hangs past the timeout a tenth of the time.
//! A chaos loop SIGKILLs a random process every few seconds and starts it again, and
//! restarts Postgres once, as by a crash. Then it lets everything settle and reconciles
//! exactly, from the receiver's log and the database (see [`reconcile`]), prints the
//! figures, replays the dead-letter queue in bulk and checks that it drains.
//!
//! The short form runs in the suite; the long form (ten minutes, more processes) is
//! `cargo test -p cronflow-tests --test it -- --ignored --nocapture chaos::long`.

use crate::{
    helpers::{TEST_SECRET_KEY, eventually, http_client, loud, postgres_binaries},
    pg_server::PgServer,
    receiver::{Answer, Seen, TestReceiver},
};
use chrono::{DateTime, TimeZone, Utc};
use cronflow_jobs::runner::command::live_group_members;
use serde_json::{Value, json};
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_cronflow-under-test");
const ADMIN: &str = "chaos-admin-token-0123456789";
/// The flaky subscription's path.
const FLAKY: &str = "/flaky";
/// How long the flaky endpoint hangs: past the webhook timeout the processes get.
const HANG: Duration = Duration::from_secs(6);
/// Long enough that a healthy answer from the test's receiver, which shares a loaded
/// machine with every process of the test, seldom misses it.
const WEBHOOK_TIMEOUT: &str = "5s";
const RETRY_SCHEDULE: &str = "1s,2s,2s";
/// What a recovered run's error says.
const RECOVERED: &str = "stopped unexpectedly";

/// The shape of one chaos run.
#[derive(Debug, Clone)]
struct Chaos {
    serves: usize,
    workers: usize,
    jobs: usize,
    /// How long jobs fire while processes are killed.
    window: Duration,
    /// Pause between kills: uniformly within this range.
    kill_every: (Duration, Duration),
    /// When, within the window, Postgres is restarted as by a crash.
    postgres_restart_at: Duration,
    /// Deadline for each settling step after the window.
    settle: u64,
}

impl Chaos {
    fn short() -> Chaos {
        Chaos {
            serves: 2,
            workers: 2,
            jobs: 50,
            window: Duration::from_secs(50),
            kill_every: (Duration::from_secs(3), Duration::from_secs(6)),
            postgres_restart_at: Duration::from_secs(20),
            settle: 240,
        }
    }

    fn long() -> Chaos {
        Chaos {
            serves: 3,
            workers: 4,
            jobs: 50,
            window: Duration::from_secs(600),
            kill_every: (Duration::from_secs(2), Duration::from_secs(6)),
            postgres_restart_at: Duration::from_secs(300),
            settle: 600,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_processes_killed_at_random_lose_no_slot_and_no_event() {
    run_chaos(Chaos::short()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "ten minutes; run with `cargo test -p cronflow-tests --test it -- --ignored --nocapture chaos::long`"]
async fn long_many_processes_killed_at_random_for_ten_minutes() {
    run_chaos(Chaos::long()).await;
}

/// A small deterministic random source (splitmix64), seeded from the clock; the seed is
/// printed so a failing run can be told apart from the next.
struct Random(AtomicU64);

impl Random {
    fn next(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
            .wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&self, n: u64) -> u64 {
        self.next() % n
    }

    fn between(&self, (lo, hi): (Duration, Duration)) -> Duration {
        let span = (hi - lo).as_millis().max(1) as u64;
        lo + Duration::from_millis(self.below(span))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Serve,
    Worker,
}

/// One `cronflow` process slot: the process now in it, started again after each kill.
struct Process {
    role: Role,
    index: usize,
    child: Child,
    /// `serve`: its API's base URL.
    base: Option<String>,
    starts: usize,
    /// When it was started (a pid is reused once the numbers wrap around).
    started_at: DateTime<Utc>,
}

/// A process killed by the chaos loop.
#[derive(Debug, Clone)]
struct Kill {
    role: Role,
    pid: u32,
    started_at: DateTime<Utc>,
    at: DateTime<Utc>,
}

/// The processes and how to start them.
struct Fleet {
    dir: PathBuf,
    db_url: String,
    processes: Vec<Process>,
}

impl Fleet {
    fn command(&self, role: Role, log: &Path) -> Command {
        let mut c = Command::new(BIN);
        let out = std::fs::File::create(log).expect("process log");
        c.current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CRONFLOW_DATABASE_URL", &self.db_url)
            .env("CRONFLOW_SECRET_KEY", TEST_SECRET_KEY)
            .env("CRONFLOW_LISTEN", "127.0.0.1:0")
            .env("CRONFLOW_ADMIN_TOKEN", ADMIN)
            .env("CRONFLOW_ALLOW_PRIVATE_TARGETS", "true")
            .env("CRONFLOW_RETRY_SCHEDULE", RETRY_SCHEDULE)
            .env("CRONFLOW_WEBHOOK_TIMEOUT", WEBHOOK_TIMEOUT)
            .arg(match role {
                Role::Serve => "serve",
                Role::Worker => "worker",
            })
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out);
        c
    }

    /// Starts the process in slot `index` (a new one, or again after a kill); a `serve`
    /// is waited for until its API listens.
    async fn start(&mut self, role: Role, index: usize, starts: usize) -> Process {
        let name = format!("{role:?}-{index}-{starts}.log").to_lowercase();
        let log = self.dir.join(name);
        let started_at = Utc::now();
        let child = self.command(role, &log).spawn().expect("start cronflow");
        let base = match role {
            Role::Worker => None,
            Role::Serve => Some(
                eventually(120, "a serve process to listen", || async {
                    let text = std::fs::read_to_string(&log).ok()?;
                    text.lines()
                        .find_map(|l| l.strip_prefix("CronFlow is listening on "))
                        .map(|b| b.trim().to_owned())
                })
                .await,
            ),
        };
        Process {
            role,
            index,
            child,
            base,
            starts,
            started_at,
        }
    }

    /// A `serve` process's API.
    fn api(&self) -> String {
        self.processes
            .iter()
            .find_map(|p| p.base.clone())
            .expect("a serve process")
    }

    /// SIGKILLs the process in `slot` and starts it again.
    async fn kill_and_restart(&mut self, slot: usize) -> Kill {
        let p = &mut self.processes[slot];
        let pid = p.child.id();
        p.child.kill().expect("SIGKILL");
        p.child.wait().expect("reap");
        let kill = Kill {
            role: p.role,
            pid,
            started_at: p.started_at,
            at: Utc::now(),
        };
        let (role, index, starts) = (p.role, p.index, p.starts + 1);
        self.processes[slot] = self.start(role, index, starts).await;
        kill
    }

    /// SIGTERMs every process and waits for it.
    fn stop(&mut self) {
        for p in &mut self.processes {
            let pid = nix::unistd::Pid::from_raw(p.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        }
        for p in &mut self.processes {
            let _ = p.child.wait();
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for p in &mut self.processes {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

/// The job set: mostly `allow` (a fifth of them failing), some `skip` running long enough
/// to outlive a killed worker (two of them timing out), some `queue`. Every command
/// appends its process-group id (the shell is the group's leader) and the leader's start
/// time to `pgids`.
fn job_bodies(n: usize, pgids: &Path) -> Vec<Value> {
    // "pgid start": the leader's start time tells the job's group from a later one that
    // reuses the number (pids wrap around quickly when thousands of runs start).
    let record = format!("echo $$ $(cut -d' ' -f22 /proc/$$/stat) >> {};", pgids.display());
    (0..n)
        .map(|i| {
            let (overlap, script, timeout) = match i % 10 {
                0..=6 if i % 5 == 1 => ("allow", "sleep 0.3 & wait; exit 1", 30),
                0..=6 => ("allow", "sleep 0.3 & wait", 30),
                7 if i % 20 == 7 => ("skip", "sleep 15 & wait", 1),
                7 | 8 => ("skip", "sleep 15 & wait", 60),
                _ => ("queue", "sleep 0.2 & wait", 30),
            };
            json!({
                "name": format!("chaos-{i}-{overlap}"),
                "schedule": "* * * * * *",
                "overlap_policy": overlap,
                "timeout_seconds": timeout,
                "target": {"type": "command", "command": ["sh", "-c", format!("{record} {script}")]},
            })
        })
        .collect()
}

/// The three subscriptions: every event to `/all`, failures to `/failures`, every event
/// to the flaky endpoint.
/// The subscriptions (receiver path, events). None chooses the ledger's events
/// (`job.skipped`, `job.missed`), which the skip jobs and the downtime make, so those
/// events have no delivery.
const SUBSCRIPTIONS: [(&str, &[&str]); 3] = [
    ("/all", &["job.completed", "job.failed", "job.timed_out"]),
    ("/failures", &["job.failed", "job.timed_out"]),
    (FLAKY, &["job.completed", "job.failed", "job.timed_out"]),
];

fn subscriptions(receiver: &TestReceiver) -> Vec<(String, &'static [&'static str])> {
    SUBSCRIPTIONS
        .iter()
        .map(|(path, events)| (receiver.url(path), *events))
        .collect()
}

async fn api(
    client: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: &Value,
) -> Value {
    // A 503 says the database is unavailable or busy (a restart, a lock held past the
    // statement timeout): a client tries again shortly, as this one does, for a while.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = client
            .request(method.clone(), format!("{base}{path}"))
            .bearer_auth(ADMIN)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = r.status();
        let text = r.text().await.unwrap_or_default();
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE && Instant::now() < deadline {
            loud(&format!("chaos: {path}: {status} {text}; trying again"));
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        assert!(status.is_success(), "{path}: {status} {text}");
        return serde_json::from_str(&text).unwrap_or(Value::Null);
    }
}

async fn run_chaos(chaos: Chaos) {
    let Some(bin) = postgres_binaries() else {
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let seed = Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
    let random = Arc::new(Random(AtomicU64::new(seed)));
    loud(&format!("chaos: {chaos:?}, seed {seed}"));

    let pg = tokio::task::spawn_blocking(move || PgServer::start_new(&bin))
        .await
        .unwrap()
        .expect("a private Postgres server");
    let db_url = pg.url("chaos");
    {
        use sqlx::Connection;
        let mut admin = sqlx::PgConnection::connect(&pg.url("postgres")).await.unwrap();
        sqlx::query("CREATE DATABASE chaos")
            .execute(&mut admin)
            .await
            .unwrap();
    }
    // Kept if the test fails (the processes' logs are the evidence); removed at the end.
    let dir = tempfile::Builder::new()
        .prefix("cronflow-chaos-")
        .tempdir()
        .unwrap()
        .keep();
    loud(&format!("chaos: the processes' logs are in {}", dir.display()));
    let migrated = Command::new(BIN)
        .env_clear()
        .env("CRONFLOW_DATABASE_URL", &db_url)
        .env("CRONFLOW_SECRET_KEY", TEST_SECRET_KEY)
        .arg("migrate")
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{migrated:?}");

    // The flaky endpoint: 500 a third of the time, hung past the timeout a tenth of the
    // time, until `healthy` is set for the replay.
    let healthy = Arc::new(AtomicBool::new(false));
    let receiver = {
        let (random, healthy) = (random.clone(), healthy.clone());
        TestReceiver::start_with(Arc::new(move |path, _| {
            if path != FLAKY || healthy.load(Ordering::Relaxed) {
                return Answer::Status(200);
            }
            match random.below(30) {
                0..=9 => Answer::Status(500),
                10..=12 => Answer::HangFor(HANG),
                _ => Answer::Status(200),
            }
        }))
        .await
    };

    let mut fleet = Fleet {
        dir: dir.clone(),
        db_url: db_url.clone(),
        processes: Vec::new(),
    };
    let roles = std::iter::repeat_n(Role::Serve, chaos.serves)
        .chain(std::iter::repeat_n(Role::Worker, chaos.workers));
    for (index, role) in roles.enumerate() {
        let p = fleet.start(role, index, 0).await;
        fleet.processes.push(p);
    }
    let client = http_client();
    let base = fleet.api();
    for (url, events) in subscriptions(&receiver) {
        api(
            &client,
            &base,
            reqwest::Method::POST,
            "/v1/webhooks",
            &json!({"url": url, "events": events}),
        )
        .await;
    }
    let pgids = dir.join("pgids");
    let mut job_ids = Vec::new();
    for body in job_bodies(chaos.jobs, &pgids) {
        let job = api(&client, &base, reqwest::Method::POST, "/v1/jobs", &body).await;
        job_ids.push(job["id"].as_str().unwrap().to_owned());
    }
    let window_start = Utc::now();

    // The chaos loop: kill, restart, and once restart Postgres.
    let started = Instant::now();
    let mut kills = Vec::new();
    let mut pg = Some(pg);
    let mut postgres_recovery = None;
    while started.elapsed() < chaos.window {
        tokio::time::sleep(random.between(chaos.kill_every)).await;
        if let Some(mut server) = pg.take_if(|_| started.elapsed() >= chaos.postgres_restart_at) {
            let at = Utc::now();
            let server = tokio::task::spawn_blocking(move || {
                server.restart().expect("restart Postgres");
                server
            })
            .await
            .unwrap();
            let back = Utc::now();
            let first_run = eventually(chaos.settle, "a run started after Postgres came back", || async {
                let started: Vec<String> = query(
                    &db_url,
                    &format!(
                        "SELECT id FROM runs WHERE started_at > {} LIMIT 1",
                        back.timestamp_millis()
                    ),
                )
                .await
                .ok()?;
                (!started.is_empty()).then(Utc::now)
            })
            .await;
            postgres_recovery = Some((at, back, first_run, server));
            continue;
        }
        let slot = random.below(fleet.processes.len() as u64) as usize;
        kills.push(fleet.kill_and_restart(slot).await);
    }
    let window_end = Utc::now();
    let (pg_restarted_at, pg_back_at, pg_first_run_at, pg) =
        postgres_recovery.expect("Postgres was restarted within the window");

    // Settle: the schedulers catch up past the window, then no job fires any more, every
    // run ends, every delivery is delivered or dead.
    let base = fleet.api();
    eventually(
        chaos.settle,
        "every job's next fire time past the window",
        || async {
            let behind: Vec<String> = query(
                &db_url,
                &format!(
                    "SELECT id FROM scheduled_jobs WHERE next_fire_at <= {}",
                    window_end.timestamp_millis()
                ),
            )
            .await
            .ok()?;
            behind.is_empty().then_some(())
        },
    )
    .await;
    for id in &job_ids {
        api(
            &client,
            &base,
            reqwest::Method::POST,
            &format!("/v1/jobs/{id}/pause"),
            &json!({}),
        )
        .await;
    }
    settle(
        &fleet,
        chaos.settle,
        "every run to end",
        "SELECT id FROM runs WHERE state IN ('scheduled', 'queued', 'running')",
        "SELECT state || ' ' || origin || ' ' || COUNT(*) || ' oldest slot ' || MIN(scheduled_for) FROM runs \
         WHERE state IN ('scheduled', 'queued', 'running') GROUP BY state, origin",
    )
    .await;
    settle(
        &fleet,
        chaos.settle,
        "every delivery to be delivered or dead",
        "SELECT id FROM deliveries WHERE status IN ('pending', 'retrying')",
        &format!(
            "SELECT status || ' ' || COUNT(*) FROM deliveries GROUP BY status UNION ALL {}",
            open_delivery_tasks("d.status IN ('pending', 'retrying')")
        ),
    )
    .await;

    let db = Snapshot::read(&db_url).await;
    let report = reconcile(&db, &receiver.requests(), &job_ids, window_start, window_end);
    let groups = recorded_groups(&pgids);
    let live_groups: Vec<_> = groups.iter().copied().filter(|g| job_group_alive(*g)).collect();
    loud(&format!(
        "chaos: {} process groups recorded by the jobs, {} alive after every run ended",
        groups.len(),
        live_groups.len()
    ));

    // The dead-letter queue, replayed in bulk with the flaky endpoint now healthy, drains.
    // A replay takes at most 10,000 deliveries a call, so an operator calls it until it
    // takes none. On an overloaded machine a replayed delivery can time out and die
    // again (the receiver answers within the timeout only when it gets the CPU): those
    // are replayed again, as long as each round leaves fewer dead.
    healthy.store(true, Ordering::Relaxed);
    // At least every delivery counted dead. More is seen on an overloaded machine (a
    // whole-suite run at load 12 to 27 on two cores counted 2,691 dead and replayed
    // 2,742): the client repeats a call answered 503, and deliveries a first call took
    // can have died again by the second, so they count twice.
    let replayed = replay_all(&client, &base).await;
    assert!(
        replayed >= report.dead as u64,
        "the bulk replays take every dead delivery: {replayed} of {}",
        report.dead
    );
    let (mut replays, mut dead_before) = (1, replayed as usize);
    loop {
        settle(
            &fleet,
            chaos.settle,
            "the replayed deliveries to be delivered or dead",
            "SELECT id FROM deliveries WHERE status IN ('pending', 'retrying')",
            &open_delivery_tasks("d.status IN ('pending', 'retrying')"),
        )
        .await;
        let again = query(&db_url, "SELECT id FROM deliveries WHERE status = 'dead'")
            .await
            .expect("the dead deliveries")
            .len();
        if again == 0 {
            break;
        }
        assert!(
            again < dead_before,
            "{again} deliveries dead again of {dead_before} replayed, with every endpoint healthy"
        );
        dead_before = again;
        loud(&format!(
            "chaos: {again} replayed deliveries died again (timeouts on a loaded machine); replaying them"
        ));
        let taken = replay_all(&client, &base).await;
        assert!(taken >= again as u64, "{taken} replayed of {again} dead");
        replays += 1;
    }
    loud(&format!(
        "chaos: every dead delivery delivered after {replays} bulk replay(s)"
    ));
    settle(
        &fleet,
        chaos.settle,
        "the dead-letter queue to drain",
        "SELECT id FROM deliveries WHERE status <> 'delivered' OR (dead_at IS NOT NULL AND NOT acknowledged)",
        &open_delivery_tasks("d.status <> 'delivered' OR (d.dead_at IS NOT NULL AND NOT d.acknowledged)"),
    )
    .await;
    let dlq = client
        .get(format!("{base}/v1/dlq"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("GET /v1/dlq");
    let dlq: Value = dlq.json().await.expect("the DLQ page");
    assert_eq!(dlq["items"], json!([]), "the API's DLQ is empty too");
    let after_replay = Snapshot::read(&db_url).await;
    let replay_report = reconcile(
        &after_replay,
        &receiver.requests(),
        &job_ids,
        window_start,
        window_end,
    );

    let recoveries = recoveries(&db, &kills);
    print_figures(
        &chaos,
        &report,
        &replay_report,
        &kills,
        &recoveries,
        (pg_restarted_at, pg_back_at, pg_first_run_at),
    );
    fleet.stop();
    drop(pg);

    assert!(kills.len() >= 3, "the chaos loop killed processes: {kills:?}");
    assert!(
        report.problems.is_empty(),
        "reconciliation:\n{}",
        report.problems.join("\n")
    );
    assert!(
        replay_report.problems.is_empty(),
        "after the replay:\n{}",
        replay_report.problems.join("\n")
    );
    assert_eq!(replay_report.dead, 0);
    assert!(
        live_groups.is_empty(),
        "process groups of runs still alive after every run ended: {live_groups:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits until `open` selects no row, or fails once `secs` seconds pass without fewer rows,
/// showing what `show` selects and the end of each process's log.
async fn settle(fleet: &Fleet, secs: u64, what: &str, open: &str, show: &str) {
    let mut deadline = Instant::now() + Duration::from_secs(secs);
    let mut next_report = Instant::now() + Duration::from_secs(30);
    let mut fewest = usize::MAX;
    while Instant::now() < deadline {
        let left = query(&fleet.db_url, open).await.map(|rows| rows.len());
        if left.as_ref().is_ok_and(|n| *n == 0) {
            return;
        }
        // A loaded machine only takes longer: the deadline counts from the last progress.
        if let Ok(n) = left
            && n < fewest
        {
            fewest = n;
            deadline = Instant::now() + Duration::from_secs(secs);
        }
        if Instant::now() >= next_report {
            loud(&format!("chaos: still waiting for {what}: {left:?} left"));
            next_report += Duration::from_secs(30);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let shown = query(&fleet.db_url, show).await;
    let mut logs = String::new();
    for p in &fleet.processes {
        let name = format!("{:?}-{}-{}.log", p.role, p.index, p.starts).to_lowercase();
        let text = std::fs::read_to_string(fleet.dir.join(&name)).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(8).collect();
        logs += &format!(
            "--- {name}\n{}\n",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    panic!("no progress for {secs} s waiting for {what}: {shown:?}\n{logs}");
}

/// Replays every dead delivery through the API, 10,000 a call at most; returns how many.
async fn replay_all(client: &reqwest::Client, base: &str) -> u64 {
    let mut total = 0;
    loop {
        let r = api(client, base, reqwest::Method::POST, "/v1/dlq/replay", &json!({})).await;
        let n = r["replayed"].as_u64().expect("a count of replayed deliveries");
        total += n;
        // Until a call takes none: a call can take fewer than its 10,000 while more
        // remain (the long run saw 9,998 of 16,815, two of its selection no longer dead).
        if n == 0 {
            return total;
        }
    }
}

/// For each delivery `open` selects: its status and its queue task's (status, holder,
/// attempts, due time), counted, with the database's time.
fn open_delivery_tasks(open: &str) -> String {
    format!(
        "SELECT d.status || ' task ' || COALESCE(j.status, 'none') || ' held by ' || COALESCE(j.lock_by, 'nobody') \
         || ' attempts ' || COALESCE(CAST(j.attempts AS TEXT), '-') || '/' || COALESCE(CAST(j.max_attempts AS TEXT), '-') \
         || ' due now ' || COALESCE(CAST(j.run_at <= now() AS TEXT), '-') || ': ' || COUNT(*) \
         || ' (earliest due ' || COALESCE(CAST(MIN(j.run_at) AS TEXT), '-') || ', now ' || CAST(now() AS TEXT) || ')' \
         FROM deliveries d LEFT JOIN apalis.jobs j ON j.job_type = 'cronflow-deliveries' \
         AND convert_from(j.job, 'UTF8')::jsonb ->> 'delivery_id' = d.id \
         WHERE {open} GROUP BY d.status, j.status, j.lock_by, j.attempts, j.max_attempts, j.run_at <= now()"
    )
}

/// The first column, as text, of `sql`'s rows on the chaos database.
async fn query(url: &str, sql: &str) -> Result<Vec<String>, sqlx::Error> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let rows = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(t.c AS TEXT) FROM ({sql}) AS t(c)"
    )))
    .fetch_all(&mut conn)
    .await;
    let _ = conn.close().await;
    rows
}

/// The process groups the jobs' commands recorded, with their leaders' start times.
fn recorded_groups(pgids: &Path) -> BTreeSet<(u32, u64)> {
    std::fs::read_to_string(pgids)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (pgid, start) = l.trim().split_once(' ')?;
            Some((pgid.parse().ok()?, start.parse().ok()?))
        })
        .collect()
}

/// Whether a job's process group still has a live member: its leader (the same process:
/// same start time), or, the leader gone, members started no earlier than it (a group
/// whose leader started at another time reuses the number and is not the job's).
fn job_group_alive((pgid, start): (u32, u64)) -> bool {
    let members = live_group_members(pgid);
    match members.iter().find(|(pid, _)| *pid == pgid) {
        Some((_, leader_start)) => *leader_start == start,
        None => !members.is_empty() && members.iter().all(|(_, s)| *s >= start),
    }
}

#[derive(Debug, sqlx::FromRow)]
struct RunRow {
    id: String,
    job_id: String,
    scheduled_for: Option<i64>,
    state: String,
    origin: String,
    missed_count: Option<i64>,
    missed_last: Option<i64>,
    worker: Option<String>,
    error: Option<String>,
    started_at: Option<i64>,
    finished_at: Option<i64>,
}

#[derive(Debug, sqlx::FromRow)]
struct DeliveryRow {
    id: String,
    event_id: String,
    webhook_id: String,
    status: String,
    /// Attempts in the delivery's history, and how many of them got an answer.
    recorded: i64,
    answered: i64,
}

/// What the database holds after the chaos.
struct Snapshot {
    runs: Vec<RunRow>,
    /// Event id → (run id, event type).
    events: BTreeMap<String, (String, String)>,
    deliveries: Vec<DeliveryRow>,
    /// Subscription id → its URL's path.
    webhooks: BTreeMap<String, String>,
}

impl Snapshot {
    async fn read(url: &str) -> Snapshot {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        let runs = sqlx::query_as(
            "SELECT id, job_id, scheduled_for, state, origin, missed_count, missed_last, worker, error, started_at, finished_at FROM runs",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let events: Vec<(String, String, String)> =
            sqlx::query_as("SELECT id, run_id, event_type FROM events WHERE run_id IS NOT NULL")
                .fetch_all(&pool)
                .await
                .unwrap();
        let deliveries = sqlx::query_as(
            "SELECT d.id, d.event_id, d.webhook_id, d.status, \
             (SELECT COUNT(*) FROM delivery_attempts a WHERE a.delivery_id = d.id) AS recorded, \
             (SELECT COUNT(status_code) FROM delivery_attempts a WHERE a.delivery_id = d.id) AS answered \
             FROM deliveries d",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        let webhooks: Vec<(String, String)> = sqlx::query_as("SELECT id, url FROM webhooks")
            .fetch_all(&pool)
            .await
            .unwrap();
        pool.close().await;
        Snapshot {
            runs,
            events: events.into_iter().map(|(id, run, ty)| (id, (run, ty))).collect(),
            deliveries,
            webhooks: webhooks
                .into_iter()
                .map(|(id, url)| {
                    let path = reqwest::Url::parse(&url)
                        .map(|u| u.path().to_owned())
                        .unwrap_or(url);
                    (id, path)
                })
                .collect(),
        }
    }
}

/// The reconciliation's figures, and every broken promise it found.
#[derive(Debug, Default)]
struct Report {
    slots: usize,
    runs: usize,
    skipped: usize,
    missed_rows: usize,
    missed_slots: usize,
    caught_up: usize,
    recovered_runs: usize,
    events: usize,
    deliveries: usize,
    delivered: usize,
    dead: usize,
    requests: usize,
    /// Copies of a delivery answered 200 beyond the first (at-least-once at work).
    duplicates: usize,
    /// Deliveries whose history has fewer attempts than the receiver saw (a worker slow
    /// past its lease racing the one that took its task over: both attempts share a
    /// number; a killed worker's attempt is recorded as `interrupted`).
    deliveries_missing_attempts: usize,
    attempts_missing: usize,
    problems: Vec<String>,
}

const SLOT_MS: i64 = 1000;

/// Reconciles the database with the receiver's log:
/// - every slot of every job from its first slot to the end of the window is exactly one
///   ledger row (a run, skipped, or inside one missed row's range), never two runs for
///   one slot, none lost; no slot after the window is on record twice either;
/// - every run that ended `completed`, `failed` or `timed_out` has exactly its event;
/// - every event has one delivery per matching subscription; a delivered one was
///   answered 2xx at least once at that subscription's path under its idempotency key,
///   the others are dead (in the DLQ);
/// - every request the receiver got belongs to a delivery of that path's subscription,
///   and every copy of one event at one subscription carries the same idempotency key;
/// - no delivery's history records more answered attempts than the receiver answered.
fn reconcile(
    db: &Snapshot,
    seen: &[Seen],
    job_ids: &[String],
    window_start: DateTime<Utc>,
    window_end: DateTime<Utc>,
) -> Report {
    let mut r = Report {
        requests: seen.len(),
        ..Report::default()
    };
    let mut problems = Vec::new();
    let mut problem = |p: String| {
        if problems.len() < 50 {
            problems.push(p);
        }
    };

    // The ledger.
    let mut by_job: BTreeMap<&str, BTreeMap<i64, Vec<&str>>> = BTreeMap::new();
    for run in &db.runs {
        let Some(slot) = run.scheduled_for else {
            problem(format!(
                "run {} has no slot (nothing was triggered by hand)",
                run.id
            ));
            continue;
        };
        let covered = match (run.state.as_str(), run.missed_count, run.missed_last) {
            ("missed", Some(count), Some(last)) => {
                r.missed_rows += 1;
                r.missed_slots += count as usize;
                if (last - slot) / SLOT_MS + 1 != count {
                    problem(format!(
                        "missed row {} counts {count} slots from {slot} to {last}",
                        run.id
                    ));
                }
                (slot..=last).step_by(SLOT_MS as usize).collect()
            }
            (state, ..) => {
                match state {
                    "skipped" => r.skipped += 1,
                    _ => r.runs += 1,
                }
                if run.origin == "catch_up" {
                    r.caught_up += 1;
                }
                if run.error.as_deref().is_some_and(|e| e.contains(RECOVERED)) {
                    r.recovered_runs += 1;
                }
                vec![slot]
            }
        };
        for s in covered {
            by_job
                .entry(&run.job_id)
                .or_default()
                .entry(s)
                .or_default()
                .push(&run.id);
        }
    }
    for job in job_ids {
        let Some(slots) = by_job.get(job.as_str()) else {
            problem(format!("job {job} has no ledger row at all"));
            continue;
        };
        let first = *slots.keys().next().unwrap();
        if first > window_start.timestamp_millis() + 2 * SLOT_MS {
            problem(format!("job {job}: its first slot {first} is late"));
        }
        for (slot, rows) in slots {
            if rows.len() > 1 {
                problem(format!(
                    "job {job}, slot {slot}: {} ledger rows {rows:?}",
                    rows.len()
                ));
            }
        }
        let end = window_end.timestamp_millis() / SLOT_MS * SLOT_MS;
        for slot in (first..=end).step_by(SLOT_MS as usize) {
            r.slots += 1;
            if !slots.contains_key(&slot) {
                problem(format!("job {job}, slot {slot}: no ledger row (lost)"));
            }
        }
    }

    // Events.
    let event_of_run: BTreeMap<&str, (&str, &str)> = db
        .events
        .iter()
        .map(|(id, (run, ty))| (run.as_str(), (id.as_str(), ty.as_str())))
        .collect();
    r.events = db.events.len();
    for run in &db.runs {
        let want = match run.state.as_str() {
            "completed" => "job.completed",
            "failed" => "job.failed",
            "timed_out" => "job.timed_out",
            _ => continue,
        };
        match event_of_run.get(run.id.as_str()) {
            Some((_, ty)) if *ty == want => {}
            other => problem(format!(
                "run {} ended {} but its event is {other:?}",
                run.id, run.state
            )),
        }
        if run.finished_at.is_none() {
            problem(format!("run {} ended without a finish time", run.id));
        }
    }

    // Deliveries against the receiver's log.
    let matching = |path: &str, ty: &str| {
        SUBSCRIPTIONS
            .iter()
            .any(|(p, events)| *p == path && events.contains(&ty))
    };
    let mut received: BTreeMap<&str, Vec<&Seen>> = BTreeMap::new();
    let mut keys_per_copy: BTreeMap<(String, String, String), BTreeSet<String>> = BTreeMap::new();
    for s in seen {
        let key = s
            .headers
            .get("x-cronflow-idempotency-key")
            .map(String::as_str)
            .unwrap_or("");
        received.entry(key).or_default().push(s);
        let body: Value = serde_json::from_slice(&s.body).unwrap_or(Value::Null);
        let copy = (
            s.path.clone(),
            body["event"].as_str().unwrap_or("").to_owned(),
            body["data"]["run_id"].as_str().unwrap_or("").to_owned(),
        );
        keys_per_copy.entry(copy).or_default().insert(key.to_owned());
    }
    for ((path, ty, run), keys) in &keys_per_copy {
        if keys.len() != 1 {
            problem(format!(
                "{ty} of run {run} reached {path} under {} keys: {keys:?}",
                keys.len()
            ));
        }
    }
    let mut expected: BTreeSet<(String, &str)> = BTreeSet::new();
    for (event_id, (_, ty)) in &db.events {
        for (hook, path) in &db.webhooks {
            if matching(path, ty) {
                expected.insert((event_id.clone(), hook.as_str()));
            }
        }
    }
    r.deliveries = db.deliveries.len();
    for d in &db.deliveries {
        expected.remove(&(d.event_id.clone(), d.webhook_id.as_str()));
        let path = db.webhooks.get(&d.webhook_id).map(String::as_str).unwrap_or("");
        let copies = received.get(d.id.as_str()).map(Vec::as_slice).unwrap_or_default();
        if copies.iter().any(|s| s.path != path) {
            problem(format!("delivery {} reached a path other than {path}", d.id));
        }
        r.duplicates += copies
            .iter()
            .filter(|s| s.answer == Answer::Status(200))
            .count()
            .saturating_sub(1);
        let answered_by_receiver = copies
            .iter()
            .filter(|s| matches!(s.answer, Answer::Status(_)))
            .count() as i64;
        match d.status.as_str() {
            "delivered" => {
                r.delivered += 1;
                if !copies.iter().any(|s| s.answer == Answer::Status(200)) {
                    problem(format!(
                        "delivery {} is delivered but {path} never answered it 200",
                        d.id
                    ));
                }
            }
            "dead" => r.dead += 1,
            other => problem(format!("delivery {} is still {other}", d.id)),
        }
        if d.answered > answered_by_receiver {
            problem(format!(
                "delivery {} records {} answered attempts; the receiver answered {answered_by_receiver}",
                d.id, d.answered
            ));
        }
        if (copies.len() as i64) > d.recorded {
            r.deliveries_missing_attempts += 1;
            r.attempts_missing += copies.len() - d.recorded as usize;
        }
    }
    for (event, hook) in expected {
        problem(format!("event {event} has no delivery to {hook}"));
    }
    let deliveries: BTreeSet<&str> = db.deliveries.iter().map(|d| d.id.as_str()).collect();
    for key in received.keys() {
        if !deliveries.contains(key) {
            problem(format!(
                "the receiver got a request under key {key:?}, which is no delivery"
            ));
        }
    }
    r.problems = problems;
    r
}

/// For each run recovered after its worker was killed: how long after the kill it was
/// recorded failed: the run started on a process killed later (the worker's name
/// carries its process id, and the run started within that process's life).
fn recoveries(db: &Snapshot, kills: &[Kill]) -> Vec<Duration> {
    db.runs
        .iter()
        .filter(|run| run.error.as_deref().is_some_and(|e| e.contains(RECOVERED)))
        .filter_map(|run| {
            let worker = run.worker.as_deref()?;
            let started = Utc.timestamp_millis_opt(run.started_at?).single()?;
            let finished = Utc.timestamp_millis_opt(run.finished_at?).single()?;
            let kill = kills.iter().find(|k| {
                worker.contains(&format!("-{}-", k.pid)) && k.started_at <= started && started <= k.at
            })?;
            (finished - kill.at).to_std().ok()
        })
        .collect()
}

fn print_figures(
    chaos: &Chaos,
    r: &Report,
    after: &Report,
    kills: &[Kill],
    recoveries: &[Duration],
    (pg_at, pg_back, pg_first_run): (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>),
) {
    let serves = kills.iter().filter(|k| k.role == Role::Serve).count();
    let (min, max) = (recoveries.iter().min(), recoveries.iter().max());
    loud(&format!(
        "chaos ({} serve, {} worker, {} jobs, {:?} window):\n  \
         slots in the window {}, runs {}, skipped {}, missed rows {} ({} slots), caught up {}\n  \
         kills {} ({serves} serve, {} worker); runs recovered from killed processes {} \
         (recorded {:?}..{:?} after the kill)\n  \
         Postgres restarted in {:?}; first run started {:?} after it was back\n  \
         events {}, deliveries {} (delivered {}, dead {}), requests received {}, \
         copies answered 200 beyond a delivery's first {} (each under its delivery's one key)\n  \
         attempt histories missing attempts the receiver saw: {} deliveries, {} attempts\n  \
         after the bulk replay: delivered {}, dead {}, requests received {}",
        chaos.serves,
        chaos.workers,
        chaos.jobs,
        chaos.window,
        r.slots,
        r.runs,
        r.skipped,
        r.missed_rows,
        r.missed_slots,
        r.caught_up,
        kills.len(),
        kills.len() - serves,
        recoveries.len(),
        min,
        max,
        (pg_back - pg_at).to_std().unwrap_or_default(),
        (pg_first_run - pg_back).to_std().unwrap_or_default(),
        r.events,
        r.deliveries,
        r.delivered,
        r.dead,
        r.requests,
        r.duplicates,
        r.deliveries_missing_attempts,
        r.attempts_missing,
        after.delivered,
        after.dead,
        after.requests,
    ));
}

/// Makes files immutable (`chattr +i`) for as long as it lives: even root's writes, and
/// writes through descriptors opened before, are refused (`EPERM`). Permissions would not
/// do: they are checked only when a file is opened, and not at all for root.
struct Immutable(Vec<PathBuf>);

impl Immutable {
    fn set(paths: Vec<PathBuf>) -> Immutable {
        let frozen = Immutable(paths);
        let status = Command::new("chattr").arg("+i").args(&frozen.0).status().unwrap();
        assert!(status.success(), "chattr +i {:?}", frozen.0);
        frozen
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").args(&self.0).status();
    }
}

/// The SQLite database's directory and files made read-only mid-run (the write-ahead
/// log's shared-memory index excepted: it is mapped into memory, where a refused write
/// would be a crash, not an error): writes fail with a clear error and the process keeps
/// serving; once writable again, work resumes by itself; the file is not corrupted.
#[tokio::test]
async fn sqlite_made_read_only_mid_run_errs_clearly_and_resumes_uncorrupted() {
    let can_freeze = nix::unistd::geteuid().is_root() && {
        let probe = tempfile::NamedTempFile::new().unwrap();
        let ok = Command::new("chattr")
            .arg("+i")
            .arg(probe.path())
            .status()
            .is_ok_and(|s| s.success());
        let _ = Command::new("chattr").arg("-i").arg(probe.path()).status();
        ok
    };
    if !can_freeze {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root on a filesystem with chattr +i"
        );
        loud(
            "warning: making a file immutable needs root and chattr (e2fsprogs); skipping the read-only SQLite test",
        );
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let db = data.join("cronflow.db");
    let mut fleet = Fleet {
        dir: dir.path().to_owned(),
        db_url: format!("sqlite://{}", db.display()),
        processes: Vec::new(),
    };
    let serve = fleet.start(Role::Serve, 0, 0).await;
    fleet.processes.push(serve);
    let (client, base) = (http_client(), fleet.api());
    let mut body = crate::helpers::job_body("every-second");
    body["schedule"] = json!("* * * * * *");
    body["overlap_policy"] = json!("allow");
    let job = api(&client, &base, reqwest::Method::POST, "/v1/jobs", &body).await;
    let runs_path = format!("{base}/v1/jobs/{}/runs?limit=500", job["id"].as_str().unwrap());
    let completed_since = |since: DateTime<Utc>| {
        let (client, path) = (client.clone(), runs_path.clone());
        async move {
            let page: Value = client
                .get(&path)
                .bearer_auth(ADMIN)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let n = page["items"]
                .as_array()?
                .iter()
                .filter(|r| r["state"] == "completed")
                .filter(|r| {
                    r["started_at"]
                        .as_str()
                        .and_then(|s| s.parse::<DateTime<Utc>>().ok())
                        > Some(since)
                })
                .count();
            (n >= 2).then_some(())
        }
    };
    eventually(60, "runs completing", || {
        completed_since(Utc::now() - chrono::Duration::hours(1))
    })
    .await;

    let mut files = vec![data.clone()];
    files.extend(
        std::fs::read_dir(&data)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| !p.to_string_lossy().ends_with("-shm")),
    );
    let frozen = Immutable::set(files);
    let log = dir.path().join("serve-0-0.log");
    let refused = eventually(60, "a write refused with a clear error", || async {
        let mut body = crate::helpers::job_body("while-read-only");
        body["schedule"] = json!("0 0 1 1 *");
        let r = client
            .post(format!("{base}/v1/jobs"))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .ok()?;
        (r.status().is_server_error()).then_some(())?;
        r.json::<Value>().await.ok()
    })
    .await;
    assert!(refused["code"].is_string(), "a JSON error: {refused}");
    let logged = eventually(60, "the refusal in the log", || async {
        let text = std::fs::read_to_string(&log).ok()?;
        text.lines()
            .find(|l| l.contains("readonly") || l.contains("not permitted") || l.contains("I/O error"))
            .map(str::to_owned)
    })
    .await;
    loud(&format!(
        "read-only SQLite: the API answered {refused}; the log says: {logged}"
    ));
    let r = client
        .get(format!("{base}/v1/jobs"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "reads still served");

    drop(frozen);
    let thawed = Utc::now();
    // The workers that failed meanwhile restart after a pause of up to 30 s; a loaded
    // machine adds to that.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while completed_since(thawed).await.is_none() {
        if std::time::Instant::now() > deadline {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            panic!(
                "timed out after 120 s waiting for runs completing again; the log ends:\n{}",
                lines[lines.len().saturating_sub(80)..].join("\n")
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    api(
        &client,
        &base,
        reqwest::Method::POST,
        "/v1/jobs",
        &crate::helpers::job_body("after"),
    )
    .await;
    fleet.stop();
    let pool = sqlx::SqlitePool::connect(&fleet.db_url).await.unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    pool.close().await;
}

/// The dead-man's switch with real processes: no scheduler runs (the only `serve` is
/// stopped once the job exists), and two `cronflow worker` processes' watchdogs look at
/// the same Postgres. Each slot of a per-second job becomes late a second after it and
/// reaches the receiver as one `job.late`: no slot twice, none skipped.
#[tokio::test]
async fn two_worker_watchdogs_send_each_late_slot_once_while_no_scheduler_runs() {
    if !crate::helpers::postgres_available() {
        return;
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let db = crate::helpers::TestDb::new(crate::helpers::Backend::Postgres).await;
    let dir = tempfile::tempdir().unwrap();
    let mut fleet = Fleet {
        dir: dir.path().to_owned(),
        db_url: db.url.clone(),
        processes: Vec::new(),
    };
    let serve = fleet.start(Role::Serve, 0, 0).await;
    fleet.processes.push(serve);
    let (client, base) = (http_client(), fleet.api());
    let receiver = TestReceiver::start(&[200]).await;
    let hook = json!({"url": receiver.url("/late"), "events": ["job.late"]});
    api(&client, &base, reqwest::Method::POST, "/v1/webhooks", &hook).await;
    let mut body = crate::helpers::job_body("watched");
    body["schedule"] = json!("* * * * * *");
    body["late_after_seconds"] = json!(1);
    let job = api(&client, &base, reqwest::Method::POST, "/v1/jobs", &body).await;
    fleet.stop();
    fleet.processes.clear();
    for index in 0..2 {
        let worker = fleet.start(Role::Worker, index, 0).await;
        fleet.processes.push(worker);
    }

    let seen = eventually(90, "a dozen job.late delivered", || async {
        let seen = receiver.requests();
        (seen.len() >= 12).then_some(seen)
    })
    .await;
    fleet.stop();
    // Every late slot stored once: those the stopped scheduler never fired (run_id null)
    // run on from the job's next fire time, one second apart.
    let first: DateTime<Utc> = query(&db.url, "SELECT next_fire_at FROM scheduled_jobs")
        .await
        .unwrap()[0]
        .parse::<i64>()
        .map(|ms| Utc.timestamp_millis_opt(ms).unwrap())
        .unwrap();
    let payloads = query(
        &db.url,
        "SELECT payload FROM events WHERE event_type = 'job.late'",
    )
    .await
    .unwrap();
    let stored: Vec<Value> = payloads
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    let slot = |e: &Value| -> DateTime<Utc> { e["data"]["scheduled_for"].as_str().unwrap().parse().unwrap() };
    let mut all: Vec<DateTime<Utc>> = stored.iter().map(slot).collect();
    all.sort();
    let distinct: BTreeSet<DateTime<Utc>> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "no slot alerted twice: {all:?}");
    let mut unfired: Vec<DateTime<Utc>> = stored
        .iter()
        .filter(|e| e["data"]["run_id"].is_null())
        .map(slot)
        .collect();
    unfired.sort();
    let want: Vec<DateTime<Utc>> = (0..unfired.len() as i64)
        .map(|i| first + chrono::Duration::seconds(i))
        .collect();
    assert_eq!(
        unfired, want,
        "every unfired slot from the next fire time, none skipped"
    );
    // What reached the receiver: each a stored alert of this job, none twice.
    let mut delivered: Vec<DateTime<Utc>> = seen
        .iter()
        .map(|s| {
            let body: Value = serde_json::from_slice(&s.body).unwrap();
            assert_eq!(body["event"], "job.late");
            assert_eq!(body["job_id"], job["id"]);
            slot(&body)
        })
        .collect();
    delivered.sort();
    let delivered_distinct: BTreeSet<DateTime<Utc>> = delivered.iter().copied().collect();
    assert_eq!(delivered_distinct.len(), delivered.len(), "none delivered twice");
    assert!(delivered_distinct.is_subset(&distinct));
    db.drop_database().await;
}
