-- supaworker, current schema: the claim, and start_job (the second step of a two-step claim).
--
-- supaworker/sql/schema/ is what a reader opens: the schema as it stands after every migration
-- in supabase/migrations/ (what `supabase db push` applies; they stay as they are). Loaded in
-- file-name order into a fresh database, these files give the same schema as the migrations
-- (tests/sql/test_schema_definitions.py). To change the schema, edit the definition here AND
-- write a new migration (docs/architecture.md, "Changing the schema").

-- claim_jobs(p_worker_id, p_limit, p_queues, p_start, p_prefetch) -> setof job
-- The one implementation of the claim, behind claim_next_job (p_prefetch 0) and
-- complete_and_claim (p_start true). Runs the reaper first (maybe_rescue: at most once per
-- rescue_interval, never waiting). Then, under the worker's row lock (which serialises this
-- worker's claims so its slots cannot be over-committed), claims up to
-- least(p_limit, max_concurrent_jobs + p_prefetch - its assigned/processing jobs) jobs with
-- one UPDATE over a FOR UPDATE SKIP LOCKED selection: pending, run_at <= now(), not
-- cancel-requested, queue in p_queues (null: the worker's queues; null again: every queue),
-- requires contained in the worker's capabilities, in claim order (priority desc, run_at,
-- created_at; indexes processing_queue_claim_idx / _claim_order_idx). Claimed jobs get
-- assigned_to, assigned_at and attempt + 1 (the fencing token) and become assigned, or with
-- p_start processing with started_at = now(). Sets current_jobs, and whether the worker now
-- waits for work (worker_wakeups.awaiting: the claim came back short). Returns them in claim
-- order. An unknown, paused or offline worker gets nothing.
-- Who: the two wrappers only. Errors: 22023 empty worker id, p_limit or p_prefetch outside
-- 0..1000.
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
  -- Wake-ups (35_wakeups.sql): a claim that came back short means the worker now waits for
  -- work, one that filled its slots that it comes back by itself (p_limit 0 is no claim).
  if p_limit > 0 then
    perform supaworker_private.note_claim(p_worker_id, v_slots > 0 and v_claimed < v_slots);
  end if;
end $$;
comment on function supaworker_private.claim_jobs(text, integer, text[], boolean, integer) is
  'The claim behind claim_next_job and complete_and_claim: up to p_limit jobs, never more '
  'than max_concurrent_jobs + p_prefetch minus the worker''s assigned/processing jobs.';

-- claim_next_job(p_worker_id, p_limit 1, p_queues null, p_start false) -> setof job
-- claim_jobs without prefetch: never more than the worker's free slots. Without p_start the
-- jobs are `assigned` and the worker calls start_job for each (claim ahead of running); with
-- p_start they are `processing` at once. A call without p_start (older workers) resolves to
-- this same function through PostgREST, which matches by argument names.
-- Who: service_role. Errors: 22023 (see claim_jobs).
create function public.claim_next_job(
  p_worker_id text,
  p_limit     integer default 1,
  p_queues    text[]  default null,
  p_start     boolean default false
) returns setof public.processing_queue
language sql volatile security definer set search_path = '' rows 1 as $$
  select * from supaworker_private.claim_jobs(p_worker_id, p_limit, p_queues, p_start, 0)
$$;
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

-- start_job(p_job_id, p_worker_id, p_attempt) -> boolean
-- assigned -> processing (started_at = now()), fenced by (job, worker, attempt). True when
-- the job is now processing for this attempt (a repeated call is true too); false when the
-- worker no longer owns this attempt (cancelled, rescued, reassigned): drop the job.
-- Who: service_role. Raises nothing of its own.
create function public.start_job(p_job_id uuid, p_worker_id text, p_attempt integer)
returns boolean
language plpgsql volatile security definer set search_path = '' as $$
begin
  update public.processing_queue q set status = 'processing', started_at = now()
   where q.id = p_job_id and q.assigned_to = p_worker_id and q.attempt = p_attempt
     and q.status = 'assigned';
  if found then
    return true;
  end if;
  return exists (select from public.processing_queue q
                  where q.id = p_job_id and q.assigned_to = p_worker_id
                    and q.attempt = p_attempt and q.status = 'processing');
end $$;
comment on function public.start_job(uuid, text, integer) is
  'assigned -> processing (started_at = now()), fenced by (job, worker, attempt). True when '
  'the job is now processing for this attempt (a repeated call is true too); false when the '
  'worker no longer owns this attempt (cancelled, rescued, reassigned): drop the job.';
