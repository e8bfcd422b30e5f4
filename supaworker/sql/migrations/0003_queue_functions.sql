-- supaworker 3/4: the queue's functions (the RPC API, docs/architecture.md "SQL contract").
--
-- Conventions
--  * Every function is `security definer` (owned by postgres) with `set search_path = ''`,
--    so every user object is schema-qualified. No dynamic SQL.
--  * Errors: 22023 invalid argument (HTTP 400), PT403 not the owner, PT404 not found,
--    PT409 wrong state, PT413 payload too large (PostgREST maps PTxyz to status xyz).
--  * Worker calls are fenced by (job id, worker_id, attempt, running status): a worker whose
--    job was taken away (rescued, cancelled, reassigned) changes nothing.
--  * Lock order, to stay deadlock-free: queue_settings row -> vps_workers rows (in worker_id
--    order) -> processing_queue rows. Every function that changes which jobs a worker holds
--    locks that worker's row first; the claim locks job rows only with SKIP LOCKED.

-- =======================================================================================
-- Internal helpers (schema supaworker_private: not reachable through PostgREST)
-- =======================================================================================

create function supaworker_private.raise_error(p_code text, p_message text, p_hint text)
returns void language plpgsql set search_path = '' as $$
begin
  if p_hint is null then
    raise exception using errcode = p_code, message = p_message;
  end if;
  raise exception using errcode = p_code, message = p_message, hint = p_hint;
end $$;
comment on function supaworker_private.raise_error(text, text, text) is
  'Raises p_message with SQLSTATE p_code and a hint.';

create function supaworker_private.caller_is_privileged() returns boolean
language sql stable set search_path = '' as $$
  -- Through PostgREST the JWT's role decides. Without JWT claims (SQL: pg_cron, psql,
  -- another function) the caller already passed the EXECUTE check and is trusted, unless
  -- it explicitly switched to one of the API roles.
  select case
    when auth.role() = 'service_role' then true
    when auth.role() is not null then false
    else coalesce(current_setting('role', true), 'none') not in ('anon', 'authenticated')
  end
$$;
comment on function supaworker_private.caller_is_privileged() is
  'True for service_role requests and for direct SQL callers (cron, migrations, psql); '
  'false for anon/authenticated requests, which are limited to their own rows.';

create function supaworker_private.retry_delay(p_retry_count integer) returns interval
language sql volatile set search_path = '' as $$
  -- least(base * 2^(n-1), max) scaled by a random factor in [0.5, 1): exponential backoff
  -- with jitter, so that jobs failing together do not come back together.
  select make_interval(secs =>
           (least(s.backoff_base_seconds
                    * power(2::numeric, least(greatest(p_retry_count, 1) - 1, 62)),
                  s.backoff_max_seconds))::double precision
           * (0.5 + random() * 0.5))
  from public.queue_settings s
$$;
comment on function supaworker_private.retry_delay(integer) is
  'Backoff before retry number p_retry_count (>= 1): '
  'least(backoff_base_seconds * 2^(n-1), backoff_max_seconds) * uniform[0.5, 1).';

create function supaworker_private.refresh_current_jobs(p_worker_ids text[]) returns void
language sql volatile set search_path = '' as $$
  -- Callers lock the worker rows in an earlier statement, so the count below sees every
  -- committed change to those workers' jobs.
  update public.vps_workers w
     set current_jobs = r.running
    from (select w2.worker_id,
                 (select count(*)::integer from public.processing_queue q
                   where q.assigned_to = w2.worker_id
                     and q.status in ('assigned', 'processing')) as running
            from public.vps_workers w2
           where w2.worker_id = any (p_worker_ids)) r
   where w.worker_id = r.worker_id and w.current_jobs is distinct from r.running
$$;
comment on function supaworker_private.refresh_current_jobs(text[]) is
  'Sets vps_workers.current_jobs to the number of assigned/processing jobs of each worker.';

