-- supaworker: the queue's tables, indexes, triggers, row-level security, grants and
-- the Realtime publication. The functions that implement the queue are in 20261128000300.
-- (The current schema, one file per concern: supaworker/sql/schema/.)
-- docs/architecture.md is the contract, docs/queue-semantics.md explains the rules.

-- Helpers that must not be reachable through PostgREST (which exposes only `public` and
-- `graphql_public`) live in their own schema; only the owner (postgres) may use it.
create schema if not exists supaworker_private;
revoke all on schema supaworker_private from public, anon, authenticated, service_role;
comment on schema supaworker_private is
  'supaworker internals (trigger functions, the reaper, backoff). Not part of the API.';

-- ---------------------------------------------------------------------------------------
-- queue_settings: one row of tunables
-- ---------------------------------------------------------------------------------------
create table public.queue_settings (
  id                   boolean primary key default true check (id),  -- at most one row
  dead_worker_horizon  interval not null default interval '30 seconds'
                       check (dead_worker_horizon > interval '0'),
  rescue_interval      interval not null default interval '5 seconds'
                       check (rescue_interval >= interval '0'),
  backoff_base_seconds numeric  not null default 2 check (backoff_base_seconds > 0),
  backoff_max_seconds  numeric  not null default 3600,
  default_max_attempts integer  not null default 5 check (default_max_attempts between 1 and 100),
  max_payload_bytes    integer  not null default 262144 check (max_payload_bytes > 0),
  retention            interval not null default interval '7 days'
                       check (retention >= interval '0'),
  timeout_grace        interval not null default interval '30 seconds'
                       check (timeout_grace >= interval '0'),
  last_rescue_at       timestamptz,
  updated_at           timestamptz not null default now(),
  constraint queue_settings_backoff_range check (backoff_max_seconds >= backoff_base_seconds)
);
comment on table public.queue_settings is
  'The queue''s tunables (exactly one row). dead_worker_horizon: a worker whose last heartbeat '
  'is older is dead and its jobs are rescued. rescue_interval: claim_next_job runs the reaper '
  'at most this often. backoff: delay = least(base * 2^(retry_count-1), max) * random [0.5, 1). '
  'timeout_grace: extra time after timeout_seconds before a running job counts as timed out. '
  'retention: purge_finished_jobs default age.';
insert into public.queue_settings (id) values (true);

-- ---------------------------------------------------------------------------------------
-- vps_workers: the worker registry
-- ---------------------------------------------------------------------------------------
create table public.vps_workers (
  id                  uuid primary key default gen_random_uuid(),
  worker_id           text not null unique check (length(worker_id) between 1 and 200),
  worker_name         text,
  status              text not null default 'active'
                      check (status in ('active', 'paused', 'offline')),
  last_heartbeat      timestamptz not null default now(),
  max_concurrent_jobs integer not null default 1 check (max_concurrent_jobs between 1 and 1000),
  current_jobs        integer not null default 0 check (current_jobs >= 0),
  capabilities        jsonb not null default '{}'::jsonb
                      check (jsonb_typeof(capabilities) = 'object'),
  queues              text[],  -- null = every queue
  host                text,
  version             text,
  started_at          timestamptz not null default now(),
  created_at          timestamptz not null default now(),
  updated_at          timestamptz not null default now()
);
comment on table public.vps_workers is
  'Workers (one row per worker process, keyed by worker_id). status is the desired state '
  '(active / paused) or offline (deregistered or no heartbeat within dead_worker_horizon). '
  'current_jobs mirrors the count of its assigned/processing jobs.';
create index vps_workers_last_heartbeat_idx on public.vps_workers (last_heartbeat);

