// The client's pure parts: no stack needed.
import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { enqueueArgs, enqueueJobsItem, SupaworkerError, timestampMicros } from "supaworker";

describe("timestampMicros", () => {
  test("reads PostgREST's and Realtime's spellings of the same moment alike", () => {
    const rest = timestampMicros("2026-12-01T08:30:00.123456+00:00");
    assert.equal(timestampMicros("2026-12-01 08:30:00.123456+00"), rest);
    assert.equal(timestampMicros("2026-12-01T09:30:00.123456+01:00"), rest);
    assert.equal(timestampMicros("2026-12-01T08:30:00.123456Z"), rest);
    assert.equal(rest, Date.UTC(2026, 11, 1, 8, 30, 0) * 1000 + 123456);
  });

  test("orders two updates within one millisecond", () => {
    assert.ok(timestampMicros("2026-12-01 08:30:00.123457+00") > timestampMicros("2026-12-01 08:30:00.123456+00"));
    assert.ok(timestampMicros("2026-12-01 08:30:00.5+00") > timestampMicros("2026-12-01 08:30:00.499999+00"));
    assert.equal(timestampMicros("2026-12-01 08:30:00+00"), Date.UTC(2026, 11, 1, 8, 30) * 1000);
  });
});

describe("enqueueArgs", () => {
  test("sends only the options given, so the SQL's defaults apply", () => {
    assert.deepEqual(enqueueArgs("d", {}), { p_user_document_id: "d" });
    assert.deepEqual(
      enqueueArgs("d", {
        priority: 0,
        queue: "q",
        payload: {},
        maxAttempts: 2,
        runAt: new Date(Date.UTC(2027, 0, 1)),
        timeoutSeconds: 9,
        requires: { gpu: true },
      }),
      {
        p_user_document_id: "d",
        p_priority: 0,
        p_queue: "q",
        p_payload: {},
        p_max_attempts: 2,
        p_run_at: "2027-01-01T00:00:00.000Z",
        p_timeout_seconds: 9,
        p_requires: { gpu: true },
      },
    );
  });
});

describe("enqueueJobsItem", () => {
  test("an enqueue_jobs element: enqueue_job's arguments without p_, only those given", () => {
    assert.deepEqual(enqueueJobsItem("d", {}), { user_document_id: "d" });
    assert.deepEqual(
      enqueueJobsItem("d", {
        priority: -1,
        runAt: new Date(Date.UTC(2027, 0, 1)),
        concurrencyKey: "tenant-1",
        rateLimitKey: "ocr",
      }),
      {
        user_document_id: "d",
        priority: -1,
        run_at: "2027-01-01T00:00:00.000Z",
        concurrency_key: "tenant-1",
        rate_limit_key: "ocr",
      },
    );
  });
});

describe("SupaworkerError", () => {
  test("keeps the database's code and status; transient means no answer or 502/503/504", () => {
    const error = SupaworkerError.fromPostgrest({ code: "PT403", message: "no", hint: "h" }, 403);
    assert.deepEqual([error.code, error.status, error.hint, error.transient], ["PT403", 403, "h", false]);
    assert.ok(error instanceof Error);
    for (const status of [0, 502, 503, 504]) assert.equal(new SupaworkerError("x", { status }).transient, true);
    for (const status of [400, 401, 403, 404, 409, 413, 500]) assert.equal(new SupaworkerError("x", { status }).transient, false);
  });
});
