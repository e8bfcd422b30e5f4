-- supaworker: a saturated Data API pool is not taken for dead workers (issue 19, item 5).
--
-- Workers and users share PostgREST's connection pool (db-pool, 10 by default). Users' slow
-- reads that hold every connection make each other request wait for one, and past
-- db-pool-acquisition-timeout (10 s) PostgREST refuses it with 504 PGRST003: at 160
-- concurrent 2 s reads every worker heartbeat failed, heartbeat ages reached 28.8 s, and the
-- reaper rescued 4 jobs from live workers with the default 30 s horizon
-- (tests/chaos/test_pool.py). No retry by the worker gets through a pool that refuses every
-- request, so the database must not read stale heartbeats as death meanwhile.
--
-- The reaper now looks at the pool (supaworker_private.data_api_pool_saturated: PostgREST's
-- pooled backends, login authenticator, in pg_stat_activity; saturated = none idle for 50 ms
-- and the busy ones' median transaction age >= 0.1 s, in three looks 25 ms apart) on every
-- pass and keeps what it saw in queue_settings
-- (pool_saturated_at, pool_calm_since). While the pool is saturated, and for one
-- dead_worker_horizon after a pass first sees it calm again, a worker is dead only when its
-- heartbeat is older than dead_worker_horizon + max_rescue_postponement (5 minutes; 0: the
-- rule before this migration). Job timeouts and unregistered workers are judged as before.
-- Where this role cannot read PostgREST's backend state (pg_stat_activity shows it null
-- without pg_read_all_stats or membership in authenticator; hosted Supabase grants postgres
-- both) nothing is postponed.
--
-- Rolling upgrades: nothing a worker calls changes (REQUIRED_VERSION stays 19).

alter table public.queue_settings
  add column max_rescue_postponement interval not null default interval '5 minutes'
             check (max_rescue_postponement >= interval '0'),
  add column pool_saturated_at timestamptz,
  add column pool_calm_since timestamptz;
comment on table public.queue_settings is
  'The queue''s tunables (exactly one row). dead_worker_horizon: a worker whose last heartbeat '
  'is older is dead and its jobs are rescued. rescue_interval: claim_next_job runs the reaper '
  'at most this often. backoff: delay = least(base * 2^(retry_count-1), max) * random [0.5, 1). '
  'timeout_grace: extra time after timeout_seconds before a running job counts as timed out. '
  'retention: purge_finished_jobs default age. max_running_per_user: at most this many jobs '
  'of one owner assigned/processing at once, over all workers (null: no cap). '
  'max_pending_per_user: enqueue refuses (PT429) an owner with this many pending, assigned '
  'or processing jobs (null: no quota). max_rescue_postponement: while the Data API '
  '(PostgREST) pool is saturated, and for one dead_worker_horizon after it is seen calm '
  'again, a worker counts as dead only when its heartbeat is older than dead_worker_horizon '
  '+ this (0: never postponed). pool_saturated_at / pool_calm_since: written by the reaper '
  '(the last pass that saw the pool saturated, the first that saw it calm after that).';

-- data_api_pool_saturated() -> boolean (private)
-- Whether the Data API's connection pool is saturated now, judged from pg_stat_activity.
-- PostgREST logs in as `authenticator` (on Supabase and locally); its pooled connections are
-- its client backends in this database, minus its LISTEN connection, connections still
-- starting, and the caller's own backend (the reaper runs inside claims, i.e. on a pooled
-- connection itself). Saturated: at least one is open, none has been idle for 50 ms (under
-- saturation a freed connection is taken by a waiting request within a few ms: 3.5 ms at
-- most in 459 looks with 60 concurrent 2 s reads on a pool of 10), and the busy ones' median
-- transaction age is at least 0.1 s (a pool cycling through fast requests is busy, not
-- stuck), in each of three looks 25 ms apart. A request to PostgREST then waits for a
-- connection, up to db-pool-acquisition-timeout (10 s), and is refused with 504 PGRST003
-- after it: workers' heartbeats cannot get through, however often they retry.
-- Returns true (saturated), false, or null: cannot tell, because this role may not read
-- other roles' backend state (it needs pg_read_all_stats or the privileges of
-- authenticator; hosted Supabase gives postgres both, the local stack pg_monitor).
-- Who: reap only.
create function supaworker_private.data_api_pool_saturated() returns boolean
language plpgsql volatile set search_path = '' as $$
declare
  v_busy boolean;
