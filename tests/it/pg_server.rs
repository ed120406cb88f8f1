//! A private Postgres server started from the installed server binaries: the fallback
//! when `CRONFLOW_TEST_POSTGRES_URL` names a server that does not answer, and the server
//! the chaos test restarts under load (it must never restart the machine's own).
//!
//! `initdb` makes a cluster in a temporary directory (as the `postgres` user when the
//! tests run as root, since the server refuses to run as root; role `postgres`, trust
//! authentication), and `pg_ctl` starts it on a free port of 127.0.0.1 with its socket in
//! that directory. The server is stopped and its directory removed when the value is
//! dropped, and also when the test process ends without dropping it (a server shared by
//! a whole run lives in a `static`, which Rust never drops): a small `sh` guard started
//! beside it waits for end-of-file on a pipe only this process holds, which the kernel
//! closes however the process ends, and then stops the server.

use std::{
    io::Write,
    net::TcpListener,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
};

/// Debian's packages that provide the server binaries and the `hstore` extension apalis
/// needs.
pub(crate) const PACKAGES: &str = "postgresql postgresql-contrib";

/// A running (or stopped, between [`PgServer::stop`] and [`PgServer::start`]) private
/// server.
pub(crate) struct PgServer {
    bin: PathBuf,
    /// Holds the cluster; removed on drop (after the server is stopped).
    dir: tempfile::TempDir,
    port: u16,
    /// The guard that stops the server if this process ends without dropping it: its
    /// stdin is a pipe whose only write end is this.
    guard: Option<(Child, ChildStdin)>,
}

/// Names the directory of the server binaries, where they are not in a usual place.
pub(crate) const BIN_VAR: &str = "CRONFLOW_TEST_POSTGRES_BIN";

/// Where the server binaries are: [`BIN_VAR`] if set, else the newest
/// `/usr/lib/postgresql/*/bin` holding `initdb` (Debian's layout), else `initdb`'s
/// directory on `PATH`; `None` if there are none, or if the `hstore` extension is not
/// installed beside them.
pub(crate) fn installed_binaries() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os(BIN_VAR) {
        let bin = PathBuf::from(dir);
        return (bin.join("initdb").exists() && has_hstore(&bin)).then_some(bin);
    }
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|bin| bin.join("initdb").exists())
        .collect();
    candidates.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
    });
    let bin = candidates.pop().or_else(|| {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .find(|dir| dir.join("initdb").exists())
    })?;
    has_hstore(&bin).then_some(bin)
}

/// Whether the `hstore` extension (in `postgresql-contrib`) is installed for the server
/// in `bin`.
fn has_hstore(bin: &Path) -> bool {
    Command::new(bin.join("pg_config"))
        .arg("--sharedir")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .is_some_and(|share| Path::new(share.trim()).join("extension/hstore.control").exists())
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `program` from `bin`, run as the `postgres` user when this process is root.
fn as_server_user(bin: &Path, program: &str) -> Command {
    if running_as_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

fn run(mut command: Command, what: &str) -> Result<(), String> {
    let out = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("its address").port()
}

impl PgServer {
    /// Makes a cluster with the binaries in `bin` and starts it.
    pub(crate) fn start_new(bin: &Path) -> Result<PgServer, String> {
        let dir = tempfile::Builder::new()
            .prefix("cronflow-pg-")
            .tempdir()
            .map_err(|e| format!("temp dir: {e}"))?;
        let data = dir.path().join("data");
        std::fs::create_dir(&data).map_err(|e| format!("data dir: {e}"))?;
        if running_as_root() {
            let mut chown = Command::new("chown");
            chown.args(["-R", "postgres:postgres"]).arg(dir.path());
            run(chown, "chown the cluster's directory to postgres")?;
        }
        let mut initdb = as_server_user(bin, "initdb");
        initdb
            .args([
                "-U",
                "postgres",
                "--auth=trust",
                "--no-locale",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data);
        run(initdb, "initdb")?;
        let port = free_port();
        // Flushing to disk matters only for a machine crash, which tests do not cause
        // (fsync off). A commit must still reach the operating system before it is
        // acknowledged (synchronous_commit on): the chaos test stops the server as by a
        // crash (`immediate`), which loses the WAL buffers, and with asynchronous commits
        // a delivery already sent could be lost with them.
        let conf = format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             max_connections = 300\nfsync = off\nsynchronous_commit = on\nfull_page_writes = off\n",
            data.display()
        );
        std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| format!("postgresql.conf: {e}"))?;
        let mut server = PgServer {
            bin: bin.to_owned(),
            dir,
            port,
            guard: None,
        };
        server.start()?;
        Ok(server)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut c = as_server_user(&self.bin, "pg_ctl");
        c.arg("-D").arg(self.data()).args(args);
        c
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub(crate) fn start(&mut self) -> Result<(), String> {
        let log = self.dir.path().join("server.log");
        let mut start = self.pg_ctl(&["-w", "-t", "120", "-l"]);
        start.arg(&log).arg("start");
        run(start, "pg_ctl start")
            .map_err(|e| format!("{e}\n{}", std::fs::read_to_string(&log).unwrap_or_default()))?;
        if self.guard.is_none() {
            self.guard = Some(self.spawn_guard()?);
        }
        Ok(())
    }

    /// The guard: `sh` blocks reading the pipe until this process closes it (by dropping
    /// the server, or by ending), then stops the server and removes the cluster.
    fn spawn_guard(&self) -> Result<(Child, ChildStdin), String> {
        let stop = self.pg_ctl(&["-m", "immediate", "stop"]);
        let line = std::iter::once(stop.get_program())
            .chain(stop.get_args())
            .map(|a| format!("'{}'", a.to_string_lossy().replace('\'', r"'\''")))
            .collect::<Vec<_>>()
            .join(" ");
        let script = format!(
            "cat >/dev/null; {line} >/dev/null 2>&1; rm -rf '{}'",
            self.dir.path().display()
        );
        let mut child = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group: a test that signals this process's group spares it.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("start the server's guard: {e}"))?;
        let stdin = child.stdin.take().expect("piped stdin");
        Ok((child, stdin))
    }

    /// Stops the server: `fast` lets it end its sessions cleanly; otherwise it is stopped
    /// as by a crash (`immediate`: no shutdown checkpoint, recovery on the next start).
    pub(crate) fn stop(&self, fast: bool) -> Result<(), String> {
        let mode = if fast { "fast" } else { "immediate" };
        run(self.pg_ctl(&["-w", "-m", mode, "stop"]), "pg_ctl stop")
    }

    /// Stops the server as by a crash and starts it again.
    pub(crate) fn restart(&mut self) -> Result<(), String> {
        self.stop(false)?;
        self.start()
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `db` on this server, as user `postgres`.
    pub(crate) fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.stop(false);
        if let Some((mut child, stdin)) = self.guard.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}
