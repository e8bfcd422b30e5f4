-- supaworker: read functions for operators and the app's server (service role only).
-- They give the CLI and QueueClient one stable RPC shape instead of table queries, so the
-- tables can change without breaking clients.

-- get_job(p_job_id) -> processing_queue
-- Contract: the job row; PT404 when no such job.
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

-- list_jobs(p_status, p_queue, p_limit) -> setof processing_queue
-- Contract: newest first (updated_at desc), optionally one status / queue, 1..1000 rows.
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
-- Contract: the job's events in the order they happened; PT404 when no such job.
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
-- Contract: every registered worker, active first, then by worker_id.
create function public.list_workers()
returns setof public.vps_workers
language sql stable security definer set search_path = '' as $$
  select * from public.vps_workers w
  order by (w.status = 'offline'), w.worker_id;
$$;
comment on function public.list_workers() is
  'Service role. The worker registry, live workers first.';

revoke execute on function public.get_job(uuid) from public, anon, authenticated;
revoke execute on function public.list_jobs(text, text, integer) from public, anon, authenticated;
revoke execute on function public.job_history(uuid) from public, anon, authenticated;
revoke execute on function public.list_workers() from public, anon, authenticated;
grant execute on function public.get_job(uuid) to service_role;
grant execute on function public.list_jobs(text, text, integer) to service_role;
grant execute on function public.job_history(uuid) to service_role;
grant execute on function public.list_workers() to service_role;
