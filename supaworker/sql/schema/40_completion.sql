-- supaworker, current schema: a running job's progress and its final write.
--
-- supaworker/sql/schema/ is what a reader opens: the schema as it stands after every migration
-- in supabase/migrations/ (what `supabase db push` applies; they stay as they are). Loaded in
-- file-name order into a fresh database, these files give the same schema as the migrations
-- (tests/sql/test_schema_definitions.py). To change the schema, edit the definition here AND
-- write a new migration (docs/architecture.md, "Changing the schema").

-- Every function here is fenced by (job, worker, attempt, running status): a call from a
-- worker that lost the job changes nothing and says so (false, 0, or no row).

-- report_progress(p_job_id, p_worker_id, p_attempt, p_percent, p_message null) -> boolean
-- Sets progress_percent (0..100, rounded to 2 places; null keeps it) and progress_message
-- (first 1000 characters; null keeps it) of a running job. False when fenced out. Writes no
-- job_events row. Who: service_role. Errors: 22023 percent outside 0..100.
create function public.report_progress(
  p_job_id    uuid,
  p_worker_id text,
  p_attempt   integer,
  p_percent   numeric,
  p_message   text default null
) returns boolean
language plpgsql volatile security definer set search_path = '' as $$
begin
  if p_percent is not null and p_percent not between 0 and 100 then
    perform supaworker_private.raise_error('22023',
      pg_catalog.format('p_percent must be between 0 and 100, got %s', p_percent), null);
  end if;
  update public.processing_queue q
     set progress_percent = coalesce(round(p_percent, 2), q.progress_percent),
         progress_message = coalesce(left(p_message, 1000), q.progress_message)
   where q.id = p_job_id and q.assigned_to = p_worker_id and q.attempt = p_attempt
     and q.status in ('assigned', 'processing');
  return found;
end $$;
comment on function public.report_progress(uuid, text, integer, numeric, text) is
  'Set progress_percent (0..100, null keeps it) and progress_message of a running job, '
  'fenced by (job, worker, attempt). False when fenced out. 22023 for a percent outside '
  '0..100. Does not write job_events.';

-- complete_job(p_job_id, p_worker_id, p_attempt, p_result null) -> boolean
-- Marks a running job completed with p_result (error cleared, progress 100, completed_at).
-- True when completed, false when fenced out. A job whose cancellation was requested is still
-- completed: the work is done. Locks the worker row, refreshes current_jobs.
-- Who: service_role. Raises nothing of its own.
create function public.complete_job(
  p_job_id    uuid,
  p_worker_id text,
  p_attempt   integer,
  p_result    jsonb default null
) returns boolean
language plpgsql volatile security definer set search_path = '' as $$
declare
  v_done boolean;
begin
  perform supaworker_private.lock_worker(p_worker_id);
  update public.processing_queue q
     set status = 'completed', result = p_result, error_message = null,
         completed_at = now(), progress_percent = 100
   where q.id = p_job_id and q.assigned_to = p_worker_id and q.attempt = p_attempt
     and q.status in ('assigned', 'processing');
  v_done := found;
  if v_done then
    perform supaworker_private.refresh_current_jobs(array[p_worker_id]);
  end if;
  return v_done;
end $$;
comment on function public.complete_job(uuid, text, integer, jsonb) is
  'Mark a running job completed with p_result, fenced by (job, worker, attempt). True when '
  'completed; false (nothing changed) when the worker no longer owns this attempt. A job '
  'whose cancellation was requested is still completed: the work is done.';

-- complete_batch(p_worker_id, p_jobs) -> setof uuid
-- The one implementation of the batched completion, behind complete_jobs and
-- complete_and_claim: p_jobs = [{id, attempt, result}], each element completed like
-- complete_job (duplicates of an id count once); returns the ids it completed. Locks the
-- worker row (unless p_jobs is empty), refreshes current_jobs.
-- Who: the two wrappers only. Errors: 22023 p_jobs not an array, or an element that is not
-- an object with "id" and "attempt".
create function supaworker_private.complete_batch(p_worker_id text, p_jobs jsonb)
returns setof uuid
language plpgsql volatile set search_path = '' as $$
declare
  v_count integer;
