// Generated from clients/js/src/jobs.ts by clients/js/scripts/sync.mjs: edit that file.
// The app side: queue documents, read jobs, cancel. Every call runs with the client's
// identity, so ownership and visibility are the database's decisions (enqueue_job, the RLS
// policy on processing_queue), never this code's.
import { invalidArgument, SupaworkerError } from "./errors.ts";
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
  if (options.concurrencyKey !== undefined) args.p_concurrency_key = options.concurrencyKey;
  if (options.rateLimitKey !== undefined) args.p_rate_limit_key = options.rateLimitKey;
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

/** One document of `enqueueMany` with options of its own (they win over the shared ones). */
export interface EnqueueItem extends EnqueueOptions {
  documentId: string;
}

/** The most documents enqueue_jobs takes in one call (its SQL refuses more). */
export const ENQUEUE_JOBS_LIMIT = 10_000;

export interface EnqueueManyOptions extends EnqueueCallOptions {
  /** Documents per enqueue_jobs call (default and at most 10,000). */
  chunkSize?: number;
}

/** An element of enqueue_jobs' p_jobs: only what was given, as enqueueArgs. */
export function enqueueJobsItem(documentId: string, options: EnqueueOptions): Record<string, unknown> {
  const args = enqueueArgs(documentId, options);
  // enqueue_job's p_x is the element's x (p_user_document_id: user_document_id).
  return Object.fromEntries(Object.entries(args).map(([key, value]) => [key.slice(2), value]));
}

/**
 * Queue many documents in one enqueue_jobs call per 10,000 (`chunkSize`); jobs in the order
 * given, one per element (a document listed twice: its one job, twice). Each element is a
 * document id (the shared options) or an EnqueueItem (its own options over the shared ones).
 * Per document it is what enqueue does (idempotent), and transient failures are retried the
 * same way, which is safe for the same reason.
 *
 * A call is all or nothing: a bad element refuses its whole chunk, with the code enqueue
 * would give and the element's index in `documents` in the message ("p_jobs[10003]: ...").
 * Chunks go one after the other and stop at the first error: the chunks before it are
 * queued (enqueue them again: it is idempotent).
 */
export async function enqueueMany(
  supabase: AnySupabaseClient,
  documents: Iterable<string | EnqueueItem>,
  options: EnqueueManyOptions = {},
): Promise<Job[]> {
  const { chunkSize = ENQUEUE_JOBS_LIMIT, retry, signal, ...shared } = options;
  if (!Number.isInteger(chunkSize) || chunkSize < 1 || chunkSize > ENQUEUE_JOBS_LIMIT) {
    throw invalidArgument(`chunkSize must be an integer from 1 to ${ENQUEUE_JOBS_LIMIT}, got ${chunkSize}`);
  }
  const items = [...documents].map((item) => {
    if (typeof item === "string") return enqueueJobsItem(item, shared);
    const { documentId, ...own } = item;
    return enqueueJobsItem(documentId, { ...shared, ...own });
  });
  const jobs: Job[] = [];
  for (let offset = 0; offset < items.length; offset += chunkSize) {
    const chunk = items.slice(offset, offset + chunkSize);
    try {
      const rows = await withRetry(
        async () => (await rpc(supabase, "enqueue_jobs", { p_jobs: chunk }, { signal })) as Job[],
        retry,
        signal,
      );
      jobs.push(...rows);
    } catch (error) {
      throw offset === 0 ? error : shiftIndex(error, offset);
    }
  }
  return jobs;
}

/** The SQL names a bad element by its index in the call's p_jobs: make it the index in the
 * caller's array (the chunk's offset added), keeping everything else of the error. */
function shiftIndex(error: unknown, offset: number): unknown {
  if (!(error instanceof SupaworkerError)) return error;
  const message = error.message.replace(/^p_jobs\[(\d+)\]/, (_, i) => `p_jobs[${Number(i) + offset}]`);
  if (message === error.message) return error;
  const { code, status, details, hint } = error;
  return new SupaworkerError(message, { code, status, details, hint }, { cause: error });
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
