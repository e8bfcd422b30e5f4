// enqueue / enqueueMany / getJob / listJobs against the real stack: ownership and RLS are
// the database's, errors carry its codes, transient failures are retried within a bound.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, describe, test } from "node:test";

import {
  cancelJob,
  enqueue,
  enqueueMany,
  getJob,
  getJobForDocument,
  listJobs,
  SupaworkerError,
} from "supaworker";

import {
  closeClients,
  closedPort,
  createDocument,
  faultyProxy,
  needsStack,
  serviceClient,
  stack,
  uniqueQueue,
  userClient,
  userIdOf,
} from "./helpers.mjs";

async function rejectsWith(promise, code, status) {
  const error = await promise.then(
    () => assert.fail(`expected ${code}, got a result`),
    (e) => e,
  );
  assert.ok(error instanceof SupaworkerError, `not a SupaworkerError: ${error}`);
  assert.equal(error.code, code, error.message);
  assert.equal(error.status, status, error.message);
  return error;
}

after(closeClients);

describe("enqueue and read", { skip: needsStack }, () => {
  test("a user enqueues their document and reads the job; enqueue is idempotent", async () => {
    const user = userClient(stack.userToken);
    const doc = await createDocument(stack.userToken);
    const queue = uniqueQueue();
    const job = await enqueue(user, doc, { priority: 3, queue });
    assert.equal(job.user_document_id, doc);
    assert.equal(job.user_id, userIdOf(stack.userToken));
    // A user's priority orders only their own jobs (issue 18): it is user_priority.
    assert.deepEqual([job.status, job.user_priority, job.priority, job.queue], ["pending", 3, 0, queue]);
    const again = await enqueue(user, doc, { priority: 3, queue });
    assert.equal(again.id, job.id);
    assert.equal((await getJob(user, job.id)).id, job.id);
    assert.equal((await getJobForDocument(user, doc)).id, job.id);
    const listed = await listJobs(user, { queue, status: "pending" });
    assert.deepEqual(listed.map((j) => j.id), [job.id]);
  });

  test("a user's priority is clamped to -10..10 by the database", async () => {
    const doc = await createDocument(stack.userToken);
    const job = await enqueue(userClient(stack.userToken), doc, { priority: 500, queue: uniqueQueue() });
    assert.equal(job.user_priority, 10);
  });

  test("RLS: another user's job is invisible (null, not listed) and not theirs to cancel", async () => {
    const doc = await createDocument(stack.userToken);
    const queue = uniqueQueue();
    const job = await enqueue(userClient(stack.userToken), doc, { queue });
    const other = userClient(stack.otherToken);
    assert.equal(await getJob(other, job.id), null);
    assert.equal(await getJobForDocument(other, doc), null);
    assert.deepEqual(await listJobs(other, { queue }), []);
    await rejectsWith(cancelJob(other, job.id), "PT403", 403);
    // The owner still sees it, so the nulls above were RLS, not a missing row.
    assert.equal((await getJob(serviceClient(), job.id)).id, job.id);
  });

  test("enqueueMany: one enqueue_jobs call per chunk, jobs in order, per-document options", async () => {
    const docs = [];
    for (let i = 0; i < 5; i++) docs.push(await createDocument(stack.userToken));
    const calls = [];
    const counting = (input, init) => {
      const path = new URL(String(input)).pathname;
      if (path.startsWith("/rest/v1/rpc/")) calls.push([path, JSON.parse(init.body).p_jobs?.length]);
      return fetch(input, init);
    };
    const user = userClient(stack.userToken, stack.url, { global: { fetch: counting } });
    const queue = uniqueQueue();
    const items = [...docs.slice(0, 4), { documentId: docs[4], priority: 7 }];
    const jobs = await enqueueMany(user, items, { chunkSize: 2, queue, priority: 2 });
    assert.deepEqual(jobs.map((j) => j.user_document_id), docs);
    assert.deepEqual(jobs.map((j) => [j.queue, j.user_priority]), [...Array(4).fill([queue, 2]), [queue, 7]]);
    // Three calls of at most two documents, never enqueue_job.
    assert.deepEqual(calls, [["/rest/v1/rpc/enqueue_jobs", 2], ["/rest/v1/rpc/enqueue_jobs", 2], ["/rest/v1/rpc/enqueue_jobs", 1]]);
    // Idempotent per document, like enqueue: the same jobs again, in one call by default.
    calls.length = 0;
    const again = await enqueueMany(user, docs, { queue });
    assert.deepEqual(again.map((j) => j.id), jobs.map((j) => j.id));
    assert.deepEqual(calls, [["/rest/v1/rpc/enqueue_jobs", 5]]);
    assert.deepEqual(await enqueueMany(user, []), []);
  });

  test("enqueueMany: a refusal names the element's index across chunks; earlier chunks stay queued", async () => {
    const mine = [];
    for (let i = 0; i < 3; i++) mine.push(await createDocument(stack.userToken));
    const theirs = await createDocument(stack.otherToken);
    const user = userClient(stack.userToken);
    const queue = uniqueQueue();
    const error = await rejectsWith(enqueueMany(user, [...mine, theirs], { chunkSize: 2, queue }), "PT403", 403);
    assert.match(error.message, /^p_jobs\[3\]: document .* does not belong to you/);
    assert.ok(error.hint, "the SQL's hint is kept");
    // The first chunk went through; the refused chunk is all or nothing.
    assert.ok(await getJobForDocument(user, mine[0]));
    assert.ok(await getJobForDocument(user, mine[1]));
    assert.equal(await getJobForDocument(user, mine[2]), null);
    const bad = await rejectsWith(enqueueMany(user, [mine[2], { documentId: mine[2], queue: "no spaces" }]), "22023", 400);
    assert.match(bad.message, /^p_jobs\[1\]: invalid queue name/);
    const serverOnly = await rejectsWith(enqueueMany(user, [mine[2], { documentId: mine[2], payload: { a: 1 } }]), "PT403", 403);
    assert.match(serverOnly.message, /^p_jobs\[1\]: .*only the service role may set/);
    assert.equal(await getJobForDocument(user, mine[2]), null);
    await rejectsWith(enqueueMany(user, mine, { chunkSize: 0 }), "22023", 400);
    await rejectsWith(enqueueMany(user, mine, { chunkSize: 10_001 }), "22023", 400);
  });

  test("enqueueMany with the service role: server-only options, shared and per document", async () => {
    const docs = [await createDocument(stack.userToken), await createDocument(stack.userToken)];
    const queue = uniqueQueue();
    const jobs = await enqueueMany(serviceClient(), [docs[0], { documentId: docs[1], maxAttempts: 5, concurrencyKey: "k-1" }], {
      queue,
      payload: { source: "bulk" },
      maxAttempts: 2,
      timeoutSeconds: 30,
    });
    assert.deepEqual(
      jobs.map((j) => [j.user_document_id, j.payload, j.max_attempts, j.timeout_seconds, j.concurrency_key]),
      [[docs[0], { source: "bulk" }, 2, 30, null], [docs[1], { source: "bulk" }, 5, 30, "k-1"]],
    );
  });

  test("enqueueMany splits more than 10,000 documents into calls of 10,000", { timeout: 120_000 }, async () => {
    const service = serviceClient();
    const owner = userIdOf(stack.userToken);
    const rows = Array.from({ length: 10_001 }, (_, i) => ({ user_id: owner, name: `bulk-${i}.txt`, content: "x" }));
    const { data, error } = await service.from("user_documents").insert(rows).select("id");
    if (error) throw new Error(JSON.stringify(error));
    const ids = data.map((row) => row.id);
    try {
      let calls = 0;
      const counting = (input, init) => {
        if (String(input).includes("/rpc/enqueue_jobs")) calls += 1;
        return fetch(input, init);
      };
      const jobs = await enqueueMany(serviceClient(stack.url, { global: { fetch: counting } }), ids, {
        queue: uniqueQueue(),
      });
      assert.equal(calls, 2);
      assert.equal(jobs.length, ids.length);
      assert.ok(jobs.every((job, i) => job.user_document_id === ids[i]), "jobs in the order given");
    } finally {
      // Their jobs go with them (on delete cascade): the shared stack keeps no idle backlog.
      for (let i = 0; i < ids.length; i += 500) {
        await service.from("user_documents").delete().in("id", ids.slice(i, i + 500));
      }
    }
  });
});

