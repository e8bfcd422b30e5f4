-- supaworker: what a job's owner sees of a failure, apart from what operators see (issue 19).
--
-- processing_queue.error_message is readable by the job's owner (RLS, Realtime) and held the
-- raw exception text: passwords in URLs, AWS keys and stack frames reached users verbatim.
-- From this version the worker sends a safe message there (the error class, or the text of
-- an error the handler marks as meant for users: supaworker.UserFacingError, PermanentError,
-- a `user_message` attribute) and the full text, redacted, as fail_job's new
-- p_error_detail, stored in public.job_error_details: RLS on, its only policy the
-- queue-admin one, so service_role and queue admins read it and owners never do.
--
-- Rolling upgrades: the six-argument fail_job is dropped and the new one has the seventh
-- parameter with a default, so an old worker's call (named p_job_id .. p_retry_after_seconds
-- through PostgREST) still resolves to exactly one function (two would be PGRST203). A new
-- worker against a database without this migration gets PGRST202 for p_error_detail and
-- sends the call again without it (AsyncQueueClient.fail).

-- job_error_details: what operators see of a failed attempt (issue 19)
-- processing_queue.error_message is read by the job's owner (RLS, Realtime): since issue 19
-- it holds only a safe message (the error class, or the text of an error the handler meant
-- for users). The full text (message and frames, secrets redacted by the worker) is kept
-- here, one row per failed attempt, readable by service_role and queue admins only: RLS is
-- on and its only policy is the queue-admin one (70_admin.sql), so an owner reads nothing.
create table public.job_error_details (
  job_id     uuid not null references public.processing_queue (id) on delete cascade,
  attempt    integer not null,
  detail     text not null check (length(detail) <= 20000),
  created_at timestamptz not null default now(),
  primary key (job_id, attempt)
);
comment on table public.job_error_details is
  'The operator-only text of failed attempts (error class, message, stack frames; redacted '
  'by the worker), one row per (job_id, attempt). Owners see processing_queue.error_message, '
  'a safe message, and never this table (RLS: service_role and queue admins only).';
alter table public.job_error_details enable row level security;

create policy job_error_details_select_queue_admin on public.job_error_details
  for select to authenticated using ((select supaworker_private.is_queue_admin()));

-- job_error_details: operators only. service_role bypasses RLS; signed-in users pass only
-- the queue-admin policy. Written by fail_job alone.
revoke all on table public.job_error_details from public, anon, authenticated, service_role;
grant select on table public.job_error_details to authenticated, service_role;

drop function public.fail_job(uuid, text, integer, text, boolean, integer);

-- fail_job(p_job_id, p_worker_id, p_attempt, p_error, p_retryable true,
--          p_retry_after_seconds null, p_error_detail null) -> setof job
-- One failed attempt (fail_attempt in 10_private_helpers.sql): retried with backoff (or after
-- p_retry_after_seconds, capped at backoff_max_seconds), failed at max_attempts or when not
-- retryable, cancelled when a cancel was requested. p_error is the message the job's owner
-- reads (error_message); p_error_detail, when given, the operators' full text
-- (job_error_details, one row per attempt). Returns the updated row, or no row when fenced
-- out (PostgREST: use setof, 0 rows = fenced). Calls without the newer parameters (workers
-- of previous versions) resolve to this function through the defaults.
-- Who: service_role. Raises 22023 for a negative delay.
create function public.fail_job(
  p_job_id              uuid,
  p_worker_id           text,
  p_attempt             integer,
  p_error               text,
  p_retryable           boolean default true,
  p_retry_after_seconds integer default null,
  p_error_detail        text    default null
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
    if p_error_detail is not null then
      -- A retried job's new cycle numbers its attempts from 1 again: the latest text wins.
      insert into public.job_error_details as d (job_id, attempt, detail)
      values (p_job_id, p_attempt, left(p_error_detail, 20000))
      on conflict (job_id, attempt) do update
        set detail = excluded.detail, created_at = excluded.created_at;
    end if;
  end if;
end $$;
comment on function public.fail_job(uuid, text, integer, text, boolean, integer, text) is
  'Record a failed attempt, fenced by (job, worker, attempt); returns the updated row, or no '
  'row when fenced out. retry_count + 1; cancellation requested -> cancelled; p_retryable '
  'false or retry_count >= max_attempts -> failed (error_message kept, completed_at set); '
  'otherwise pending again at now() + least(backoff_base_seconds * 2^(retry_count-1), '
  'backoff_max_seconds) * uniform[0.5, 1), or at now() + least(p_retry_after_seconds, '
  'backoff_max_seconds) when given (a handler''s Retry-After). p_error goes to error_message '
  '(read by the job''s owner), p_error_detail (operators only) to job_error_details. 22023 '
  'for a negative delay.';

revoke all on function public.fail_job(uuid, text, integer, text, boolean, integer, text)
from public, anon, authenticated, service_role;
grant execute on function public.fail_job(uuid, text, integer, text, boolean, integer, text)
  to service_role;

-- The schema this migration leaves (0012_schema_version.sql: every migration sets its number).
create or replace function public.supaworker_schema_version() returns integer
language sql
immutable
security definer
set search_path = ''
as $$ select 20 $$;