create function supaworker_private.lock_worker(p_worker_id text)
returns public.vps_workers language sql volatile set search_path = '' as $$
  select * from public.vps_workers w where w.worker_id = p_worker_id for update
$$;
comment on function supaworker_private.lock_worker(text) is
  'Locks and returns a worker row (all-null row when unknown). Taken before touching the '
  'worker''s jobs.';

create function supaworker_private.fail_attempt(
  p_job_id uuid, p_worker_id text, p_attempt integer, p_error text, p_retryable boolean
) returns setof public.processing_queue
language plpgsql volatile set search_path = '' as $$
declare
  v_job    public.processing_queue;
  v_retry  integer;
  v_status text;
begin
  -- The guard: in READ COMMITTED a row changed by a concurrent commit is re-checked against
  -- this WHERE clause after the lock wait, so a job that was completed, released or
  -- reassigned meanwhile is skipped instead of being reset.
  select * into v_job from public.processing_queue q
   where q.id = p_job_id and q.assigned_to = p_worker_id and q.attempt = p_attempt
     and q.status in ('assigned', 'processing')
   for update;
  if not found then
    return;
  end if;

  v_retry := v_job.retry_count + 1;
  v_status := case
    when v_job.cancel_requested then 'cancelled'
    when not coalesce(p_retryable, true) or v_retry >= v_job.max_attempts then 'failed'
    else 'pending'
  end;

  return query
  update public.processing_queue q set
    status           = v_status,
    retry_count      = v_retry,
    error_message    = left(coalesce(p_error, 'the worker gave no error message'), 10000),
    result           = null,
    run_at           = case when v_status = 'pending'
                            then now() + supaworker_private.retry_delay(v_retry)
                            else q.run_at end,
    assigned_to      = case when v_status = 'pending' then null else q.assigned_to end,
    assigned_at      = case when v_status = 'pending' then null else q.assigned_at end,
    started_at       = case when v_status = 'pending' then null else q.started_at end,
    progress_percent = case when v_status = 'pending' then null else q.progress_percent end,
    progress_message = case when v_status = 'pending' then null else q.progress_message end,
    completed_at     = case when v_status = 'pending' then null else now() end
  where q.id = p_job_id
  returning q.*;
end $$;
comment on function supaworker_private.fail_attempt(uuid, text, integer, text, boolean) is
  'One failed attempt of a running job, fenced by (id, worker, attempt): retry_count + 1; '
  'cancel requested -> cancelled; not retryable or retry_count >= max_attempts -> failed '
  '(error kept, completed_at set); else pending at now() + retry_delay(retry_count). '
  'Returns the row, or nothing when fenced out. Caller holds the worker row lock.';

create function supaworker_private.release(p_worker_id text, p_job_ids uuid[])
returns integer language plpgsql volatile set search_path = '' as $$
declare
  v_count integer;
begin
  update public.processing_queue q set
    status           = case when q.cancel_requested then 'cancelled' else 'pending' end,
    assigned_to      = case when q.cancel_requested then q.assigned_to end,
    assigned_at      = case when q.cancel_requested then q.assigned_at end,
    started_at       = case when q.cancel_requested then q.started_at end,
    completed_at     = case when q.cancel_requested then now() end,
    progress_percent = null,
    progress_message = null
  where q.assigned_to = p_worker_id
    and q.status in ('assigned', 'processing')
    and (p_job_ids is null or q.id = any (p_job_ids));
  get diagnostics v_count = row_count;
  return v_count;
end $$;
comment on function supaworker_private.release(text, uuid[]) is
  'Puts a worker''s running jobs (all, or p_job_ids) back to pending without spending a '
  'retry (retry_count unchanged, run_at kept); jobs with a cancel request become cancelled. '
  'Caller holds the worker row lock.';

create function supaworker_private.reap() returns integer
language plpgsql volatile set search_path = '' as $$
declare
  v_settings public.queue_settings;
  v_horizon  timestamptz;
  v_workers  text[];
  v_job      record;
  v_count    integer := 0;