begin
  if p_jobs is null or jsonb_typeof(p_jobs) <> 'array' then
    perform supaworker_private.raise_error('22023', 'p_jobs must be a JSON array',
      'Pass [{"id": ..., "attempt": ..., "result": ...}, ...].');
  end if;
  if exists (select from jsonb_array_elements(p_jobs) e
              where jsonb_typeof(e) <> 'object' or not (e ? 'id') or not (e ? 'attempt')) then
    perform supaworker_private.raise_error('22023',
      'every element of p_jobs needs "id" and "attempt"',
      'Pass [{"id": ..., "attempt": ..., "result": ...}, ...].');
  end if;
  if jsonb_array_length(p_jobs) = 0 then
    return;
  end if;
  perform supaworker_private.lock_worker(p_worker_id);
  return query
  update public.processing_queue q
     set status = 'completed', result = x.result, error_message = null,
         completed_at = now(), progress_percent = 100
    from (select distinct on (r.id) r.id, r.attempt, r.result
            from jsonb_to_recordset(p_jobs) as r(id uuid, attempt integer, result jsonb)
           order by r.id) x
   where q.id = x.id and q.assigned_to = p_worker_id and q.attempt = x.attempt
     and q.status in ('assigned', 'processing')
  returning q.id;
  get diagnostics v_count = row_count;
  if v_count > 0 then
    perform supaworker_private.refresh_current_jobs(array[p_worker_id]);
  end if;
end $$;
comment on function supaworker_private.complete_batch(text, jsonb) is
  'The batch completion behind complete_jobs and complete_and_claim: completes each element '
  'of p_jobs = [{id, attempt, result}] fenced like complete_job; returns the completed ids.';

-- complete_jobs(p_worker_id, p_jobs) -> integer
-- complete_batch, returning how many were completed (fenced-out elements are skipped).
-- Who: service_role. Errors: 22023 (see complete_batch).
create function public.complete_jobs(p_worker_id text, p_jobs jsonb)
returns integer
language sql volatile security definer set search_path = '' as $$
  select count(*)::integer from supaworker_private.complete_batch(p_worker_id, p_jobs)
$$;
comment on function public.complete_jobs(text, jsonb) is
  'Batch complete_job: p_jobs = [{id, attempt, result}]; each element fenced like '
  'complete_job. Returns how many were completed (fenced-out elements are skipped). '
  '22023 when p_jobs is not an array of objects with id and attempt.';

-- complete_and_claim(p_worker_id, p_jobs '[]', p_limit 0, p_queues null, p_prefetch 0)
--   -> jsonb {"completed": [ids], "claimed": [job rows in claim order]}
-- A worker's steady state ("some jobs finished, slots are free") in one round trip and one
-- transaction: complete_batch first, so the slots it frees are seen by the claim, then
-- claim_jobs with p_start true. p_prefetch lets the claim go beyond the free slots by that
-- many: a worker running very short jobs keeps them in a local buffer (current_jobs may then
-- exceed max_concurrent_jobs by up to p_prefetch); it bounds how long it holds them and
-- releases the rest with release_jobs (no attempt spent). Completions land for a paused or
-- offline worker too; the claim then returns nothing.
-- Who: service_role. Errors: 22023 (see complete_batch and claim_jobs).
create function public.complete_and_claim(
  p_worker_id text,
  p_jobs      jsonb   default '[]',
  p_limit     integer default 0,
  p_queues    text[]  default null,
  p_prefetch  integer default 0
) returns jsonb
language plpgsql volatile security definer set search_path = '' as $$
declare
  v_completed jsonb;
  v_claimed   jsonb;
begin
  select coalesce(jsonb_agg(c.id), '[]') into v_completed
    from supaworker_private.complete_batch(p_worker_id, p_jobs) as c(id);
  select coalesce(jsonb_agg(j.row order by j.n), '[]') into v_claimed
    from (select pg_catalog.to_jsonb(c) as row, pg_catalog.row_number() over () as n
            from supaworker_private.claim_jobs(p_worker_id, p_limit, p_queues, true,
                                               p_prefetch) c) j;
  return jsonb_build_object('completed', v_completed, 'claimed', v_claimed);
