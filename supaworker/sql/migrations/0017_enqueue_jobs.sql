-- supaworker: bulk enqueue (issue 18): enqueue_jobs(p_jobs jsonb), up to 10,000 documents
-- per call, each with its own options.
--
-- An API server that enqueues a folder of uploads made one HTTP call per document. One call
-- now takes a JSON array of {user_document_id, priority?, payload?, queue?, max_attempts?,
-- run_at?, timeout_seconds?, requires?} and does per document exactly what enqueue_job does
-- (idempotent; a finished entry is re-queued as a new cycle), set-based: one statement
-- checks every element (bulk_problem), one the documents, one the quotas, one writes
-- (insert of new documents, update of finished ones, one owner_clock upsert per owner and
-- level: next_fair_tags), one returns the rows in order. All or nothing: the first bad
-- element refuses the call with its 0-based index in the message ("p_jobs[3]: ...").
-- Callable by service_role and, for their own documents with user_document_id, priority
-- and queue only, by authenticated users.

-- next_fair_tags(p_queue, p_priority, p_user_id, p_uses_priority, p_count, p_virtual)
--   -> bigint
-- next_fair_tag for p_count new jobs of one owner at once (the bulk enqueue): the first of
-- p_count consecutive tags greatest(p_virtual, last + 1) .., recorded in owner_clock with one
-- upsert. p_virtual is the level's V as next_fair_tag computes it, taken by the caller
-- before any of its upserts (so that one owner's batch does not push another's V when the
-- level is idle). p_uses_priority: one of the jobs has a user_priority.
-- Who: enqueue_jobs. Raises nothing of its own.
create or replace function supaworker_private.next_fair_tags(
  p_queue text, p_priority integer, p_user_id uuid, p_uses_priority boolean, p_count integer,
  p_virtual bigint
) returns bigint
language plpgsql volatile set search_path = '' as $$
declare
  v_owner uuid := coalesce(p_user_id, '00000000-0000-0000-0000-000000000000'::uuid);
  v_last  bigint;
begin
  insert into supaworker_private.owner_clock as c
    (queue, priority, user_id, last_tag, uses_priority)
  values (p_queue, p_priority, v_owner, coalesce(p_virtual, 0) + p_count - 1,
          coalesce(p_uses_priority, false))
  on conflict (queue, priority, user_id) do update
    set last_tag = greatest(excluded.last_tag, c.last_tag + p_count),
        uses_priority = c.uses_priority or excluded.uses_priority
  returning c.last_tag into v_last;
  return v_last - p_count + 1;
end $$;
comment on function supaworker_private.next_fair_tags(text, integer, uuid, boolean, integer,
                                                      bigint) is
  'Fair order for p_count new jobs of one owner at (queue, priority): the first of p_count '
  'consecutive tags from greatest(p_virtual, the owner''s last tag + 1); records the last.';

-- bulk_items(p_jobs, p_privileged) -> table
-- The elements of enqueue_jobs' p_jobs (already checked by enqueue_jobs) as typed rows with
-- enqueue_job's defaults applied: i (0-based index), the document, its options; a user's
-- priority becomes user_priority (clamped to -10..10) and priority 0, as in enqueue_job.
-- Who: enqueue_jobs. Raises nothing on checked input.
create or replace function supaworker_private.bulk_items(p_jobs jsonb, p_privileged boolean)
returns table (
  i               integer,
  doc             uuid,
  queue           text,
  priority        integer,
  user_priority   integer,
  payload         jsonb,
  max_attempts    integer,
  run_at          timestamptz,
  timeout_seconds integer,
  requires        jsonb
)
language sql stable set search_path = '' as $$
  select (e.n - 1)::integer,
         (e.v ->> 'user_document_id')::uuid,
         coalesce(e.v ->> 'queue', 'default'),
         case when p_privileged then coalesce((e.v ->> 'priority')::integer, 0) else 0 end,
         case when p_privileged then 0
              else greatest(-10, least(10, coalesce((e.v ->> 'priority')::numeric, 0)))::integer
         end,
         coalesce(nullif(e.v -> 'payload', 'null'::jsonb), '{}'::jsonb),
         coalesce((e.v ->> 'max_attempts')::integer,
                  (select s.default_max_attempts from public.queue_settings s)),
         coalesce((e.v ->> 'run_at')::timestamptz, now()),
         (e.v ->> 'timeout_seconds')::integer,
         coalesce(nullif(e.v -> 'requires', 'null'::jsonb), '{}'::jsonb)
    from jsonb_array_elements(p_jobs) with ordinality as e(v, n)
$$;
comment on function supaworker_private.bulk_items(jsonb, boolean) is
  'enqueue_jobs: the checked elements of p_jobs as typed rows with enqueue_job''s defaults.';

