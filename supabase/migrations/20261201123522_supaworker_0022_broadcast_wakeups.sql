-- supaworker: few Realtime messages per job (issue 20). Wake-ups and control signals move
-- from postgres_changes (every new job a message to every worker, every heartbeat a message)
-- to Broadcast from the database on one private topic per worker; vps_workers leaves the
-- publication. Current definitions: supaworker/sql/schema/35_wakeups.sql, 30_claim.sql
-- (the claim as 0018/0019 left it, plus note_claim at its end).

-- ---------------------------------------------------------------------------------------
-- Wake-ups and control signals over Broadcast (issue 20): few Realtime messages per job.
-- ---------------------------------------------------------------------------------------
-- Each worker joins one private Broadcast topic, `worker:<worker_id>`, with the service role
-- (which bypasses the RLS on realtime.messages, on hosted and locally: no policy needed).
-- The database sends it:
--  * `wake` {job_id, queue, run_at}: a job it can take arrived while it was waiting for work. One
--    job wakes at most one worker, chosen here: active, serving the job's queue (its
--    registered queues), whose capabilities meet the job's requires (requires_met, as the
--    claim), and awaiting work (its last claim came back short). Choosing clears
--    that flag, so a burst of N jobs on a queue with W waiting workers sends at most
--    min(N, W) wake-ups; a worker is waiting again only after it claimed and found too
--    little. A job due later (a retry with backoff, up to 30 s ahead: the workers' Realtime
--    safety poll covers the rest) is sent with its run_at to one waiting worker whose next
--    timed wake-up is not already earlier, which keeps the flag (it is still idle now).
--  * `control` {}: its status changed (pause, resume) or one of its jobs got a cancel
--    request; it runs a heartbeat at once, which answers both.
-- Nothing else reaches workers: vps_workers left the publication (a heartbeat is no longer a
-- message) and workers no longer follow processing_queue's changes (their own status
-- changes were sent back to them). The safety poll stays: a wake-up lost in a reconnect or
-- racing the worker's own claim is caught by it.
-- Flow control (30_claim.sql) is the claim's business, not the wake-up's: a woken worker
-- whose claim the owner's cap, a concurrency key or an empty rate bucket turns away comes
-- back short, so it waits again (awaiting) and the next job can wake it. What frees a cap
-- or a key is a completion, and the completing worker claims next (complete_and_claim);
-- a refilled rate bucket is found by the safety poll, as before Broadcast.

-- worker_wakeups: the wake-up state of each worker, apart from vps_workers so that heartbeats
-- (which lock and update vps_workers rows) never make an enqueue skip a waiting worker.
create table supaworker_private.worker_wakeups (
  worker_id    text primary key references public.vps_workers (worker_id) on delete cascade,
  awaiting     boolean not null default false,
  woken_at     timestamptz,
  next_wake_at timestamptz
);
comment on table supaworker_private.worker_wakeups is
  'Wake-up state per worker: awaiting = its last claim came back short (it waits for work); '
  'woken_at = when a wake-up was last sent to it; next_wake_at = run_at of the earliest '
  'job due later it was told about.';
alter table supaworker_private.worker_wakeups enable row level security;

-- note_claim(p_worker_id, p_awaiting) -> void
-- Records after a claim whether the worker now waits for work (writes only on a change).
-- Who: claim_jobs only.
create function supaworker_private.note_claim(p_worker_id text, p_awaiting boolean)
returns void
language sql volatile set search_path = '' as $$
  insert into supaworker_private.worker_wakeups as k (worker_id, awaiting)
  values (p_worker_id, p_awaiting)
  on conflict (worker_id) do update set awaiting = excluded.awaiting
   where k.awaiting is distinct from excluded.awaiting
$$;
comment on function supaworker_private.note_claim(text, boolean) is
  'After a claim: whether the worker now waits for work (worker_wakeups.awaiting).';

-- wake_for_job(): AFTER INSERT, and AFTER UPDATE of status, on processing_queue.
-- A job that became pending (new, retried, released, re-queued) wakes at most one waiting
-- worker that can take it (see above). SKIP LOCKED: concurrent enqueues pick different
-- workers instead of queueing behind one. security definer: users' direct inserts too.
create function supaworker_private.wake_for_job() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  v_worker text;
  v_due    boolean := new.run_at <= now();
