// The shapes the queue's SQL functions and tables answer with (supabase/migrations/).

/** Where a job is in its life. The last three are final: `watchJob` resolves on them. */
export type JobStatus =
  | "pending"
  | "assigned"
  | "processing"
  | "completed"
  | "failed"
  | "cancelled";

export const FINAL_STATUSES: ReadonlySet<JobStatus> = new Set(["completed", "failed", "cancelled"]);

/** A row of public.processing_queue, as PostgREST and Realtime send it (timestamps are
 * strings; numeric progress is a number). */
export interface Job {
  id: string;
  user_document_id: string;
  user_id: string | null;
  queue: string;
  status: JobStatus;
  /** Orders across owners; set by the service role only (a user's enqueue leaves it 0). */
  priority: number;
  /** A user's own priority (-10..10): orders only that user's jobs (issue 18). */
  user_priority: number;
  payload: Record<string, unknown>;
  result: unknown;
  error_message: string | null;
  retry_count: number;
  /** The fencing token: +1 on every claim, never reset. */
  attempt: number;
  max_attempts: number;
  run_at: string;
  timeout_seconds: number | null;
  requires: Record<string, unknown>;
  progress_percent: number | null;
  progress_message: string | null;
  cancel_requested: boolean;
  assigned_to: string | null;
  assigned_at: string | null;
  started_at: string | null;
  completed_at: string | null;
  created_at: string;
  updated_at: string;
}

/** How a document is queued (enqueue_job's parameters). Every key is optional. */
export interface EnqueueOptions {
  /** Higher runs first; 0 is normal. A signed-in user's value is clamped to -10..10 and
   * stored as `user_priority`, which orders only that user's own jobs. */
  priority?: number;
  /** Default "default". */
  queue?: string;
  // The options below belong to the API server (service role key). For a signed-in user's
  // client the database refuses them with PT403 (HTTP 403), and so does this client: it
  // passes them through and surfaces the database's answer, it does not decide itself.
  /** Handed to the handler as job.payload. */
  payload?: Record<string, unknown>;
  /** Default queue_settings.default_max_attempts. */
  maxAttempts?: number;
  /** Not before this moment. A moment in the past is server-only. */
  runAt?: Date | string;
  /** Per-attempt limit, wins over the worker's --job-timeout. */
  timeoutSeconds?: number;
  /** Capabilities a worker must offer, e.g. {"gpu": true}. */
  requires?: Record<string, unknown>;
  /** Jobs sharing this key run at most its concurrency limit at once (1-200 characters). */
  concurrencyKey?: string;
  /** Jobs sharing this key start at most at its rate limit (1-200 characters). */
  rateLimitKey?: string;
}
