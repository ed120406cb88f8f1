// Creates a job and lists its runs through openapi-fetch, typed by the `paths` that
// openapi-typescript generated from CronFlow's openapi.yaml (into ./schema.d.ts beside
// this file, at test time). Type-checked with `tsc --strict`, then run with Node.
// Environment: CRONFLOW_URL, CRONFLOW_TOKEN (an admin key).
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type Run = components["schemas"]["Run"];

// Node's `process`, declared here rather than pulling in @types/node for one field.
declare const process: { env: Record<string, string | undefined> };

function check(condition: unknown, what: string): asserts condition {
  if (!condition) {
    throw new Error(`typescript client: ${what}`);
  }
}

const client = createClient<paths>({
  baseUrl: process.env.CRONFLOW_URL,
  headers: { Authorization: `Bearer ${process.env.CRONFLOW_TOKEN}` },
});

const created = await client.POST("/v1/jobs", {
  body: {
    name: "ts-job",
    schedule: "0 2 * * *",
    timezone: "Europe/Berlin",
    target: { type: "command", command: ["sh", "-c", "echo hello from typescript"] },
  },
});
check(created.data, `create a job: ${JSON.stringify(created.error)}`);
const job = created.data;
check(job.id.startsWith("wf_") && job.next_run_times.length > 0, `the job: ${JSON.stringify(job)}`);

const triggered = await client.POST("/v1/jobs/{id}/trigger", { params: { path: { id: job.id } } });
check(triggered.data, `trigger: ${JSON.stringify(triggered.error)}`);
const runId = triggered.data.id;

const final = new Set<Run["state"]>(["completed", "failed", "timed_out", "cancelled", "skipped"]);
const deadline = Date.now() + 60_000;
let run: Run | undefined;
while (!run || !final.has(run.state)) {
  check(Date.now() < deadline, `run ${runId} did not finish`);
  await new Promise((resolve) => setTimeout(resolve, 100));
  const got = await client.GET("/v1/runs/{id}", { params: { path: { id: runId } } });
  run = got.data;
}
check(run.state === "completed" && run.output?.includes("hello from typescript"), `the run: ${JSON.stringify(run)}`);

const listed = await client.GET("/v1/jobs/{id}/runs", { params: { path: { id: job.id }, query: { limit: 10 } } });
check(listed.data, `list runs: ${JSON.stringify(listed.error)}`);
check(listed.data.items.some((r) => r.id === runId), `the run is listed: ${JSON.stringify(listed.data)}`);

const refused = await client.GET("/v1/jobs", { params: { query: { limit: 0 } } });
check(refused.response.status === 422 && refused.error?.field === "limit", `limit 0: ${JSON.stringify(refused.error)}`);

console.log("typescript client: every step passed");