begin
  select * into v_settings from public.queue_settings;
  v_horizon := now() - v_settings.dead_worker_horizon;

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
  'timeout_grace) with a guarded update. Returns the number of jobs rescued.';

create function supaworker_private.maybe_rescue() returns integer
language plpgsql volatile set search_path = '' as $$
declare
  v_due boolean;
begin
  -- At most once per rescue_interval, and never waiting: a claimer that finds the settings
  -- row locked (another rescue in progress) simply goes on with its claim.
  select true into v_due
    from public.queue_settings s
   where s.last_rescue_at is null or s.last_rescue_at <= now() - s.rescue_interval
   for update skip locked;
  if v_due is null then
    return 0;
  end if;
  update public.queue_settings set last_rescue_at = now();
  return supaworker_private.reap();
end $$;
comment on function supaworker_private.maybe_rescue() is
  'Runs the reaper if rescue_interval has passed since last_rescue_at and no other rescue '
  'holds the settings row (FOR UPDATE SKIP LOCKED).';

revoke all on all functions in schema supaworker_private from public, anon, authenticated,
  service_role;

-- =======================================================================================
-- Producers: enqueue, cancel, retry
-- =======================================================================================

create function public.enqueue_job(
  p_user_document_id uuid,
  p_priority         integer     default 0,
  p_payload          jsonb       default '{}'::jsonb,
  p_queue            text        default 'default',
  p_max_attempts     integer     default null,
  p_run_at           timestamptz default null,
  p_timeout_seconds  integer     default null,
  p_requires         jsonb       default '{}'::jsonb
) returns public.processing_queue
language plpgsql volatile security definer set search_path = '' as $$
declare
  v_settings     public.queue_settings;
  v_privileged   boolean := supaworker_private.caller_is_privileged();
  v_owner        uuid;
  v_priority     integer := coalesce(p_priority, 0);
  v_payload      jsonb   := coalesce(p_payload, '{}'::jsonb);
  v_queue        text    := coalesce(p_queue, 'default');
  v_requires     jsonb   := coalesce(p_requires, '{}'::jsonb);
  v_max_attempts integer;
  v_job          public.processing_queue;
