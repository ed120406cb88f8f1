#!/usr/bin/env python3
"""Chaos check: restart Postgres under load and verify that nothing is lost.

Starts `cronflow serve` on a fresh Postgres database, subscribes a local receiver
(127.0.0.1) to job events, triggers runs as fast as the API takes them for 30 s, and
restarts the Postgres server 10 s in. Then it waits for every run's `job.completed`
delivery and checks: every trigger call answered, every run completed, every delivery
delivered, and each received exactly once. Exits non-zero otherwise. CronFlow's log
goes to ./chaos-cronflow.log (ignored by git).

Usage (not part of `.ci/run`: it restarts the machine's Postgres server):
    cargo build --release -p cronflow
    python3 tests/chaos/postgres_restart.py target/release/cronflow

Environment: CHAOS_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432), the
server's address without a database; CHAOS_PG_RESTART (default
`pg_ctlcluster 15 main restart`), the command that restarts it.
"""
import collections
import http.server
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request

SERVER = os.environ.get("CHAOS_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")
RESTART = os.environ.get("CHAOS_PG_RESTART", "pg_ctlcluster 15 main restart")
DB = "cronflow_chaos"
API = "http://127.0.0.1:18080"
TOKEN = "chaos-admin-token-0123456789"
LOAD_SECS, RESTART_AT, SETTLE_SECS = 30, 10, 120

seen = collections.Counter()
lock = threading.Lock()


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        with lock:
            seen[self.headers["webhook-id"]] += 1
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def psql(db, *commands):
    args = ["psql", f"{SERVER}/{db}", "-Atq"]
    for c in commands:
        args += ["-c", c]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def api(method, path, body=None):
    req = urllib.request.Request(
        API + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def main(binary):
    receiver = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    psql("postgres", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)", f"CREATE DATABASE {DB}")
    env = dict(
        os.environ,
        CRONFLOW_DATABASE_URL=f"{SERVER}/{DB}",
        CRONFLOW_LISTEN=API.removeprefix("http://"),
        CRONFLOW_ALLOW_PRIVATE_TARGETS="true",
        CRONFLOW_ADMIN_TOKEN=TOKEN,
        CRONFLOW_RETRY_SCHEDULE="1s,2s,4s,8s,16s",
    )
    with open("chaos-cronflow.log", "w") as log:
        app = subprocess.Popen([binary, "serve"], env=env, stdout=log, stderr=log)
    try:
        for _ in range(150):
            try:
                api("GET", "/v1/jobs")
                break
            except OSError:
                time.sleep(0.2)
        api("POST", "/v1/webhooks", {"url": f"http://127.0.0.1:{receiver.server_port}/hook",
                                     "events": ["job.completed", "job.failed", "job.timed_out"]})
        job = api("POST", "/v1/jobs", {"name": "chaos", "schedule": "0 0 1 1 *", "overlap_policy": "allow",
                                       "target": {"type": "command", "command": ["true"]}})
        triggered, refused, restarted, start = 0, 0, False, time.time()
        while time.time() - start < LOAD_SECS:
            try:
                api("POST", f"/v1/jobs/{job['id']}/trigger", {})
                triggered += 1
            except OSError:
                refused += 1
            if not restarted and time.time() - start > RESTART_AT:
                restarted = True
                t = time.time()
                subprocess.run(RESTART, shell=True, check=True)
                print(f"Postgres restarted in {time.time() - t:.1f} s, {t - start:.1f} s into the load")
        deadline = time.time() + SETTLE_SECS
        while time.time() < deadline:
            with lock:
                if len(seen) >= triggered:
                    break
            time.sleep(0.5)
        time.sleep(2)  # a duplicate sent late would arrive now
        with lock:
            received, requests = len(seen), sum(seen.values())
        runs = dict(line.split("|") for line in psql(DB, "SELECT state, count(*) FROM runs GROUP BY 1").split())
        deliveries = dict(line.split("|") for line in psql(DB, "SELECT status, count(*) FROM deliveries GROUP BY 1").split())
        print(f"triggered {triggered} runs ({refused} trigger calls refused); runs {runs}; deliveries {deliveries}; "
              f"received {received} distinct deliveries in {requests} requests")
        ok = (refused == 0 and runs == {"completed": str(triggered)} and deliveries == {"delivered": str(triggered)}
              and received == requests == triggered)
        print("OK: nothing lost, nothing sent twice" if ok else "FAILED")
        return 0 if ok else 1
    finally:
        app.terminate()
        app.wait(timeout=60)
        psql("postgres", f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
