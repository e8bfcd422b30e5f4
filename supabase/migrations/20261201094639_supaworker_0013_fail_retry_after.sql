-- supaworker: a failed attempt may say when to retry (issue 17, `--handler-url`).
--
-- An HTTP handler that answers 429 or 503 with `Retry-After: 30` knows better than the
-- exponential backoff when it can take the job again. fail_job gains
-- p_retry_after_seconds (default null = the backoff, as before): when set, a retried job is
-- pending again at now() + that many seconds, capped at backoff_max_seconds (a service
-- asking for a day would otherwise park the job beyond any operator's expectations). It does
-- not change whether the job is retried: max_attempts, permanent failures and cancel
-- requests decide that as before.
--
-- Rolling upgrades: the old five-argument function is dropped and the new one has the sixth
-- parameter with a default, so an old worker's call (named p_job_id .. p_retryable through
-- PostgREST) still resolves to exactly one function. Both cannot coexist: PostgREST would
-- find two candidates for a five-argument call (PGRST203). A new worker sends the parameter
-- only when it has a delay, so it also works against a database without this migration.
--
-- The private fail_attempt keeps its five-argument form for its other callers (rescue,
-- register_worker) as a wrapper of the six-argument one: one implementation of the rules.

create function supaworker_private.fail_attempt(
  p_job_id uuid, p_worker_id text, p_attempt integer, p_error text, p_retryable boolean,
  p_retry_after_seconds integer
) returns setof public.processing_queue
language plpgsql volatile set search_path = '' as $$
declare
  v_job    public.processing_queue;
  v_retry  integer;
  v_status text;
  v_delay  interval;
begin
  if p_retry_after_seconds is not null and p_retry_after_seconds < 0 then
    perform supaworker_private.raise_error('22023',
      pg_catalog.format('p_retry_after_seconds must be >= 0, got %s', p_retry_after_seconds),
      'Pass null for the default backoff.');
  end if;
  -- The guard: in READ COMMITTED a row changed by a concurrent commit is re-checked against
  -- this WHERE clause after the lock wait, so a job that was completed, released or
  -- reassigned meanwhile is skipped instead of being reset.
  select * into v_job from public.processing_queue q
   where q.id = p_job_id and q.assigned_to = p_worker_id and q.attempt = p_attempt
     and q.status in ('assigned', 'processing')
   for update;
  if not found then
    return;
  end if;

  v_retry := v_job.retry_count + 1;
  v_status := case
    when v_job.cancel_requested then 'cancelled'
    when not coalesce(p_retryable, true) or v_retry >= v_job.max_attempts then 'failed'
    else 'pending'
  end;
  if p_retry_after_seconds is null then
    v_delay := supaworker_private.retry_delay(v_retry);
  else
    select make_interval(secs => least(p_retry_after_seconds::numeric, s.backoff_max_seconds))
      into v_delay from public.queue_settings s;
  end if;

  return query
  update public.processing_queue q set
    status           = v_status,
    retry_count      = v_retry,
    error_message    = left(coalesce(p_error, 'the worker gave no error message'), 10000),
    result           = null,
    run_at           = case when v_status = 'pending' then now() + v_delay else q.run_at end,
    assigned_to      = case when v_status = 'pending' then null else q.assigned_to end,
    assigned_at      = case when v_status = 'pending' then null else q.assigned_at end,
    started_at       = case when v_status = 'pending' then null else q.started_at end,
    progress_percent = case when v_status = 'pending' then null else q.progress_percent end,
    progress_message = case when v_status = 'pending' then null else q.progress_message end,
    completed_at     = case when v_status = 'pending' then null else now() end
  where q.id = p_job_id
  returning q.*;
end $$;
comment on function supaworker_private.fail_attempt(uuid, text, integer, text, boolean, integer) is
  'One failed attempt of a running job, fenced by (id, worker, attempt): retry_count + 1; '
  'cancel requested -> cancelled; not retryable or retry_count >= max_attempts -> failed '
  '(error kept, completed_at set); else pending at now() + retry_delay(retry_count), or '
  'now() + least(p_retry_after_seconds, backoff_max_seconds) when that is not null. '
  'Returns the row, or nothing when fenced out. Caller holds the worker row lock.';

create or replace function supaworker_private.fail_attempt(
  p_job_id uuid, p_worker_id text, p_attempt integer, p_error text, p_retryable boolean
) returns setof public.processing_queue
language sql volatile set search_path = '' as $$
  select * from supaworker_private.fail_attempt(p_job_id, p_worker_id, p_attempt, p_error,
                                               p_retryable, null::integer)
$$;
comment on function supaworker_private.fail_attempt(uuid, text, integer, text, boolean) is
  'fail_attempt with the default backoff (p_retry_after_seconds null). Caller holds the '
  'worker row lock.';

drop function public.fail_job(uuid, text, integer, text, boolean);

create function public.fail_job(
  p_job_id              uuid,
  p_worker_id           text,
  p_attempt             integer,
  p_error               text,
  p_retryable           boolean default true,
  p_retry_after_seconds integer default null
) returns setof public.processing_queue
language plpgsql volatile security definer set search_path = '' rows 1 as $$
declare
  v_found boolean;
begin
  perform supaworker_private.lock_worker(p_worker_id);
  return query
    select * from supaworker_private.fail_attempt(p_job_id, p_worker_id, p_attempt, p_error,
                                                 p_retryable, p_retry_after_seconds);
  v_found := found;
  if v_found then
    perform supaworker_private.refresh_current_jobs(array[p_worker_id]);
  end if;
end $$;
comment on function public.fail_job(uuid, text, integer, text, boolean, integer) is
  'Record a failed attempt, fenced by (job, worker, attempt); returns the updated row, or no '
  'row when fenced out. retry_count + 1; cancellation requested -> cancelled; p_retryable '
  'false or retry_count >= max_attempts -> failed (error_message kept, completed_at set); '
  'otherwise pending again at now() + least(backoff_base_seconds * 2^(retry_count-1), '
  'backoff_max_seconds) * uniform[0.5, 1), or at now() + least(p_retry_after_seconds, '
  'backoff_max_seconds) when given (a handler''s Retry-After). 22023 for a negative delay.';

revoke all on function
  supaworker_private.fail_attempt(uuid, text, integer, text, boolean, integer),
  public.fail_job(uuid, text, integer, text, boolean, integer)
from public, anon, authenticated, service_role;
grant execute on function public.fail_job(uuid, text, integer, text, boolean, integer)
  to service_role;

-- The schema this migration leaves (0012_schema_version.sql: every migration sets its number).
create or replace function public.supaworker_schema_version() returns integer
language sql
immutable
security definer
set search_path = ''
as $$ select 13 $$;
