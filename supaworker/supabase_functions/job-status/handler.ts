// GET ?user_document_id=<uuid> | ?job_id=<uuid> -> 200 {job}
// The job is read from processing_queue as the caller, so RLS decides what exists: another
// user's job is indistinguishable from a missing one (404), and its existence never leaks.
import type { Caller } from "../_supaworker/auth.ts";
import { requireCaller } from "../_supaworker/auth.ts";
import { fromPostgrestError } from "../_supaworker/errors.ts";
import { type Handler, HttpError, jsonResponse, serve } from "../_supaworker/http.ts";
import { type JobLookup, type QueueApi, toPublicJob } from "../_supaworker/jobs.ts";
import { requireUuid } from "../_supaworker/validate.ts";

/** Exactly one of `job_id` / `user_document_id`, as a UUID. */
export function parseJobLookup(params: URLSearchParams): JobLookup {
  const jobId = params.get("job_id");
  const documentId = params.get("user_document_id");
  if ((jobId === null) === (documentId === null)) {
    throw new HttpError(
      400,
      "invalid_argument",
      "Give exactly one of the query parameters job_id or user_document_id.",
    );
  }
  return jobId !== null
    ? { by: "id", value: requireUuid(jobId, "job_id") }
    : { by: "user_document_id", value: requireUuid(documentId, "user_document_id") };
}

export function createJobStatusHandler(queueFor: (caller: Caller) => QueueApi): Handler {
  return serve(["GET"], async (req) => {
    const caller = requireCaller(req);
    const lookup = parseJobLookup(new URL(req.url).searchParams);
    const { data, error, status } = await queueFor(caller).findJob(lookup);
    if (error) throw fromPostgrestError(error, status);
    if (!data) throw new HttpError(404, "not_found", "No job found for this caller.");
    // Progress changes by the second; a cached answer would show a stale state.
    return jsonResponse({ job: toPublicJob(data) }, 200, { "Cache-Control": "no-store" });
  });
}