end $$;
comment on function public.complete_and_claim(text, jsonb, integer, text[], integer) is
  'complete_jobs then claim_next_job(p_start => true) in one transaction, so the slots the '
  'completions free are claimable at once. p_jobs = [{id, attempt, result}], each fenced like '
  'complete_job (fenced-out elements are skipped); then up to p_limit jobs are claimed and '
  'started for an active worker, never more than max_concurrent_jobs + p_prefetch minus its '
  'assigned/processing jobs (p_prefetch: jobs the worker may hold beyond its slots, 0..1000). '
  'Returns {"completed": [ids completed by this call], "claimed": [job rows, in claim order]}. '
  'Completions land for a paused or offline worker too; the claim then returns nothing. '
  '22023 for a malformed p_jobs, p_limit or p_prefetch outside 0..1000.';

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

-- snooze_job(p_job_id, p_worker_id, p_attempt, p_seconds) -> setof job
-- A handler's "not now" (issue 18: supaworker.Snooze(seconds), a rate-limited API): the
-- running job goes back to pending at now() + p_seconds without spending an attempt
-- (retry_count kept, snooze_count + 1, owner and progress cleared, its fair-order tag kept),
-- and job_events gets a 'snoozed' row ("snoozed until <run_at>"). A job with a cancel request
-- is cancelled instead. Fenced by (job, worker, attempt) like fail_job: the updated row, or
-- no row when fenced out. Independent of fail_job's p_retry_after_seconds (a failed attempt
-- with a delay). Who: service_role. Errors: 22023 p_seconds not in (0, 604800].
create function public.snooze_job(
  p_job_id    uuid,
  p_worker_id text,
  p_attempt   integer,
  p_seconds   numeric
) returns setof public.processing_queue
language plpgsql volatile security definer set search_path = '' rows 1 as $$
declare
  v_found boolean;
begin
  if p_seconds is null or p_seconds <= 0 or p_seconds > 604800 then
    perform supaworker_private.raise_error('22023',
      pg_catalog.format('p_seconds must be more than 0 and at most 604800 (7 days), got %s',
                        p_seconds),
      'A job that cannot run for longer should fail its attempt instead.');
  end if;
  perform supaworker_private.lock_worker(p_worker_id);
  return query
  update public.processing_queue q set
    status           = case when q.cancel_requested then 'cancelled' else 'pending' end,
    run_at           = case when q.cancel_requested then q.run_at
                            else now() + pg_catalog.make_interval(secs => p_seconds) end,
    snooze_count     = q.snooze_count + case when q.cancel_requested then 0 else 1 end,
    assigned_to      = case when q.cancel_requested then q.assigned_to end,
    assigned_at      = case when q.cancel_requested then q.assigned_at end,
    started_at       = case when q.cancel_requested then q.started_at end,
    completed_at     = case when q.cancel_requested then now() end,
    progress_percent = null,
    progress_message = null
  where q.id = p_job_id and q.assigned_to = p_worker_id and q.attempt = p_attempt
    and q.status in ('assigned', 'processing')
  returning q.*;
  v_found := found;
  if v_found then
    perform supaworker_private.refresh_current_jobs(array[p_worker_id]);
  end if;
end $$;
comment on function public.snooze_job(uuid, text, integer, numeric) is
  'A handler''s snooze: the running job, fenced by (job, worker, attempt), goes back to '
  'pending at now() + p_seconds without spending an attempt (retry_count kept, snooze_count '
  '+ 1, a ''snoozed'' job event); cancelled instead when a cancel was requested. The row, or '
  'no row when fenced out. 22023 for p_seconds outside (0, 604800].';

-- release_jobs(p_worker_id, p_job_ids null) -> integer
-- Graceful hand-back (shutdown, unneeded prefetched jobs): the worker's running jobs (all,
-- or those listed) go back to pending without spending a retry; a job with a cancel request
-- becomes cancelled. Returns how many. Who: service_role. Raises nothing of its own.
create function public.release_jobs(p_worker_id text, p_job_ids uuid[] default null)
returns integer
language plpgsql volatile security definer set search_path = '' as $$
declare
  v_count integer;
begin
  perform supaworker_private.lock_worker(p_worker_id);
  v_count := supaworker_private.release(p_worker_id, p_job_ids);
  perform supaworker_private.refresh_current_jobs(array[p_worker_id]);
  return v_count;
end $$;
comment on function public.release_jobs(text, uuid[]) is
  'Graceful hand-back: the worker''s assigned/processing jobs (all, or those in p_job_ids) '
  'return to pending without spending a retry (retry_count and run_at unchanged, progress '
  'cleared); a job with a cancel request becomes cancelled instead. Returns how many.';
