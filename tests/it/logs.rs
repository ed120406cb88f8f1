//! The real program's logs on stderr: text logs carry colour codes only on a terminal,
//! so a log sent to a file or a pipe reads cleanly; JSON logs are one object a line.

use crate::helpers::KillOnDrop;
use nix::{sys::signal::Signal, unistd::Pid};
use std::{
    io::{BufRead, BufReader, Read},
    process::{Command, Stdio},
};

const BIN: &str = env!("CARGO_BIN_EXE_cronflow-under-test");

/// Starts `cronflow serve` on a fresh SQLite file with stdout and stderr piped, waits
/// for its banner, stops it with SIGTERM and returns what it logged.
fn log_of_a_short_serve(format: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mut child = KillOnDrop(
        Command::new(BIN)
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CRONFLOW_LISTEN", "127.0.0.1:0")
            .env("CRONFLOW_LOG_FORMAT", format)
            .arg("serve")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start cronflow"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let banner_ended = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("ctrl-c to stop"));
    assert!(banner_ended, "cronflow serve printed its banner");
    nix::sys::signal::kill(Pid::from_raw(child.0.id() as i32), Signal::SIGTERM).unwrap();
    let mut log = String::new();
    child.0.stderr.take().unwrap().read_to_string(&mut log).unwrap();
    assert!(child.0.wait().unwrap().success(), "{log}");
    log
}

#[test]
fn text_logs_sent_to_a_pipe_hold_no_colour_codes() {
    let log = log_of_a_short_serve("text");
    assert!(
        log.contains("INFO") && log.contains("stopped"),
        "the stop is logged: {log}"
    );
    assert!(!log.contains('\u{1b}'), "no ANSI escape in {log:?}");
}

#[test]
fn json_logs_are_one_object_a_line() {
    let log = log_of_a_short_serve("json");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "INFO" && l["fields"]["message"] == "stopped"),
        "{log}"
    );
}