begin
  select * into v_settings from public.queue_settings;
  v_max_attempts := coalesce(p_max_attempts, v_settings.default_max_attempts);

  if p_user_document_id is null then
    perform supaworker_private.raise_error('22023', 'p_user_document_id is required',
      'Pass the id of a row of public.user_documents.');
  end if;
  if jsonb_typeof(v_payload) <> 'object' then
    perform supaworker_private.raise_error('22023',
      pg_catalog.format('p_payload must be a JSON object, not %s', jsonb_typeof(v_payload)),
      'Wrap the value in an object, e.g. {"value": ...}.');
  end if;
  if octet_length(v_payload::text) > v_settings.max_payload_bytes then
    perform supaworker_private.raise_error('PT413',
      pg_catalog.format('p_payload is %s bytes, more than max_payload_bytes (%s)',
                        octet_length(v_payload::text), v_settings.max_payload_bytes),
      'Store large inputs in the document or in Storage and pass a reference.');
  end if;
  if jsonb_typeof(v_requires) <> 'object' then
    perform supaworker_private.raise_error('22023', 'p_requires must be a JSON object',
      'Pass required capabilities as an object, e.g. {"gpu": true}.');
  end if;
  if v_queue !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$' then
    perform supaworker_private.raise_error('22023',
      pg_catalog.format('invalid queue name %L', v_queue),
      'Queue names are 1-64 characters: letters, digits, "_", ".", ":", "-".');
  end if;
  if v_max_attempts not between 1 and 100 then
    perform supaworker_private.raise_error('22023',
      pg_catalog.format('p_max_attempts must be between 1 and 100, got %s', v_max_attempts),
      'Pass null for the default (queue_settings.default_max_attempts).');
  end if;
  if p_timeout_seconds is not null and p_timeout_seconds <= 0 then
    perform supaworker_private.raise_error('22023',
      pg_catalog.format('p_timeout_seconds must be positive, got %s', p_timeout_seconds),
      'Pass null for no timeout.');
  end if;
  if v_privileged then
    if v_priority not between -1000 and 1000 then
      perform supaworker_private.raise_error('22023',
        pg_catalog.format('p_priority must be between -1000 and 1000, got %s', v_priority),
        'Higher runs first; 0 is normal.');
    end if;
  else
    v_priority := greatest(-10, least(10, v_priority));  -- end users: the normal range
  end if;

  select d.user_id into v_owner from public.user_documents d where d.id = p_user_document_id;
  if not found then
    perform supaworker_private.raise_error('PT404',
      pg_catalog.format('document %s not found', p_user_document_id),
      'Create the row in public.user_documents first.');
  end if;
  if not v_privileged and (auth.uid() is null or v_owner is distinct from auth.uid()) then
    perform supaworker_private.raise_error('PT403',
      pg_catalog.format('document %s does not belong to you', p_user_document_id),
      'Users can only enqueue their own documents.');
  end if;

  insert into public.processing_queue as q
    (user_document_id, user_id, queue, priority, payload, max_attempts, run_at,
     timeout_seconds, requires)
  values
    (p_user_document_id, v_owner, v_queue, v_priority, v_payload, v_max_attempts,
     coalesce(p_run_at, now()), p_timeout_seconds, v_requires)
  on conflict (user_document_id) do nothing
  returning q.* into v_job;
  if found then
    return v_job;
  end if;

  -- The document already has an entry: an active one is returned as is, a finished one
  -- starts a new cycle (attempt, the fencing token, is never reset).
  select * into v_job from public.processing_queue q
   where q.user_document_id = p_user_document_id
   for update;
  if not found then
    perform supaworker_private.raise_error('PT409',
      'the queue entry of this document was removed concurrently', 'Call enqueue_job again.');
  end if;
  if v_job.status in ('completed', 'failed', 'cancelled') then
    update public.processing_queue q set
      status = 'pending', user_id = v_owner, queue = v_queue, priority = v_priority,
      payload = v_payload, max_attempts = v_max_attempts, run_at = coalesce(p_run_at, now()),
      timeout_seconds = p_timeout_seconds, requires = v_requires,
      retry_count = 0, result = null, error_message = null, progress_percent = null,
      progress_message = null, cancel_requested = false, assigned_to = null,
      assigned_at = null, started_at = null, completed_at = null
    where q.id = v_job.id
    returning q.* into v_job;
  end if;
  return v_job;
end $$;
comment on function public.enqueue_job(uuid, integer, jsonb, text, integer, timestamptz,
                                       integer, jsonb) is
  'Queue a document for processing; returns its processing_queue row. Idempotent per '
  'document: an active entry (pending/assigned/processing) is returned unchanged; a finished '
  'one (completed/failed/cancelled) is re-queued as a new cycle (pending, retry_count 0, '
  'result/error/progress/cancel cleared, attempt kept). service_role: any document, priority '
  '-1000..1000. authenticated: own documents only, priority clamped to -10..10. '
  'Errors: 22023 bad argument (payload/requires not an object, queue name, max_attempts '
  '1..100, timeout > 0), PT404 unknown document, PT403 not the owner, PT413 payload over '
  'queue_settings.max_payload_bytes.';

create function public.cancel_job(p_job_id uuid) returns public.processing_queue
language plpgsql volatile security definer set search_path = '' as $$
declare
  v_privileged boolean := supaworker_private.caller_is_privileged();
  v_seen       public.processing_queue;
  v_job        public.processing_queue;
