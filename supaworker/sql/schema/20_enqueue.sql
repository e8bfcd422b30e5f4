-- supaworker, current schema: producers: enqueue, cancel, retry.
--
-- supaworker/sql/schema/ is what a reader opens: the schema as it stands after every migration
-- in supabase/migrations/ (what `supabase db push` applies; they stay as they are). Loaded in
-- file-name order into a fresh database, these files give the same schema as the migrations
-- (tests/sql/test_schema_definitions.py). To change the schema, edit the definition here AND
-- write a new migration (docs/architecture.md, "Changing the schema").

-- enqueue_job(p_user_document_id, p_priority 0, p_payload '{}', p_queue 'default',
--             p_max_attempts null, p_run_at null, p_timeout_seconds null, p_requires '{}',
--             p_concurrency_key null, p_rate_limit_key null)
--   -> processing_queue
-- Queues a document; idempotent per document (one processing_queue row per document): an
-- active entry (pending/assigned/processing) is returned unchanged, a finished one
-- (completed/failed/cancelled) is re-queued as a new cycle (pending, retry_count 0,
-- result/error/progress/cancel cleared; attempt, the fencing token, is kept). A job that is
-- written (new, or a new cycle) gets its fair-order tag from next_fair_tag.
-- Who: service_role (any document, priority -1000..1000 ordering across owners, every
-- option) and authenticated (own documents only; p_priority, clamped to -10..10, is stored
-- as user_priority and orders only the caller's own jobs, priority stays 0; other options
-- refused by the trigger refuse_user_job_options in 15_triggers.sql).
-- Errors: 22023 bad argument (document id missing, payload/requires not an object, a
-- malformed comparison in requires (requires_problem), queue name, max_attempts outside 1..100, timeout <= 0, service priority outside -1000..1000),
-- PT404 unknown document, PT403 not the owner (or a refused option), PT413 payload over
-- queue_settings.max_payload_bytes, PT429 the owner is at queue_settings.max_pending_per_user
-- (check_pending_quota; nothing written), PT409 the entry was deleted concurrently (call
-- again).
create function public.enqueue_job(
  p_user_document_id uuid,
  p_priority         integer     default 0,
  p_payload          jsonb       default '{}'::jsonb,
  p_queue            text        default 'default',
  p_max_attempts     integer     default null,
  p_run_at           timestamptz default null,
  p_timeout_seconds  integer     default null,
  p_requires         jsonb       default '{}'::jsonb,
  p_concurrency_key  text        default null,
  p_rate_limit_key   text        default null
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
  v_user_priority integer := 0;
  v_tag          bigint;
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
  if supaworker_private.requires_problem(v_requires) is not null then
    perform supaworker_private.raise_error('22023',
      supaworker_private.requires_problem(v_requires),
      'Compare with {"gte": n}, {"lte": n}, {"eq": value} or {"in": [values]} (combinable).');
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
  if length(p_concurrency_key) not between 1 and 200
     or length(p_rate_limit_key) not between 1 and 200 then
    perform supaworker_private.raise_error('22023',
      'p_concurrency_key and p_rate_limit_key must be texts of 1-200 characters',
      'Pass null for no limit; the limits are rows of concurrency_limits / rate_limits.');
  end if;
  if v_privileged then
    if v_priority not between -1000 and 1000 then
      perform supaworker_private.raise_error('22023',
        pg_catalog.format('p_priority must be between -1000 and 1000, got %s', v_priority),
        'Higher runs first; 0 is normal.');
    end if;
  else
    -- End users order their own jobs only (issue 18): the clamped value is their
    -- user_priority; priority, which orders across owners, stays the service role's.
    v_user_priority := greatest(-10, least(10, v_priority));
    v_priority := 0;
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

  -- An active entry is returned as is, before the quota and before any tag is taken: a
  -- repeated call costs the owner no turn and works at the quota.
  select * into v_job from public.processing_queue q
   where q.user_document_id = p_user_document_id
     and q.status in ('pending', 'assigned', 'processing');
  if found then
    return v_job;
  end if;
  -- PT429 when the owner is at max_pending_per_user: nothing written. Its lock (the owner's
  -- quota lock, only when a quota is set) is taken before the job row: one lock order.
  perform supaworker_private.check_pending_quota(v_owner, 1);

  -- A finished entry starts a new cycle (attempt, the fencing token, is never reset).
  select * into v_job from public.processing_queue q
   where q.user_document_id = p_user_document_id
   for update;
  if v_job.id is not null and v_job.status not in ('completed', 'failed', 'cancelled') then
    return v_job;  -- became active meanwhile
  end if;
  v_tag := supaworker_private.next_fair_tag(v_queue, v_priority, v_owner, v_user_priority);
  if v_job.id is null then
    insert into public.processing_queue as q
      (user_document_id, user_id, queue, priority, payload, max_attempts, run_at,
       timeout_seconds, requires, user_priority, fair_tag, owner_seq, concurrency_key,
       rate_limit_key)
    values
      (p_user_document_id, v_owner, v_queue, v_priority, v_payload, v_max_attempts,
       coalesce(p_run_at, now()), p_timeout_seconds, v_requires, v_user_priority, v_tag, v_tag,
       p_concurrency_key, p_rate_limit_key)
    on conflict (user_document_id) do nothing
    returning q.* into v_job;
    if found then
      return v_job;
    end if;
    -- Inserted concurrently by another call: that entry is active, or finished by now.
    select * into v_job from public.processing_queue q
     where q.user_document_id = p_user_document_id
     for update;
    if not found then
      perform supaworker_private.raise_error('PT409',
        'the queue entry of this document was removed concurrently', 'Call enqueue_job again.');
    end if;
  end if;
  if v_job.status in ('completed', 'failed', 'cancelled') then
    update public.processing_queue q set
      status = 'pending', user_id = v_owner, queue = v_queue, priority = v_priority,
      payload = v_payload, max_attempts = v_max_attempts, run_at = coalesce(p_run_at, now()),
      timeout_seconds = p_timeout_seconds, requires = v_requires,
      user_priority = v_user_priority, fair_tag = v_tag, owner_seq = v_tag,
      concurrency_key = p_concurrency_key, rate_limit_key = p_rate_limit_key,
      snooze_count = 0, retry_count = 0, result = null, error_message = null, progress_percent = null,
      progress_message = null, cancel_requested = false, assigned_to = null,
      assigned_at = null, started_at = null, completed_at = null
    where q.id = v_job.id
    returning q.* into v_job;
  end if;
  return v_job;
end $$;
comment on function public.enqueue_job(uuid, integer, jsonb, text, integer, timestamptz,
                                       integer, jsonb, text, text) is
  'Queue a document for processing; returns its processing_queue row. Idempotent per '
  'document: an active entry (pending/assigned/processing) is returned unchanged; a finished '
  'one (completed/failed/cancelled) is re-queued as a new cycle (pending, retry_count 0, '
  'result/error/progress/cancel cleared, attempt kept). service_role: any document, priority '
  '-1000..1000 (orders across owners). authenticated: own documents only, p_priority clamped '
  'to -10..10 and stored as user_priority (orders only the caller''s own jobs). '
  'Errors: 22023 bad argument (payload/requires not an object, queue name, max_attempts '
  '1..100, timeout > 0), PT404 unknown document, PT403 not the owner, PT413 payload over '
  'queue_settings.max_payload_bytes, PT429 the owner is at max_pending_per_user. '
  'p_concurrency_key / p_rate_limit_key (service role): the limits of concurrency_limits / '
  'rate_limits that the claim applies to this job.';

-- enqueue_jobs(p_jobs) -> jsonb (an array of processing_queue rows)
-- Bulk enqueue_job (issue 18): p_jobs is a JSON array of up to 10,000 objects, each
-- {user_document_id, priority?, payload?, queue?, max_attempts?, run_at?, timeout_seconds?,
-- requires?, concurrency_key?, rate_limit_key?} with enqueue_job's meaning and defaults.
-- Returns a JSON array of the rows, one per element, in p_jobs order (one jsonb value, not a set: PostgREST caps a set's rows at
-- its max-rows, 1000 on Supabase). Per document exactly what enqueue_job does (idempotent: an active entry is
-- returned unchanged, a finished one re-queued as a new cycle, a new one inserted; a
-- document listed twice is one job); each owner's new jobs get consecutive fair-order tags
-- in p_jobs order, the tags as many single enqueues would give them. All or nothing: the
-- first bad element refuses the whole call, with its 0-based index in the message
-- ("p_jobs[3]: ..."), and nothing is written. Quotas apply (max_pending_per_user counts the
-- call's new documents per owner; owners are locked in uuid order, so two bulk calls cannot
-- deadlock). A set-based statement per step, not a call per document.
-- Who: service_role (every option) and authenticated (own documents only; only
-- user_document_id, priority (clamped to -10..10, stored as user_priority) and queue).
-- Errors: 22023 p_jobs not an array, more than 10,000 elements, or an element's bad
-- argument; PT404 unknown document; PT403 not the owner or an option only the service role
-- may set; PT413 payload over max_payload_bytes; PT429 an owner over max_pending_per_user.
create function public.enqueue_jobs(p_jobs jsonb) returns jsonb
language plpgsql volatile security definer set search_path = '' as $$
declare
  v_settings   public.queue_settings;
  v_privileged boolean := supaworker_private.caller_is_privileged();
  v_count      integer;
  v_bad        record;
begin
  select * into v_settings from public.queue_settings;
  if p_jobs is null or jsonb_typeof(p_jobs) <> 'array' then
    perform supaworker_private.raise_error('22023', 'p_jobs must be a JSON array of objects',
      'Pass [{"user_document_id": "..."}, ...].');
  end if;
  v_count := jsonb_array_length(p_jobs);
  if v_count > 10000 then
    perform supaworker_private.raise_error('22023',
      pg_catalog.format('p_jobs has %s elements, at most 10000', v_count),
      'Split the documents over several calls.');
  end if;
  if v_count = 0 then
    return '[]'::jsonb;
  end if;

  -- 1. Every element's arguments, first problem by index.
  select e.n - 1 as i, p.problem into v_bad
    from jsonb_array_elements(p_jobs) with ordinality as e(v, n)
   cross join lateral (select supaworker_private.bulk_problem(e.v, v_privileged,
                                                              v_settings.max_payload_bytes)
                                as problem) p
   where p.problem is not null
   order by e.n
   limit 1;
  if found then
    perform supaworker_private.raise_error(split_part(v_bad.problem, ':', 1),
      pg_catalog.format('p_jobs[%s]: %s', v_bad.i,
                        substr(v_bad.problem, strpos(v_bad.problem, ':') + 1)),
      'Nothing was enqueued. Fix this element and send the call again.');
  end if;
  -- A timestamp's validity needs the cast; only when one fails is the element looked for.
  begin
    perform (e.v ->> 'run_at')::timestamptz from jsonb_array_elements(p_jobs) e(v)
     where jsonb_typeof(e.v -> 'run_at') = 'string';
  exception when others then
    select e.n - 1 as i, e.v ->> 'run_at' as run_at into v_bad
      from jsonb_array_elements(p_jobs) with ordinality as e(v, n)
     where jsonb_typeof(e.v -> 'run_at') = 'string'
       and (e.v ->> 'run_at') !~ '^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}(:?\d{2})?)?$'
     order by e.n limit 1;
    perform supaworker_private.raise_error('22023',
      pg_catalog.format('p_jobs[%s]: run_at %s is not a timestamp',
                        coalesce(v_bad.i::text, '?'), coalesce(v_bad.run_at, '')),
      'Nothing was enqueued. Use ISO 8601, e.g. 2026-12-01T10:00:00Z.');
  end;

  -- 2. The documents: they exist and, for a user, are theirs.
  select b.i, b.doc, d.id is null as missing into v_bad
    from supaworker_private.bulk_items(p_jobs, v_privileged) b
    left join public.user_documents d on d.id = b.doc
   where d.id is null
      or (not v_privileged and (auth.uid() is null or d.user_id is distinct from auth.uid()))
   order by b.i
   limit 1;
  if found and v_bad.missing then
    perform supaworker_private.raise_error('PT404',
      pg_catalog.format('p_jobs[%s]: document %s not found', v_bad.i, v_bad.doc),
      'Nothing was enqueued. Create the row in public.user_documents first.');
  elsif found then
    perform supaworker_private.raise_error('PT403',
      pg_catalog.format('p_jobs[%s]: document %s does not belong to you', v_bad.i, v_bad.doc),
      'Nothing was enqueued. Users can only enqueue their own documents.');
  end if;

  -- 3. Quotas: each owner's active jobs plus the call's new documents (not active now).
  if v_settings.max_pending_per_user is not null then
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('supaworker.pending_quota'),
                                             pg_catalog.hashtext(o.user_id::text))
       from (select distinct d.user_id
               from supaworker_private.bulk_items(p_jobs, v_privileged) b
               join public.user_documents d on d.id = b.doc
              where d.user_id is not null
              order by d.user_id) o;
    select n.user_id, n.first_i, n.adding,
           (select count(*) from public.processing_queue q
             where q.user_id = n.user_id
               and q.status in ('pending', 'assigned', 'processing')) as active
      into v_bad
      from (select d.user_id, min(b.i) as first_i, count(distinct b.doc) as adding
              from supaworker_private.bulk_items(p_jobs, v_privileged) b
              join public.user_documents d on d.id = b.doc
             where d.user_id is not null
               and not exists (select from public.processing_queue q
                                where q.user_document_id = b.doc
                                  and q.status in ('pending', 'assigned', 'processing'))
             group by d.user_id) n
     where (select count(*) from public.processing_queue q
             where q.user_id = n.user_id
               and q.status in ('pending', 'assigned', 'processing')) + n.adding
           > v_settings.max_pending_per_user
     order by n.first_i
     limit 1;
    if found then
      perform supaworker_private.raise_error('PT429',
        pg_catalog.format('p_jobs[%s]: user %s has %s pending or running jobs and this call '
                          'adds %s; max_pending_per_user is %s', v_bad.first_i, v_bad.user_id,
                          v_bad.active, v_bad.adding, v_settings.max_pending_per_user),
        'Nothing was enqueued. Wait until some jobs finish, or raise '
        'queue_settings.max_pending_per_user.');
    end if;
  end if;

  -- 4. The writes: the first element of each document that is not active is new work; each
  -- owner's new work at a (queue, priority) gets consecutive tags in p_jobs order.
  with items as (
    select b.*, d.user_id,
           coalesce(d.user_id, '00000000-0000-0000-0000-000000000000'::uuid) as owner
      from supaworker_private.bulk_items(p_jobs, v_privileged) b
      join public.user_documents d on d.id = b.doc
  ), work as (
    select distinct on (i.doc) i.*, q.id as job_id
      from items i
      left join public.processing_queue q on q.user_document_id = i.doc
     where q.id is null or q.status in ('completed', 'failed', 'cancelled')
     order by i.doc, i.i
  ), groups as (
    select w.queue, w.priority, w.owner, count(*)::integer as n,
           bool_or(w.user_priority <> 0) as uses_priority
      from work w group by w.queue, w.priority, w.owner
  ), levels as (
    -- V per (queue, priority), as next_fair_tag takes it; this statement's snapshot does not
    -- see the tags next_fair_tags records below, so every owner's batch starts from it.
    select l.queue, l.priority,
           coalesce((select q.fair_tag from public.processing_queue q
                      where q.status = 'pending' and q.queue = l.queue
                        and q.priority = l.priority and q.run_at <= now()
                      order by q.fair_tag, q.created_at limit 1),
                    (select max(c.last_tag) from supaworker_private.owner_clock c
                      where c.queue = l.queue and c.priority = l.priority)) as virtual
      from (select distinct g.queue, g.priority from groups g) l
  ), bases as (
    select g.*, supaworker_private.next_fair_tags(g.queue, g.priority, g.owner,
                                                   g.uses_priority, g.n, l.virtual) as base
      from groups g join levels l on (l.queue, l.priority) = (g.queue, g.priority)
  ), tagged as (
    select w.*, b.base + row_number() over (partition by w.queue, w.priority, w.owner
                                            order by w.i) - 1 as tag
      from work w
      join bases b on (b.queue, b.priority, b.owner) = (w.queue, w.priority, w.owner)
  ), inserted as (
    insert into public.processing_queue as q
      (user_document_id, user_id, queue, priority, payload, max_attempts, run_at,
       timeout_seconds, requires, user_priority, fair_tag, owner_seq, concurrency_key,
       rate_limit_key, created_at)
    select t.doc, t.user_id, t.queue, t.priority, t.payload, t.max_attempts, t.run_at,
           t.timeout_seconds, t.requires, t.user_priority, t.tag, t.tag, t.concurrency_key,
           t.rate_limit_key,
           -- Evaluated after the sort, row by row: created_at follows p_jobs order, so two
           -- owners' jobs at the same tag are claimed in the order they were listed.
           clock_timestamp()
      from tagged t where t.job_id is null
     order by t.i
    on conflict (user_document_id) do nothing  -- inserted concurrently: returned as it is
  )
  update public.processing_queue q set
    status = 'pending', user_id = t.user_id, queue = t.queue, priority = t.priority,
    payload = t.payload, max_attempts = t.max_attempts, run_at = t.run_at,
    timeout_seconds = t.timeout_seconds, requires = t.requires,
    user_priority = t.user_priority, fair_tag = t.tag, owner_seq = t.tag,
    concurrency_key = t.concurrency_key, rate_limit_key = t.rate_limit_key, snooze_count = 0,
    retry_count = 0, result = null, error_message = null, progress_percent = null,
    progress_message = null, cancel_requested = false, assigned_to = null,
    assigned_at = null, started_at = null, completed_at = null
  from tagged t
  where t.job_id is not null and q.id = t.job_id
    and q.status in ('completed', 'failed', 'cancelled');

  return (select jsonb_agg(to_jsonb(q.*) order by b.i)
            from supaworker_private.bulk_items(p_jobs, v_privileged) b
            join public.processing_queue q on q.user_document_id = b.doc);
