-- supaworker, current schema: private helpers shared by several API functions.
--
-- supaworker/sql/schema/ is what a reader opens: the schema as it stands after every migration
-- in supabase/migrations/ (what `supabase db push` applies; they stay as they are). Loaded in
-- file-name order into a fresh database, these files give the same schema as the migrations
-- (tests/sql/test_schema_definitions.py). To change the schema, edit the definition here AND
-- write a new migration (docs/architecture.md, "Changing the schema").

-- Conventions of every function below
--  * `security definer` (owned by postgres) with `set search_path = ''` for the public API;
--    every user object is schema-qualified; no dynamic SQL. supaworker_private helpers are
--    not reachable through PostgREST (it exposes only `public` and `graphql_public`).
--  * Errors: 22023 invalid argument (HTTP 400), PT403 not the owner, PT404 not found,
--    PT409 wrong state, PT413 payload too large (PostgREST maps PTxyz to status xyz).
--  * Worker calls are fenced by (job id, worker_id, attempt, running status): a worker whose
--    job was taken away (rescued, cancelled, reassigned) changes nothing.
--  * Lock order, to stay deadlock-free: queue_settings row -> vps_workers rows (in worker_id
--    order) -> processing_queue rows. Every function that changes which jobs a worker holds
--    locks that worker's row first; the claim locks job rows only with SKIP LOCKED.
--  * Who may execute what is in 90_grants.sql; the "Who" line of each contract says the same.

-- raise_error(p_code, p_message, p_hint) -> void
-- Raises p_message with SQLSTATE p_code (and p_hint when not null). Every API error goes
-- through it so each carries a hint. Who: the functions below only.
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

-- caller_is_privileged() -> boolean
-- Through PostgREST the JWT's role decides (service_role: true; anon/authenticated: false).
-- Without JWT claims (pg_cron, psql, migrations, another function) the caller already passed
-- the EXECUTE check and is trusted, unless it switched to an API role with SET ROLE. Never
-- raises. Decides "any row" versus "own rows only" in enqueue_job / cancel_job and the
-- user-options trigger.
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

-- retry_delay(p_retry_count) -> interval
-- The backoff before retry number p_retry_count (>= 1; smaller counts as 1):
-- least(backoff_base_seconds * 2^(n-1), backoff_max_seconds) * uniform[0.5, 1), from
-- queue_settings. The exponent is capped at 62 so large counts cannot overflow.
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

-- refresh_current_jobs(p_worker_ids) -> void
-- Sets vps_workers.current_jobs of each listed worker to its count of assigned/processing
-- jobs (writes only rows whose count changed). Invariant it keeps: current_jobs mirrors the
-- running jobs. Callers must hold those workers' row locks (taken in an earlier statement).
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

-- lock_worker(p_worker_id) -> vps_workers
-- SELECT ... FOR UPDATE of one worker row; an all-null row when the worker is unknown (the
-- caller decides whether that is an error). The first step of every function that changes
-- which jobs a worker holds (lock order: worker row before job rows).
create function supaworker_private.lock_worker(p_worker_id text)
returns public.vps_workers language sql volatile set search_path = '' as $$
  select * from public.vps_workers w where w.worker_id = p_worker_id for update
$$;
comment on function supaworker_private.lock_worker(text) is
  'Locks and returns a worker row (all-null row when unknown). Taken before touching the '
  'worker''s jobs.';

