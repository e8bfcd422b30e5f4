-- supaworker, current schema: read functions for operators and the app's server.
--
-- supaworker/sql/schema/ is what a reader opens: the schema as it stands after every migration
-- in supabase/migrations/ (what `supabase db push` applies; they stay as they are). Loaded in
-- file-name order into a fresh database, these files give the same schema as the migrations
-- (tests/sql/test_schema_definitions.py). To change the schema, edit the definition here AND
-- write a new migration (docs/architecture.md, "Changing the schema").

-- They give the CLI and QueueClient one stable RPC shape instead of table queries, so the
-- tables can change without breaking clients. All are service_role only, read only.

-- queue_stats() -> jsonb
-- {by_status: {<each of the six statuses>: n}, by_queue: {<queue>: {<status>: n}},
--  oldest_pending_seconds (age of the oldest due pending job, from run_at; null when none),
--  workers: {active, paused, offline}, completed_last_minute, completed_last_hour,
--  failed_last_minute, failed_last_hour (failed = finally failed, by completed_at),
--  no_capable_worker: {<queue>: n} pending jobs that no live worker can take (no active
--  worker with a heartbeat within dead_worker_horizon serves the queue with capabilities
--  meeting the job's requires; queues without such jobs are left out)}.
-- Who: service_role; queue admins through admin_queue_stats. Raises nothing.
create function public.queue_stats() returns jsonb
language plpgsql stable security definer set search_path = '' as $$
declare
  v_statuses constant text[] :=
    array['pending', 'assigned', 'processing', 'completed', 'failed', 'cancelled'];
  v_by_status jsonb;
  v_by_queue  jsonb;
  v_workers   jsonb;
  v_oldest    numeric;
  v_finished  record;
  v_stuck     jsonb;
begin
  with counts as (
    select q.queue, q.status, count(*) as n from public.processing_queue q
     group by q.queue, q.status
  )
  select
    (select jsonb_object_agg(s.status, coalesce((select sum(c.n) from counts c
                                                  where c.status = s.status), 0))
       from unnest(v_statuses) as s(status)),
    coalesce((select jsonb_object_agg(qn.queue,
                (select jsonb_object_agg(s.status, coalesce((select c.n from counts c
                                                              where c.queue = qn.queue
                                                                and c.status = s.status), 0))
                   from unnest(v_statuses) as s(status)))
                from (select distinct c.queue from counts c) qn), '{}'::jsonb)
  into v_by_status, v_by_queue;

  select extract(epoch from now() - min(q.run_at)) into v_oldest
    from public.processing_queue q where q.status = 'pending' and q.run_at <= now();

  select jsonb_build_object(
           'active',  count(*) filter (where w.status = 'active'),
           'paused',  count(*) filter (where w.status = 'paused'),
           'offline', count(*) filter (where w.status = 'offline'))
    into v_workers from public.vps_workers w;

  select count(*) filter (where q.status = 'completed'
                            and q.completed_at >= now() - interval '1 minute') as c_min,
         count(*) filter (where q.status = 'completed') as c_hour,
         count(*) filter (where q.status = 'failed'
                            and q.completed_at >= now() - interval '1 minute') as f_min,
         count(*) filter (where q.status = 'failed') as f_hour
    into v_finished
    from public.processing_queue q
   where q.status in ('completed', 'failed', 'cancelled')
     and q.completed_at >= now() - interval '1 hour';

  -- One requires_met per distinct (queue, requires) of the pending jobs and live worker.
  select coalesce(jsonb_object_agg(g.queue, g.n), '{}'::jsonb) into v_stuck
    from (select p.queue, sum(p.n)::bigint as n
            from (select q.queue, q.requires, count(*) as n from public.processing_queue q
                   where q.status = 'pending' group by q.queue, q.requires) p
           where not exists (
             select from public.vps_workers w
              where w.status = 'active'
                and w.last_heartbeat > now() - (select s.dead_worker_horizon
                                                  from public.queue_settings s)
                and (w.queues is null or p.queue = any (w.queues))
                and (p.requires = '{}'::jsonb
                     or supaworker_private.requires_met(p.requires, w.capabilities)))
           group by p.queue) g;

  return jsonb_build_object(
    'by_status', v_by_status,
    'by_queue', v_by_queue,
    'oldest_pending_seconds', round(v_oldest, 3),
    'workers', v_workers,
    'completed_last_minute', v_finished.c_min,
    'completed_last_hour', v_finished.c_hour,
    'failed_last_minute', v_finished.f_min,
    'failed_last_hour', v_finished.f_hour,
    'no_capable_worker', v_stuck);
end $$;
comment on function public.queue_stats() is
  'Queue overview as jsonb: {by_status: {<status>: n} (all six statuses), by_queue: '
  '{<queue>: {<status>: n}}, oldest_pending_seconds (age of the oldest pending job that '
  'is due, from its run_at; null when none), workers: {active, paused, offline}, '
  'completed_last_minute, completed_last_hour, failed_last_minute, failed_last_hour, '
  'no_capable_worker: {<queue>: pending jobs no live worker can take}} '
  '(failed = finally failed, by completed_at).';

-- get_job(p_job_id) -> processing_queue
-- The job row. Who: service_role. Errors: PT404 no such job.
create function public.get_job(p_job_id uuid)
returns public.processing_queue
language plpgsql stable security definer set search_path = '' as $$
declare
  v_job public.processing_queue;
begin
  select * into v_job from public.processing_queue where id = p_job_id;
  if not found then
    raise exception 'job % not found', p_job_id
      using errcode = 'PT404', hint = 'Check the job id (supaworker jobs lists them).';
  end if;
  return v_job;
end $$;
comment on function public.get_job(uuid) is
  'Service role. Returns the processing_queue row of p_job_id; PT404 if there is none.';

-- list_jobs(p_status null, p_queue null, p_limit 50) -> setof processing_queue
-- Newest first (updated_at desc, then id), optionally one status and/or queue.
-- Who: service_role. Errors: 22023 unknown status, p_limit outside 1..1000.
create function public.list_jobs(p_status text default null, p_queue text default null,
                                 p_limit integer default 50)
returns setof public.processing_queue
language plpgsql stable security definer set search_path = '' as $$
begin
  if p_status is not null and p_status not in
     ('pending', 'assigned', 'processing', 'completed', 'failed', 'cancelled') then
    raise exception 'unknown status %', p_status using errcode = '22023',
      hint = 'Use pending, assigned, processing, completed, failed or cancelled.';
  end if;
  if p_limit is null or p_limit < 1 or p_limit > 1000 then
    raise exception 'p_limit must be between 1 and 1000, got %', p_limit
      using errcode = '22023';
  end if;
  return query
    select * from public.processing_queue q
    where (p_status is null or q.status = p_status)
      and (p_queue is null or q.queue = p_queue)
    order by q.updated_at desc, q.id
    limit p_limit;
end $$;
comment on function public.list_jobs(text, text, integer) is
  'Service role. Jobs newest first, filtered by status and queue when given; 22023 on an '
  'unknown status or a limit outside 1..1000.';

-- job_history(p_job_id) -> setof job_events
-- The job's events in the order they happened. Who: service_role. Errors: PT404 no such job.
create function public.job_history(p_job_id uuid)
returns setof public.job_events
language plpgsql stable security definer set search_path = '' as $$
begin
  if not exists (select from public.processing_queue where id = p_job_id) then
    raise exception 'job % not found', p_job_id using errcode = 'PT404';
  end if;
  return query select * from public.job_events e where e.job_id = p_job_id order by e.id;
end $$;
comment on function public.job_history(uuid) is
  'Service role. The job_events of p_job_id, oldest first; PT404 if the job does not exist.';

-- list_workers() -> setof vps_workers
-- Every registered worker, live (active/paused) first, then by worker_id.
-- Who: service_role. Raises nothing.
create function public.list_workers()
returns setof public.vps_workers
language sql stable security definer set search_path = '' as $$
  select * from public.vps_workers w
  order by (w.status = 'offline'), w.worker_id;
$$;
comment on function public.list_workers() is
  'Service role. The worker registry, live workers first.';

-- supaworker_schema_version() -> integer
-- The number of the newest supaworker migration applied (supaworker/sql/migrations/NNNN_*).
-- `supaworker run` and the operator commands call it at start and refuse a database older
-- than the package's REQUIRED_VERSION (exit 2); a newer one is accepted. Every migration
-- redefines it with its own number. Who: service_role.
create function public.supaworker_schema_version() returns integer
language sql
immutable
security definer
set search_path = ''
as $$ select 28 $$;

comment on function public.supaworker_schema_version() is
  'The number of the newest supaworker migration applied to this database.';
