-- supaworker, current schema: worker registry, heartbeats, the reaper, the purge.
--
-- supaworker/sql/schema/ is what a reader opens: the schema as it stands after every migration
-- in supabase/migrations/ (what `supabase db push` applies; they stay as they are). Loaded in
-- file-name order into a fresh database, these files give the same schema as the migrations
-- (tests/sql/test_schema_definitions.py). To change the schema, edit the definition here AND
-- write a new migration (docs/architecture.md, "Changing the schema").

-- register_worker(p_worker_id, p_worker_name null, p_max_concurrent_jobs 1,
--                 p_capabilities '{}', p_queues null, p_host null, p_version null)
--   -> vps_workers
-- Upserts the worker at process start; returns its row. status becomes active, except that a
-- paused worker stays paused (the pause is an operator's decision and survives restarts);
-- started_at and last_heartbeat = now(), current_jobs 0. Jobs still assigned to this
-- worker_id belong to a previous process that died: each counts as a failed attempt (so a
-- crash-looping "poison" job still reaches max_attempts when the worker restarts faster than
-- dead_worker_horizon). Call once per process.
-- Who: service_role. Errors: 22023 worker_id not 1-200 characters, max_concurrent_jobs
-- outside 1..1000, capabilities not an object, queues empty or containing null.
create function public.register_worker(
  p_worker_id           text,
  p_worker_name         text    default null,
  p_max_concurrent_jobs integer default 1,
  p_capabilities        jsonb   default '{}'::jsonb,
  p_queues              text[]  default null,
  p_host                text    default null,
  p_version             text    default null
) returns public.vps_workers
language plpgsql volatile security definer set search_path = '' as $$
declare
  v_worker public.vps_workers;
  v_job    record;
begin
  if p_worker_id is null or length(p_worker_id) not between 1 and 200 then
    perform supaworker_private.raise_error('22023', 'p_worker_id must be 1-200 characters',
      null);
  end if;
  if coalesce(p_max_concurrent_jobs, 1) not between 1 and 1000 then
    perform supaworker_private.raise_error('22023',
      pg_catalog.format('p_max_concurrent_jobs must be between 1 and 1000, got %s',
                        p_max_concurrent_jobs), null);
  end if;
  if jsonb_typeof(coalesce(p_capabilities, '{}'::jsonb)) <> 'object' then
    perform supaworker_private.raise_error('22023', 'p_capabilities must be a JSON object',
      'e.g. {"gpu": true, "langs": ["en", "de"]}');
  end if;
  if p_queues is not null and (cardinality(p_queues) = 0 or array_position(p_queues, null)
                               is not null) then
    perform supaworker_private.raise_error('22023',
      'p_queues must be null (every queue) or a non-empty list of queue names', null);
  end if;

  -- A registration starts a new process under this worker_id: jobs still assigned to the
  -- id belong to a previous process that died, so each counts as a failed attempt (as the
  -- reaper would count it later). A crash-looping "poison" job thus still reaches
  -- max_attempts even when the worker restarts faster than dead_worker_horizon.
  perform supaworker_private.lock_worker(p_worker_id);
  for v_job in
    select q.id, q.attempt from public.processing_queue q
     where q.assigned_to = p_worker_id and q.status in ('assigned', 'processing')
     order by q.id
  loop
    perform supaworker_private.fail_attempt(v_job.id, p_worker_id, v_job.attempt,
      pg_catalog.format('worker %s restarted while the job was running', p_worker_id), true);
  end loop;

  insert into public.vps_workers as w
    (worker_id, worker_name, status, last_heartbeat, max_concurrent_jobs, current_jobs,
     capabilities, queues, host, version, started_at)
  values
    (p_worker_id, p_worker_name, 'active', now(), coalesce(p_max_concurrent_jobs, 1), 0,
     coalesce(p_capabilities, '{}'::jsonb), p_queues, p_host, p_version, now())
  on conflict (worker_id) do update set
    worker_name = excluded.worker_name,
    status = case when w.status = 'paused' then 'paused' else 'active' end,
    last_heartbeat = excluded.last_heartbeat,
    max_concurrent_jobs = excluded.max_concurrent_jobs,
    current_jobs = 0,
    capabilities = excluded.capabilities,
    queues = excluded.queues,
    host = excluded.host,
    version = excluded.version,
    started_at = excluded.started_at
  returning w.* into v_worker;
  return v_worker;
end $$;
comment on function public.register_worker(text, text, integer, jsonb, text[], text, text) is
  'Register (upsert) a worker process at start-up; returns its row. status becomes active, '
  'except that a paused worker stays paused; started_at and last_heartbeat = now(). Jobs '
  'still assigned to this worker_id are from a previous process and each counts as a '
  'failed attempt. Call once per process. 22023 for bad arguments (worker_id 1-200 chars, '
  'max_concurrent_jobs 1..1000, capabilities an object, queues null or non-empty).';

-- heartbeat_worker(p_worker_id, p_job_ids '{}') -> jsonb
--   {status, cancel: [ids], lost: [ids], orphaned: [{id, attempt}]}
-- The worker says it is alive and which jobs it runs. Writes only its vps_workers row
-- (last_heartbeat, current_jobs; offline -> active, paused stays paused), never job rows.
-- Replies: status (act on paused), cancel (its jobs with a cancel request: stop them), lost
-- (listed ids it no longer owns: stop them, their writes would be fenced out), orphaned (jobs
-- it owns but did not list, with their attempt, so the worker can end them).
-- Who: service_role. Errors: PT404 unregistered worker (register again).
create function public.heartbeat_worker(p_worker_id text, p_job_ids uuid[] default '{}')
returns jsonb
language plpgsql volatile security definer set search_path = '' as $$
declare
  v_worker   public.vps_workers;
  v_held     uuid[] := coalesce(p_job_ids, '{}');
  v_cancel   jsonb;
  v_lost     jsonb;
  v_orphaned jsonb;
begin
  v_worker := supaworker_private.lock_worker(p_worker_id);
  if v_worker.worker_id is null then
    perform supaworker_private.raise_error('PT404',
      pg_catalog.format('worker %s is not registered', p_worker_id),
      'Call register_worker first.');
  end if;
  update public.vps_workers w set
    last_heartbeat = now(),
    status = case when w.status = 'offline' then 'active' else w.status end,
    current_jobs = (select count(*) from public.processing_queue q
                     where q.assigned_to = w.worker_id
                       and q.status in ('assigned', 'processing'))
  where w.worker_id = p_worker_id
  returning w.* into v_worker;

  select coalesce(jsonb_agg(q.id order by q.id), '[]'::jsonb) into v_cancel
    from public.processing_queue q
   where q.assigned_to = p_worker_id and q.status in ('assigned', 'processing')
     and q.cancel_requested;
  select coalesce(jsonb_agg(h.id order by h.id), '[]'::jsonb) into v_lost
    from (select distinct u.id from unnest(v_held) as u(id)) h
   where not exists (select from public.processing_queue q
                      where q.id = h.id and q.assigned_to = p_worker_id
                        and q.status in ('assigned', 'processing'));
  select coalesce(jsonb_agg(jsonb_build_object('id', q.id, 'attempt', q.attempt)
                            order by q.id), '[]'::jsonb) into v_orphaned
    from public.processing_queue q
   where q.assigned_to = p_worker_id and q.status in ('assigned', 'processing')
     and q.id <> all (v_held);

  return jsonb_build_object('status', v_worker.status, 'cancel', v_cancel, 'lost', v_lost,
                            'orphaned', v_orphaned);
end $$;
comment on function public.heartbeat_worker(text, uuid[]) is
  'Worker heartbeat with the ids of the jobs it is running. Writes only vps_workers '
  '(last_heartbeat, current_jobs; offline -> active, paused stays paused), never job rows. '
  'Returns {status, cancel: [ids of its jobs with a cancel request], lost: [ids in p_job_ids '
  'it no longer owns: stop them], orphaned: [{id, attempt} of jobs it owns but did not '
  'list]}. PT404 for an unregistered worker.';

-- deregister_worker(p_worker_id) -> void
-- Orderly shutdown: releases the worker's remaining jobs like release_jobs (no retry spent)
-- and marks it offline (a paused worker stays paused), current_jobs 0.
-- Who: service_role. Errors: PT404 unknown worker.
create function public.deregister_worker(p_worker_id text) returns void
language plpgsql volatile security definer set search_path = '' as $$
declare
  v_worker public.vps_workers;
begin
  v_worker := supaworker_private.lock_worker(p_worker_id);
  if v_worker.worker_id is null then
    perform supaworker_private.raise_error('PT404',
      pg_catalog.format('worker %s is not registered', p_worker_id), null);
  end if;
  perform supaworker_private.release(p_worker_id, null);
  update public.vps_workers w
     set status = case when w.status = 'paused' then 'paused' else 'offline' end,
         current_jobs = 0
   where w.worker_id = p_worker_id;
end $$;
comment on function public.deregister_worker(text) is
  'Orderly shutdown: releases the worker''s remaining jobs like release_jobs (no retry '
  'spent) and marks it offline (a paused worker stays paused). PT404 for an unknown worker.';

-- set_worker_status(p_worker_id, p_status) -> vps_workers
-- Pause (no new claims; running jobs finish) or resume a worker; returns its row. offline is
-- set only by deregister_worker and the reaper. Workers see the change through Realtime (or
-- their next heartbeat). Who: service_role; queue admins through admin_set_worker_status.
-- Errors: 22023 unless p_status is active or paused, PT404 unknown worker.
create function public.set_worker_status(p_worker_id text, p_status text)
returns public.vps_workers
language plpgsql volatile security definer set search_path = '' as $$
declare
  v_worker public.vps_workers;
begin
  if p_status is null or p_status not in ('active', 'paused') then
    perform supaworker_private.raise_error('22023',
      pg_catalog.format('p_status must be active or paused, got %L', p_status),
      'offline is set by deregister_worker and the reaper.');
  end if;
  update public.vps_workers w set status = p_status
   where w.worker_id = p_worker_id
  returning w.* into v_worker;
  if not found then
    perform supaworker_private.raise_error('PT404',
      pg_catalog.format('worker %s is not registered', p_worker_id), null);
  end if;
  return v_worker;
end $$;
comment on function public.set_worker_status(text, text) is
  'Pause (no new claims; running jobs finish) or resume a worker; returns its row. '
  '22023 unless p_status is active or paused; PT404 unknown worker.';

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

-- reap(p_starved false) -> integer (private)
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
-- p_starved (maybe_rescue: the claiming worker's own heartbeat is half a horizon old) counts
-- as a saturated pool seen now. A saturation that no pass saw (no claim got through it, and
-- pg_cron's minute did not fall in it) leaves no record; the first claim after it comes from
-- a worker whose own beats were starved too, and its pass would otherwise rescue the jobs
-- of every other live worker whose beat is still queued behind it (tests/chaos/test_pool.py).
-- Returns the number of jobs rescued. Who: maybe_rescue and reap_stale_jobs only.
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

-- maybe_rescue(p_claimer) -> integer (private)
-- Runs reap() when rescue_interval has passed since queue_settings.last_rescue_at, and never
-- waits: a claimer that finds the settings row locked (a rescue in progress) goes on with its
-- claim (FOR UPDATE SKIP LOCKED). A claimer (the worker p_claimer, alive: it is calling)
-- whose own last heartbeat is more than half a dead_worker_horizon old could not get its
-- beats through the Data API either: that is evidence of a starved pool (reap's p_starved).
-- Returns reap()'s count or 0. Who: claim_jobs.
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

-- reap_stale_jobs() -> integer
-- Runs the reaper now, waiting for (not skipping) a rescue in progress; pg_cron runs it every
-- minute (80_cron.sql), claims every rescue_interval. A saturated Data API pool postpones
-- declaring workers dead (reap). Returns the number of jobs rescued.
-- Who: service_role (and trusted SQL: pg_cron). Raises nothing of its own.
create function public.reap_stale_jobs() returns integer
language plpgsql volatile security definer set search_path = '' as $$
begin
  -- Waits for (rather than skips) a rescue in progress, then runs one itself.
  perform from public.queue_settings s for update;
  update public.queue_settings set last_rescue_at = now();
  return supaworker_private.reap();
end $$;
comment on function public.reap_stale_jobs() is
  'Run the reaper now (pg_cron runs it every minute; claim_next_job runs it every '
  'rescue_interval): workers without a heartbeat within dead_worker_horizon become offline '
  '(paused ones stay paused); each assigned/processing job of such a worker, of an '
  'unregistered worker, or running longer than timeout_seconds + timeout_grace counts as a '
  'failed attempt (pending with backoff, failed at max_attempts, cancelled if requested). '
  'While the Data API (PostgREST) pool is saturated, and for one horizon after, the '
  'heartbeat horizon is dead_worker_horizon + max_rescue_postponement. Guarded: a job '
  'completed meanwhile is never reset. Returns the number of jobs rescued.';

-- purge_finished_jobs(p_older_than null) -> integer
-- Deletes completed and cancelled jobs (and, by cascade, their job_events) finished more than
-- p_older_than ago (default queue_settings.retention). Failed jobs are kept: they are the
-- dead-letter queue, removed by retry or by deleting the document. Returns how many.
-- Who: service_role (and pg_cron, daily). Errors: 22023 negative p_older_than.
create function public.purge_finished_jobs(p_older_than interval default null)
returns integer
language plpgsql volatile security definer set search_path = '' as $$
declare
  v_age   interval;
  v_count integer;
begin
  select coalesce(p_older_than, s.retention) into v_age from public.queue_settings s;
  if v_age < interval '0' then
    perform supaworker_private.raise_error('22023', 'p_older_than must not be negative', null);
  end if;
  delete from public.processing_queue q
   where q.status in ('completed', 'cancelled') and q.completed_at < now() - v_age;
  get diagnostics v_count = row_count;
  return v_count;
end $$;
comment on function public.purge_finished_jobs(interval) is
  'Delete completed and cancelled jobs (and, by cascade, their job_events) finished more '
  'than p_older_than ago (default queue_settings.retention). Failed jobs are kept: they are '
  'the dead-letter queue, removed by retry or by deleting the document. Returns how many.';