begin
  if not (pg_catalog.pg_has_role('pg_read_all_stats', 'usage')
          or exists (select from pg_catalog.pg_roles r
                      where r.rolname = 'authenticator'
                        and pg_catalog.pg_has_role(r.oid, 'usage'))) then
    return null;
  end if;
  for i in 1..3 loop
    -- pg_stat_activity is read once per transaction unless the snapshot is cleared.
    perform pg_catalog.pg_stat_clear_snapshot();
    select count(*) > 0
           and count(*) filter (where a.state = 'idle' and a.state_change
                                  < pg_catalog.clock_timestamp() - interval '50 milliseconds')
               = 0
           and coalesce(percentile_cont(0.5) within group (
                 order by extract(epoch from pg_catalog.clock_timestamp()
                                             - coalesce(a.xact_start, a.query_start)))
                 filter (where a.state <> 'idle'), 0) >= 0.1
      into v_busy
      from pg_catalog.pg_stat_activity a
     where a.usename = 'authenticator'
       and a.datname = pg_catalog.current_database()
       and a.backend_type = 'client backend'
       and a.pid <> pg_catalog.pg_backend_pid()
       and a.state is not null
       and a.query not ilike 'listen %';
    if not v_busy then
      return false;
    end if;
    if i < 3 then
      perform pg_catalog.pg_sleep(0.025);
    end if;
  end loop;
  return true;
end $$;
comment on function supaworker_private.data_api_pool_saturated() is
  'Whether the Data API (PostgREST, login authenticator) pool is saturated: its pooled '
  'connections open, none idle for 50 ms, the busy ones'' median transaction age >= 0.1 s, '
  'in three looks 25 ms apart. null when this role cannot read their state in '
  'pg_stat_activity (no pg_read_all_stats, no privileges of authenticator).';

-- reap() -> integer (private)
-- The reaper. Locks, in worker_id order, every worker whose jobs this pass may touch (dead
-- workers that still look active or hold jobs, workers holding an overdue job); dead active
-- workers go offline (paused ones stay paused); each running job of a dead or unregistered
-- worker, and each job past timeout_seconds + timeout_grace, counts as a failed attempt
-- (fail_attempt, guarded: a job completed meanwhile is left alone). Refreshes current_jobs.
-- Dead = no heartbeat within dead_worker_horizon, except while the Data API pool is
-- saturated (data_api_pool_saturated) and for one horizon after a pass first sees it calm
-- again: then a worker is dead only without a heartbeat within dead_worker_horizon +
-- max_rescue_postponement. A saturated pool refuses every worker's heartbeat (issue 19: 4
-- jobs rescued from live workers at 160 concurrent 2 s user reads), so stale heartbeats say
-- nothing then; the horizon of calm gives a live worker time to get a beat through; the
-- bound keeps a dead worker's jobs from waiting for ever behind a pool that stays full.
-- When the pool cannot be judged (null) nothing is postponed: the rule before 0021.
-- Returns the number of jobs rescued. Who: maybe_rescue and reap_stale_jobs only.
create or replace function supaworker_private.reap() returns integer
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
    v_saturated := supaworker_private.data_api_pool_saturated();
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
comment on function supaworker_private.reap() is
  'The reaper: marks workers without a heartbeat within dead_worker_horizon offline and '
  'fails the current attempt of their running jobs (and of jobs past timeout_seconds + '
  'timeout_grace) with a guarded update. While the Data API pool is saturated, and for one '
  'horizon after it is seen calm again, the heartbeat horizon is dead_worker_horizon + '
  'max_rescue_postponement. Returns the number of jobs rescued.';

comment on function public.reap_stale_jobs() is
  'Run the reaper now (pg_cron runs it every minute; claim_next_job runs it every '
  'rescue_interval): workers without a heartbeat within dead_worker_horizon become offline '
  '(paused ones stay paused); each assigned/processing job of such a worker, of an '
  'unregistered worker, or running longer than timeout_seconds + timeout_grace counts as a '
  'failed attempt (pending with backoff, failed at max_attempts, cancelled if requested). '
  'While the Data API (PostgREST) pool is saturated, and for one horizon after, the '
  'heartbeat horizon is dead_worker_horizon + max_rescue_postponement. Guarded: a job '
  'completed meanwhile is never reset. Returns the number of jobs rescued.';

revoke all on function supaworker_private.data_api_pool_saturated()
  from public, anon, authenticated, service_role;

-- The schema this migration leaves (0012_schema_version.sql: every migration sets its number).
create or replace function public.supaworker_schema_version() returns integer
language sql
immutable
security definer
set search_path = ''
as $$ select 21 $$;