-- fail_attempt(p_job_id, p_worker_id, p_attempt, p_error, p_retryable,
--              p_retry_after_seconds) -> setof job
-- One failed attempt of a running job, fenced by (id, worker, attempt, running status), the
-- single implementation behind fail_job, the reaper and register_worker's restart rule:
-- retry_count + 1; cancel requested -> cancelled; not retryable or retry_count >=
-- max_attempts -> failed (error kept, completed_at set); else pending at now() +
-- retry_delay(retry_count), or at now() + least(p_retry_after_seconds, backoff_max_seconds)
-- when that is given (a handler's Retry-After), with owner and progress cleared. Returns the
-- updated row, or no row when fenced out (a concurrent commit is re-checked after the lock
-- wait). 22023 for a negative delay. The caller holds the worker row lock and refreshes
-- current_jobs.
create function supaworker_private.fail_attempt(
  p_job_id uuid, p_worker_id text, p_attempt integer, p_error text, p_retryable boolean,
  p_retry_after_seconds integer
) returns setof public.processing_queue
language plpgsql volatile set search_path = '' as $$
declare
  v_job    public.processing_queue;
  v_retry  integer;
  v_status text;
  v_delay  interval;
begin
  if p_retry_after_seconds is not null and p_retry_after_seconds < 0 then
    perform supaworker_private.raise_error('22023',
      pg_catalog.format('p_retry_after_seconds must be >= 0, got %s', p_retry_after_seconds),
      'Pass null for the default backoff.');
  end if;
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
  if p_retry_after_seconds is null then
    v_delay := supaworker_private.retry_delay(v_retry);
  else
    select make_interval(secs => least(p_retry_after_seconds::numeric, s.backoff_max_seconds))
      into v_delay from public.queue_settings s;
  end if;

  return query
  update public.processing_queue q set
    status           = v_status,
    retry_count      = v_retry,
    error_message    = left(coalesce(p_error, 'the worker gave no error message'), 10000),
    result           = null,
    run_at           = case when v_status = 'pending' then now() + v_delay else q.run_at end,
    assigned_to      = case when v_status = 'pending' then null else q.assigned_to end,
    assigned_at      = case when v_status = 'pending' then null else q.assigned_at end,
    started_at       = case when v_status = 'pending' then null else q.started_at end,
    progress_percent = case when v_status = 'pending' then null else q.progress_percent end,
    progress_message = case when v_status = 'pending' then null else q.progress_message end,
    completed_at     = case when v_status = 'pending' then null else now() end
  where q.id = p_job_id
  returning q.*;
end $$;
comment on function supaworker_private.fail_attempt(uuid, text, integer, text, boolean, integer) is
  'One failed attempt of a running job, fenced by (id, worker, attempt): retry_count + 1; '
  'cancel requested -> cancelled; not retryable or retry_count >= max_attempts -> failed '
  '(error kept, completed_at set); else pending at now() + retry_delay(retry_count), or '
  'now() + least(p_retry_after_seconds, backoff_max_seconds) when that is not null. '
  'Returns the row, or nothing when fenced out. Caller holds the worker row lock.';

-- fail_attempt(p_job_id, p_worker_id, p_attempt, p_error, p_retryable) -> setof job
-- The same with the default backoff, for the reaper and register_worker's restart rule.
create function supaworker_private.fail_attempt(
  p_job_id uuid, p_worker_id text, p_attempt integer, p_error text, p_retryable boolean
) returns setof public.processing_queue
language sql volatile set search_path = '' as $$
  select * from supaworker_private.fail_attempt(p_job_id, p_worker_id, p_attempt, p_error,
                                               p_retryable, null::integer)
$$;
comment on function supaworker_private.fail_attempt(uuid, text, integer, text, boolean) is
  'fail_attempt with the default backoff (p_retry_after_seconds null). Caller holds the '
  'worker row lock.';

-- release(p_worker_id, p_job_ids) -> integer
-- Puts the worker's running jobs (all when p_job_ids is null) back to pending without
-- spending a retry (retry_count and run_at kept, progress cleared); a job with a cancel
-- request becomes cancelled instead. Returns how many changed. Behind release_jobs and
-- deregister_worker; the caller holds the worker row lock and refreshes current_jobs.
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

-- next_fair_tag(p_queue, p_priority, p_user_id, p_user_priority) -> bigint
-- Fair order across owners (issue 18, docs/queue-semantics.md "Fair order"): the start tag
-- of a job that becomes pending as new work for owner p_user_id (null: the nil uuid, one
-- shared owner for jobs without one) at (p_queue, p_priority):
--   tag = greatest(V, last tag of this owner at this level + 1)
-- where V, the level's virtual time, is the tag of its first due pending job in claim order,
-- or when none is due the highest tag ever given at the level (so an owner who was idle gets
-- no credit and one who was busy no debt). Records the tag in owner_clock, and that the
-- owner uses user_priority when p_user_priority is not 0. Cost: one probe of
-- processing_queue_claim_idx, one of owner_clock_level_idx when nothing is due, one upsert
-- of the owner's clock row (contended only by that owner's own enqueues).
-- Who: enqueue_job, retry_job, retry_failed_jobs. Raises nothing of its own.
create function supaworker_private.next_fair_tag(
  p_queue text, p_priority integer, p_user_id uuid, p_user_priority integer
) returns bigint
language plpgsql volatile set search_path = '' as $$
declare
  v_owner   uuid := coalesce(p_user_id, '00000000-0000-0000-0000-000000000000'::uuid);
  v_virtual bigint;
  v_tag     bigint;