-- bulk_problem(p_job, p_privileged, p_max_payload_bytes) -> text
-- The first thing wrong with one element of enqueue_jobs' p_jobs, as 'SQLSTATE:message', or
-- null. In the order enqueue_job checks its arguments; every cast below is reached only
-- after the check that makes it safe (CASE evaluates in order). run_at is checked by
-- enqueue_jobs itself (a timestamp's validity needs a cast). Who: enqueue_jobs.
create or replace function supaworker_private.bulk_problem(
  p_job jsonb, p_privileged boolean, p_max_payload_bytes integer
) returns text
language sql immutable set search_path = '' as $$
  select case
    when jsonb_typeof(p_job) <> 'object' then '22023:must be a JSON object'
    when k.unknown is not null then pg_catalog.format('22023:unknown key %s', k.unknown)
    when k.service_only is not null and not p_privileged then
      pg_catalog.format('PT403:only the service role may set %s', k.service_only)
    when jsonb_typeof(p_job -> 'user_document_id') is distinct from 'string'
         or (p_job ->> 'user_document_id') !~*
            '^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$' then
      '22023:user_document_id must be the id (a uuid) of a row of public.user_documents'
    when jsonb_typeof(p_job -> 'priority') not in ('number', 'null')
         or (p_job ->> 'priority') !~ '^-?[0-9]{1,9}$' then
      pg_catalog.format('22023:priority must be an integer, got %s', p_job -> 'priority')
    when p_privileged and (p_job ->> 'priority')::integer not between -1000 and 1000 then
      pg_catalog.format('22023:priority must be between -1000 and 1000, got %s',
                        p_job ->> 'priority')
    when jsonb_typeof(p_job -> 'payload') not in ('object', 'null') then
      '22023:payload must be a JSON object'
    when octet_length((p_job -> 'payload')::text) > p_max_payload_bytes then
      pg_catalog.format('PT413:payload is %s bytes, more than max_payload_bytes (%s)',
                        octet_length((p_job -> 'payload')::text), p_max_payload_bytes)
    when jsonb_typeof(p_job -> 'requires') not in ('object', 'null') then
      '22023:requires must be a JSON object'
    when jsonb_typeof(p_job -> 'requires') = 'object'
         and supaworker_private.requires_problem(p_job -> 'requires') is not null then
      '22023:' || supaworker_private.requires_problem(p_job -> 'requires')
    when jsonb_typeof(p_job -> 'queue') not in ('string', 'null')
         or (p_job ->> 'queue') !~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$' then
      pg_catalog.format('22023:invalid queue name %s', p_job -> 'queue')
    when jsonb_typeof(p_job -> 'max_attempts') not in ('number', 'null')
         or (p_job ->> 'max_attempts') !~ '^-?[0-9]{1,9}$'
         or (p_job ->> 'max_attempts')::integer not between 1 and 100 then
      pg_catalog.format('22023:max_attempts must be between 1 and 100, got %s',
                        p_job -> 'max_attempts')
    when jsonb_typeof(p_job -> 'timeout_seconds') not in ('number', 'null')
         or (p_job ->> 'timeout_seconds') !~ '^-?[0-9]{1,9}$'
         or (p_job ->> 'timeout_seconds')::integer <= 0 then
      pg_catalog.format('22023:timeout_seconds must be a positive integer, got %s',
                        p_job -> 'timeout_seconds')
    when jsonb_typeof(p_job -> 'run_at') not in ('string', 'null') then
      '22023:run_at must be a timestamp (ISO 8601 text)'
  end
  from (select
          (select min(x) from jsonb_object_keys(case when jsonb_typeof(p_job) = 'object'
                                                      then p_job else '{}' end) x
            where x not in ('user_document_id', 'priority', 'payload', 'queue',
                            'max_attempts', 'run_at', 'timeout_seconds', 'requires'))
            as unknown,
          (select min(x) from jsonb_object_keys(case when jsonb_typeof(p_job) = 'object'
                                                      then p_job else '{}' end) x
            where x in ('payload', 'max_attempts', 'run_at', 'timeout_seconds', 'requires')
              and p_job -> x <> 'null'::jsonb)
            as service_only) k
$$;
comment on function supaworker_private.bulk_problem(jsonb, boolean, integer) is
  'enqueue_jobs: the first problem of one element of p_jobs as ''SQLSTATE:message'', or null.';

revoke all on function
  supaworker_private.next_fair_tags(text, integer, uuid, boolean, integer, bigint),
  supaworker_private.bulk_items(jsonb, boolean),
  supaworker_private.bulk_problem(jsonb, boolean, integer)
from public, anon, authenticated, service_role;

-- enqueue_jobs(p_jobs) -> jsonb (an array of processing_queue rows)
-- Bulk enqueue_job (issue 18): p_jobs is a JSON array of up to 10,000 objects, each
-- {user_document_id, priority?, payload?, queue?, max_attempts?, run_at?, timeout_seconds?,
-- requires?} with enqueue_job's meaning and defaults. Returns a JSON array of the rows, one
-- per element, in p_jobs order (one jsonb value, not a set: PostgREST caps a set's rows at
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
create or replace function public.enqueue_jobs(p_jobs jsonb) returns jsonb
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
       timeout_seconds, requires, user_priority, fair_tag, owner_seq)
    select t.doc, t.user_id, t.queue, t.priority, t.payload, t.max_attempts, t.run_at,
           t.timeout_seconds, t.requires, t.user_priority, t.tag, t.tag
      from tagged t where t.job_id is null
     order by t.i
    on conflict (user_document_id) do nothing  -- inserted concurrently: returned as it is
  )
  update public.processing_queue q set
    status = 'pending', user_id = t.user_id, queue = t.queue, priority = t.priority,
    payload = t.payload, max_attempts = t.max_attempts, run_at = t.run_at,
    timeout_seconds = t.timeout_seconds, requires = t.requires,
    user_priority = t.user_priority, fair_tag = t.tag, owner_seq = t.tag,
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


revoke all on function public.enqueue_jobs(jsonb) from public, anon, authenticated, service_role;
grant execute on function public.enqueue_jobs(jsonb) to service_role, authenticated;

-- The schema this migration leaves (0012_schema_version.sql: every migration sets its number).
create or replace function public.supaworker_schema_version() returns integer
language sql
immutable
security definer
set search_path = ''
as $$ select 17 $$;
