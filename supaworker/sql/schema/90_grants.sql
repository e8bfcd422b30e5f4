-- supaworker, current schema: every privilege, in one place.
--
-- supaworker/sql/schema/ is what a reader opens: the schema as it stands after every migration
-- in supabase/migrations/ (what `supabase db push` applies; they stay as they are). Loaded in
-- file-name order into a fresh database, these files give the same schema as the migrations
-- (tests/sql/test_schema_definitions.py). To change the schema, edit the definition here AND
-- write a new migration (docs/architecture.md, "Changing the schema").

-- Supabase's default privileges grant ALL on new tables, sequences and functions in
-- `public` to anon, authenticated and service_role (and PUBLIC has EXECUTE on functions
-- built in): everything is revoked first, then granted per the contract. Row-level
-- security (00_tables.sql, 70_admin.sql) further limits what a granted SELECT shows.

-- ---------------------------------------------------------------------------------------
-- Tables: reads only; job and worker rows change only through the functions, so the state
-- machine cannot be bypassed. (public.user_documents: its grants are in 00_tables.sql, given
-- only when supaworker creates the table.)
-- ---------------------------------------------------------------------------------------
revoke all on table public.processing_queue, public.job_events, public.vps_workers,
                    public.queue_settings
  from public, anon, authenticated, service_role;
revoke all on sequence public.job_events_id_seq from public, anon, authenticated, service_role;
revoke all on table supaworker_private.owner_clock from public, anon, authenticated, service_role;
revoke all on table supaworker_private.rate_buckets from public, anon, authenticated, service_role;
revoke all on table public.concurrency_limits, public.rate_limits
  from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.concurrency_limits, public.rate_limits
  to service_role;
-- supaworker_private's table (wake-up state): the owner's only.
revoke all on table supaworker_private.worker_wakeups
  from public, anon, authenticated, service_role;

-- Signed-in users: their own jobs and history (RLS); queue admins: everything (RLS).
grant select on table public.processing_queue, public.job_events to authenticated;
-- service_role reads everything (dashboards, Realtime) and tunes the settings.
grant select on table public.processing_queue, public.job_events, public.vps_workers,
                      public.queue_settings to service_role;
grant update on table public.queue_settings to service_role;
-- vps_workers: its only policy for signed-in users is the queue-admin one, so non-admins
-- get an empty result (and no Realtime changes) instead of a permission error.
grant select on table public.vps_workers to authenticated;
-- job_error_details: operators only. service_role bypasses RLS; signed-in users pass only
-- the queue-admin policy. Written by fail_job alone.
revoke all on table public.job_error_details from public, anon, authenticated, service_role;
grant select on table public.job_error_details to authenticated, service_role;

-- ---------------------------------------------------------------------------------------
-- supaworker_private: no API role may execute anything ...
-- ---------------------------------------------------------------------------------------
revoke all on all functions in schema supaworker_private
  from public, anon, authenticated, service_role;
-- ... except the queue-admin predicate: RLS policies run with the privileges of the querying
-- role, so authenticated must be able to execute it. The schema itself stays closed (no
-- USAGE for any API role): nobody can call it by name through PostgREST.
grant execute on function supaworker_private.is_queue_admin() to authenticated;

-- ---------------------------------------------------------------------------------------
-- The public API
-- ---------------------------------------------------------------------------------------
revoke all on function
  public.enqueue_job(uuid, integer, jsonb, text, integer, timestamptz, integer, jsonb, text,
                     text),
  public.enqueue_jobs(jsonb),
  public.cancel_job(uuid),
  public.retry_job(uuid),
  public.retry_failed_jobs(text),
  public.claim_next_job(text, integer, text[], boolean),
  public.start_job(uuid, text, integer),
  public.report_progress(uuid, text, integer, numeric, text),
  public.complete_job(uuid, text, integer, jsonb),
  public.complete_jobs(text, jsonb),
  public.complete_and_claim(text, jsonb, integer, text[], integer),
  public.fail_job(uuid, text, integer, text, boolean, integer, text),
  public.release_jobs(text, uuid[]),
  public.snooze_job(uuid, text, integer, numeric),
  public.register_worker(text, text, integer, jsonb, text[], text, text),
  public.heartbeat_worker(text, uuid[]),
  public.deregister_worker(text),
  public.set_worker_status(text, text),
  public.reap_stale_jobs(),
  public.queue_stats(),
  public.purge_finished_jobs(interval),
  public.get_job(uuid),
  public.list_jobs(text, text, integer),
  public.job_history(uuid),
  public.list_workers(),
  public.supaworker_schema_version(),
  public.admin_queue_stats(),
  public.admin_recent_failures(integer),
  public.admin_retry_job(uuid),
  public.admin_cancel_job(uuid),
  public.admin_set_worker_status(text, text)
from public, anon, authenticated, service_role;

-- The service role (API servers, workers, the CLI): everything.
grant execute on function
  public.enqueue_job(uuid, integer, jsonb, text, integer, timestamptz, integer, jsonb, text,
                     text),
  public.enqueue_jobs(jsonb),
  public.cancel_job(uuid),
  public.retry_job(uuid),
  public.retry_failed_jobs(text),
  public.claim_next_job(text, integer, text[], boolean),
  public.start_job(uuid, text, integer),
  public.report_progress(uuid, text, integer, numeric, text),
  public.complete_job(uuid, text, integer, jsonb),
  public.complete_jobs(text, jsonb),
  public.complete_and_claim(text, jsonb, integer, text[], integer),
  public.fail_job(uuid, text, integer, text, boolean, integer, text),
  public.release_jobs(text, uuid[]),
  public.snooze_job(uuid, text, integer, numeric),
  public.register_worker(text, text, integer, jsonb, text[], text, text),
  public.heartbeat_worker(text, uuid[]),
  public.deregister_worker(text),
  public.set_worker_status(text, text),
  public.reap_stale_jobs(),
  public.queue_stats(),
  public.purge_finished_jobs(interval),
  public.get_job(uuid),
  public.list_jobs(text, text, integer),
  public.job_history(uuid),
  public.list_workers(),
  public.supaworker_schema_version(),
  public.admin_queue_stats(),
  public.admin_recent_failures(integer),
  public.admin_retry_job(uuid),
  public.admin_cancel_job(uuid),
  public.admin_set_worker_status(text, text)
to service_role;

-- Signed-in users: their own documents and jobs (checked inside enqueue_job / cancel_job),
-- and the admin_* functions (queue admins only, checked inside). anon: nothing.
grant execute on function
  public.enqueue_job(uuid, integer, jsonb, text, integer, timestamptz, integer, jsonb, text,
                     text),
  public.enqueue_jobs(jsonb),
  public.cancel_job(uuid),
  public.admin_queue_stats(),
  public.admin_recent_failures(integer),
  public.admin_retry_job(uuid),
  public.admin_cancel_job(uuid),
  public.admin_set_worker_status(text, text)
to authenticated;
