-- supaworker: routing by numbers in `requires` (issue 18), and the pending jobs no live
-- worker can take in queue_stats.
--
-- `requires` matched by jsonb containment only, so "a 20 MB document needs a worker whose
-- max_file_size is at least 20 MB" could not be said. A value of `requires` whose keys are
-- all among gte, lte, eq, in is now a comparison against the capability
-- ({"max_file_size": {"gte": 20971520}}, {"lang": {"in": ["de", "en"]}}, combinable); any
-- other value still means containment, so existing routing is unchanged. The claim evaluates
-- supaworker_private.requires_met (immutable) per candidate row (skipped for an empty
-- requires); enqueue_job refuses a malformed comparison with 22023 (requires_problem).
-- queue_stats gains no_capable_worker: {<queue>: n} pending jobs for which no active,
-- heartbeating worker serves the queue with capabilities meeting their requires
-- (`supaworker status` prints it).

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
create or replace function supaworker_private.requires_met(p_requires jsonb, p_capabilities jsonb)
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
create or replace function supaworker_private.requires_problem(p_requires jsonb)
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

revoke all on function supaworker_private.requires_met(jsonb, jsonb),
                       supaworker_private.requires_problem(jsonb)
  from public, anon, authenticated, service_role;

-- enqueue_job(p_user_document_id, p_priority 0, p_payload '{}', p_queue 'default',
--             p_max_attempts null, p_run_at null, p_timeout_seconds null, p_requires '{}')
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
       timeout_seconds, requires, user_priority, fair_tag, owner_seq)
    values
      (p_user_document_id, v_owner, v_queue, v_priority, v_payload, v_max_attempts,
       coalesce(p_run_at, now()), p_timeout_seconds, v_requires, v_user_priority, v_tag, v_tag)
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
  '-1000..1000 (orders across owners). authenticated: own documents only, p_priority clamped '
  'to -10..10 and stored as user_priority (orders only the caller''s own jobs). '
  'Errors: 22023 bad argument (payload/requires not an object, queue name, max_attempts '
  '1..100, timeout > 0), PT404 unknown document, PT403 not the owner, PT413 payload over '
  'queue_settings.max_payload_bytes, PT429 the owner is at max_pending_per_user.';

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
-- moment (a try-lock per owner; the count under processing_queue_active_by_owner_idx). Both
-- cases take one turn per statement, at most v_slots + 32 turns looked at; otherwise the
-- claim is one UPDATE over a FOR UPDATE SKIP LOCKED selection. Claimed jobs get assigned_to,
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

  if v_slots > 0 and v_cap is null and not exists (
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
         order by q.user_priority desc, q.owner_seq
         limit 1
         for update skip locked;
        if found and v_best.id <> v_turn.id then
          -- v_best takes this turn; v_turn takes v_best's place in the owner's order.
          update public.processing_queue q set fair_tag = v_best.fair_tag
           where q.id = v_turn.id;
          v_best.fair_tag := v_turn.fair_tag;
          v_job := v_best;
        end if;
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
  'user_priority), never more than max_running_per_user running jobs of one owner.';

comment on function public.claim_next_job(text, integer, text[], boolean) is
  'Claim up to p_limit pending jobs for an active worker, never more than its free slots '
  '(max_concurrent_jobs - its assigned/processing jobs), FOR UPDATE SKIP LOCKED, in fair '
  'order (priority desc, fair_tag, created_at: turns across owners); only jobs with run_at <= '
  'now(), not cancel-requested, in p_queues (null: the worker''s queues; null: all) and '
  'whose requires the worker''s capabilities meet (comparisons gte/lte/eq/in, else '
  'containment). Claimed jobs get assigned_to, '
  'assigned_at and attempt + 1 (the fencing token to pass back) and become assigned, or with '
  'p_start processing with started_at = now() (no start_job needed). An owner with '
  'queue_settings.max_running_per_user assigned/processing jobs is skipped. Unknown, paused or '
  'offline worker: empty set. Runs the reaper first, at most once per '
  'queue_settings.rescue_interval. 22023 for p_limit outside 0..1000.';

-- queue_stats() -> jsonb
-- {by_status: {<each of the six statuses>: n}, by_queue: {<queue>: {<status>: n}},
--  oldest_pending_seconds (age of the oldest due pending job, from run_at; null when none),
--  workers: {active, paused, offline}, completed_last_minute, completed_last_hour,
--  failed_last_minute, failed_last_hour (failed = finally failed, by completed_at),
--  no_capable_worker: {<queue>: n} pending jobs that no live worker can take (no active
--  worker with a heartbeat within dead_worker_horizon serves the queue with capabilities
--  meeting the job's requires; queues without such jobs are left out)}.
-- Who: service_role; queue admins through admin_queue_stats. Raises nothing.
create or replace function public.queue_stats() returns jsonb
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

-- The schema this migration leaves (0012_schema_version.sql: every migration sets its number).
create or replace function public.supaworker_schema_version() returns integer
language sql
immutable
security definer
set search_path = ''
as $$ select 16 $$;
