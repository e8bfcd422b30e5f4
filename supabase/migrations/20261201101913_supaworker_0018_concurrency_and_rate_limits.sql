-- supaworker: concurrency keys and rate limits the app chooses (issue 18).
--
-- enqueue_job(..., p_concurrency_key, p_rate_limit_key) (and the same keys per element of
-- enqueue_jobs; service role only: the user-options trigger refuses them for users) name a
-- job's limits:
--  * public.concurrency_limits (key, max_running): at most max_running jobs of a key
--    assigned/processing at once, over all workers ("ocr-gpu": 2 whatever the worker count).
--    Enforced by the claim like max_running_per_user: a try-lock per key, then a count in
--    the next statement (processing_queue_running_by_key_idx).
--  * public.rate_limits (key, per_second, burst): a token bucket per key
--    (supaworker_private.rate_buckets, written only by the claim, locked SKIP LOCKED): a job
--    with the key starts only by taking a token, cluster-wide; tokens refill at per_second
--    up to burst.
-- A key without a row has no limit. While both tables are empty the claim keeps its single
-- statement; otherwise it takes one turn per statement (supaworker_private.admit_keys).
-- enqueue_job's signature grows by two defaulted arguments (PostgREST finds it by argument
-- names, so older callers are unaffected); it is dropped and created again with its grants.

alter table public.processing_queue
  add column concurrency_key text check (length(concurrency_key) between 1 and 200),
  add column rate_limit_key text check (length(rate_limit_key) between 1 and 200);
create index processing_queue_running_by_key_idx on public.processing_queue (concurrency_key)
  where status in ('assigned', 'processing') and concurrency_key is not null;

-- ---------------------------------------------------------------------------------------
-- concurrency_limits, rate_limits: limits per key the app chooses (migration 0018)
-- ---------------------------------------------------------------------------------------
-- A job names its keys at enqueue (p_concurrency_key, p_rate_limit_key; service role only).
-- A key without a row here has no limit. service_role reads and writes these tables.
create table public.concurrency_limits (
  key         text primary key check (length(key) between 1 and 200),
  max_running integer not null check (max_running >= 1),
  updated_at  timestamptz not null default now()
);
comment on table public.concurrency_limits is
  'At most max_running jobs with this concurrency_key assigned/processing at once, over all '
  'workers (enforced by the claim). A key without a row has no limit.';
create table public.rate_limits (
  key        text primary key check (length(key) between 1 and 200),
  per_second numeric not null check (per_second > 0),
  burst      integer not null check (burst >= 1),
  updated_at timestamptz not null default now()
);
comment on table public.rate_limits is
  'A token bucket per rate_limit_key: the claim starts a job with this key only by taking a '
  'token; tokens refill at per_second up to burst, cluster-wide. A key without a row has no '
  'limit.';
alter table public.concurrency_limits enable row level security;
alter table public.rate_limits enable row level security;

-- The bucket state, written only by the claim (one row per key, locked SKIP LOCKED).
create table supaworker_private.rate_buckets (
  key         text primary key,
  tokens      numeric not null,
  refilled_at timestamptz not null
);
comment on table supaworker_private.rate_buckets is
  'Token buckets of rate_limits: tokens left at refilled_at. Written by the claim only.';
alter table supaworker_private.rate_buckets enable row level security;
revoke all on table supaworker_private.rate_buckets from public, anon, authenticated, service_role;
revoke all on table public.concurrency_limits, public.rate_limits
  from public, anon, authenticated, service_role;
grant select, insert, update, delete on table public.concurrency_limits, public.rate_limits
  to service_role;

-- refuse_user_job_options(): BEFORE INSERT, and BEFORE UPDATE of payload, run_at,
-- requires, max_attempts, timeout_seconds, on processing_queue (migration 20261128001300,
-- security review S1).
-- enqueue_job is executable by `authenticated` (the enqueue-document edge function calls it
-- as the caller, so that the database decides ownership), and a user can call
-- /rest/v1/rpc/enqueue_job directly with every parameter. Only the document id, the priority
-- (clamped to -10..10) and the queue are meant for users; the other options belong to the
-- API server:
--   p_payload          handlers trust it as the server's input (paths, URLs, flags);
--   p_run_at (past)    jumps ahead of every job of the same priority;
--   p_requires         routes the job to one chosen worker (`supaworker.worker_id`);
--   p_max_attempts     100 attempts of a document that crashes its worker instead of 5;
--   p_timeout_seconds  a tiny timeout makes the thread executor abandon the handler thread;
--   p_concurrency_key, p_rate_limit_key  (migration 0018) another app's limits.
-- For anon/authenticated callers it raises PT403 "only the service role may set <options>"
-- on both paths into the row (INSERT of a new job, UPDATE that re-queues a finished one). A
-- default spelled out (`{}`, the default attempts, a start not in the past) passes, and so
-- does a value an UPDATE carries over unchanged. Privileged callers
-- (caller_is_privileged) always pass.
create or replace function supaworker_private.refuse_user_job_options() returns trigger
language plpgsql set search_path = '' as $$
declare
  v_default_attempts integer;
  v_refused          text[] := '{}';
  v_insert           boolean := tg_op = 'INSERT';