begin
  if p_job_id is null then
    perform supaworker_private.raise_error('22023', 'p_job_id is required', null);
  end if;
  select * into v_seen from public.processing_queue q where q.id = p_job_id;
  if not found then
    perform supaworker_private.raise_error('PT404',
      pg_catalog.format('job %s not found', p_job_id), 'Check the job id.');
  end if;
  if not v_privileged and (auth.uid() is null or v_seen.user_id is distinct from auth.uid()) then
    perform supaworker_private.raise_error('PT403',
      pg_catalog.format('job %s does not belong to you', p_job_id),
      'Users can only cancel their own jobs.');
  end if;
  if v_seen.status in ('completed', 'failed', 'cancelled') then
    return v_seen;  -- nothing left to cancel: idempotent
  end if;

  -- Lock order: the owning worker first, then the job.
  if v_seen.assigned_to is not null then
    perform supaworker_private.lock_worker(v_seen.assigned_to);
  end if;
  select * into v_job from public.processing_queue q where q.id = p_job_id for update;
  if not found then
    perform supaworker_private.raise_error('PT404',
      pg_catalog.format('job %s not found', p_job_id), 'Check the job id.');
  end if;
  if v_job.status in ('assigned', 'processing')
     and v_job.assigned_to is distinct from v_seen.assigned_to then
    perform supaworker_private.raise_error('PT409',
      pg_catalog.format('job %s changed hands while being cancelled', p_job_id),
      'Call cancel_job again.');
  end if;

  if v_job.status in ('pending', 'assigned') then
    update public.processing_queue q
       set status = 'cancelled', completed_at = now(), progress_percent = null,
           progress_message = null
     where q.id = p_job_id
    returning q.* into v_job;
    if v_job.assigned_to is not null then
      perform supaworker_private.refresh_current_jobs(array[v_job.assigned_to]);
    end if;
  elsif v_job.status = 'processing' and not v_job.cancel_requested then
    update public.processing_queue q set cancel_requested = true
     where q.id = p_job_id
    returning q.* into v_job;
  end if;
  return v_job;
end $$;
comment on function public.cancel_job(uuid) is
  'Cancel a job; returns its row. pending/assigned -> cancelled at once (an assigned job''s '
  'worker is fenced out of start_job); processing -> cancel_requested = true (the worker '
  'learns it from heartbeat_worker and ends the job with fail_job, which then cancels it); '
  'completed/failed/cancelled -> returned unchanged. service_role: any job; authenticated: '
  'own jobs only (PT403). PT404 unknown job.';

create function public.retry_job(p_job_id uuid) returns public.processing_queue
language plpgsql volatile security definer set search_path = '' as $$
declare
  v_job public.processing_queue;
begin
  select * into v_job from public.processing_queue q where q.id = p_job_id for update;
  if not found then
    perform supaworker_private.raise_error('PT404',
      pg_catalog.format('job %s not found', p_job_id), 'Check the job id.');
  end if;
  if v_job.status in ('assigned', 'processing') then
    perform supaworker_private.raise_error('PT409',
      pg_catalog.format('job %s is %s', p_job_id, v_job.status),
      'Only failed or cancelled jobs can be retried; cancel it first or wait.');
  end if;
  if v_job.status = 'completed' then
    perform supaworker_private.raise_error('PT409',
      pg_catalog.format('job %s is completed', p_job_id),
      'To process the document again, call enqueue_job.');
  end if;
  if v_job.status in ('failed', 'cancelled') then
    update public.processing_queue q set
      status = 'pending', run_at = now(), retry_count = 0, result = null,
      error_message = null, progress_percent = null, progress_message = null,
      cancel_requested = false, assigned_to = null, assigned_at = null, started_at = null,
      completed_at = null
    where q.id = p_job_id
    returning q.* into v_job;
  end if;
  return v_job;  -- pending: unchanged
end $$;
comment on function public.retry_job(uuid) is
  'Re-queue a failed or cancelled job as a new cycle (pending now, retry_count 0, error and '
  'result cleared, attempt kept); a pending job is returned unchanged. PT409 for a running '
  '(assigned/processing) or completed job, PT404 unknown job.';

