// POST {user_document_id, priority?} -> 202 {success, status: "queued", job}
// The function decides nothing about ownership: it calls enqueue_job as the caller and the
// database answers PT403 / PT404 when the document is not theirs or does not exist.
import type { Caller } from "../_supaworker/auth.ts";
import { requireCaller } from "../_supaworker/auth.ts";
import { fromPostgrestError } from "../_supaworker/errors.ts";
import { type Handler, HttpError, jsonResponse, readJsonObject, serve } from "../_supaworker/http.ts";
import { type QueueApi, toPublicJob } from "../_supaworker/jobs.ts";
import { optionalInt, requireUuid } from "../_supaworker/validate.ts";

export interface EnqueueRequest {
  userDocumentId: string;
  priority?: number;
}

export function parseEnqueueRequest(body: Record<string, unknown>): EnqueueRequest {
  return {
    userDocumentId: requireUuid(body.user_document_id, "user_document_id"),
    priority: optionalInt(body.priority, "priority"),
  };
}

export function createEnqueueHandler(queueFor: (caller: Caller) => QueueApi): Handler {
  return serve(["POST"], async (req) => {
    // Who before what: an anonymous caller learns nothing about the body's validity.
    const caller = requireCaller(req);
    const { userDocumentId, priority } = parseEnqueueRequest(await readJsonObject(req));
    const { data, error, status } = await queueFor(caller).enqueue(userDocumentId, priority);
    if (error) throw fromPostgrestError(error, status);
    if (!data?.id) {
      // enqueue_job returns a row or raises; anything else means the contract changed.
      console.error("enqueue_job returned no job", data);
      throw new HttpError(502, "database_error", "The queue did not return the job.");
    }
    return jsonResponse({ success: true, status: "queued", job: toPublicJob(data) }, 202);
  });
}
