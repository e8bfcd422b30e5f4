// The supaworker client (the vendored copy in _supaworker/supaworker/, as deployed functions load
// it) under Deno against a running stack: enqueue, RLS, error codes, watch until completed,
// and serve() speaking the --handler-command protocol. Runs when the variables of
// testing_stack.ts and SUPABASE_SERVICE_ROLE_KEY are set (tests/functions sets them); the
// serve() test always runs.
import { createClient } from "npm:@supabase/supabase-js@2";

import { assert } from "./assert.ts";
import { clientFor, createDocument, stackEnv } from "./testing_stack.ts";
import { enqueue, getJob, type Job, SupaworkerError, watchJob } from "./supaworker/index.ts";

const env = stackEnv();
const serviceKey = Deno.env.get("SUPABASE_SERVICE_ROLE_KEY") ?? "";
const ignore = env === null || serviceKey === "";
const quiet = { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false };

function userClient(token: string) {
  const client = clientFor(env!, token);
  client.realtime.setAuth(token);
  return client;
}

function queueName(): string {
  return `deno-${crypto.randomUUID().slice(0, 8)}`;
}

async function codeOf(promise: Promise<unknown>): Promise<[string, number]> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof SupaworkerError, `not a SupaworkerError: ${error}`);
    return [error.code, error.status];
  }
  throw new Error("expected an error");
}

Deno.test({ name: "client: enqueue, RLS and the database's error codes", ignore }, async () => {
  const user = userClient(env!.userToken);
  const doc = await createDocument(env!, env!.userToken);
  const job = await enqueue(user, doc, { queue: queueName() });
  assert.equal(job.status, "pending");
  assert.equal((await getJob(user, job.id))?.id, job.id);
  assert.equal(await getJob(userClient(env!.otherUserToken), job.id), null);
  assert.deepEqual(await codeOf(enqueue(userClient(env!.otherUserToken), doc)), ["PT403", 403]);
  assert.deepEqual(await codeOf(enqueue(user, crypto.randomUUID())), ["PT404", 404]);
  const other = await createDocument(env!, env!.userToken);
  assert.deepEqual(await codeOf(enqueue(user, other, { payload: { x: 1 } })), ["PT403", 403]);
});

Deno.test({ name: "client: watchJob resolves when a worker completes the job", ignore }, async () => {
  const user = userClient(env!.userToken);
  const service = createClient(env!.url, serviceKey, { auth: quiet });
  const queue = queueName();
  const job = await enqueue(user, await createDocument(env!, env!.userToken), { queue });
  const seen: Array<[string, string]> = [];
  let live!: () => void;
  const isLive = new Promise<void>((resolve) => (live = resolve));
  const watching = watchJob(user, job.id, (j, source) => seen.push([j.status, source]), {
    timeoutMs: 30_000,
    onStatus: (status) => status === "LIVE" && live(),
  });
  await isLive;
  // The worker's side through its RPCs, as `supaworker run` does it.
  const workerId = `deno-test-${crypto.randomUUID().slice(0, 8)}`;
  const call = async (name: string, args: Record<string, unknown>) => {
    const { data, error } = await service.rpc(name, args);
    assert.equal(error, null, name);
    return data;
  };
  await call("register_worker", { p_worker_id: workerId, p_queues: [queue] });
  try {
    const [claimed] = (await call("claim_next_job", {
      p_worker_id: workerId,
      p_limit: 1,
      p_queues: [queue],
    })) as Job[];
    const fence = { p_job_id: job.id, p_worker_id: workerId, p_attempt: claimed!.attempt };
    await call("start_job", fence);
    await call("complete_job", { ...fence, p_result: { from: "deno" } });
    const done = await watching;
    assert.equal(done.status, "completed");
    assert.deepEqual(done.result, { from: "deno" });
    assert.deepEqual(seen.at(-1), ["completed", "change"], JSON.stringify(seen));
  } finally {
    await call("deregister_worker", { p_worker_id: workerId });
    await user.removeAllChannels();
    user.realtime.disconnect();
  }
});

Deno.test("client: serve() under Deno speaks the --handler-command protocol", async () => {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", new URL("./testing_handler.ts", import.meta.url).pathname],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const writer = child.stdin.getWriter();
  const send = (message: unknown) =>
    writer.write(new TextEncoder().encode(`${JSON.stringify(message)}\n`));
  const job = (id: string, payload: Record<string, unknown>) => ({
    id,
    user_document_id: `doc-${id}`,
    user_id: null,
    queue: "default",
    payload,
    attempt: 1,
    max_attempts: 5,
    priority: 0,
    created_at: "2026-12-01T08:00:00+00:00",
  });
  await send({ type: "job", job: job("w", { waitForCancel: true }) });
  await send({ type: "job", job: job("a", { value: "x" }) });
  await send({ type: "job", job: job("p", { permanent: true }) });
  await new Promise((resolve) => setTimeout(resolve, 300));
  await send({ type: "cancel", job_id: "w" });
  await writer.close();
  const { code, stdout, stderr } = await child.output();
  assert.equal(code, 0, new TextDecoder().decode(stderr));
  const lines = new TextDecoder().decode(stdout).trim().split("\n").map((l) => JSON.parse(l));
  const answers = lines.filter((m) => m.type !== "progress");
  assert.deepEqual(
    answers.sort((x, y) => x.job_id.localeCompare(y.job_id)),
    [
      { type: "result", job_id: "a", result: { echo: "x" } },
      { type: "error", job_id: "p", message: "bad input", permanent: true },
      { type: "error", job_id: "w", message: "stopped", permanent: false },
    ],
  );
  assert.deepEqual(lines.filter((m) => m.type === "progress").length, 3);
  assert.match(new TextDecoder().decode(stderr), /console\.log from job a/);
});
