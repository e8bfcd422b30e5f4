-- supaworker: queue admins, the rights behind the operator dashboard (examples/dashboard).
--
-- A queue admin is a signed-in user whose JWT carries `app_metadata.queue_admin = true`
-- (the JSON value true; "true" as a string does not count). app_metadata is written only
-- server-side (Auth admin API `updateUserById(id, {app_metadata: {queue_admin: true}})`, or
-- `auth.users.raw_app_meta_data` in SQL); users cannot change it themselves, unlike
-- user_metadata, so it may carry a privilege. The claim is read from the token, so a grant or
-- a revocation takes effect with the user's next token (sign-in or refresh, at most the
-- project's JWT expiry later).
--
-- What queue admins get, all enforced here and not by any page:
--  * SELECT on every row of processing_queue, job_events and vps_workers (the policies
--    below). Realtime checks the same policies for each subscriber, so admins receive every
--    change of these published tables. Ordinary users still see only their own jobs and no
--    worker (vps_workers is now granted to authenticated, and RLS shows non-admins nothing).
--  * public.admin_* functions: admin-checked wrappers around the service-only operations,
--    callable with a user JWT. Non-admins get PT403 (HTTP 403), anon may not execute them
--    (HTTP 401); service_role may call them too.

-- =======================================================================================
-- Helpers (schema supaworker_private: not reachable through PostgREST)
-- =======================================================================================

-- is_queue_admin() -> boolean
-- Contract: true iff the request's JWT is a signed-in user's (role authenticated) whose
-- app_metadata.queue_admin is JSON true. Never raises; false without JWT claims.
create function supaworker_private.is_queue_admin() returns boolean
language sql stable set search_path = '' as $$
  select coalesce(auth.role() = 'authenticated'
                  and auth.jwt() -> 'app_metadata' -> 'queue_admin' = 'true'::jsonb, false)
$$;
comment on function supaworker_private.is_queue_admin() is
  'True when the request''s JWT belongs to a signed-in user (role authenticated) whose '
  'app_metadata.queue_admin is JSON true. Used by the queue-admin RLS policies (also in '
  'Realtime''s per-subscriber check) and by the admin_* functions.';

-- require_queue_admin() -> void
-- Contract: returns for queue admins and for privileged callers (service_role requests,
-- trusted SQL without JWT claims); raises PT403 for everyone else.
create function supaworker_private.require_queue_admin() returns void
language plpgsql stable set search_path = '' as $$
begin
  if supaworker_private.caller_is_privileged() or supaworker_private.is_queue_admin() then
    return;
  end if;
  perform supaworker_private.raise_error('PT403',
    case when auth.uid() is null then 'this operation needs a queue admin'
         else pg_catalog.format('user %s is not a queue admin', auth.uid()) end,
    'A project operator sets app_metadata.queue_admin = true for the user (Auth admin API, '
    'or auth.users.raw_app_meta_data); the user then signs in again for a token carrying it.');
end $$;
comment on function supaworker_private.require_queue_admin() is
  'Guard of the admin_* functions: passes for queue admins (is_queue_admin), service_role '
  'requests and trusted SQL callers; PT403 "user <id> is not a queue admin" otherwise.';