-- ---------------------------------------------------------------------------------------
-- processing_queue: one entry per document
-- ---------------------------------------------------------------------------------------
create table public.processing_queue (
  id               uuid primary key default gen_random_uuid(),
  user_document_id uuid not null unique
                   references public.user_documents (id) on delete cascade,
  user_id          uuid,  -- the document's owner, copied at enqueue (RLS, Realtime filters)
  queue            text not null default 'default'
                   check (queue ~ '^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$'),
  status           text not null default 'pending'
                   check (status in ('pending', 'assigned', 'processing',
                                     'completed', 'failed', 'cancelled')),
  priority         integer not null default 0 check (priority between -1000 and 1000),
  payload          jsonb not null default '{}'::jsonb check (jsonb_typeof(payload) = 'object'),
  result           jsonb,
  error_message    text,
  retry_count      integer not null default 0 check (retry_count >= 0),
  attempt          integer not null default 0 check (attempt >= 0),
  max_attempts     integer not null default 5 check (max_attempts between 1 and 100),
  run_at           timestamptz not null default now(),
  timeout_seconds  integer check (timeout_seconds > 0),
  requires         jsonb not null default '{}'::jsonb check (jsonb_typeof(requires) = 'object'),
  progress_percent numeric(5, 2) check (progress_percent between 0 and 100),
  progress_message text,
  cancel_requested boolean not null default false,
  assigned_to      text,
  assigned_at      timestamptz,
  started_at       timestamptz,
  completed_at     timestamptz,
  created_at       timestamptz not null default now(),
  updated_at       timestamptz not null default now(),
  -- A running job always has an owner; a waiting one never has.
  constraint processing_queue_running_has_owner
    check (status not in ('assigned', 'processing') or assigned_to is not null),
  constraint processing_queue_pending_has_no_owner
    check (status <> 'pending' or (assigned_to is null and not cancel_requested))
);
comment on table public.processing_queue is
  'The job queue: one entry per user document. Written only by the supaworker functions. '
  'attempt is the fencing token (+1 on every claim, never reset); retry_count counts failed '
  'attempts in the current cycle. After completed/failed/cancelled, assigned_to keeps the '
  'last owner.';
comment on column public.processing_queue.attempt is
  'Fencing token: incremented by every claim and never reset. Worker calls must present it.';
comment on column public.processing_queue.retry_count is
  'Failed attempts in this cycle (reset when the job is re-queued as a new cycle).';

-- The claim: pending jobs of a queue in claim order (priority desc, run_at, created_at).
create index processing_queue_claim_idx on public.processing_queue
  (queue, priority desc, run_at, created_at) where status = 'pending';
-- The reaper, heartbeats and free-slot counts: running jobs by owner.
create index processing_queue_running_idx on public.processing_queue (assigned_to)
  where status in ('assigned', 'processing');
-- RLS (owner reads) and Realtime filters on user_id.
create index processing_queue_user_id_idx on public.processing_queue (user_id);
-- purge_finished_jobs and the throughput figures of queue_stats.
create index processing_queue_finished_idx on public.processing_queue (completed_at)
  where status in ('completed', 'failed', 'cancelled');

-- ---------------------------------------------------------------------------------------
-- job_events: append-only history, written by triggers on processing_queue
-- ---------------------------------------------------------------------------------------
create table public.job_events (
  id          bigint generated always as identity primary key,
  job_id      uuid not null references public.processing_queue (id) on delete cascade,
  user_id     uuid,
  event       text not null check (event in (
                'enqueued', 'requeued', 'assigned', 'started', 'completed', 'retry_scheduled',
                'failed', 'cancel_requested', 'cancelled', 'released')),
  from_status text,
  to_status   text,
  worker_id   text,
  attempt     integer,
  message     text,
  created_at  timestamptz not null default now()
);
comment on table public.job_events is
  'Append-only history of processing_queue: one row per status change or cancel request, '
  'written by a trigger. Deleted only together with its job (purge, document deletion).';
create index job_events_job_id_idx on public.job_events (job_id, id);
create index job_events_user_id_idx on public.job_events (user_id, id);

-- ---------------------------------------------------------------------------------------
-- Triggers
-- ---------------------------------------------------------------------------------------
create function supaworker_private.touch_updated_at() returns trigger
language plpgsql set search_path = '' as $$
begin
  new.updated_at := now();
  return new;
end $$;
comment on function supaworker_private.touch_updated_at() is
  'BEFORE UPDATE trigger: keeps updated_at current.';

create trigger processing_queue_touch_updated_at before update on public.processing_queue
  for each row execute function supaworker_private.touch_updated_at();
create trigger vps_workers_touch_updated_at before update on public.vps_workers
  for each row execute function supaworker_private.touch_updated_at();
create trigger queue_settings_touch_updated_at before update on public.queue_settings
  for each row execute function supaworker_private.touch_updated_at();

create function supaworker_private.record_job_event() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  v_event   text;
  v_message text;
  v_from    text;
  v_worker  text;
begin
  if tg_op = 'INSERT' then
    v_event := 'enqueued';
  else
    v_from := old.status;
    if new.status is distinct from old.status then
      v_event := case new.status
        when 'pending' then
          case
            when old.status in ('completed', 'failed', 'cancelled') then 'requeued'
            when new.retry_count > old.retry_count then 'retry_scheduled'
            else 'released'
          end
        when 'assigned'   then 'assigned'
        when 'processing' then 'started'
        when 'completed'  then 'completed'
        when 'failed'     then 'failed'
        when 'cancelled'  then 'cancelled'
      end;
    elsif new.cancel_requested and not old.cancel_requested then
      v_event := 'cancel_requested';
    else
      return null;
    end if;
  end if;

  if v_event in ('retry_scheduled', 'failed') then
    v_message := new.error_message;
  end if;
  if v_event not in ('enqueued', 'requeued') then
    v_worker := coalesce(new.assigned_to, old.assigned_to);
  end if;

  insert into public.job_events (job_id, user_id, event, from_status, to_status, worker_id,
                                 attempt, message)
  values (new.id, new.user_id, v_event, v_from, new.status, v_worker, new.attempt, v_message);
  return null;
