-- supaworker 0028: the turn-by-turn claim of a worker of one queue reads that queue only.
--
-- The claim's turn-by-turn path (max_running_per_user, concurrency_limits or rate_limits set)
-- selects each turn's job in a statement that runs once per turn, so PL/pgSQL soon plans it
-- generically. 0025 added `(v_queue is null or q.queue = v_queue)` to it, which a generic
-- plan cannot use as an index condition: every turn walked the all-queues claim order past
-- other queues' pending rows (16 slots beside 10^5 pending jobs in another queue: ~90 ms a
-- claim, against ~4 ms without them; docs/benchmarks.md, bench/fair_claim.py
-- --other-backlog). The turn's selection is now two statements, one with a bare
-- `q.queue = v_queue` for a worker of one queue (claim_idx's slice of that queue, in claim
-- order, whatever the plan), one as before for several or all queues. Nothing else changes:
-- same signature, same order, same limits.
--
-- Rolling upgrades: claim_jobs keeps its signature and results; workers of every version
-- call it through claim_next_job / complete_and_claim as before.

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
  v_queue   text;     -- the one queue of v_queues, when it holds one
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

  perform supaworker_private.maybe_rescue(p_worker_id);

  -- Serialises this worker's own claims, so its free slots cannot be over-committed.
  select * into v_worker from public.vps_workers w where w.worker_id = p_worker_id for update;
  if not found or v_worker.status <> 'active' then
    return;  -- unknown, paused or offline worker: nothing
  end if;

  select count(*) into v_running from public.processing_queue q
   where q.assigned_to = p_worker_id and q.status in ('assigned', 'processing');
  v_slots := least(p_limit, v_worker.max_concurrent_jobs + p_prefetch - v_running);
  v_queues := coalesce(p_queues, v_worker.queues);
  -- Most workers serve one queue. `queue = any (array)` lets the planner use neither
  -- processing_queue_claim_idx's order nor its queue prefix, so it walks the all-queues order
  -- (processing_queue_claim_order_idx) past every other queue's pending rows (bench/
  -- fair_claim.py --other-backlog); an equality on the one queue lets it read that queue's
  -- slice of claim_idx in claim order.
  if pg_catalog.cardinality(v_queues) = 1 then
    v_queue := v_queues[1];
  end if;
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
         and (v_queue is null or q.queue = v_queue)
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
      -- Two statements, not one with `v_queue is null or ...`: this one runs once per turn,
      -- so PL/pgSQL soon plans it generically, and there only a bare `q.queue = v_queue`
      -- lets the plan read the queue's slice of claim_idx in claim order (one with the
      -- disjunction walked every queue's pending rows on every turn: bench/fair_claim.py
      -- --other-backlog).
      if v_queue is not null then
        select * into v_turn from public.processing_queue q
         where q.status = 'pending'
           and q.queue = v_queue
           and not q.cancel_requested
           and q.run_at <= now()
           and (q.requires = '{}'::jsonb
                or supaworker_private.requires_met(q.requires, v_worker.capabilities))
           and (q.user_id is null or q.user_id <> all (v_skip))
           and (q.concurrency_key is null or q.concurrency_key <> all (v_full))
           and (q.rate_limit_key is null or q.rate_limit_key <> all (v_dry))
         order by q.priority desc, q.fair_tag, q.created_at
         limit 1
         for update skip locked;
      else
        select * into v_turn from public.processing_queue q
         where q.status = 'pending'
           and (v_queues is null or q.queue = any (v_queues))
           and not q.cancel_requested
           and q.run_at <= now()
           and (q.requires = '{}'::jsonb
                or supaworker_private.requires_met(q.requires, v_worker.capabilities))
           and (q.user_id is null or q.user_id <> all (v_skip))
           and (q.concurrency_key is null or q.concurrency_key <> all (v_full))
           and (q.rate_limit_key is null or q.rate_limit_key <> all (v_dry))
         order by q.priority desc, q.fair_tag, q.created_at
         limit 1
         for update skip locked;
      end if;
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
  -- Wake-ups (35_wakeups.sql): a claim that came back short means the worker now waits for
  -- work (the next job it can take wakes it), one that filled its slots that it comes back
  -- by itself. p_limit 0 is no claim (complete_and_claim that only completes).
  if p_limit > 0 then
    perform supaworker_private.note_claim(p_worker_id, v_slots > 0 and v_claimed < v_slots);
  end if;
end $$;

-- The schema this migration leaves (0012_schema_version.sql: every migration sets its number).
create or replace function public.supaworker_schema_version() returns integer
language sql
immutable
security definer
set search_path = ''
as $$ select 28 $$;
