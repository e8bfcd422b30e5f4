import { assert } from "../_supaworker/assert.ts";

import type { Caller } from "../_supaworker/auth.ts";
import { HttpError } from "../_supaworker/http.ts";
import { dbError, DOC_ID, FakeQueue, JOB_ID, request } from "../_supaworker/testing.ts";
import { createJobStatusHandler, parseJobLookup } from "./handler.ts";

function setup(queue = new FakeQueue()) {
  const handler = createJobStatusHandler((caller: Caller) => {
    queue.authorization = caller.authorization;
    return queue;
  });
  return { handler, queue, get: (query: string) => handler(request(`/job-status${query}`)) };
}

Deno.test("looks a job up by document or by job id", () => {
  assert.deepEqual(parseJobLookup(new URLSearchParams({ user_document_id: DOC_ID })), {
    by: "user_document_id",
    value: DOC_ID,
  });
  assert.deepEqual(parseJobLookup(new URLSearchParams({ job_id: JOB_ID })), {
    by: "id",
    value: JOB_ID,
  });
});

Deno.test("neither, both or a non-UUID parameter is 400", () => {
  for (const query of ["", `job_id=${JOB_ID}&user_document_id=${DOC_ID}`, "job_id=1", "job_id="]) {
    assert.throws(() => parseJobLookup(new URLSearchParams(query)), (error: unknown) => {
      assert.ok(error instanceof HttpError);
      assert.equal(error.status, 400);
      return true;
    });
  }
});

Deno.test("returns the caller's job, uncached, without internal columns", async () => {
  const { queue, get } = setup();
  const resp = await get(`?user_document_id=${DOC_ID}`);
  assert.equal(resp.status, 200);
  assert.equal(resp.headers.get("Cache-Control"), "no-store");
  assert.equal(resp.headers.get("Access-Control-Allow-Origin"), "*");
  const { job } = await resp.json();
  assert.equal(job.id, JOB_ID);
  assert.equal(job.status, "pending");
  assert.equal("progress_percent" in job, true);
  assert.equal("assigned_to" in job, false);
  assert.deepEqual(queue.calls[0].args, [{ by: "user_document_id", value: DOC_ID }]);
});

Deno.test("no row visible to the caller is 404", async () => {
  const resp = await setup(new FakeQueue({ data: null, error: null, status: 200 })).get(
    `?job_id=${JOB_ID}`,
  );
  assert.equal(resp.status, 404);
  assert.equal((await resp.json()).error, "not_found");
});

Deno.test("database errors are mapped, bad params are 400, POST is 405", async () => {
  const failing = await setup(new FakeQueue(dbError("PGRST301", 401))).get(`?job_id=${JOB_ID}`);
  assert.equal(failing.status, 401);
  await failing.body?.cancel();
  const { handler, get, queue } = setup();
  const bad = await get("?job_id=nope");
  assert.equal(bad.status, 400);
  await bad.body?.cancel();
  const post = await handler(request("/job-status", { method: "POST", body: "{}" }));
  assert.equal(post.status, 405);
  assert.equal(post.headers.get("Allow"), "GET, OPTIONS");
  await post.body?.cancel();
  assert.equal(queue.calls.length, 0);
});