end $$;
comment on function supaworker_private.record_job_event() is
  'AFTER INSERT/UPDATE trigger on processing_queue: appends one job_events row per status '
  'change or cancel request (enqueued, requeued, assigned, started, completed, '
  'retry_scheduled, released, failed, cancel_requested, cancelled).';

create trigger processing_queue_event_on_insert after insert on public.processing_queue
  for each row execute function supaworker_private.record_job_event();
create trigger processing_queue_event_on_update
  after update of status, cancel_requested on public.processing_queue
  for each row
  when (old.status is distinct from new.status
        or old.cancel_requested is distinct from new.cancel_requested)
  execute function supaworker_private.record_job_event();

create function supaworker_private.forbid_update() returns trigger
language plpgsql set search_path = '' as $$
begin
  raise exception '% is append-only', tg_table_name using errcode = '42501';
end $$;
comment on function supaworker_private.forbid_update() is
  'BEFORE UPDATE trigger that keeps a history table append-only.';
create trigger job_events_append_only before update on public.job_events
  for each row execute function supaworker_private.forbid_update();

revoke all on function supaworker_private.touch_updated_at() from public;
revoke all on function supaworker_private.record_job_event() from public;
revoke all on function supaworker_private.forbid_update() from public;

-- ---------------------------------------------------------------------------------------
-- Row-level security and grants
-- ---------------------------------------------------------------------------------------
alter table public.processing_queue enable row level security;
alter table public.job_events enable row level security;
alter table public.vps_workers enable row level security;
alter table public.queue_settings enable row level security;

-- Signed-in users read their own jobs and their history; nobody writes through the API:
-- every change goes through the security-definer functions. vps_workers and queue_settings
-- have no policy at all: only service_role (BYPASSRLS) sees them.
create policy processing_queue_select_own on public.processing_queue
  for select to authenticated using ((select auth.uid()) = user_id);
create policy job_events_select_own on public.job_events
  for select to authenticated using ((select auth.uid()) = user_id);

-- Supabase's default privileges grant ALL to anon and authenticated (and service_role):
-- revoke everything first, then grant exactly what is needed.
revoke all on table public.processing_queue, public.job_events, public.vps_workers,
                    public.queue_settings
  from public, anon, authenticated, service_role;
revoke all on sequence public.job_events_id_seq from public, anon, authenticated, service_role;

grant select on table public.processing_queue, public.job_events to authenticated;
-- service_role reads everything (dashboards, Realtime) and tunes the settings; job and
-- worker rows change only through the functions, so the state machine cannot be bypassed.
grant select on table public.processing_queue, public.job_events, public.vps_workers,
                      public.queue_settings to service_role;
grant update on table public.queue_settings to service_role;

-- ---------------------------------------------------------------------------------------
-- Realtime
-- ---------------------------------------------------------------------------------------
-- Replica identity: DEFAULT (primary key) for both tables, on purpose.
--  * Realtime checks RLS and filters of INSERT/UPDATE against the NEW row, which is always
--    complete, so `user_id=eq.<uid>` subscriptions work without FULL.
--  * For DELETE, Realtime skips RLS and reduces old_record to the primary key on RLS tables
--    anyway, so FULL would not give subscribers more data.
--  * processing_queue is the hot table (claims, progress, completions); FULL would write the
--    whole old row (payload, result) to WAL on every update for nothing.
--  * job_events is insert-only, where replica identity plays no role.
-- A subscriber that needs the previous status reads from_status on job_events.
alter table public.processing_queue replica identity default;
alter table public.job_events replica identity default;

do $$
begin
  if exists (select from pg_catalog.pg_publication where pubname = 'supabase_realtime') then
    if not exists (select from pg_catalog.pg_publication_tables
                   where pubname = 'supabase_realtime' and schemaname = 'public'
                     and tablename = 'processing_queue') then
      alter publication supabase_realtime add table public.processing_queue;
    end if;
    if not exists (select from pg_catalog.pg_publication_tables
                   where pubname = 'supabase_realtime' and schemaname = 'public'
                     and tablename = 'job_events') then
      alter publication supabase_realtime add table public.job_events;
    end if;
  end if;
end $$;
