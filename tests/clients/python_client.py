"""Drives a running CronFlow through the client openapi-python-client generated from
openapi.yaml, and nothing else, as a user of that client would.

Environment: CRONFLOW_URL and CRONFLOW_TOKEN (an admin key) name the server;
RECEIVER_OK answers 200 to every request, RECEIVER_FAILING answers 500 (both on
127.0.0.1). The server's webhook retry schedule should be short, so a delivery to the
failing receiver reaches the dead letter queue within seconds. Exits non-zero with a
message on the first step that does not go as documented.
"""

import csv
import io
import json
import os
import time

from cronflow_client import AuthenticatedClient
from cronflow_client.api.audit import stream_audit_log
from cronflow_client.api.deliveries import (
    export_deliveries_csv,
    get_delivery,
    list_deliveries,
    list_dlq,
    replay_dead_delivery,
)
from cronflow_client.api.jobs import create_job, get_job, list_jobs
from cronflow_client.api.keys import create_key
from cronflow_client.api.runs import get_run, trigger_job
from cronflow_client.api.webhooks import create_webhook
from cronflow_client.models import (
    CommandTarget,
    CommandTargetType,
    Delivery,
    DeliveryStatus,
    ErrorBody,
    HttpMethod,
    HttpTarget,
    HttpTargetType,
    Job,
    JobIn,
    KeyIn,
    KeyScope,
    NewKey,
    Run,
    RunState,
    WebhookEvent,
    WebhookIn,
    WebhookWithSecret,
)

BASE = os.environ["CRONFLOW_URL"]
ADMIN = AuthenticatedClient(base_url=BASE, token=os.environ["CRONFLOW_TOKEN"], raise_on_unexpected_status=True)
RECEIVER_OK = os.environ["RECEIVER_OK"]
RECEIVER_FAILING = os.environ["RECEIVER_FAILING"]
FINAL = {RunState.COMPLETED, RunState.FAILED, RunState.TIMED_OUT, RunState.CANCELLED, RunState.SKIPPED}


def check(condition, what):
    if not condition:
        raise SystemExit(f"python client: {what}")


def wait_for(what, probe, seconds=120.0):
    """Polls `probe` until it returns something truthy, or fails after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        found = probe()
        if found:
            return found
        check(time.monotonic() < deadline, f"timed out waiting for {what}")
        time.sleep(0.1)


def new_job(name, target):
    job = create_job.sync(client=ADMIN, body=JobIn(name=name, schedule="0 0 1 1 *", target=target))
    check(isinstance(job, Job) and job.id.startswith("wf_"), f"create {name}: {job}")
    check(get_job.sync(job.id, client=ADMIN).name == name, f"read {name} back")
    return job


def finished_run(job):
    run = trigger_job.sync(job.id, client=ADMIN)
    check(isinstance(run, Run), f"trigger {job.name}: {run}")
    return wait_for(f"run {run.id} to finish", lambda: (r := get_run.sync(run.id, client=ADMIN)).state in FINAL and r)


def subscribe(url, events):
    hook = create_webhook.sync(client=ADMIN, body=WebhookIn(url=url, events=events))
    check(isinstance(hook, WebhookWithSecret) and hook.secret, f"subscribe {url}: {hook}")
    return hook


# A webhook subscription to a receiver, a command job and an HTTP job.
hook = subscribe(RECEIVER_OK + "/events", [WebhookEvent.JOB_COMPLETED, WebhookEvent.JOB_FAILED])
command_job = new_job(
    "py-command",
    CommandTarget(type_=CommandTargetType.COMMAND, command=["sh", "-c", "echo hello from python"]),
)
http_job = new_job(
    "py-http",
    HttpTarget(type_=HttpTargetType.HTTP, url=RECEIVER_OK + "/ping", method=HttpMethod.POST, body="{}"),
)

# Trigger runs and read them with their output.
run = finished_run(command_job)
check(run.state == RunState.COMPLETED, f"command run: {run.state}")
check("hello from python" in run.output, f"command output: {run.output!r}")
http_run = finished_run(http_job)
check(http_run.state == RunState.COMPLETED and http_run.exit_code == 200, f"http run: {http_run}")

# The delivery of the command run's event, in the activity list, with its attempts.
delivered = wait_for(
    "the delivery of job.completed",
    lambda: [
        d
        for d in list_deliveries.sync(client=ADMIN, job_id=command_job.id).items
        if d.status == DeliveryStatus.DELIVERED
    ],
)
detail = get_delivery.sync(delivered[0].id, client=ADMIN)
check(isinstance(detail, Delivery) and detail.webhook_id == hook.id, f"delivery: {detail}")
check(len(detail.attempt_history) >= 1 and detail.attempt_history[-1].status_code == 200, f"attempts: {detail}")

# A delivery that dies (the receiver answers 500 until retries run out), replayed from
# the dead letter queue.
failing_hook = subscribe(RECEIVER_FAILING + "/events", [WebhookEvent.JOB_FAILED])
failing_job = new_job("py-failing", CommandTarget(type_=CommandTargetType.COMMAND, command=["sh", "-c", "exit 3"]))
check(finished_run(failing_job).state == RunState.FAILED, "the failing job fails")
dead = wait_for(
    "a dead delivery in the DLQ",
    lambda: [d for d in list_dlq.sync(client=ADMIN).items if d.webhook_id == failing_hook.id],
)[0]
attempts_before = dead.attempts
replayed = replay_dead_delivery.sync(dead.id, client=ADMIN)
check(isinstance(replayed, Delivery) and replayed.status == DeliveryStatus.PENDING, f"replay: {replayed}")
wait_for(
    "the replayed delivery to be attempted again",
    lambda: get_delivery.sync(dead.id, client=ADMIN).attempts > attempts_before,
)

# The CSV export of the activity log.
export = export_deliveries_csv.sync(client=ADMIN, webhook_id=hook.id)
rows = list(csv.DictReader(io.StringIO(export.payload.read().decode())))
check(rows and all(r["webhook_id"] == hook.id for r in rows), f"CSV rows: {rows}")
check(any(r["delivery_id"] == detail.id and r["status_code"] == "200" for r in rows), "the delivery is in the CSV")

# The audit stream, read with an `audit` key (which can read nothing else).
key = create_key.sync(client=ADMIN, body=KeyIn(name="siem", scope=KeyScope.AUDIT))
check(isinstance(key, NewKey) and key.token, f"audit key: {key}")
auditor = AuthenticatedClient(base_url=BASE, token=key.token, raise_on_unexpected_status=True)
stream = stream_audit_log.sync(client=auditor)
entries = [json.loads(line) for line in stream.payload.read().decode().splitlines() if line]
check(any(e.get("object_id") == command_job.id for e in entries), f"the job's creation is audited: {entries[:3]}")
refused = list_jobs.sync_detailed(client=auditor)
check(refused.status_code == 403 and isinstance(refused.parsed, ErrorBody), f"an audit key lists no jobs: {refused}")

# A 422 error body, naming the field.
bad = create_job.sync_detailed(
    client=ADMIN,
    body=JobIn(
        name="bad", schedule="61 * * * *", target=CommandTarget(type_=CommandTargetType.COMMAND, command=["true"])
    ),
)
check(bad.status_code == 422 and isinstance(bad.parsed, ErrorBody), f"a bad schedule: {bad}")
check(bad.parsed.code == "validation_failed" and bad.parsed.field == "schedule", f"422 body: {bad.parsed}")

print("python client: every step passed")
