-- supaworker: claim and start in one statement (issue 8, "fold start_job into the claim").
--
-- A worker claims only for free slots and runs what it claims at once, so the separate
-- start_job round trip (assigned -> processing) cost one HTTP request per job for nothing:
-- bench/throughput.py measured it as the largest single cost after the completion. With
-- p_start => true the claimed jobs go straight from pending to processing (started_at set,
-- one job_events row 'started' instead of 'assigned' + 'started'). The default (false) keeps
-- the two-step contract for callers that claim ahead of running (prefetch, an API that hands
-- work out): they still call start_job.
--
-- The three-argument function is replaced, not overloaded: PostgREST resolves a call by its
-- argument names, and a call without p_start (an older worker) still matches this one.

drop function public.claim_next_job(text, integer, text[]);

create function public.claim_next_job(
  p_worker_id text,
  p_limit     integer default 1,
  p_queues    text[]  default null,
  p_start     boolean default false
) returns setof public.processing_queue
language plpgsql volatile security definer set search_path = '' rows 1 as $$
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

  perform supaworker_private.maybe_rescue();

  -- Serialises this worker's own claims, so its free slots cannot be over-committed.
  select * into v_worker from public.vps_workers w where w.worker_id = p_worker_id for update;
  if not found or v_worker.status <> 'active' then
    return;  -- unknown, paused or offline worker: nothing
  end if;

  select count(*) into v_running from public.processing_queue q
   where q.assigned_to = p_worker_id and q.status in ('assigned', 'processing');
  v_slots := least(p_limit, v_worker.max_concurrent_jobs - v_running);
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
comment on function public.claim_next_job(text, integer, text[], boolean) is
  'Claim up to p_limit pending jobs for an active worker, never more than its free slots '
  '(max_concurrent_jobs - its assigned/processing jobs). One UPDATE over a FOR UPDATE SKIP '
  'LOCKED selection ordered by priority desc, run_at, created_at; only jobs with run_at <= '
  'now(), not cancel-requested, in p_queues (null: the worker''s queues; null: all) and '
  'whose requires is contained in the worker''s capabilities. Claimed jobs get assigned_to, '
  'assigned_at and attempt + 1 (the fencing token to pass back) and become assigned, or with '
  'p_start processing with started_at = now() (no start_job needed). Unknown, paused or '
  'offline worker: empty set. Runs the reaper first, at most once per '
  'queue_settings.rescue_interval. 22023 for p_limit outside 0..1000.';

revoke all on function public.claim_next_job(text, integer, text[], boolean)
  from public, anon, authenticated, service_role;
grant execute on function public.claim_next_job(text, integer, text[], boolean) to service_role;