begin
  select q.fair_tag into v_virtual from public.processing_queue q
   where q.status = 'pending' and q.queue = p_queue and q.priority = p_priority
     and q.run_at <= now()
   order by q.fair_tag, q.created_at
   limit 1;
  if v_virtual is null then
    select max(c.last_tag) into v_virtual from supaworker_private.owner_clock c
     where c.queue = p_queue and c.priority = p_priority;
  end if;
  insert into supaworker_private.owner_clock as c
    (queue, priority, user_id, last_tag, uses_priority)
  values (p_queue, p_priority, v_owner, coalesce(v_virtual, 0), coalesce(p_user_priority, 0) <> 0)
  on conflict (queue, priority, user_id) do update
    set last_tag = greatest(excluded.last_tag, c.last_tag + 1),
        uses_priority = c.uses_priority or excluded.uses_priority
  returning c.last_tag into v_tag;
  return v_tag;
end $$;
comment on function supaworker_private.next_fair_tag(text, integer, uuid, integer) is
  'Fair order: the start tag of a new pending job of an owner at (queue, priority): '
  'greatest(V, the owner''s last tag + 1), V the first due pending tag of the level or, none '
  'being due, its highest tag. Records it in owner_clock.';

-- check_pending_quota(p_user_id, p_adding) -> void
-- queue_settings.max_pending_per_user (null: nothing to check; so are jobs without an owner):
-- refuses, with PT429 (HTTP 429) naming the limit and the count, when the owner's pending,
-- assigned and processing jobs plus p_adding would exceed it. Takes the owner's quota lock
-- (a waiting transaction-level advisory lock: enqueues of one owner may wait for each other,
-- the claim never takes it) before counting, so two enqueues cannot both see "one below".
-- Cost: one count through processing_queue_owner_status_idx, bounded by the quota.
-- Who: enqueue_job (and the bulk enqueue), before anything is written. Errors: PT429.
create function supaworker_private.check_pending_quota(p_user_id uuid, p_adding integer)
returns void language plpgsql volatile set search_path = '' as $$
declare
  v_limit  integer;
  v_active integer;
begin
  select s.max_pending_per_user into v_limit from public.queue_settings s;
  if v_limit is null or p_user_id is null then
    return;
  end if;
  perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('supaworker.pending_quota'),
                                           pg_catalog.hashtext(p_user_id::text));
  select count(*) into v_active from public.processing_queue q
   where q.user_id = p_user_id and q.status in ('pending', 'assigned', 'processing');
  if v_active + p_adding > v_limit then
    perform supaworker_private.raise_error('PT429',
      pg_catalog.format('user %s has %s pending or running jobs; max_pending_per_user is %s',
                        p_user_id, v_active, v_limit),
      'Wait until some of them finish, or raise queue_settings.max_pending_per_user.');
  end if;
end $$;
comment on function supaworker_private.check_pending_quota(uuid, integer) is
  'max_pending_per_user: PT429 (naming the limit and the count) when the owner''s pending, '
  'assigned and processing jobs plus p_adding would exceed it; under the owner''s quota lock.';

-- requires_met(p_requires, p_capabilities) -> boolean
-- Routing (issue 18, docs/queue-semantics.md "Routing"): true when a worker with
-- p_capabilities may take a job with p_requires. Each key of p_requires must be satisfied:
--   a comparison, an object whose keys are all among gte, lte, eq, in, e.g.
--     {"max_file_size": {"gte": 20971520}}: the capability exists and
--     gte / lte: is a number >= / <= the bound; eq: equals the value (jsonb equality, so
--     1 = 1.0); in: equals one of the array's elements;
--   anything else: jsonb containment of {key: value} in p_capabilities, as before
--     ({"langs": ["de"]} is satisfied by {"langs": ["en", "de"]}).
-- An empty p_requires is always met. Immutable (the claim evaluates it per candidate row).
-- Who: the claim, queue_stats. Raises nothing (enqueue_job checks the comparisons first,
-- requires_problem).
create function supaworker_private.requires_met(p_requires jsonb, p_capabilities jsonb)
returns boolean
language plpgsql immutable parallel safe set search_path = '' as $$
declare
  v_key    text;
  v_wanted jsonb;
  v_have   jsonb;