-- cancel_job_as_operator(p_job_id) -> processing_queue
-- Contract: public.cancel_job with service_role's reach (any job, not only the caller's).
-- cancel_job tells "any job" from "own jobs only" by the request's JWT role
-- (caller_is_privileged -> auth.role(), which reads request.jwt.claims). This helper sets the
-- claims to {"role": "service_role"} for exactly that one call and puts the caller's claims
-- back right after it; if cancel_job raises, the transaction (or the caller's savepoint)
-- aborts and Postgres restores the setting itself. (A `SET request.jwt.claims` clause on the
-- function would be tidier, but Postgres 15 reserves SET clauses of such custom settings to
-- superusers.) Only admin_cancel_job calls it, after require_queue_admin; no API role may
-- execute it. Reusing cancel_job keeps one implementation of cancellation (lock order,
-- idempotency, the running-job handshake). Should a future auth.role() stop reading
-- request.jwt.claims, this fails closed: the admin would be treated as an ordinary user
-- (PT403 for other users' jobs), never the other way round.
create function supaworker_private.cancel_job_as_operator(p_job_id uuid)
returns public.processing_queue
language plpgsql volatile set search_path = '' as $$
declare
  v_claims text := current_setting('request.jwt.claims', true);
  v_job    public.processing_queue;
begin
  perform pg_catalog.set_config('request.jwt.claims', '{"role": "service_role"}', true);
  v_job := public.cancel_job(p_job_id);
  perform pg_catalog.set_config('request.jwt.claims', coalesce(v_claims, ''), true);
  return v_job;
end $$;
comment on function supaworker_private.cancel_job_as_operator(uuid) is
  'public.cancel_job(p_job_id) evaluated with request.jwt.claims = {"role": "service_role"} '
  '(the caller''s claims are restored afterwards), so an already-checked queue admin may '
  'cancel any user''s job. Called only by admin_cancel_job.';

revoke all on function supaworker_private.is_queue_admin(),
                       supaworker_private.require_queue_admin(),
                       supaworker_private.cancel_job_as_operator(uuid)
  from public, anon, authenticated, service_role;
-- RLS policies run with the privileges of the querying role, so authenticated must be able
-- to execute the predicate. The schema itself stays closed (no USAGE for any API role):
-- nobody can call it by name through PostgREST; it is only evaluated inside the policies.
grant execute on function supaworker_private.is_queue_admin() to authenticated;

-- =======================================================================================
-- Row-level security: admins read everything
-- =======================================================================================
-- Permissive policies are OR-ed with the existing "own rows" ones. `(select ...)` makes
-- Postgres evaluate the predicate once per statement instead of once per row.
create policy processing_queue_select_queue_admin on public.processing_queue
  for select to authenticated using ((select supaworker_private.is_queue_admin()));
create policy job_events_select_queue_admin on public.job_events
  for select to authenticated using ((select supaworker_private.is_queue_admin()));
create policy vps_workers_select_queue_admin on public.vps_workers
  for select to authenticated using ((select supaworker_private.is_queue_admin()));

-- Until now only service_role could read vps_workers. Signed-in users may now SELECT it,
-- and this policy is the only one for them, so non-admins get an empty result (and no
-- Realtime changes) instead of a permission error. Writes remain function-only.
grant select on table public.vps_workers to authenticated;

-- =======================================================================================
-- admin_* functions (the dashboard's RPC API)
-- =======================================================================================

-- admin_queue_stats() -> jsonb
-- Contract: queue_stats() plus server_time (the database's now(), so a browser can compute
-- heartbeat ages without trusting its own clock) and dead_worker_horizon_seconds (when a
-- silent worker counts as dead). PT403 for non-admins.
create function public.admin_queue_stats() returns jsonb
language plpgsql stable security definer set search_path = '' as $$
declare
  v_horizon numeric;
begin
  perform supaworker_private.require_queue_admin();
  select extract(epoch from s.dead_worker_horizon) into v_horizon from public.queue_settings s;
  return public.queue_stats()
         || jsonb_build_object('server_time', now(), 'dead_worker_horizon_seconds', v_horizon);
end $$;
comment on function public.admin_queue_stats() is
  'Queue admins and service_role. queue_stats() (by_status, by_queue, oldest_pending_seconds, '
  'workers, completed/failed last minute/hour) plus server_time = now() and '
  'dead_worker_horizon_seconds (queue_settings). PT403 for users who are not queue admins.';

-- admin_recent_failures(p_limit) -> setof processing_queue
-- Contract: list_jobs('failed', null, p_limit): finally failed jobs, most recently changed
-- first, each with its error_message. 22023 for p_limit outside 1..1000; PT403 non-admins.
create function public.admin_recent_failures(p_limit integer default 20)
returns setof public.processing_queue
language plpgsql stable security definer set search_path = '' as $$
begin
  perform supaworker_private.require_queue_admin();
  return query select * from public.list_jobs('failed', null, p_limit);
end $$;
comment on function public.admin_recent_failures(integer) is
  'Queue admins and service_role. The p_limit (1..1000, default 20) most recently failed '
  'jobs (status failed: the dead-letter queue) with their error_message, newest first. '
  '22023 for a bad limit, PT403 for users who are not queue admins.';

-- admin_retry_job(p_job_id) -> processing_queue
-- Contract: retry_job(p_job_id) for a queue admin. PT403 non-admins, then retry_job's
-- errors: PT404 unknown job, PT409 running or completed job.
create function public.admin_retry_job(p_job_id uuid) returns public.processing_queue
language plpgsql volatile security definer set search_path = '' as $$
begin
  perform supaworker_private.require_queue_admin();
  return public.retry_job(p_job_id);
end $$;
comment on function public.admin_retry_job(uuid) is
  'Queue admins and service_role. retry_job(p_job_id): a failed or cancelled job of any user '
  'becomes pending now as a new cycle; pending is returned unchanged. PT403 for users who '
  'are not queue admins, PT404 unknown job, PT409 running or completed job.';

-- admin_cancel_job(p_job_id) -> processing_queue
-- Contract: cancel_job(p_job_id) with service_role's reach (any user's job). PT403
-- non-admins, then cancel_job's errors (PT404 unknown job).
create function public.admin_cancel_job(p_job_id uuid) returns public.processing_queue
language plpgsql volatile security definer set search_path = '' as $$
begin
  perform supaworker_private.require_queue_admin();
  return supaworker_private.cancel_job_as_operator(p_job_id);
end $$;
comment on function public.admin_cancel_job(uuid) is
  'Queue admins and service_role. cancel_job(p_job_id) for any user''s job: pending/assigned '
  '-> cancelled; processing -> cancel_requested (the worker stops it); finished -> unchanged. '
  'PT403 for users who are not queue admins, PT404 unknown job.';

-- admin_set_worker_status(p_worker_id, p_status) -> vps_workers
-- Contract: set_worker_status for a queue admin (pause / resume). PT403 non-admins, then
-- 22023 unless p_status is active or paused, PT404 unknown worker.
create function public.admin_set_worker_status(p_worker_id text, p_status text)
returns public.vps_workers
language plpgsql volatile security definer set search_path = '' as $$
begin
  perform supaworker_private.require_queue_admin();
  return public.set_worker_status(p_worker_id, p_status);
end $$;
comment on function public.admin_set_worker_status(text, text) is
  'Queue admins and service_role. set_worker_status: paused (no new claims, running jobs '
  'finish) or active. PT403 for users who are not queue admins, 22023 unless p_status is '
  'active or paused, PT404 unknown worker.';

-- Supabase grants EXECUTE to anon/authenticated/service_role by default (and PUBLIC has it
-- built in): revoke everything, then grant to signed-in users (checked inside) and
-- service_role.
revoke all on function
  public.admin_queue_stats(),
  public.admin_recent_failures(integer),
  public.admin_retry_job(uuid),
  public.admin_cancel_job(uuid),
  public.admin_set_worker_status(text, text)
from public, anon, authenticated, service_role;

grant execute on function
  public.admin_queue_stats(),
  public.admin_recent_failures(integer),
  public.admin_retry_job(uuid),
  public.admin_cancel_job(uuid),
  public.admin_set_worker_status(text, text)
to authenticated, service_role;