create function public.retry_failed_jobs(p_queue text default null) returns integer
language plpgsql volatile security definer set search_path = '' as $$
declare
  v_count integer;
begin
  update public.processing_queue q set
    status = 'pending', run_at = now(), retry_count = 0, result = null,
    error_message = null, progress_percent = null, progress_message = null,
    cancel_requested = false, assigned_to = null, assigned_at = null, started_at = null,
    completed_at = null
  where q.status = 'failed' and (p_queue is null or q.queue = p_queue);
  get diagnostics v_count = row_count;
  return v_count;
end $$;
comment on function public.retry_failed_jobs(text) is
  'Re-queue every failed job (of p_queue, or of all queues when null) as a new cycle; '
  'returns how many. Cancelled jobs are not touched.';

-- =======================================================================================
-- Workers: claim, start, progress, complete, fail, release
-- =======================================================================================

create function public.claim_next_job(
  p_worker_id text,
  p_limit     integer default 1,
  p_queues    text[]  default null
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
        status = 'assigned', assigned_to = p_worker_id, assigned_at = now(),
        started_at = null, attempt = q.attempt + 1, progress_percent = null,
        progress_message = null
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
comment on function public.claim_next_job(text, integer, text[]) is
  'Claim up to p_limit pending jobs for an active worker, never more than its free slots '
  '(max_concurrent_jobs - its assigned/processing jobs). One UPDATE over a FOR UPDATE SKIP '
  'LOCKED selection ordered by priority desc, run_at, created_at; only jobs with run_at <= '
  'now(), not cancel-requested, in p_queues (null: the worker''s queues; null: all) and '
  'whose requires is contained in the worker''s capabilities. Claimed jobs become assigned '
  'with assigned_to, assigned_at and attempt + 1 (the fencing token to pass back). Unknown, '
  'paused or offline worker: empty set. Runs the reaper first, at most once per '
  'queue_settings.rescue_interval. 22023 for p_limit outside 0..1000.';

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

create function public.complete_jobs(p_worker_id text, p_jobs jsonb) returns integer
language plpgsql volatile security definer set search_path = '' as $$
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
  perform supaworker_private.lock_worker(p_worker_id);
  update public.processing_queue q
     set status = 'completed', result = x.result, error_message = null,
         completed_at = now(), progress_percent = 100
    from (select distinct on (r.id) r.id, r.attempt, r.result
            from jsonb_to_recordset(p_jobs) as r(id uuid, attempt integer, result jsonb)
           order by r.id) x
   where q.id = x.id and q.assigned_to = p_worker_id and q.attempt = x.attempt
     and q.status in ('assigned', 'processing');
  get diagnostics v_count = row_count;
  if v_count > 0 then
    perform supaworker_private.refresh_current_jobs(array[p_worker_id]);
  end if;
  return v_count;
end $$;
comment on function public.complete_jobs(text, jsonb) is
  'Batch complete_job: p_jobs = [{id, attempt, result}]; each element fenced like '
  'complete_job. Returns how many were completed (fenced-out elements are skipped). '
  '22023 when p_jobs is not an array of objects with id and attempt.';

create function public.fail_job(
  p_job_id    uuid,
  p_worker_id text,
  p_attempt   integer,
  p_error     text,
  p_retryable boolean default true
) returns setof public.processing_queue
language plpgsql volatile security definer set search_path = '' rows 1 as $$
declare
  v_found boolean;
begin
  perform supaworker_private.lock_worker(p_worker_id);
  return query
    select * from supaworker_private.fail_attempt(p_job_id, p_worker_id, p_attempt, p_error,
                                                 p_retryable);
  v_found := found;
  if v_found then
    perform supaworker_private.refresh_current_jobs(array[p_worker_id]);
  end if;
end $$;
comment on function public.fail_job(uuid, text, integer, text, boolean) is
  'Record a failed attempt, fenced by (job, worker, attempt); returns the updated row, or no '
  'row when fenced out. retry_count + 1; cancellation requested -> cancelled; p_retryable '
  'false or retry_count >= max_attempts -> failed (error_message kept, completed_at set); '
  'otherwise pending again at now() + least(backoff_base_seconds * 2^(retry_count-1), '
  'backoff_max_seconds) * uniform[0.5, 1).';

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

-- =======================================================================================
-- Worker registry
-- =======================================================================================

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

-- =======================================================================================
-- Operations: reaper, stats, purge
-- =======================================================================================

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
  'Guarded: a job completed meanwhile is never reset. Returns the number of jobs rescued.';

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

  return jsonb_build_object(
    'by_status', v_by_status,
    'by_queue', v_by_queue,
    'oldest_pending_seconds', round(v_oldest, 3),
    'workers', v_workers,
    'completed_last_minute', v_finished.c_min,
    'completed_last_hour', v_finished.c_hour,
    'failed_last_minute', v_finished.f_min,
    'failed_last_hour', v_finished.f_hour);
end $$;
comment on function public.queue_stats() is
  'Queue overview as jsonb: {by_status: {<status>: n} (all six statuses), by_queue: '
  '{<queue>: {<status>: n}}, oldest_pending_seconds (age of the oldest pending job that '
  'is due, from its run_at; null when none), workers: {active, paused, offline}, '
  'completed_last_minute, completed_last_hour, failed_last_minute, failed_last_hour} '
  '(failed = finally failed, by completed_at).';

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

-- =======================================================================================
-- Privileges: Supabase grants EXECUTE to anon/authenticated/service_role by default (and
-- PUBLIC has it built in): revoke everything, then grant per the contract.
-- =======================================================================================
revoke all on function
  public.enqueue_job(uuid, integer, jsonb, text, integer, timestamptz, integer, jsonb),
  public.cancel_job(uuid),
  public.retry_job(uuid),
  public.retry_failed_jobs(text),
  public.claim_next_job(text, integer, text[]),
  public.start_job(uuid, text, integer),
  public.report_progress(uuid, text, integer, numeric, text),
  public.complete_job(uuid, text, integer, jsonb),
  public.complete_jobs(text, jsonb),
  public.fail_job(uuid, text, integer, text, boolean),
  public.release_jobs(text, uuid[]),
  public.register_worker(text, text, integer, jsonb, text[], text, text),
  public.heartbeat_worker(text, uuid[]),
  public.deregister_worker(text),
  public.set_worker_status(text, text),
  public.reap_stale_jobs(),
  public.queue_stats(),
  public.purge_finished_jobs(interval)
from public, anon, authenticated, service_role;

grant execute on function
  public.enqueue_job(uuid, integer, jsonb, text, integer, timestamptz, integer, jsonb),
  public.cancel_job(uuid),
  public.retry_job(uuid),
  public.retry_failed_jobs(text),
  public.claim_next_job(text, integer, text[]),
  public.start_job(uuid, text, integer),
  public.report_progress(uuid, text, integer, numeric, text),
  public.complete_job(uuid, text, integer, jsonb),
  public.complete_jobs(text, jsonb),
  public.fail_job(uuid, text, integer, text, boolean),
  public.release_jobs(text, uuid[]),
  public.register_worker(text, text, integer, jsonb, text[], text, text),
  public.heartbeat_worker(text, uuid[]),
  public.deregister_worker(text),
  public.set_worker_status(text, text),
  public.reap_stale_jobs(),
  public.queue_stats(),
  public.purge_finished_jobs(interval)
to service_role;

-- End users: their own documents and jobs only (checked inside the functions).
grant execute on function
  public.enqueue_job(uuid, integer, jsonb, text, integer, timestamptz, integer, jsonb),
  public.cancel_job(uuid)
to authenticated;