end $$;
comment on function public.enqueue_jobs(jsonb) is
  'Bulk enqueue_job: p_jobs is a JSON array of up to 10,000 {user_document_id, priority?, '
  'payload?, queue?, max_attempts?, run_at?, timeout_seconds?, requires?}; one row per '
  'element in order; idempotent per document like enqueue_job; all or nothing (the first bad '
  'element refuses the call, "p_jobs[i]: ..."); quotas apply. service_role: every option; '
  'authenticated: own documents, user_document_id / priority (user_priority) / queue only. '
  'Errors: 22023, PT404, PT403, PT413, PT429.';

-- cancel_job(p_job_id) -> processing_queue
-- pending/assigned -> cancelled at once (an assigned job's worker is fenced out of
-- start_job); processing -> cancel_requested = true (the worker learns it from
-- heartbeat_worker and ends the job with fail_job, which then cancels it);
-- completed/failed/cancelled -> returned unchanged (idempotent).
-- Who: service_role (any job), authenticated (own jobs only); queue admins through
-- admin_cancel_job. Errors: 22023 no id, PT404 unknown job, PT403 not the owner, PT409 the job
-- changed hands while being cancelled (call again). Locks the owning worker, then the job.
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

-- retry_job(p_job_id) -> processing_queue
-- A failed or cancelled job becomes pending now as a new cycle (retry_count 0, error and
-- result cleared, attempt kept, a new fair-order tag); a pending job is returned unchanged.
-- Who: service_role; queue admins through admin_retry_job.
-- Errors: PT404 unknown job, PT409 running (assigned/processing) or completed job.
create function public.retry_job(p_job_id uuid) returns public.processing_queue
language plpgsql volatile security definer set search_path = '' as $$
declare
  v_job public.processing_queue;
  v_tag bigint;
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
    v_tag := supaworker_private.next_fair_tag(v_job.queue, v_job.priority, v_job.user_id,
                                              v_job.user_priority);
    update public.processing_queue q set
      status = 'pending', run_at = now(), retry_count = 0, result = null,
      fair_tag = v_tag, owner_seq = v_tag, snooze_count = 0,
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