describe("error codes are the database's", { skip: needsStack }, () => {
  test("PT404 unknown document, PT403 someone else's document", async () => {
    const user = userClient(stack.userToken);
    const unknown = await rejectsWith(enqueue(user, randomUUID()), "PT404", 404);
    assert.match(unknown.message, /not found/);
    assert.ok(unknown.hint, "the SQL's hint is kept");
    assert.equal(unknown.transient, false);
    const theirs = await createDocument(stack.otherToken);
    await rejectsWith(enqueue(user, theirs), "PT403", 403);
  });

  test("server-only options: PT403 for a user's client, accepted with the service role", async () => {
    const user = userClient(stack.userToken);
    const serverOnly = [
      { payload: { path: "/etc/passwd" } },
      { maxAttempts: 50 },
      { timeoutSeconds: 1 },
      { requires: { gpu: true } },
      { runAt: new Date(Date.now() - 3_600_000) },
    ];
    for (const option of serverOnly) {
      const doc = await createDocument(stack.userToken);
      const error = await rejectsWith(enqueue(user, doc, option), "PT403", 403);
      assert.match(error.message, /only the service role may set/, JSON.stringify(option));
    }
    // What the SQL accepts from users, the client passes too: defaults spelled out, a start
    // in the future.
    const spelled = await enqueue(user, await createDocument(stack.userToken), {
      payload: {},
      requires: {},
      runAt: new Date(Date.now() + 3_600_000),
      queue: uniqueQueue(),
    });
    assert.equal(spelled.status, "pending");
    const doc = await createDocument(stack.userToken);
    const job = await enqueue(serviceClient(), doc, {
      payload: { path: "s3://bucket/key" },
      maxAttempts: 2,
      timeoutSeconds: 30,
      queue: uniqueQueue(),
    });
    assert.deepEqual([job.payload, job.max_attempts, job.timeout_seconds], [{ path: "s3://bucket/key" }, 2, 30]);
  });

  test("22023 for a bad argument, 22P02 for an id that is not a UUID", async () => {
    const doc = await createDocument(stack.userToken);
    await rejectsWith(enqueue(userClient(stack.userToken), doc, { queue: "no spaces" }), "22023", 400);
    await rejectsWith(getJob(userClient(stack.userToken), "not-a-uuid"), "22P02", 400);
    await rejectsWith(listJobs(userClient(stack.userToken), { limit: 0 }), "22023", 400);
  });

  test("PGRST301 for a forged token", async () => {
    const forged = `${stack.userToken.slice(0, -4)}AAAA`;
    const error = await rejectsWith(listJobs(userClient(forged)), "PGRST301", 401);
    assert.equal(error.transient, false);
  });
});

