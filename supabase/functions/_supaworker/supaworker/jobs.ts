// Generated from clients/js/src/jobs.ts by clients/js/scripts/sync.mjs: edit that file.
// The app side: queue documents, read jobs, cancel. Every call runs with the client's
// identity, so ownership and visibility are the database's decisions (enqueue_job, the RLS
// policy on processing_queue), never this code's.
import { invalidArgument } from "./errors.ts";
import { type RetryOptions, withRetry } from "./retry.ts";
import { abortable, type AnySupabaseClient, type CallOptions, rpc, settle } from "./rpc.ts";
import type { EnqueueOptions, Job, JobStatus } from "./types.ts";

export interface EnqueueCallOptions extends EnqueueOptions, CallOptions {
  /** Retry refused connections and 502/503/504 (default: for up to 10 s); `false`: once. */
  retry?: RetryOptions | false;
}

/** enqueue_job's arguments: only what was given, so the SQL's defaults apply and a user's
 * call carries no server-only option it did not ask for. */
export function enqueueArgs(documentId: string, options: EnqueueOptions): Record<string, unknown> {
  const args: Record<string, unknown> = { p_user_document_id: documentId };
  if (options.priority !== undefined) args.p_priority = options.priority;
  if (options.queue !== undefined) args.p_queue = options.queue;
  if (options.payload !== undefined) args.p_payload = options.payload;
  if (options.maxAttempts !== undefined) args.p_max_attempts = options.maxAttempts;
  if (options.runAt !== undefined) {
    args.p_run_at = options.runAt instanceof Date ? options.runAt.toISOString() : options.runAt;
  }
  if (options.timeoutSeconds !== undefined) args.p_timeout_seconds = options.timeoutSeconds;
  if (options.requires !== undefined) args.p_requires = options.requires;
  return args;
}

/**
 * Queue a document; returns its job. Idempotent per document: while a job for it is pending
 * or running, that job is returned unchanged; a finished one is queued again as a new cycle.
 * That is what makes retrying a transient failure safe.
 *
 * Errors (SupaworkerError.code): PT404 unknown document, PT403 not the caller's document or
 * a server-only option from a user's client, 22023 bad argument, PT413 payload too large.
 */
export function enqueue(
  supabase: AnySupabaseClient,
  documentId: string,
  options: EnqueueCallOptions = {},
): Promise<Job> {
  const { retry, signal, ...enqueueOptions } = options;
  const args = enqueueArgs(documentId, enqueueOptions);
  return withRetry(
    async () => (await rpc(supabase, "enqueue_job", args, { signal })) as Job,
    retry,
    signal,
  );
}

export interface EnqueueManyOptions extends EnqueueCallOptions {
  /** Calls in flight at once (default 8). */
  concurrency?: number;
}

/**
 * Queue many documents with the same options; jobs in the order of `documentIds`. On the
 * first error no further document is started, the calls in flight finish, and that error
 * is thrown: the documents before it may be queued (enqueue again: it is idempotent).
 */
export function enqueueMany(
  supabase: AnySupabaseClient,
  documentIds: Iterable<string>,
  options: EnqueueManyOptions = {},
): Promise<Job[]> {
  const { concurrency = 8, ...rest } = options;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    return Promise.reject(invalidArgument(`concurrency must be a positive integer, got ${concurrency}`));
  }
  return enqueueBatch(supabase, [...documentIds], rest, concurrency);
}

// The one place that knows how a batch is sent. Today: one enqueue_job per document, at most
// `concurrency` at a time. When the bulk RPC (enqueue_jobs) exists, this becomes one call per
// chunk and nothing else changes.
function enqueueBatch(
  supabase: AnySupabaseClient,
  documentIds: string[],
  options: EnqueueCallOptions,
  concurrency: number,
): Promise<Job[]> {
  return mapBounded(documentIds, concurrency, (id) => enqueue(supabase, id, options));
}

async function mapBounded<T, R>(
  items: T[],
  limit: number,
  run: (item: T) => Promise<R>,
): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  let failure: { error: unknown } | null = null;
  async function lane(): Promise<void> {
    while (failure === null && next < items.length) {
      const index = next++;
      try {
        results[index] = await run(items[index] as T);
      } catch (error) {
        failure ??= { error };
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  if (failure !== null) throw (failure as { error: unknown }).error;
  return results;
}

/** One job the client may see (RLS: a user sees only their own), or null. Reads retry on
 * their own (supabase-js retries GETs on network errors and 503). */
export async function getJob(
  supabase: AnySupabaseClient,
  jobId: string,
  options: CallOptions = {},
): Promise<Job | null> {
  const query = supabase.from("processing_queue").select("*").eq("id", jobId);
  return (await settle(abortable(query, options.signal).maybeSingle())) as Job | null;
}

/** The job of a document, or null (a document has at most one job). */
export async function getJobForDocument(
  supabase: AnySupabaseClient,
  documentId: string,
  options: CallOptions = {},
): Promise<Job | null> {
  const query = supabase.from("processing_queue").select("*").eq("user_document_id", documentId);
  return (await settle(abortable(query, options.signal).maybeSingle())) as Job | null;
}

export interface ListJobsOptions extends CallOptions {
  status?: JobStatus | JobStatus[];
  queue?: string;
  /** At most this many (default 50, at most 1000), newest first. */
  limit?: number;
}

/** The jobs the client may see, newest first: a user's own, or every job for the service
 * role. */
export async function listJobs(
  supabase: AnySupabaseClient,
  options: ListJobsOptions = {},
): Promise<Job[]> {
  const limit = options.limit ?? 50;
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) {
    throw invalidArgument(`limit must be between 1 and 1000, got ${limit}`);
  }
  let query = supabase.from("processing_queue").select("*");
  if (options.status !== undefined) {
    query = query.in("status", Array.isArray(options.status) ? options.status : [options.status]);
  }
  if (options.queue !== undefined) query = query.eq("queue", options.queue);
  const ordered = query.order("created_at", { ascending: false }).limit(limit);
  return (await settle(abortable(ordered, options.signal))) as Job[];
}

/** Ask for a job to stop (cancel_job): a waiting job is cancelled at once, a running one is
 * flagged and its worker stops it. Users may cancel their own jobs (PT403 otherwise). */
export async function cancelJob(
  supabase: AnySupabaseClient,
  jobId: string,
  options: CallOptions = {},
): Promise<Job> {
  return (await rpc(supabase, "cancel_job", { p_job_id: jobId }, options)) as Job;
}
