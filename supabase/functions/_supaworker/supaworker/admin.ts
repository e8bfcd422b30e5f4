// Generated from clients/js/src/admin.ts by clients/js/scripts/sync.mjs: edit that file.
// The queue admins' calls (the operator dashboard). The database decides who is an admin
// (app_metadata.queue_admin in the JWT, or the service role): everyone else gets PT403.
import { type AnySupabaseClient, type CallOptions, rpc } from "./rpc.ts";
import type { Job, JobStatus } from "./types.ts";

/** A row of public.vps_workers. */
export interface Worker {
  id: string;
  worker_id: string;
  worker_name: string | null;
  status: "active" | "paused" | "offline";
  last_heartbeat: string;
  max_concurrent_jobs: number;
  current_jobs: number;
  capabilities: Record<string, unknown>;
  queues: string[] | null;
  host: string | null;
  version: string | null;
  started_at: string;
  created_at: string;
  updated_at: string;
}

/** admin_queue_stats(): queue_stats() plus the database's clock and the dead-worker horizon. */
export interface AdminQueueStats {
  by_status: Partial<Record<JobStatus, number>>;
  by_queue: Record<string, Partial<Record<JobStatus, number>>>;
  oldest_pending_seconds: number | null;
  workers: { active: number; paused: number; offline: number };
  completed_last_minute: number;
  completed_last_hour: number;
  failed_last_minute: number;
  failed_last_hour: number;
  server_time: string;
  dead_worker_horizon_seconds: number;
  [key: string]: unknown;
}

export async function adminQueueStats(
  supabase: AnySupabaseClient,
  options: CallOptions = {},
): Promise<AdminQueueStats> {
  return (await rpc(supabase, "admin_queue_stats", {}, options)) as AdminQueueStats;
}

/** The latest failed jobs, newest first (limit 1..1000, default 20). */
export async function adminRecentFailures(
  supabase: AnySupabaseClient,
  limit = 20,
  options: CallOptions = {},
): Promise<Job[]> {
  return (await rpc(supabase, "admin_recent_failures", { p_limit: limit }, options)) as Job[];
}

/** A failed or cancelled job of any user becomes pending again (PT409 while running). */
export async function adminRetryJob(
  supabase: AnySupabaseClient,
  jobId: string,
  options: CallOptions = {},
): Promise<Job> {
  return (await rpc(supabase, "admin_retry_job", { p_job_id: jobId }, options)) as Job;
}

/** cancel_job for any user's job. */
export async function adminCancelJob(
  supabase: AnySupabaseClient,
  jobId: string,
  options: CallOptions = {},
): Promise<Job> {
  return (await rpc(supabase, "admin_cancel_job", { p_job_id: jobId }, options)) as Job;
}

/** Pause a worker (it finishes its jobs and claims no more) or resume it. */
export async function adminSetWorkerStatus(
  supabase: AnySupabaseClient,
  workerId: string,
  status: "active" | "paused",
  options: CallOptions = {},
): Promise<Worker> {
  const args = { p_worker_id: workerId, p_status: status };
  return (await rpc(supabase, "admin_set_worker_status", args, options)) as Worker;
}