begin
  if supaworker_private.caller_is_privileged() then
    return new;
  end if;
  select s.default_max_attempts into v_default_attempts from public.queue_settings s;

  if new.payload <> '{}'::jsonb and (v_insert or new.payload is distinct from old.payload) then
    v_refused := v_refused || 'p_payload'::text;
  end if;
  if new.run_at < now() and (v_insert or new.run_at is distinct from old.run_at) then
    v_refused := v_refused || 'p_run_at'::text;
  end if;
  if new.requires <> '{}'::jsonb and (v_insert or new.requires is distinct from old.requires) then
    v_refused := v_refused || 'p_requires'::text;
  end if;
  if new.max_attempts <> v_default_attempts
     and (v_insert or new.max_attempts is distinct from old.max_attempts) then
    v_refused := v_refused || 'p_max_attempts'::text;
  end if;
  if new.timeout_seconds is not null
     and (v_insert or new.timeout_seconds is distinct from old.timeout_seconds) then
    v_refused := v_refused || 'p_timeout_seconds'::text;
  end if;
  if new.concurrency_key is not null
     and (v_insert or new.concurrency_key is distinct from old.concurrency_key) then
    v_refused := v_refused || 'p_concurrency_key'::text;
  end if;
  if new.rate_limit_key is not null
     and (v_insert or new.rate_limit_key is distinct from old.rate_limit_key) then
    v_refused := v_refused || 'p_rate_limit_key'::text;
  end if;

  if cardinality(v_refused) > 0 then
    perform supaworker_private.raise_error('PT403',
      pg_catalog.format('only the service role may set %s',
                        pg_catalog.array_to_string(v_refused, ', ')),
      'Signed-in users pass p_user_document_id, p_priority (clamped to -10..10) and p_queue; '
      'enqueue from your API server with the service role key to set the other options.');
  end if;
  return new;
end $$;
comment on function supaworker_private.refuse_user_job_options() is
  'BEFORE INSERT/UPDATE trigger on processing_queue: for anon/authenticated callers, refuses '
  '(PT403) a payload, requires, max_attempts, timeout_seconds, concurrency_key or '
  'rate_limit_key other than the defaults, and '
  'a run_at in the past, unless the value is carried over unchanged by an UPDATE. '
  'Privileged callers (service_role, trusted SQL) pass.';

drop trigger processing_queue_user_options on public.processing_queue;
create trigger processing_queue_user_options
  before insert or update of payload, run_at, requires, max_attempts, timeout_seconds,
                             concurrency_key, rate_limit_key
  on public.processing_queue
  for each row execute function supaworker_private.refuse_user_job_options();