begin
  if new.status <> 'pending' or new.cancel_requested
     or (tg_op = 'UPDATE' and old.status = 'pending')
     or new.run_at > now() + interval '30 seconds' then
    return null;
  end if;
  select k.worker_id into v_worker
    from supaworker_private.worker_wakeups k
    join public.vps_workers w on w.worker_id = k.worker_id
   where k.awaiting and w.status = 'active'
     and (w.queues is null or new.queue = any (w.queues))
     and (new.requires = '{}'::jsonb
          or supaworker_private.requires_met(new.requires, w.capabilities))
     and (v_due or k.next_wake_at is null or k.next_wake_at <= now()
          or new.run_at < k.next_wake_at)
   order by k.woken_at nulls first
   limit 1
   for update of k skip locked;
  if v_worker is null then
    return null;
  end if;
  if v_due then
    update supaworker_private.worker_wakeups k set awaiting = false, woken_at = now()
     where k.worker_id = v_worker;
  else
    update supaworker_private.worker_wakeups k set next_wake_at = new.run_at, woken_at = now()
     where k.worker_id = v_worker;
  end if;
  perform realtime.send(jsonb_build_object('job_id', new.id, 'queue', new.queue,
                                           'run_at', new.run_at),
                        'wake', 'worker:' || v_worker, true);
  return null;
end $$;
comment on function supaworker_private.wake_for_job() is
  'AFTER INSERT/UPDATE OF status trigger on processing_queue: a job that became pending '
  'sends one Broadcast `wake` to one waiting worker that can take it (worker:<worker_id>).';

-- The WHEN conditions keep the function from running at all for the rows most statements
-- change (a claim, a completion, a progress write): a trigger condition costs no PL/pgSQL
-- call. (One trigger per event: an INSERT trigger's condition cannot read OLD.)
create trigger processing_queue_wake_on_insert after insert on public.processing_queue
  for each row when (new.status = 'pending' and not new.cancel_requested)
  execute function supaworker_private.wake_for_job();
create trigger processing_queue_wake_on_requeue after update of status
  on public.processing_queue
  for each row when (new.status = 'pending' and old.status <> 'pending'
                     and not new.cancel_requested)
  execute function supaworker_private.wake_for_job();

-- signal_worker(): AFTER UPDATE of status on vps_workers (pause, resume) and AFTER
-- UPDATE of cancel_requested on processing_queue (a cancel request for a running job):
-- a Broadcast `control` to the worker concerned, which heartbeats at once.
create function supaworker_private.signal_worker() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  v_worker text;
begin
  if tg_table_name = 'vps_workers' then
    -- pause and resume only: offline is the reaper's or the worker's own shutdown, and the
    -- heartbeat's offline -> active comes from the worker itself.
    if new.status = 'paused' and old.status <> 'paused'
       or new.status = 'active' and old.status = 'paused' then
      v_worker := new.worker_id;
    end if;
  elsif new.cancel_requested and not old.cancel_requested
        and new.status in ('assigned', 'processing') then
    v_worker := new.assigned_to;
  end if;
  if v_worker is not null then
    perform realtime.send('{}'::jsonb, 'control', 'worker:' || v_worker, true);
  end if;
  return null;
end $$;
comment on function supaworker_private.signal_worker() is
  'AFTER UPDATE trigger (vps_workers.status, processing_queue.cancel_requested): Broadcast '
  '`control` to worker:<worker_id>, so a pause, resume or cancel reaches it at once.';

-- WHEN: a heartbeat that sets an unchanged status, or a write of an unchanged
-- cancel_requested, runs nothing.
create trigger vps_workers_signal after update of status on public.vps_workers
  for each row when (new.status is distinct from old.status)
  execute function supaworker_private.signal_worker();
create trigger processing_queue_signal_cancel after update of cancel_requested
  on public.processing_queue
  for each row when (new.cancel_requested and not old.cancel_requested)
  execute function supaworker_private.signal_worker();

-- The claim (fair order, owner caps, concurrency keys, rate limits: 0014-0018) records at its
-- end whether the worker now waits for work; nothing else in it changes.
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
  -- Wake-ups (35_wakeups.sql): a claim that came back short means the worker now waits for
  -- work (the next job it can take wakes it), one that filled its slots that it comes back
  -- by itself. p_limit 0 is no claim (complete_and_claim that only completes).
  if p_limit > 0 then
    perform supaworker_private.note_claim(p_worker_id, v_slots > 0 and v_claimed < v_slots);
  end if;
end $$;

alter publication supabase_realtime drop table public.vps_workers;

revoke all on table supaworker_private.worker_wakeups
  from public, anon, authenticated, service_role;
revoke all on function supaworker_private.note_claim(text, boolean),
  supaworker_private.wake_for_job(), supaworker_private.signal_worker()
  from public, anon, authenticated, service_role;

-- The schema this migration leaves (0012_schema_version.sql: every migration sets its number).
create or replace function public.supaworker_schema_version() returns integer
language sql
immutable
security definer
set search_path = ''
as $$ select 22 $$;
