-- supaworker: report finished jobs and claim the next ones in one call (issue 8).
--
-- A worker's steady state is "some jobs finished, slots are free": complete_jobs then
-- claim_next_job, two HTTP round trips in series. bench/throughput.py measured those round
-- trips as what bounds a worker with few slots (concurrency 1: ~5 ms per job, two trips).
-- complete_and_claim does both in one transaction, completions first, so the slots they free
-- are seen by the claim.
--
-- It may also claim a few jobs beyond the free slots (p_prefetch): a worker running very
-- short jobs keeps them in a local buffer so that its slots do not idle for a round trip
-- between jobs (graphile-worker's local queue, Celery's prefetch). Prefetched jobs are
-- claimed like the others (processing, attempt + 1) and count in current_jobs, which can
-- then exceed max_concurrent_jobs by up to p_prefetch. The worker bounds how long it holds
-- them and releases the rest (release_jobs: no attempt spent).
--
-- To keep one implementation of each step, the claim body moves to
-- supaworker_private.claim_jobs (claim_next_job becomes a wrapper with p_prefetch = 0, same
-- contract as migration 20261128001400) and the batch completion to
-- supaworker_private.complete_batch (complete_jobs becomes a wrapper, same contract).

create function supaworker_private.claim_jobs(
  p_worker_id text,
  p_limit     integer,
  p_queues    text[],
  p_start     boolean,
  p_prefetch  integer
) returns setof public.processing_queue
language plpgsql volatile set search_path = '' rows 1 as $$
declare
  v_worker  public.vps_workers;
  v_running integer;
  v_slots   integer;
  v_queues  text[];
  v_claimed integer := 0;
begin
  if p_worker_id is null or p_worker_id = '' then
    perform supaworker_private.raise_error('22023', 'p_worker_id is required', null);
  end if;
  if p_limit is null or p_limit < 0 or p_limit > 1000 then
    perform supaworker_private.raise_error('22023',
      pg_catalog.format('p_limit must be between 0 and 1000, got %s', p_limit), null);
  end if;
  if p_prefetch is null or p_prefetch < 0 or p_prefetch > 1000 then
    perform supaworker_private.raise_error('22023',
      pg_catalog.format('p_prefetch must be between 0 and 1000, got %s', p_prefetch), null);
  end if;

  perform supaworker_private.maybe_rescue();

  -- Serialises this worker's own claims, so its free slots cannot be over-committed.
  select * into v_worker from public.vps_workers w where w.worker_id = p_worker_id for update;
  if not found or v_worker.status <> 'active' then
    return;  -- unknown, paused or offline worker: nothing
  end if;

  select count(*) into v_running from public.processing_queue q
   where q.assigned_to = p_worker_id and q.status in ('assigned', 'processing');
  v_slots := least(p_limit, v_worker.max_concurrent_jobs + p_prefetch - v_running);
  v_queues := coalesce(p_queues, v_worker.queues);

  if v_slots > 0 then
    return query
    with candidates as (
      select q.id
        from public.processing_queue q
       where q.status = 'pending'
         and not q.cancel_requested
         and q.run_at <= now()
         and (v_queues is null or q.queue = any (v_queues))
         and q.requires <@ v_worker.capabilities
       order by q.priority desc, q.run_at, q.created_at
       limit v_slots
       for update skip locked
    ), claimed as (
      update public.processing_queue q set
        status = case when coalesce(p_start, false) then 'processing' else 'assigned' end,
        assigned_to = p_worker_id, assigned_at = now(),
        started_at = case when coalesce(p_start, false) then now() end,
        attempt = q.attempt + 1, progress_percent = null, progress_message = null
      from candidates c
      where q.id = c.id
      returning q.*
    )
    select * from claimed c order by c.priority desc, c.run_at, c.created_at;
    get diagnostics v_claimed = row_count;
  end if;

  update public.vps_workers w set current_jobs = v_running + v_claimed
   where w.worker_id = p_worker_id and w.current_jobs is distinct from v_running + v_claimed;
end $$;
comment on function supaworker_private.claim_jobs(text, integer, text[], boolean, integer) is
  'The claim behind claim_next_job and complete_and_claim: up to p_limit jobs, never more '
  'than max_concurrent_jobs + p_prefetch minus the worker''s assigned/processing jobs.';

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

create or replace function public.claim_next_job(
  p_worker_id text,
  p_limit     integer default 1,
  p_queues    text[]  default null,
  p_start     boolean default false
) returns setof public.processing_queue
language sql volatile security definer set search_path = '' rows 1 as $$
  select * from supaworker_private.claim_jobs(p_worker_id, p_limit, p_queues, p_start, 0)
$$;

create or replace function public.complete_jobs(p_worker_id text, p_jobs jsonb)
returns integer
language sql volatile security definer set search_path = '' as $$
  select count(*)::integer from supaworker_private.complete_batch(p_worker_id, p_jobs)
$$;

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

revoke all on function supaworker_private.claim_jobs(text, integer, text[], boolean, integer),
  supaworker_private.complete_batch(text, jsonb)
  from public, anon, authenticated, service_role;
revoke all on function public.complete_and_claim(text, jsonb, integer, text[], integer)
  from public, anon, authenticated, service_role;
grant execute on function public.complete_and_claim(text, jsonb, integer, text[], integer)
  to service_role;