drop function public.enqueue_job(uuid, integer, jsonb, text, integer, timestamptz, integer, jsonb);
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
create or replace function public.enqueue_job(
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
      retry_count = 0, result = null, error_message = null, progress_percent = null,
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

revoke all on function
  public.enqueue_job(uuid, integer, jsonb, text, integer, timestamptz, integer, jsonb, text, text)
from public, anon, authenticated, service_role;
grant execute on function
  public.enqueue_job(uuid, integer, jsonb, text, integer, timestamptz, integer, jsonb, text, text)
to service_role, authenticated;

drop function supaworker_private.bulk_items(jsonb, boolean);
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
  requires        jsonb,
  concurrency_key text,
  rate_limit_key  text
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
         coalesce(nullif(e.v -> 'requires', 'null'::jsonb), '{}'::jsonb),
         e.v ->> 'concurrency_key',
         e.v ->> 'rate_limit_key'
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
    when jsonb_typeof(p_job -> 'concurrency_key') not in ('string', 'null')
         or length(p_job ->> 'concurrency_key') not between 1 and 200 then
      '22023:concurrency_key must be a text of 1-200 characters'
    when jsonb_typeof(p_job -> 'rate_limit_key') not in ('string', 'null')
         or length(p_job ->> 'rate_limit_key') not between 1 and 200 then
      '22023:rate_limit_key must be a text of 1-200 characters'
  end
  from (select
          (select min(x) from jsonb_object_keys(case when jsonb_typeof(p_job) = 'object'
                                                      then p_job else '{}' end) x
            where x not in ('user_document_id', 'priority', 'payload', 'queue',
                            'max_attempts', 'run_at', 'timeout_seconds', 'requires',
                            'concurrency_key', 'rate_limit_key'))
            as unknown,
          (select min(x) from jsonb_object_keys(case when jsonb_typeof(p_job) = 'object'
                                                      then p_job else '{}' end) x
            where x in ('payload', 'max_attempts', 'run_at', 'timeout_seconds', 'requires',
                        'concurrency_key', 'rate_limit_key')
              and p_job -> x <> 'null'::jsonb)
            as service_only) k
$$;
comment on function supaworker_private.bulk_problem(jsonb, boolean, integer) is
  'enqueue_jobs: the first problem of one element of p_jobs as ''SQLSTATE:message'', or null.';

-- admit_keys(p_concurrency_key, p_rate_limit_key) -> text
-- Whether the claim may start a job with these keys now (issue 18). null: yes, and a token of
-- its rate limit has been spent; 'concurrency': its key has concurrency_limits.max_running
-- jobs assigned/processing (over all workers), or another claim is taking that key's jobs
-- right now (a try-lock, as for the owner cap: the count, in the statement after the lock,
-- sees every claim of the lock's previous holder); 'rate': the key's token bucket
-- (rate_limits: per_second refill up to burst, cluster-wide) has no whole token, or another
-- claim holds it (SKIP LOCKED: nobody waits). A key without a row has no limit. The bucket
-- row is written only when a token is taken.
-- Who: claim_jobs. Raises nothing.
create or replace function supaworker_private.admit_keys(p_concurrency_key text, p_rate_limit_key text)
returns text language plpgsql volatile set search_path = '' as $$
declare
  v_limit   integer;
  v_running integer;
  v_rate    public.rate_limits;
  v_bucket  supaworker_private.rate_buckets;
  v_tokens  numeric;
begin
  if p_concurrency_key is not null then
    select l.max_running into v_limit from public.concurrency_limits l
     where l.key = p_concurrency_key;
    if found then
      if not pg_catalog.pg_try_advisory_xact_lock(
               pg_catalog.hashtext('supaworker.concurrency_key'),
               pg_catalog.hashtext(p_concurrency_key)) then
        return 'concurrency';
      end if;
      select count(*) into v_running from public.processing_queue q
       where q.concurrency_key = p_concurrency_key and q.status in ('assigned', 'processing');
      if v_running >= v_limit then
        return 'concurrency';
      end if;
    end if;
  end if;
  if p_rate_limit_key is not null then
    select * into v_rate from public.rate_limits r where r.key = p_rate_limit_key;
    if found then
      if not exists (select from supaworker_private.rate_buckets b
                      where b.key = p_rate_limit_key) then
        insert into supaworker_private.rate_buckets (key, tokens, refilled_at)
        values (p_rate_limit_key, v_rate.burst, clock_timestamp())
        on conflict (key) do nothing;
      end if;
      select * into v_bucket from supaworker_private.rate_buckets b
       where b.key = p_rate_limit_key
       for update skip locked;
      if not found then
        return 'rate';
      end if;
      -- clock_timestamp, not now(): bucket holders follow each other in lock order, and
      -- each must refill from the moment the previous one spent.
      v_tokens := least(v_rate.burst, v_bucket.tokens + v_rate.per_second
                        * greatest(0, extract(epoch from clock_timestamp() - v_bucket.refilled_at)));
      if v_tokens < 1 then
        return 'rate';
      end if;
      update supaworker_private.rate_buckets b
         set tokens = v_tokens - 1, refilled_at = clock_timestamp()
       where b.key = p_rate_limit_key;
    end if;
  end if;
  return null;
end $$;
comment on function supaworker_private.admit_keys(text, text) is
  'The claim''s check of a job''s concurrency key (concurrency_limits, a try-lock and a count) '
  'and rate limit (rate_limits token bucket, SKIP LOCKED; a token is spent): null when it may '
  'start, else ''concurrency'' or ''rate''.';

revoke all on function supaworker_private.bulk_items(jsonb, boolean),
                       supaworker_private.admit_keys(text, text)
  from public, anon, authenticated, service_role;

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
       timeout_seconds, requires, user_priority, fair_tag, owner_seq, concurrency_key,
       rate_limit_key)
    select t.doc, t.user_id, t.queue, t.priority, t.payload, t.max_attempts, t.run_at,
           t.timeout_seconds, t.requires, t.user_priority, t.tag, t.tag, t.concurrency_key,
           t.rate_limit_key
      from tagged t where t.job_id is null
     order by t.i
    on conflict (user_document_id) do nothing  -- inserted concurrently: returned as it is
  )
  update public.processing_queue q set
    status = 'pending', user_id = t.user_id, queue = t.queue, priority = t.priority,
    payload = t.payload, max_attempts = t.max_attempts, run_at = t.run_at,
    timeout_seconds = t.timeout_seconds, requires = t.requires,
    user_priority = t.user_priority, fair_tag = t.tag, owner_seq = t.tag,
    concurrency_key = t.concurrency_key, rate_limit_key = t.rate_limit_key,
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

