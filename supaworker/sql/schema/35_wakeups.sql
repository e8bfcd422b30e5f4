-- supaworker, current schema: wake-ups and control signals over Realtime Broadcast.
--
-- supaworker/sql/schema/ is what a reader opens: the schema as it stands after every migration
-- in supabase/migrations/ (what `supabase db push` applies; they stay as they are). Loaded in
-- file-name order into a fresh database, these files give the same schema as the migrations
-- (tests/sql/test_schema_definitions.py). To change the schema, edit the definition here AND
-- write a new migration (docs/architecture.md, "Changing the schema").

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