describe("transient failures of enqueue", { skip: needsStack }, () => {
  test("503 and 502 from a gateway are retried until the call goes through", async () => {
    for (const status of [503, 502]) {
      const proxy = await faultyProxy({ status, failures: 2 });
      try {
        const doc = await createDocument(stack.userToken);
        const job = await enqueue(userClient(stack.userToken, proxy.url), doc, {
          retry: { initialDelayMs: 20, maxElapsedMs: 5_000 },
        });
        assert.equal(job.user_document_id, doc);
        assert.equal(proxy.state.requests, 3, "two failures, then the call that worked");
      } finally {
        await proxy.close();
      }
    }
  });

  test("retry: false tries once and surfaces the gateway's status", async () => {
    const proxy = await faultyProxy({ status: 504, failures: 1 });
    try {
      const doc = await createDocument(stack.userToken);
      const error = await rejectsWith(
        enqueue(userClient(stack.userToken, proxy.url), doc, { retry: false }),
        "",
        504,
      );
      assert.equal(error.transient, true);
      assert.equal(proxy.state.requests, 1);
    } finally {
      await proxy.close();
    }
  });

  test("enqueueMany retries a chunk's 503 like enqueue, and not a refusal", async () => {
    const proxy = await faultyProxy({ status: 503, failures: 2 });
    try {
      const docs = [await createDocument(stack.userToken), await createDocument(stack.userToken)];
      const jobs = await enqueueMany(userClient(stack.userToken, proxy.url), docs, {
        retry: { initialDelayMs: 20, maxElapsedMs: 5_000 },
      });
      assert.deepEqual(jobs.map((j) => j.user_document_id), docs);
      assert.equal(proxy.state.requests, 3, "two failures, then the call that worked");
      await rejectsWith(enqueueMany(userClient(stack.userToken, proxy.url), [randomUUID()]), "PT404", 404);
      assert.equal(proxy.state.requests, 4);
    } finally {
      await proxy.close();
    }
  });

  test("a refusal is not retried", async () => {
    const proxy = await faultyProxy({ failures: 0 });
    try {
      await rejectsWith(enqueue(userClient(stack.userToken, proxy.url), randomUUID()), "PT404", 404);
      assert.equal(proxy.state.requests, 1);
    } finally {
      await proxy.close();
    }
  });

  test("a refused connection is retried within the bound, then reported with status 0", async () => {
    const url = `http://127.0.0.1:${await closedPort()}`;
    let attempts = 0;
    const counting = (input, init) => {
      attempts += 1;
      return fetch(input, init);
    };
    const client = userClient(stack.userToken, url, { global: { fetch: counting } });
    const started = Date.now();
    const error = await rejectsWith(
      enqueue(client, randomUUID(), { retry: { initialDelayMs: 50, maxDelayMs: 200, maxElapsedMs: 1_500 } }),
      "",
      0,
    );
    const elapsed = Date.now() - started;
    assert.equal(error.transient, true);
    assert.ok(attempts >= 3, `only ${attempts} attempts`);
    assert.ok(elapsed < 1_500 + 500, `gave up after ${elapsed} ms`);
  });
});