begin
  for v_key, v_wanted in select r.key, r.value from jsonb_each(p_requires) r loop
    if jsonb_typeof(v_wanted) = 'object' and v_wanted <> '{}'::jsonb
       and not exists (select from jsonb_object_keys(v_wanted) k
                        where k not in ('gte', 'lte', 'eq', 'in')) then
      v_have := p_capabilities -> v_key;
      if v_have is null then
        return false;
      end if;
      -- jsonb orders numbers numerically; both sides are checked to be numbers first.
      if v_wanted ? 'gte' and not (jsonb_typeof(v_have) = 'number'
                                   and jsonb_typeof(v_wanted -> 'gte') = 'number'
                                   and v_have >= v_wanted -> 'gte') then
        return false;
      end if;
      if v_wanted ? 'lte' and not (jsonb_typeof(v_have) = 'number'
                                   and jsonb_typeof(v_wanted -> 'lte') = 'number'
                                   and v_have <= v_wanted -> 'lte') then
        return false;
      end if;
      if v_wanted ? 'eq' and v_have <> v_wanted -> 'eq' then
        return false;
      end if;
      if v_wanted ? 'in' and not (jsonb_typeof(v_wanted -> 'in') = 'array'
                                  and exists (select from jsonb_array_elements(v_wanted -> 'in') e
                                               where e.value = v_have)) then
        return false;
      end if;
    elsif not jsonb_build_object(v_key, v_wanted) <@ p_capabilities then
      return false;
    end if;
  end loop;
  return true;
end $$;
comment on function supaworker_private.requires_met(jsonb, jsonb) is
  'Routing: true when capabilities satisfy every key of requires: a comparison object '
  '({"gte": n}, {"lte": n}, {"eq": v}, {"in": [..]}, combinable) compares the capability, '
  'any other value must be contained (jsonb @>).';

-- requires_problem(p_requires) -> text
-- What is wrong with the comparisons in p_requires (an object), or null: a value whose keys
-- include one of gte, lte, eq, in must use only those; gte and lte take numbers, in a
-- non-empty array. The message names the key. Who: enqueue_job and enqueue_jobs, which
-- raise it as 22023. Raises nothing.
create function supaworker_private.requires_problem(p_requires jsonb)
returns text language plpgsql immutable set search_path = '' as $$
declare
  v_key    text;
  v_wanted jsonb;
begin
  for v_key, v_wanted in select r.key, r.value from jsonb_each(p_requires) r order by r.key loop
    continue when jsonb_typeof(v_wanted) <> 'object'
      or not v_wanted ?| array['gte', 'lte', 'eq', 'in'];
    if exists (select from jsonb_object_keys(v_wanted) k where k not in ('gte', 'lte', 'eq', 'in'))
    then
      return pg_catalog.format(
        'p_requires.%s mixes comparisons (gte, lte, eq, in) with other keys', v_key);
    end if;
    if (v_wanted ? 'gte' and jsonb_typeof(v_wanted -> 'gte') <> 'number')
       or (v_wanted ? 'lte' and jsonb_typeof(v_wanted -> 'lte') <> 'number') then
      return pg_catalog.format('p_requires.%s: gte and lte take a number', v_key);
    end if;
    if v_wanted ? 'in' and (jsonb_typeof(v_wanted -> 'in') <> 'array'
                            or jsonb_array_length(v_wanted -> 'in') = 0) then
      return pg_catalog.format('p_requires.%s: in takes a non-empty array', v_key);
    end if;
  end loop;
  return null;
end $$;
comment on function supaworker_private.requires_problem(jsonb) is
  'Routing: what is malformed in the comparisons of requires (operators mixed with other '
  'keys, gte/lte not a number, in not a non-empty array), or null.';

-- next_fair_tags(p_queue, p_priority, p_user_id, p_uses_priority, p_count, p_virtual)
--   -> bigint
-- next_fair_tag for p_count new jobs of one owner at once (the bulk enqueue): the first of
-- p_count consecutive tags greatest(p_virtual, last + 1) .., recorded in owner_clock with one
-- upsert. p_virtual is the level's V as next_fair_tag computes it, taken by the caller
-- before any of its upserts (so that one owner's batch does not push another's V when the
-- level is idle). p_uses_priority: one of the jobs has a user_priority.
-- Who: enqueue_jobs. Raises nothing of its own.
create function supaworker_private.next_fair_tags(
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
create function supaworker_private.bulk_items(p_jobs jsonb, p_privileged boolean)
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
create function supaworker_private.bulk_problem(
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
create function supaworker_private.admit_keys(p_concurrency_key text, p_rate_limit_key text)
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
