// A minimal `--handler-command` child for the tests: plain Node, no dependencies, speaking
// the JSON-lines protocol of supaworker/worker/command_handler.py. The job's payload.mode
// chooses what it does (each mode is one test's scenario):
//   ok           result {doc, attempt, pid}
//   permanent    error, permanent: true
//   fail_once    error (retryable) on the first attempt, then result
//   progress     progress 42 "halfway", then result after payload.seconds
//   sleep        result after payload.seconds, with how many jobs were in flight at once
//   crash        exit(3) mid-job on the first attempt (after payload.seconds), then result
//   garbage      write lines the worker must ignore, then result
//   hang         ignore the cancel on the first attempt (never answer), then result
//   wait_cancel  answer only when cancelled (error "stopped on cancel")
// Every job writes one stderr line naming it; a cancel writes "cancel received for <id>".
import { createInterface } from "node:readline";

const running = new Map(); // job id -> {onCancel}
let inFlight = 0;
let maxInFlight = 0;

function send(message) {
  process.stdout.write(JSON.stringify(message) + "\n");
}

function sleep(seconds) {
  return new Promise((resolve) => setTimeout(resolve, seconds * 1000));
}

function finish(job, message) {
  if (!running.has(job.id)) return;
  running.delete(job.id);
  inFlight -= 1;
  send({ job_id: job.id, ...message });
}

async function run(job) {
  const mode = job.payload.mode ?? "ok";
  const seconds = job.payload.seconds ?? 0.5;
  const first = job.retry_count === 0;
  const entry = { onCancel: () => {} };
  running.set(job.id, entry);
  inFlight += 1;
  maxInFlight = Math.max(maxInFlight, inFlight);
  process.stderr.write(`job ${job.id} starting (${mode})\n`);
  const done = (result) => finish(job, { type: "result", result });
  switch (mode) {
    case "ok":
      return done({ doc: job.user_document_id, attempt: job.attempt, pid: process.pid });
    case "permanent":
      return finish(job, {
        type: "error",
        message: "this document can never be processed",
        permanent: true,
      });
    case "fail_once":
      if (first) {
        return finish(job, { type: "error", message: "transient failure", permanent: false });
      }
      return done({ recovered: true, pid: process.pid });
    case "progress":
      send({ type: "progress", job_id: job.id, percent: 42, message: "halfway" });
      await sleep(seconds);
      return done({ progressed: true });
    case "sleep": {
      const started = Date.now();
      await sleep(seconds);
      return done({ pid: process.pid, started, ended: Date.now(), max_in_flight: maxInFlight });
    }
    case "crash":
      if (first) {
        await sleep(seconds);
        process.stderr.write(`crashing on purpose in job ${job.id}\n`);
        process.exit(3);
      }
      return done({ pid: process.pid, attempt: job.attempt });
    case "garbage":
      process.stdout.write("this is not JSON\n");
      process.stdout.write("[1, 2, 3]\n");
      send({ type: "result", result: "no job id" });
      send({ type: "result", job_id: "00000000-0000-0000-0000-000000000000", result: 1 });
      send({ type: "teleport", job_id: job.id });
      send({ type: "progress", job_id: job.id, percent: 250 });
      return done({ pid: process.pid, survived: true });
    case "hang":
      if (first) return; // never answers, not even the cancel
      return done({ pid: process.pid, attempt: job.attempt });
    case "wait_cancel":
      entry.onCancel = () => finish(job, { type: "error", message: "stopped on cancel" });
      return;
    default:
      return finish(job, { type: "error", message: `unknown mode ${mode}`, permanent: true });
  }
}

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const message = JSON.parse(line);
  if (message.type === "job") {
    run(message.job);
  } else if (message.type === "cancel") {
    const entry = running.get(message.job_id);
    process.stderr.write(`cancel received for ${message.job_id}\n`);
    if (entry) entry.onCancel();
  }
});
// End of stdin: the worker is stopping.
lines.on("close", () => process.exit(0));
