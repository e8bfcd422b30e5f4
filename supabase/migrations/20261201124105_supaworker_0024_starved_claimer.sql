-- supaworker: a claimer starved of its own heartbeats is evidence of a starved Data API pool
-- (issue 19, item 5, after 0021).
--
-- 0021 postpones declaring workers dead while a reaper pass sees PostgREST's pool saturated,
-- and for one horizon after. A saturation that no pass saw (no claim got through it, and
-- pg_cron's minute did not fall in it) left no record, and the first claim after it ran a
-- pass that rescued the jobs of live workers whose heartbeats were still queued behind it
-- (tests/chaos/test_pool.py on a loaded machine: 5 jobs). That claimer is itself a live worker
-- whose heartbeats were starved: maybe_rescue now passes its worker id, and a claimer whose own
-- last heartbeat is more than half a dead_worker_horizon old counts as a saturated pool seen
-- now (reap's p_starved), which starts the same postponement.
--
-- Rolling upgrades: nothing a worker calls changes.

drop function supaworker_private.maybe_rescue();
drop function supaworker_private.reap();

create function supaworker_private.reap(p_starved boolean default false) returns integer
language plpgsql volatile set search_path = '' as $$
declare
  v_settings  public.queue_settings;
  v_horizon   timestamptz;
  v_saturated boolean;
  v_calm      timestamptz;
  v_workers   text[];
  v_job       record;
  v_count     integer := 0;
begin
  select * into v_settings from public.queue_settings;
  v_horizon := now() - v_settings.dead_worker_horizon;

  -- 0. Is the Data API pool saturated? Looked at on every pass (one read of
  --    pg_stat_activity; 50 ms more only while every connection is busy), so that a
  --    saturation is on record before the heartbeats it starves are a horizon old. The
  --    caller holds the settings row (maybe_rescue, reap_stale_jobs).
  if v_settings.max_rescue_postponement > interval '0' then
    v_saturated := coalesce(p_starved, false)
                   or supaworker_private.data_api_pool_saturated();
    v_calm := v_settings.pool_calm_since;
    if v_saturated then
      update public.queue_settings set pool_saturated_at = now(), pool_calm_since = null;
    elsif v_saturated is not null and v_settings.pool_saturated_at is not null
          and v_calm is null then
      v_calm := now();
      update public.queue_settings set pool_calm_since = v_calm;
    end if;
    if v_saturated or (v_saturated is not null and v_settings.pool_saturated_at is not null
                       and v_calm > now() - v_settings.dead_worker_horizon) then
      v_horizon := v_horizon - v_settings.max_rescue_postponement;
    end if;
  end if;

  -- 1. Lock, in worker_id order, every worker whose jobs this pass may touch: dead workers
  --    that still look active or still hold jobs, and workers holding an overdue job.
  select coalesce(array_agg(x.worker_id), '{}') into v_workers
  from (
    select w.worker_id
      from public.vps_workers w
     where (w.last_heartbeat < v_horizon
            and (w.status = 'active'
                 or exists (select from public.processing_queue q
                             where q.assigned_to = w.worker_id
                               and q.status in ('assigned', 'processing'))))
        or exists (select from public.processing_queue q
                    where q.assigned_to = w.worker_id
                      and q.status in ('assigned', 'processing')
                      and q.timeout_seconds is not null
                      and coalesce(q.started_at, q.assigned_at)
                          + make_interval(secs => q.timeout_seconds)
                          + v_settings.timeout_grace < now())
     order by w.worker_id
     for update
  ) x;

  -- 2. Dead active workers go offline. A paused worker stays paused: the pause is an
  --    operator's decision about that worker and must survive its restart.
  update public.vps_workers w set status = 'offline'
   where w.worker_id = any (v_workers) and w.status = 'active'
     and w.last_heartbeat < v_horizon;

  -- 3. Each running job of a dead (or unregistered) worker, and each overdue job, counts as
  --    a failed attempt. fail_attempt re-checks (status, assigned_to, attempt) under the row
  --    lock, so a job completed while this pass runs is left alone.
  for v_job in
    select q.id, q.assigned_to, q.attempt,
           case
             when w.worker_id is null
               then pg_catalog.format('worker %s is not registered', q.assigned_to)
             when w.last_heartbeat < v_horizon
               then pg_catalog.format('worker %s stopped heartbeating', q.assigned_to)
             else pg_catalog.format('timed out after %s s on worker %s',
                                    q.timeout_seconds, q.assigned_to)
           end as reason
      from public.processing_queue q
      left join public.vps_workers w on w.worker_id = q.assigned_to
     where q.status in ('assigned', 'processing')
       and (w.worker_id is null
            or (q.assigned_to = any (v_workers)
                and (w.last_heartbeat < v_horizon
                     or (q.timeout_seconds is not null
                         and coalesce(q.started_at, q.assigned_at)
                             + make_interval(secs => q.timeout_seconds)
                             + v_settings.timeout_grace < now()))))
     order by q.id
  loop
    if exists (select from supaworker_private.fail_attempt(
                 v_job.id, v_job.assigned_to, v_job.attempt, v_job.reason, true)) then
      v_count := v_count + 1;
    end if;
  end loop;

  perform supaworker_private.refresh_current_jobs(v_workers);
  return v_count;
end $$;
comment on function supaworker_private.reap(boolean) is
  'The reaper: marks workers without a heartbeat within dead_worker_horizon offline and '
  'fails the current attempt of their running jobs (and of jobs past timeout_seconds + '
  'timeout_grace) with a guarded update. While the Data API pool is saturated, and for one '
  'horizon after it is seen calm again, the heartbeat horizon is dead_worker_horizon + '
  'max_rescue_postponement; p_starved (a claimer starved of its own heartbeats) counts as '
  'a saturated pool. Returns the number of jobs rescued.';

create function supaworker_private.maybe_rescue(p_claimer text) returns integer
language plpgsql volatile set search_path = '' as $$
declare
  v_horizon interval;
begin
  -- At most once per rescue_interval, and never waiting: a claimer that finds the settings
  -- row locked (another rescue in progress) simply goes on with its claim.
  select s.dead_worker_horizon into v_horizon
    from public.queue_settings s
   where s.last_rescue_at is null or s.last_rescue_at <= now() - s.rescue_interval
   for update skip locked;
  if not found then
    return 0;
  end if;
  update public.queue_settings set last_rescue_at = now();
  return supaworker_private.reap(exists (
    select from public.vps_workers w
     where w.worker_id = p_claimer and w.status = 'active'
       and w.last_heartbeat < now() - v_horizon / 2));
end $$;
comment on function supaworker_private.maybe_rescue(text) is
  'Runs the reaper if rescue_interval has passed since last_rescue_at and no other rescue '
  'holds the settings row (FOR UPDATE SKIP LOCKED); a claimer whose own heartbeat is half a '
  'horizon old tells the reaper the Data API pool was starved (reap''s p_starved).';

-- claim_jobs: unchanged but for maybe_rescue(p_worker_id).
create or replace function supaworker_private.claim_jobs(
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
  v_turn    public.processing_queue;
  v_best    public.processing_queue;
  v_job     public.processing_queue;
  v_budget  integer;
  v_cap     integer;
  v_skip    uuid[] := '{}';  -- owners at their cap, or being claimed by another transaction
  v_locked  uuid[] := '{}';  -- owners whose cap lock this transaction holds
  v_owned   integer;
  v_keyed   boolean;
  v_full    text[] := '{}';  -- concurrency keys at their limit (or being claimed elsewhere)
  v_dry     text[] := '{}';  -- rate-limit keys whose bucket is empty (or being spent elsewhere)
  v_refused text;
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

  perform supaworker_private.maybe_rescue(p_worker_id);

  -- Serialises this worker's own claims, so its free slots cannot be over-committed.
  select * into v_worker from public.vps_workers w where w.worker_id = p_worker_id for update;
  if not found or v_worker.status <> 'active' then
    return;  -- unknown, paused or offline worker: nothing
  end if;

  select count(*) into v_running from public.processing_queue q
   where q.assigned_to = p_worker_id and q.status in ('assigned', 'processing');
  v_slots := least(p_limit, v_worker.max_concurrent_jobs + p_prefetch - v_running);
  v_queues := coalesce(p_queues, v_worker.queues);
  select s.max_running_per_user into v_cap from public.queue_settings s;
  v_keyed := exists (select from public.concurrency_limits)
             or exists (select from public.rate_limits);

  if v_slots > 0 and v_cap is null and not v_keyed and not exists (
    select from supaworker_private.owner_clock c
     where c.uses_priority and (v_queues is null or c.queue = any (v_queues))
  ) then
    -- The fast path: each turn's first job is the one claimed, so one statement claims all.
    return query
    with candidates as (
      select q.id
        from public.processing_queue q
       where q.status = 'pending'
         and not q.cancel_requested
         and q.run_at <= now()
         and (v_queues is null or q.queue = any (v_queues))
         and (q.requires = '{}'::jsonb
              or supaworker_private.requires_met(q.requires, v_worker.capabilities))
       order by q.priority desc, q.fair_tag, q.created_at
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
    select * from claimed c order by c.priority desc, c.fair_tag, c.created_at;
    get diagnostics v_claimed = row_count;
  elsif v_slots > 0 then
    -- One turn at a time: the first claimable row in claim order decides whose turn it is,
    -- the owner's best job fills it. Bounded: at most v_slots claimed turns plus 32 skipped
    -- ones (a claim may then return fewer jobs than slots; the next one continues).
    v_budget := v_slots + 32;
    while v_claimed < v_slots and v_budget > 0 loop
      v_budget := v_budget - 1;
      select * into v_turn from public.processing_queue q
       where q.status = 'pending'
         and not q.cancel_requested
         and q.run_at <= now()
         and (v_queues is null or q.queue = any (v_queues))
         and (q.requires = '{}'::jsonb
              or supaworker_private.requires_met(q.requires, v_worker.capabilities))
         and (q.user_id is null or q.user_id <> all (v_skip))
         and (q.concurrency_key is null or q.concurrency_key <> all (v_full))
         and (q.rate_limit_key is null or q.rate_limit_key <> all (v_dry))
       order by q.priority desc, q.fair_tag, q.created_at
       limit 1
       for update skip locked;
      exit when not found;
      if v_cap is not null and v_turn.user_id is not null then
        -- max_running_per_user. Only claims raise an owner's running count, so only claims
        -- take this lock; a try-lock, so a claim never waits for another: an owner being
        -- claimed elsewhere is skipped this time. The count runs in a statement after the
        -- lock (a new snapshot in READ COMMITTED), so it sees every claim of the lock's
        -- previous holder, and the lock is held to commit: no two claims see "one below".
        if not v_turn.user_id = any (v_locked) then
          if not pg_catalog.pg_try_advisory_xact_lock(
                   pg_catalog.hashtext('supaworker.running_cap'),
                   pg_catalog.hashtext(v_turn.user_id::text)) then
            v_skip := v_skip || v_turn.user_id;
            continue;
          end if;
          v_locked := v_locked || v_turn.user_id;
        end if;
        select count(*) into v_owned from public.processing_queue q
         where q.user_id = v_turn.user_id and q.status in ('assigned', 'processing');
        if v_owned >= v_cap then
          v_skip := v_skip || v_turn.user_id;
          continue;
        end if;
      end if;
      v_job := v_turn;
      if v_turn.user_id is not null and exists (
        select from supaworker_private.owner_clock c
         where c.queue = v_turn.queue and c.priority = v_turn.priority
           and c.user_id = v_turn.user_id and c.uses_priority
      ) then
        select * into v_best from public.processing_queue q
         where q.status = 'pending'
           and q.queue = v_turn.queue and q.priority = v_turn.priority
           and q.user_id = v_turn.user_id
           and not q.cancel_requested
           and q.run_at <= now()
           and (q.requires = '{}'::jsonb
              or supaworker_private.requires_met(q.requires, v_worker.capabilities))
           and (q.concurrency_key is null or q.concurrency_key <> all (v_full))
           and (q.rate_limit_key is null or q.rate_limit_key <> all (v_dry))
         order by q.user_priority desc, q.owner_seq
         limit 1
         for update skip locked;
        if found and v_best.id <> v_turn.id then
          v_job := v_best;
        end if;
      end if;
      if v_keyed then
        -- Concurrency keys and rate limits (admit_keys): a key that refuses is left out of
        -- the rest of this claim.
        v_refused := supaworker_private.admit_keys(v_job.concurrency_key, v_job.rate_limit_key);
        if v_refused = 'concurrency' then
          v_full := v_full || v_job.concurrency_key;
          continue;
        elsif v_refused = 'rate' then
          v_dry := v_dry || v_job.rate_limit_key;
          continue;
        end if;
      end if;
      if v_job.id <> v_turn.id then
        -- The owner's best job takes this turn; v_turn takes its place in the owner's order.
        update public.processing_queue q set fair_tag = v_job.fair_tag where q.id = v_turn.id;
        v_job.fair_tag := v_turn.fair_tag;
      end if;
      update public.processing_queue q set
        status = case when coalesce(p_start, false) then 'processing' else 'assigned' end,
        assigned_to = p_worker_id, assigned_at = now(),
        started_at = case when coalesce(p_start, false) then now() end,
        attempt = q.attempt + 1, progress_percent = null, progress_message = null,
        fair_tag = v_job.fair_tag
       where q.id = v_job.id
      returning q.* into v_job;
      v_claimed := v_claimed + 1;
      return next v_job;
    end loop;
  end if;

  update public.vps_workers w set current_jobs = v_running + v_claimed
   where w.worker_id = p_worker_id and w.current_jobs is distinct from v_running + v_claimed;
  -- Wake-ups (35_wakeups.sql): a claim that came back short means the worker now waits for
  -- work (the next job it can take wakes it), one that filled its slots that it comes back
  -- by itself. p_limit 0 is no claim (complete_and_claim that only completes).
  if p_limit > 0 then
    perform supaworker_private.note_claim(p_worker_id, v_slots > 0 and v_claimed < v_slots);
  end if;
end $$;

revoke all on function supaworker_private.reap(boolean) from public, anon, authenticated, service_role;
revoke all on function supaworker_private.maybe_rescue(text)
  from public, anon, authenticated, service_role;

-- The schema this migration leaves (0012_schema_version.sql: every migration sets its number).
create or replace function public.supaworker_schema_version() returns integer
language sql
immutable
security definer
set search_path = ''
as $$ select 24 $$;
