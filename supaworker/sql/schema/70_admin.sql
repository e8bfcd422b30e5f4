-- supaworker, current schema: queue admins, the rights behind the operator dashboard.
--
-- supaworker/sql/schema/ is what a reader opens: the schema as it stands after every migration
-- in supabase/migrations/ (what `supabase db push` applies; they stay as they are). Loaded in
-- file-name order into a fresh database, these files give the same schema as the migrations
-- (tests/sql/test_schema_definitions.py). To change the schema, edit the definition here AND
-- write a new migration (docs/architecture.md, "Changing the schema").

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
--    worker (vps_workers is granted to authenticated, and RLS shows non-admins nothing).
--  * public.admin_* functions: admin-checked wrappers around the service-only operations,
--    callable with a user JWT. Non-admins get PT403 (HTTP 403), anon may not execute them
--    (HTTP 401); service_role may call them too.

-- is_queue_admin() -> boolean (private)
-- True iff the request's JWT is a signed-in user's (role authenticated) whose
-- app_metadata.queue_admin is JSON true. Never raises; false without JWT claims.
-- Who: the admin RLS policies below (evaluated as the querying role, so authenticated may
-- execute it; the schema stays closed, so nobody can call it through PostgREST) and
-- require_queue_admin.
create function supaworker_private.is_queue_admin() returns boolean
language sql stable set search_path = '' as $$
  select coalesce(auth.role() = 'authenticated'
                  and auth.jwt() -> 'app_metadata' -> 'queue_admin' = 'true'::jsonb, false)
$$;
comment on function supaworker_private.is_queue_admin() is
  'True when the request''s JWT belongs to a signed-in user (role authenticated) whose '
  'app_metadata.queue_admin is JSON true. Used by the queue-admin RLS policies (also in '
  'Realtime''s per-subscriber check) and by the admin_* functions.';

-- require_queue_admin() -> void (private)
-- Returns for queue admins and for privileged callers (service_role requests, trusted SQL
-- without JWT claims). Errors: PT403 "user <id> is not a queue admin" (or "this operation
-- needs a queue admin" without a user) for everyone else. Who: the admin_* functions.
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

-- cancel_job_as_operator(p_job_id) -> processing_queue (private)
-- public.cancel_job with service_role's reach (any job, not only the caller's). cancel_job
-- tells "any job" from "own jobs only" by the request's JWT role (caller_is_privileged ->
-- auth.role(), which reads request.jwt.claims), so this sets the claims to
-- {"role": "service_role"} for exactly that one call and puts the caller's claims back right
-- after it; if cancel_job raises, the transaction (or the caller's savepoint) aborts and
-- Postgres restores the setting itself. (A `SET request.jwt.claims` clause on the function
-- would be tidier, but Postgres 15 reserves SET clauses of such custom settings to
-- superusers.) Reusing cancel_job keeps one implementation of cancellation. Should a future
-- auth.role() stop reading request.jwt.claims, this fails closed (the admin is treated as an
-- ordinary user). Who: admin_cancel_job only, after require_queue_admin. Errors: cancel_job's.
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

-- ---------------------------------------------------------------------------------------
-- Row-level security: admins read everything
-- ---------------------------------------------------------------------------------------

-- Permissive policies are OR-ed with the existing "own rows" ones. `(select ...)` makes
-- Postgres evaluate the predicate once per statement instead of once per row.
create policy processing_queue_select_queue_admin on public.processing_queue
  for select to authenticated using ((select supaworker_private.is_queue_admin()));
create policy job_events_select_queue_admin on public.job_events
  for select to authenticated using ((select supaworker_private.is_queue_admin()));
create policy vps_workers_select_queue_admin on public.vps_workers
  for select to authenticated using ((select supaworker_private.is_queue_admin()));
create policy job_error_details_select_queue_admin on public.job_error_details
  for select to authenticated using ((select supaworker_private.is_queue_admin()));

-- ---------------------------------------------------------------------------------------
-- admin_* functions (the dashboard's RPC API). Who: authenticated (checked inside: queue
-- admins only, PT403 for other users) and service_role; anon may not execute them (401).
-- ---------------------------------------------------------------------------------------

-- admin_queue_stats() -> jsonb
-- queue_stats() plus server_time (the database's now(), so a browser can compute heartbeat
-- ages without trusting its own clock) and dead_worker_horizon_seconds (when a silent worker
-- counts as dead). Errors: PT403 non-admins.
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

-- admin_recent_failures(p_limit 20) -> setof processing_queue
-- list_jobs('failed', null, p_limit): finally failed jobs (the dead-letter queue), most
-- recently changed first, each with its error_message.
-- Errors: PT403 non-admins, 22023 p_limit outside 1..1000.
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
-- retry_job(p_job_id) for any user's job.
-- Errors: PT403 non-admins, then retry_job's: PT404 unknown job, PT409 running or completed.
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
-- cancel_job(p_job_id) with service_role's reach (any user's job), through
-- cancel_job_as_operator. Errors: PT403 non-admins, then cancel_job's (PT404 unknown job).
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
-- set_worker_status: pause / resume. Errors: PT403 non-admins, then 22023 unless p_status is
-- active or paused, PT404 unknown worker.
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
