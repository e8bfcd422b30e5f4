// Generated from clients/js/src/index.ts by clients/js/scripts/sync.mjs: edit that file.
// supaworker's JavaScript client: the app side of the queue (enqueue, read, watch) for Node,
// Deno and browsers, on any supabase-js 2 client, and serve() for handlers run by
// `supaworker run --handler-command`. Nothing here imports supabase-js at run time: the
// caller passes its client, so the same file works with whatever build the app loads.
export { SupaworkerError } from "./errors.ts";
export type { PostgrestErrorLike } from "./errors.ts";
export type { AnySupabaseClient, CallOptions } from "./rpc.ts";
export type { RetryOptions } from "./retry.ts";
export { FINAL_STATUSES } from "./types.ts";
export type { EnqueueOptions, Job, JobStatus } from "./types.ts";
export {
  cancelJob,
  enqueue,
  ENQUEUE_JOBS_LIMIT,
  enqueueArgs,
  enqueueJobsItem,
  enqueueMany,
  getJob,
  getJobForDocument,
  listJobs,
} from "./jobs.ts";
export type { EnqueueCallOptions, EnqueueItem, EnqueueManyOptions, ListJobsOptions } from "./jobs.ts";
export { timestampMicros, watchJob } from "./watch.ts";
export type { ChangeSource, WatchOptions } from "./watch.ts";
export {
  adminCancelJob,
  adminQueueStats,
  adminRecentFailures,
  adminRetryJob,
  adminSetWorkerStatus,
} from "./admin.ts";
export type { AdminQueueStats, Worker } from "./admin.ts";
export { PermanentError, serve } from "./serve.ts";
export type { HandlerJob, JobContext, JobHandler, ServeOptions } from "./serve.ts";
