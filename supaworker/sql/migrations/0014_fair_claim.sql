-- supaworker: fair order across owners within a queue and priority (issue 18).
--
-- The claim ordered by (priority desc, run_at, created_at), so a user who queued 400
-- documents made every later user's jobs wait behind all of them. Now every job gets a start
-- tag when it becomes pending as new work (enqueue, a new cycle), and the claim orders by
-- (priority desc, fair_tag, created_at):
--   tag = greatest(V, the owner's last tag at this (queue, priority) + 1)
-- V being the tag of the level's first due pending job (or, none due, its highest tag). Owners
-- take turns, oldest first within each (start-time fair queueing; docs/queue-semantics.md,
-- "Fair order"; design in docs/proposals/fair-claim.md). The tag state is written at enqueue,
-- per owner (supaworker_private.owner_clock), never by the claim, so claims still run in
-- parallel. A retry (fail_attempt) and a release keep the job's tag.
--
-- A priority set by an end user (authenticated, -10..10) used to order across users; it is
-- now stored as user_priority and orders only that user's own jobs: the claim fills the
-- owner's turn with its best job by user_priority (swapping the two tags, so the owner gets
-- no extra turn). The service role's priority still orders across users.
--
-- Indexes: the two claim indexes change their second key from run_at to fair_tag (same
-- names). Plain CREATE INDEX because `supabase db push` runs each migration in a
-- transaction; on a large live table, build processing_queue_claim_new_idx-style copies
-- CONCURRENTLY by hand beforehand if the lock matters. Pending rows are backfilled with
-- tags in their old order per owner.

alter table public.processing_queue
  add column fair_tag bigint not null default 0,
  add column user_priority integer not null default 0 check (user_priority between -10 and 10),
  add column owner_seq bigint not null default 0;

create table supaworker_private.owner_clock (
  queue         text    not null,
  priority      integer not null,
  user_id       uuid    not null,
  last_tag      bigint  not null,
  uses_priority boolean not null default false,
  primary key (queue, priority, user_id)
);
comment on table supaworker_private.owner_clock is
  'Fair order: the last start tag given to each owner per (queue, priority), and whether the '
  'owner ever set a user_priority (the claim then picks the owner''s best job for its turn).';
create index owner_clock_level_idx on supaworker_private.owner_clock
  (queue, priority, last_tag);
create index owner_clock_uses_priority_idx on supaworker_private.owner_clock (queue)
  where uses_priority;
alter table supaworker_private.owner_clock enable row level security;
revoke all on table supaworker_private.owner_clock from public, anon, authenticated, service_role;

-- Pending jobs keep their old order within each owner and start taking turns.
update public.processing_queue q set fair_tag = t.tag, owner_seq = t.tag
  from (select p.id, row_number() over (partition by p.queue, p.priority, p.user_id
                                        order by p.run_at, p.created_at) - 1 as tag
          from public.processing_queue p where p.status = 'pending') t
 where q.id = t.id;
insert into supaworker_private.owner_clock (queue, priority, user_id, last_tag)
select q.queue, q.priority, coalesce(q.user_id, '00000000-0000-0000-0000-000000000000'::uuid),
       max(q.fair_tag)
  from public.processing_queue q where q.status = 'pending'
 group by 1, 2, 3;

drop index public.processing_queue_claim_idx;
create index processing_queue_claim_idx on public.processing_queue
  (queue, priority desc, fair_tag, created_at) where status = 'pending';
drop index public.processing_queue_claim_order_idx;
create index processing_queue_claim_order_idx on public.processing_queue
  (priority desc, fair_tag, created_at) where status = 'pending';
create index processing_queue_owner_order_idx on public.processing_queue
  (queue, priority, user_id, user_priority desc, owner_seq) where status = 'pending';

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
create or replace function supaworker_private.next_fair_tag(
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

revoke all on function supaworker_private.next_fair_tag(text, integer, uuid, integer)
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
-- queue_settings.max_payload_bytes, PT409 the entry was deleted concurrently (call again).
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

  -- An active entry is returned as is (before any tag is taken, so that repeating a call
  -- costs the owner no turn); a finished one starts a new cycle (attempt, the fencing token,
  -- is never reset).
  select * into v_job from public.processing_queue q
   where q.user_document_id = p_user_document_id
   for update;
  if v_job.id is not null and v_job.status not in ('completed', 'failed', 'cancelled') then
    return v_job;
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
  'queue_settings.max_payload_bytes.';

-- retry_job(p_job_id) -> processing_queue
-- A failed or cancelled job becomes pending now as a new cycle (retry_count 0, error and
-- result cleared, attempt kept, a new fair-order tag); a pending job is returned unchanged.
-- Who: service_role; queue admins through admin_retry_job.
-- Errors: PT404 unknown job, PT409 running (assigned/processing) or completed job.
create or replace function public.retry_job(p_job_id uuid) returns public.processing_queue
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
      fair_tag = v_tag, owner_seq = v_tag,
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
create or replace function public.retry_failed_jobs(p_queue text default null) returns integer
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
    fair_tag = t.tag, owner_seq = t.tag,
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
-- later turns keep their places (processing_queue_owner_order_idx); otherwise the claim is
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

  if v_slots > 0 and not exists (
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
    -- the owner's best job fills it. Bounded: at most v_slots turns.
    v_budget := v_slots;
    while v_claimed < v_slots and v_budget > 0 loop
      v_budget := v_budget - 1;
      select * into v_turn from public.processing_queue q
       where q.status = 'pending'
         and not q.cancel_requested
         and q.run_at <= now()
         and (v_queues is null or q.queue = any (v_queues))
         and q.requires <@ v_worker.capabilities
       order by q.priority desc, q.fair_tag, q.created_at
       limit 1
       for update skip locked;
      exit when not found;
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
  'user_priority).';

comment on function public.claim_next_job(text, integer, text[], boolean) is
  'Claim up to p_limit pending jobs for an active worker, never more than its free slots '
  '(max_concurrent_jobs - its assigned/processing jobs), FOR UPDATE SKIP LOCKED, in fair '
  'order (priority desc, fair_tag, created_at: turns across owners); only jobs with run_at <= '
  'now(), not cancel-requested, in p_queues (null: the worker''s queues; null: all) and '
  'whose requires is contained in the worker''s capabilities. Claimed jobs get assigned_to, '
  'assigned_at and attempt + 1 (the fencing token to pass back) and become assigned, or with '
  'p_start processing with started_at = now() (no start_job needed). Unknown, paused or '
  'offline worker: empty set. Runs the reaper first, at most once per '
  'queue_settings.rescue_interval. 22023 for p_limit outside 0..1000.';

-- The schema this migration leaves (0012_schema_version.sql: every migration sets its number).
create or replace function public.supaworker_schema_version() returns integer
language sql
immutable
security definer
set search_path = ''
as $$ select 14 $$;