-- retry_failed_jobs(p_queue null) -> integer
-- Re-queues every failed job (of p_queue, or of every queue) as a new cycle (each with a new
-- fair-order tag, in the order the rows are updated); returns how many. Cancelled jobs are not touched. Who: service_role. Raises nothing of its own.
create function public.retry_failed_jobs(p_queue text default null) returns integer
language plpgsql volatile security definer set search_path = '' as $$
declare
  v_count integer;
begin
  -- Tags are taken in the failed jobs' id order, one call per job (each sees the last).
  with tagged as (
    select f.id, supaworker_private.next_fair_tag(f.queue, f.priority, f.user_id,
                                                  f.user_priority) as tag
      from (select q.id, q.queue, q.priority, q.user_id, q.user_priority
              from public.processing_queue q
             where q.status = 'failed' and (p_queue is null or q.queue = p_queue)
             order by q.id
             for update) f
  )
  update public.processing_queue q set
    status = 'pending', run_at = now(), retry_count = 0, result = null,
    fair_tag = t.tag, owner_seq = t.tag, snooze_count = 0,
    error_message = null, progress_percent = null, progress_message = null,
    cancel_requested = false, assigned_to = null, assigned_at = null, started_at = null,
    completed_at = null
  from tagged t
  where q.id = t.id;
  get diagnostics v_count = row_count;
  return v_count;
end $$;
comment on function public.retry_failed_jobs(text) is
  'Re-queue every failed job (of p_queue, or of all queues when null) as a new cycle; '
  'returns how many. Cancelled jobs are not touched.';
