import { assert } from "../_supaworker/assert.ts";

import type { Caller } from "../_supaworker/auth.ts";
import {
  dbError,
  DOC_ID,
  FakeQueue,
  JOB_ID,
  request,
  unsignedJwt,
  USER_TOKEN,
} from "../_supaworker/testing.ts";
import { createEnqueueHandler } from "./handler.ts";

function setup(queue = new FakeQueue()) {
  const handler = createEnqueueHandler((caller: Caller) => {
    queue.authorization = caller.authorization;
    return queue;
  });
  const post = (body: unknown, token?: string | null) =>
    handler(
      request("/enqueue-document", {
        method: "POST",
        body: typeof body === "string" ? body : JSON.stringify(body),
        headers: { "Content-Type": "application/json" },
        token,
      }),
    );
  return { handler, queue, post };
}

async function expectError(resp: Response, status: number, error: string): Promise<void> {
  assert.equal(resp.status, status);
  assert.equal(resp.headers.get("Access-Control-Allow-Origin"), "*");
  const body = await resp.json();
  assert.equal(body.error, error);
  assert.equal(typeof body.message, "string");
}

Deno.test("enqueues as the caller and answers 202 with the public job", async () => {
  const { queue, post } = setup();
  const resp = await post({ user_document_id: DOC_ID, priority: 5 });
  assert.equal(resp.status, 202);
  assert.equal(resp.headers.get("Access-Control-Allow-Origin"), "*");
  const body = await resp.json();
  assert.equal(body.success, true);
  assert.equal(body.status, "queued");
  assert.equal(body.job.id, JOB_ID);
  assert.equal(body.job.status, "pending");
  // Internal columns stay in the database.
  assert.equal("payload" in body.job, false);
  assert.equal("assigned_to" in body.job, false);
  assert.equal("attempt" in body.job, false);
  assert.deepEqual(queue.calls, [{
    method: "enqueue",
    args: [DOC_ID, 5],
    authorization: `Bearer ${USER_TOKEN}`,
  }]);
});

Deno.test("priority is optional (the database default applies)", async () => {
  const { queue, post } = setup();
  assert.equal((await post({ user_document_id: DOC_ID.toUpperCase() })).status, 202);
  assert.deepEqual(queue.calls[0].args, [DOC_ID, undefined]);
});

Deno.test("malformed bodies are 400 and never reach the database", async () => {
  const { queue, post } = setup();
  const bad: unknown[] = [
    "not json",
    [],
    {},
    { user_document_id: "" },
    { user_document_id: "123" },
    { user_document_id: 42 },
    { user_document_id: DOC_ID, priority: 1.5 },
    { user_document_id: DOC_ID, priority: "high" },
    { user_document_id: DOC_ID, priority: 2 ** 40 },
  ];
  for (const body of bad) {
    const resp = await post(body);
    assert.equal(resp.status, 400, JSON.stringify(body));
    await resp.body?.cancel();
  }
  assert.equal(queue.calls.length, 0);
});

Deno.test("no token or the anon key is 401, checked before the body", async () => {
  const { queue, post } = setup();
  await expectError(await post("not json", null), 401, "unauthorized");
  await expectError(
    await post({ user_document_id: DOC_ID }, unsignedJwt({ role: "anon" })),
    401,
    "unauthorized",
  );
  assert.equal(queue.calls.length, 0);
});

Deno.test("the database's ownership answers become 403 / 404", async () => {
  await expectError(
    await setup(new FakeQueue(dbError("PT403", 403))).post({ user_document_id: DOC_ID }),
    403,
    "forbidden",
  );
  await expectError(
    await setup(new FakeQueue(dbError("PT404", 404))).post({ user_document_id: DOC_ID }),
    404,
    "not_found",
  );
  await expectError(
    await setup(new FakeQueue(dbError("PGRST301", 401))).post({ user_document_id: DOC_ID }),
    401,
    "unauthorized",
  );
});

Deno.test("a too large body is 413", async () => {
  const { post } = setup();
  await expectError(
    await post({ user_document_id: DOC_ID, pad: "x".repeat(20_000) }),
    413,
    "payload_too_large",
  );
});

Deno.test("GET is 405 with Allow; OPTIONS is the CORS preflight", async () => {
  const { handler } = setup();
  const resp = await handler(request("/enqueue-document"));
  await expectError(resp, 405, "method_not_allowed");
  assert.equal(resp.headers.get("Allow"), "POST, OPTIONS");
  const preflight = await handler(request("/enqueue-document", { method: "OPTIONS", token: null }));
  assert.equal(preflight.status, 200);
  await preflight.body?.cancel();
});