-- claim_jobs(p_worker_id, p_limit, p_queues, p_start, p_prefetch) -> setof job
-- The one implementation of the claim, behind claim_next_job (p_prefetch 0) and
-- complete_and_claim (p_start true). Runs the reaper first (maybe_rescue: at most once per
-- rescue_interval, never waiting). Then, under the worker's row lock (which serialises this
-- worker's claims so its slots cannot be over-committed), claims up to
-- least(p_limit, max_concurrent_jobs + p_prefetch - its assigned/processing jobs) jobs among
-- the claimable ones: pending, run_at <= now(), not cancel-requested, queue in p_queues
-- (null: the worker's queues; null again: every queue), requires met by the worker's
-- capabilities (requires_met: comparisons and containment). Claim order
-- (docs/queue-semantics.md, "Fair order"): priority desc, fair_tag, created_at, which takes
-- turns across owners within a (queue, priority) (indexes
-- processing_queue_claim_idx / _claim_order_idx). When an owner of these queues has set a
-- user_priority, the job that fills that owner's turn is its best claimable job of the same
-- (queue, priority) by user_priority desc, owner_seq, and the two swap tags so the owner's
-- later turns keep their places (processing_queue_owner_order_idx). With
-- queue_settings.max_running_per_user set, an owner with that many assigned/processing jobs
-- (over all workers) is skipped, and so is one whose jobs another claim is taking at that
-- moment (a try-lock per owner; the count under processing_queue_active_by_owner_idx). With
-- rows in concurrency_limits or rate_limits, a job whose key is at its limit, or whose
-- bucket has no token, is left for later (admit_keys; a taken token is spent). These cases
-- take one turn per statement, at most v_slots + 32 turns looked at; otherwise the claim is
-- one UPDATE over a FOR UPDATE SKIP LOCKED selection. Claimed jobs get assigned_to,
-- assigned_at and attempt + 1 (the fencing token) and become assigned, or with p_start
-- processing with started_at = now(). Sets current_jobs. Returns them in claim order. An
-- unknown, paused or offline worker gets nothing.
-- Who: the two wrappers only. Errors: 22023 empty worker id, p_limit or p_prefetch outside
-- 0..1000.
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
end $$;
comment on function supaworker_private.claim_jobs(text, integer, text[], boolean, integer) is
  'The claim behind claim_next_job and complete_and_claim: up to p_limit jobs, never more '
  'than max_concurrent_jobs + p_prefetch minus the worker''s assigned/processing jobs, in '
  'fair order (priority desc, fair_tag, created_at; an owner''s turn filled by its best '
  'user_priority), never more than max_running_per_user running jobs of one owner, nor more '
  'than concurrency_limits / rate_limits allow per key.';

comment on function public.claim_next_job(text, integer, text[], boolean) is
  'Claim up to p_limit pending jobs for an active worker, never more than its free slots '
  '(max_concurrent_jobs - its assigned/processing jobs), FOR UPDATE SKIP LOCKED, in fair '
  'order (priority desc, fair_tag, created_at: turns across owners); only jobs with run_at <= '
  'now(), not cancel-requested, in p_queues (null: the worker''s queues; null: all) and '
  'whose requires the worker''s capabilities meet (comparisons gte/lte/eq/in, else '
  'containment). Claimed jobs get assigned_to, '
  'assigned_at and attempt + 1 (the fencing token to pass back) and become assigned, or with '
  'p_start processing with started_at = now() (no start_job needed). An owner with '
  'queue_settings.max_running_per_user assigned/processing jobs is skipped, and so is a job '
  'whose concurrency key is at its limit or whose rate limit has no token. Unknown, paused or '
  'offline worker: empty set. Runs the reaper first, at most once per '
  'queue_settings.rescue_interval. 22023 for p_limit outside 0..1000.';

-- The schema this migration leaves (0012_schema_version.sql: every migration sets its number).
create or replace function public.supaworker_schema_version() returns integer
language sql
immutable
security definer
set search_path = ''
as $$ select 18 $$;
