// watchJob against the real stack: Realtime changes until the job ends, the catch-up read
// after a dropped connection, RLS on what may be watched.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { after, describe, test } from "node:test";

import { createClient } from "@supabase/supabase-js";
import { enqueue, SupaworkerError, watchJob } from "supaworker";

import {
  closeClients,
  createDocument,
  cuttableProxy,
  fakeWorker,
  faultyProxy,
  needsStack,
  serviceClient,
  stack,
  uniqueQueue,
  userClient,
  userIdOf,
} from "./helpers.mjs";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves once `seen` holds a version with `status` (from any source). */
async function until(seen, predicate, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  while (!seen.some(predicate)) {
    if (Date.now() > deadline) assert.fail(`timed out; saw ${JSON.stringify(seen)}`);
    await sleep(20);
  }
}

after(closeClients);

describe("watchJob", { skip: needsStack }, () => {
  test("reports each change live and resolves with the completed job", async () => {
    const user = userClient(stack.userToken);
    const queue = uniqueQueue();
    const job = await enqueue(user, await createDocument(stack.userToken), { queue });
    const seen = [];
    const statuses = [];
    const watching = watchJob(
      user,
      job.id,
      (j, source) => seen.push({ status: j.status, progress: j.progress_percent, source }),
      { timeoutMs: 30_000, onStatus: (status) => statuses.push(status) },
    );
    watching.catch(() => {});
    await until(seen, (v) => v.status === "pending");
    // Changes from now on must come from Realtime.
    await until(statuses, (s) => s === "LIVE");
    const worker = await fakeWorker(queue);
    try {
      const claimed = await worker.claim();
      await claimed.start();
      await until(seen, (v) => v.status === "processing");
      await claimed.progress(40, "reading");
      await until(seen, (v) => v.progress === 40);
      await claimed.complete({ words: 3 });
      const done = await watching;
      assert.equal(done.status, "completed");
      assert.deepEqual(done.result, { words: 3 });
    } finally {
      await worker.stop();
    }
    const live = seen.filter((v) => v.source === "change").map((v) => v.status);
    assert.ok(live.includes("processing") && live.at(-1) === "completed", JSON.stringify(seen));
    assert.equal(seen.filter((v) => v.status === "completed").length, 1, "reported once");
  });

  test("a job that has already ended resolves from the first read", async () => {
    const user = userClient(stack.userToken);
    const queue = uniqueQueue();
    const job = await enqueue(user, await createDocument(stack.userToken), { queue });
    const worker = await fakeWorker(queue);
    const claimed = await worker.claim();
    await claimed.start();
    await claimed.fail("bad input", false);
    await worker.stop();
    const sources = [];
    const done = await watchJob(user, job.id, (_j, source) => sources.push(source), { timeoutMs: 10_000 });
    assert.equal(done.status, "failed");
    assert.equal(done.error_message, "bad input");
    assert.deepEqual(sources, ["read"]);
  });

  test("a job that ends while the connection is down is caught up after the reconnect", async () => {
    const proxy = await cuttableProxy();
    const user = userClient(stack.userToken, proxy.url, { realtime: { reconnectAfterMs: () => 300 } });
    const queue = uniqueQueue();
    const job = await enqueue(user, await createDocument(stack.userToken), { queue });
    const seen = [];
    const statuses = [];
    const watching = watchJob(user, job.id, (j, source) => seen.push({ status: j.status, source }), {
      timeoutMs: 30_000,
      onStatus: (status) => statuses.push(status),
    });
    watching.catch(() => {}); // awaited below; a failed assertion before must not leave it unhandled
    const worker = await fakeWorker(queue);
    try {
      await until(statuses, (s) => s === "LIVE");
      const claimed = await worker.claim();
      await claimed.start();
      await until(seen, (v) => v.status === "processing" && v.source === "change");
      proxy.cut(); // the socket drops; realtime-js reconnects after 300 ms
      await claimed.complete({ ok: true }); // nothing can deliver this change now
      const done = await watching;
      assert.equal(done.status, "completed");
      assert.deepEqual(seen.at(-1), { status: "completed", source: "read" }, JSON.stringify(seen));
      assert.ok(statuses.filter((s) => s === "SUBSCRIBED").length >= 2, `no rejoin: ${statuses}`);
    } finally {
      await worker.stop();
      await user.removeAllChannels();
      await proxy.close();
    }
  });

  test("RLS: another user's job cannot be watched (PT404, as if it did not exist)", async () => {
    const job = await enqueue(userClient(stack.userToken), await createDocument(stack.userToken), { queue: uniqueQueue() });
    for (const id of [job.id, randomUUID()]) {
      const error = await watchJob(userClient(stack.otherToken), id, () => {}, { timeoutMs: 10_000 }).then(
        () => assert.fail("watched someone else's job"),
        (e) => e,
      );
      assert.ok(error instanceof SupaworkerError);
      assert.deepEqual([error.code, error.status], ["PT404", 404]);
    }
  });

  test("a user's jobs topic: only they may join it, the anon key and other users may not", async () => {
    const topic = `jobs:${userIdOf(stack.userToken)}`;
    const join = async (client) => {
      await client.realtime.setAuth(); // the token from accessToken before the first join
      return new Promise((resolve) => {
        const channel = client.channel(topic, { config: { private: true } });
        channel.subscribe((status) => {
          if (status === "SUBSCRIBED" || status === "CHANNEL_ERROR") {
            client.removeChannel(channel).catch(() => {});
            resolve(status);
          }
        });
      });
    };
    assert.equal(await join(userClient(stack.userToken)), "SUBSCRIBED");
    assert.equal(await join(userClient(stack.otherToken)), "CHANNEL_ERROR");
    const anon = createClient(stack.url, stack.anonKey, { auth: { persistSession: false } });
    try {
      assert.equal(await join(anon), "CHANNEL_ERROR");
    } finally {
      await anon.removeAllChannels();
    }
  });

  // Jobs whose document has no owner (an app's own user_documents may allow that): the test
  // stack's two are made so by pytest (tests/client_js/test_js_client.py), each in its queue.
  const [ownerless, ownerlessToo] = process.env.SUPAWORKER_TEST_OWNERLESS_JOBS
    ? JSON.parse(process.env.SUPAWORKER_TEST_OWNERLESS_JOBS)
    : [];
  const needsOwnerless = !ownerlessToo && "set SUPAWORKER_TEST_OWNERLESS_JOBS ([{id, queue}] x 2)";
  test("a job without an owner has no topic: it is read every pollIntervalMs until it ends", {
    skip: needsOwnerless,
  }, async () => {
    const service = serviceClient();
    const seen = [];
    const statuses = [];
    const watching = watchJob(service, ownerless.id, (j, source) => seen.push({ status: j.status, source }), {
      timeoutMs: 30_000,
      pollIntervalMs: 100,
      onStatus: (status) => statuses.push(status),
    });
    watching.catch(() => {});
    await until(seen, (v) => v.status === "pending");
    const worker = await fakeWorker(ownerless.queue);
    try {
      const claimed = await worker.claim();
      await claimed.start();
      await until(seen, (v) => v.status === "processing");
      await claimed.complete({ polled: true });
      const done = await watching;
      assert.equal(done.status, "completed");
      assert.deepEqual(done.result, { polled: true });
    } finally {
      await worker.stop();
    }
    assert.deepEqual(statuses, ["POLLING"]);
    assert.ok(seen.every((v) => v.source === "read"), JSON.stringify(seen));
    assert.equal(service.getChannels().length, 0, "no Realtime channel for it");
  });

  test("polling a job without an owner through failing reads: one read at a time, the watch lives on", {
    skip: needsOwnerless,
  }, async () => {
    // The first read passes, then every read of the job is a 504 (transient: supabase-js does
    // not retry it, the watch does not end on it) for the whole window.
    const proxy = await faultyProxy({ status: 504, failures: 1e9, match: "/rest/v1/processing_queue", after: 1 });
    const intervalMs = 100;
    const windowMs = 2000;
    try {
      const controller = new AbortController();
      const watching = watchJob(serviceClient(proxy.url), ownerlessToo.id, undefined, {
        pollIntervalMs: intervalMs,
        signal: controller.signal,
      });
      watching.catch(() => {});
      await sleep(windowMs);
      controller.abort();
      assert.equal((await watching.catch((e) => e)).code, "aborted"); // not the 504
      // At most one read per interval (plus the first): a retry chain per failed read would
      // make about three times as many.
      assert.ok(proxy.state.requests >= 3, `${proxy.state.requests} reads: no polling`);
      assert.ok(proxy.state.requests <= 2 + windowMs / intervalMs, `${proxy.state.requests} reads`);
    } finally {
      await proxy.close();
    }
  });

  test("timeoutMs and signal end a watch of a job that does not end", async () => {
    const user = userClient(stack.userToken);
    const job = await enqueue(user, await createDocument(stack.userToken), { queue: uniqueQueue() });
    const timedOut = await watchJob(user, job.id, undefined, { timeoutMs: 300 }).catch((e) => e);
    assert.equal(timedOut.code, "timeout");
    const controller = new AbortController();
    const watching = watchJob(user, job.id, undefined, { signal: controller.signal });
    setTimeout(() => controller.abort(), 100);
    assert.equal((await watching.catch((e) => e)).code, "aborted");
    await sleep(50);
    assert.equal(user.getChannels().length, 0, "each watch leaves its channel");
  });
});
