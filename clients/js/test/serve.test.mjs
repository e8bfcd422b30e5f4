// serve(): the JSON-lines protocol of --handler-command, spoken with a real handler process
// (test/fixtures/handler.mjs) over its stdin and stdout.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createInterface } from "node:readline";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";

const FIXTURE = fileURLToPath(new URL("./fixtures/handler.mjs", import.meta.url));

function job(id, payload = {}) {
  return {
    id,
    user_document_id: `doc-${id}`,
    user_id: null,
    queue: "default",
    payload,
    attempt: 1,
    max_attempts: 5,
    priority: 0,
    created_at: "2026-12-01T08:00:00+00:00",
  };
}

/** The handler process: send() writes a line, next() is the next stdout message. */
function startHandler() {
  const child = spawn(process.execPath, [FIXTURE], { stdio: ["pipe", "pipe", "pipe"] });
  const messages = [];
  const waiters = [];
  const stdoutLines = [];
  let stderr = "";
  child.stderr.on("data", (chunk) => (stderr += chunk));
  createInterface({ input: child.stdout }).on("line", (line) => {
    stdoutLines.push(line);
    const message = JSON.parse(line); // every stdout line must be protocol JSON
    const waiter = waiters.shift();
    if (waiter) waiter(message);
    else messages.push(message);
  });
  const exited = new Promise((resolve) => child.on("exit", (code) => resolve(code)));
  return {
    send: (value) => child.stdin.write(typeof value === "string" ? `${value}\n` : `${JSON.stringify(value)}\n`),
    next: () =>
      messages.length
        ? Promise.resolve(messages.shift())
        : new Promise((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`no message; stderr: ${stderr}`)), 10_000);
          waiters.push((m) => {
            clearTimeout(timer);
            resolve(m);
          });
        }),
    end: () => child.stdin.end(),
    exited,
    stderr: () => stderr,
    stdoutLines,
  };
}

describe("serve(handler)", () => {
  test("a result, with progress first; console.log goes to stderr", async () => {
    const h = startHandler();
    h.send({ type: "job", job: job("a", { value: [1, "x"], progress: 50 }) });
    assert.deepEqual(await h.next(), { type: "progress", job_id: "a", percent: 50, message: "working" });
    assert.deepEqual(await h.next(), { type: "result", job_id: "a", result: { echo: [1, "x"], attempt: 1 } });
    h.end();
    assert.equal(await h.exited, 0);
    assert.match(h.stderr(), /console\.log from job a/);
    assert.equal(h.stdoutLines.length, 2);
  });

  test("errors: retryable, permanent (PermanentError), a result that is not JSON, undefined is null", async () => {
    const h = startHandler();
    h.send({ type: "job", job: job("f", { fail: true }) });
    assert.deepEqual(await h.next(), { type: "error", job_id: "f", message: "try again", permanent: false });
    h.send({ type: "job", job: job("p", { permanent: true }) });
    assert.deepEqual(await h.next(), { type: "error", job_id: "p", message: "bad input", permanent: true });
    h.send({ type: "job", job: job("b", { bigint: true }) });
    const bad = await h.next();
    assert.deepEqual([bad.type, bad.job_id, bad.permanent], ["error", "b", true]);
    assert.match(bad.message, /not JSON/);
    h.send({ type: "job", job: job("u", { undefined: true }) });
    assert.deepEqual(await h.next(), { type: "result", job_id: "u", result: null });
    h.end();
    assert.equal(await h.exited, 0);
  });

  test("jobs run concurrently in the one process: a short job answers before a long one", async () => {
    const h = startHandler();
    h.send({ type: "job", job: job("slow", { sleepMs: 600, value: "slow" }) });
    h.send({ type: "job", job: job("fast", { sleepMs: 10, value: "fast" }) });
    const started = Date.now();
    assert.equal((await h.next()).job_id, "fast");
    assert.equal((await h.next()).job_id, "slow");
    assert.ok(Date.now() - started < 1_200, "the two ran at the same time");
    h.end();
    await h.exited;
  });

  test("cancel aborts the job's signal; the job still answers", async () => {
    const h = startHandler();
    h.send({ type: "job", job: job("c", { waitForCancel: true }) });
    await new Promise((resolve) => setTimeout(resolve, 100));
    h.send({ type: "cancel", job_id: "c" });
    const answer = await h.next();
    assert.deepEqual([answer.type, answer.job_id], ["error", "c"]);
    assert.match(answer.message, /stopped: job c was cancelled/);
    h.end();
    assert.equal(await h.exited, 0);
  });

  test("garbage, unknown types, unknown jobs and duplicates are logged and ignored", async () => {
    const h = startHandler();
    h.send("this is not json");
    h.send("[1, 2]");
    h.send({ type: "mystery" });
    h.send({ type: "job", job: { no: "id" } });
    h.send({ type: "cancel", job_id: "nobody" });
    h.send({ type: "job", job: job("d", { sleepMs: 200, value: 1 }) });
    h.send({ type: "job", job: job("d", { value: 2 }) });
    assert.deepEqual(await h.next(), { type: "result", job_id: "d", result: { echo: 1, attempt: 1 } });
    h.end();
    assert.equal(await h.exited, 0);
    assert.equal(h.stdoutLines.length, 1, "one answer for the duplicated job");
    for (const expected of [/not JSON/, /not an object/, /unknown type "mystery"/, /without an id/, /not running: nobody/, /already running/]) {
      assert.match(h.stderr(), expected);
    }
  });

  test("when stdin ends, the jobs in flight answer before the process exits", async () => {
    const h = startHandler();
    h.send({ type: "job", job: job("last", { sleepMs: 300, value: "done" }) });
    h.end();
    assert.deepEqual(await h.next(), { type: "result", job_id: "last", result: { echo: "done", attempt: 1 } });
    assert.equal(await h.exited, 0);
  });
});
