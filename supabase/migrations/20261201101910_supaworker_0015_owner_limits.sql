-- supaworker: per-owner limits (issue 18): queue_settings.max_running_per_user and
-- queue_settings.max_pending_per_user (both null, off, by default).
--
-- max_running_per_user: never more of one owner's jobs assigned/processing at once, over all
-- workers, also while workers are killed and rescued. Enforced in the claim alone, since
-- only a claim raises an owner's running count (completion, failure, release, cancel, the
-- reaper and register_worker only lower it): per owner a try-lock (pg_try_advisory_xact_lock;
-- an owner being claimed elsewhere is skipped, the claim never waits), then a count of its
-- running jobs in the next statement (a new snapshot that sees the previous holder's claims).
-- A killed worker's jobs count until the reaper frees them. No counter row: it would be
-- written by every claim and every final write of the owner (docs/proposals/fair-claim.md).
--
-- max_pending_per_user: enqueue refuses, with its own SQLSTATE PT429 (HTTP 429) and a message
-- naming the limit and the count, an owner who already has that many pending, assigned or
-- processing jobs; nothing is written. Enqueues of one owner serialise on a waiting
-- advisory lock (only while a quota is set), taken before the job row.
--
-- Both count through one new partial index on (user_id, status), bounded by the limit.

alter table public.queue_settings
  add column max_running_per_user integer check (max_running_per_user >= 1),
  add column max_pending_per_user integer check (max_pending_per_user >= 1);
comment on table public.queue_settings is
  'The queue''s tunables (exactly one row). dead_worker_horizon: a worker whose last heartbeat '
  'is older is dead and its jobs are rescued. rescue_interval: claim_next_job runs the reaper '
  'at most this often. backoff: delay = least(base * 2^(retry_count-1), max) * random [0.5, 1). '
  'timeout_grace: extra time after timeout_seconds before a running job counts as timed out. '
  'retention: purge_finished_jobs default age. max_running_per_user: at most this many jobs '
  'of one owner assigned/processing at once, over all workers (null: no cap). '
  'max_pending_per_user: enqueue refuses (PT429) an owner with this many pending, assigned '
  'or processing jobs (null: no quota).';

create index processing_queue_active_by_owner_idx on public.processing_queue (user_id, status)
  where status in ('pending', 'assigned', 'processing');

-- check_pending_quota(p_user_id, p_adding) -> void
-- queue_settings.max_pending_per_user (null: nothing to check; so are jobs without an owner):
-- refuses, with PT429 (HTTP 429) naming the limit and the count, when the owner's pending,
-- assigned and processing jobs plus p_adding would exceed it. Takes the owner's quota lock
-- (a waiting transaction-level advisory lock: enqueues of one owner may wait for each other,
-- the claim never takes it) before counting, so two enqueues cannot both see "one below".
-- Cost: one count through processing_queue_active_by_owner_idx, bounded by the quota.
-- Who: enqueue_job (and the bulk enqueue), before anything is written. Errors: PT429.
create or replace function supaworker_private.check_pending_quota(p_user_id uuid, p_adding integer)
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

revoke all on function supaworker_private.check_pending_quota(uuid, integer)
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
-- Errors: 22023 bad argument (document id missing, payload/requires not an object, queue
-- name, max_attempts outside 1..100, timeout <= 0, service priority outside -1000..1000),
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
-- (null: the worker's queues; null again: every queue), requires contained in the worker's
-- capabilities. Claim order (docs/queue-semantics.md, "Fair order"): priority desc, fair_tag,
-- created_at, which takes turns across owners within a (queue, priority) (indexes
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
         and q.requires <@ v_worker.capabilities
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
         and q.requires <@ v_worker.capabilities
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
           and q.requires <@ v_worker.capabilities
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
  'whose requires is contained in the worker''s capabilities. Claimed jobs get assigned_to, '
  'assigned_at and attempt + 1 (the fencing token to pass back) and become assigned, or with '
  'p_start processing with started_at = now() (no start_job needed). An owner with '
  'queue_settings.max_running_per_user assigned/processing jobs is skipped. Unknown, paused or '
  'offline worker: empty set. Runs the reaper first, at most once per '
  'queue_settings.rescue_interval. 22023 for p_limit outside 0..1000.';

-- The schema this migration leaves (0012_schema_version.sql: every migration sets its number).
create or replace function public.supaworker_schema_version() returns integer
language sql
immutable
security definer
set search_path = ''
as $$ select 15 $$;
