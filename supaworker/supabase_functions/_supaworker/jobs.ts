// The queue as the functions see it: a narrow interface over supabase-js, so handlers can be
// unit-tested with a fake and the SQL contract (docs/architecture.md) lives in one file.
import type { PostgrestErrorLike } from "./errors.ts";

/** The columns of a processing_queue row that an app may show its user. Worker ids, fencing
 * attempts and the internal payload stay out: they are the queue's business, not the app's. */
export const PUBLIC_JOB_COLUMNS = [
  "id",
  "user_document_id",
  "queue",
  "status",
  "priority",
  "progress_percent",
  "progress_message",
  "error_message",
  "result",
  "retry_count",
  "max_attempts",
  "cancel_requested",
  "run_at",
  "created_at",
  "updated_at",
  "started_at",
  "completed_at",
] as const;

export type PublicJob = { [K in (typeof PUBLIC_JOB_COLUMNS)[number]]?: unknown };

export interface DbResult<T> {
  data: T | null;
  error: PostgrestErrorLike | null;
  /** The HTTP status PostgREST answered. */
  status: number;
}

export type JobLookup = { by: "id" | "user_document_id"; value: string };

export interface QueueApi {
  /** rpc enqueue_job as the caller; ownership is the database's decision. */
  enqueue(userDocumentId: string, priority?: number): Promise<DbResult<Record<string, unknown>>>;
  /** One job the caller may see under RLS, or null data when there is none. */
  findJob(lookup: JobLookup): Promise<DbResult<Record<string, unknown>>>;
}

/** Keep only the public columns (enqueue_job returns the whole row). */
export function toPublicJob(row: Record<string, unknown>): PublicJob {
  const job: PublicJob = {};
  for (const column of PUBLIC_JOB_COLUMNS) {
    if (column in row) job[column] = row[column];
  }
  return job;
}
