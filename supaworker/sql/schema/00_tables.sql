-- supaworker, current schema: tables, indexes, row-level security, Realtime.
--
-- supaworker/sql/schema/ is what a reader opens: the schema as it stands after every migration
-- in supabase/migrations/ (what `supabase db push` applies; they stay as they are). Loaded in
-- file-name order into a fresh database, these files give the same schema as the migrations
-- (tests/sql/test_schema_definitions.py). To change the schema, edit the definition here AND
-- write a new migration (docs/architecture.md, "Changing the schema").

-- Helpers that must not be reachable through PostgREST (which exposes only `public` and
-- `graphql_public`) live in their own schema; only the owner (postgres) may use it.
create schema supaworker_private;
revoke all on schema supaworker_private from public, anon, authenticated, service_role;
comment on schema supaworker_private is
  'supaworker internals (trigger functions, the reaper, backoff). Not part of the API.';

-- ---------------------------------------------------------------------------------------
-- user_documents: the documents that jobs are about (migration 20261128000100)
-- ---------------------------------------------------------------------------------------
-- Jobs reference public.user_documents(id) and take their owner from user_documents.user_id.
-- A fresh project gets the minimal table below; a project that already has its own
-- user_documents table keeps it exactly as it is (columns, grants, RLS policies): this block
-- then only checks that the two columns the queue relies on exist. This is the only
-- conditional in these files: it is about the app's table, not about re-running.

do $$
begin
  if to_regclass('public.user_documents') is null then
    create table public.user_documents (
      id           uuid primary key default gen_random_uuid(),
      user_id      uuid not null references auth.users (id) on delete cascade,
      name         text,
      storage_path text,
      content      text,  -- nullable: lets the demo ship a document's text without Storage
      created_at   timestamptz not null default now()
    );
    comment on table public.user_documents is
      'Documents owned by users (created by supaworker because the project had none). '
      'A processing_queue entry references one document; its owner is user_id.';

    create index user_documents_user_id_idx on public.user_documents (user_id);

    alter table public.user_documents enable row level security;

    -- Owners manage their own rows. `(select auth.uid())` is evaluated once per statement.
    create policy user_documents_select_own on public.user_documents
      for select to authenticated using ((select auth.uid()) = user_id);
    create policy user_documents_insert_own on public.user_documents
      for insert to authenticated with check ((select auth.uid()) = user_id);
    create policy user_documents_update_own on public.user_documents
      for update to authenticated
      using ((select auth.uid()) = user_id) with check ((select auth.uid()) = user_id);
    create policy user_documents_delete_own on public.user_documents
      for delete to authenticated using ((select auth.uid()) = user_id);

    -- Supabase's default privileges grant everything to anon and authenticated: start from
    -- nothing, then grant exactly what the policies above are meant to filter.
    revoke all on table public.user_documents from public, anon, authenticated, service_role;
    grant select, insert, update, delete on table public.user_documents to authenticated;
    grant select, insert, update, delete on table public.user_documents to service_role;
  else
    -- An application table: leave it alone, but fail early and clearly if the queue cannot
    -- work with it (the job's owner is read from user_documents.user_id).
    if not exists (
      select from pg_catalog.pg_attribute a
      where a.attrelid = 'public.user_documents'::regclass and a.attname = 'id'
        and a.atttypid = 'uuid'::regtype and not a.attisdropped
    ) or not exists (
      select from pg_catalog.pg_attribute a
      where a.attrelid = 'public.user_documents'::regclass and a.attname = 'user_id'
        and a.atttypid = 'uuid'::regtype and not a.attisdropped
    ) then
      raise exception 'public.user_documents exists but lacks "id uuid" or "user_id uuid"'
        using hint = 'supaworker needs user_documents(id uuid unique, user_id uuid); '
                     'add the columns or rename the existing table before migrating.';
    end if;
  end if;
end $$;

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
-- The claim's own order, for workers that serve every queue (migration 20261128001200:
-- without it such a worker read and sorted the whole pending backlog on every claim,
-- 64 ms at 10^5 pending in bench/growth.py, 0.7 ms with it).
create index processing_queue_claim_order_idx on public.processing_queue
  (priority desc, run_at, created_at) where status = 'pending';

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
-- Row-level security
-- ---------------------------------------------------------------------------------------
-- RLS is on for every table. Signed-in users read their own jobs and their history; nobody
-- writes through the API: every change goes through the security-definer functions.
-- vps_workers and queue_settings have no "own rows" policy: only service_role (BYPASSRLS)
-- and queue admins (policies *_select_queue_admin in 70_admin.sql, which need the
-- is_queue_admin() predicate defined there) see them. Table grants: 90_grants.sql.

alter table public.processing_queue enable row level security;
alter table public.job_events enable row level security;
alter table public.vps_workers enable row level security;
alter table public.queue_settings enable row level security;

create policy processing_queue_select_own on public.processing_queue
  for select to authenticated using ((select auth.uid()) = user_id);
create policy job_events_select_own on public.job_events
  for select to authenticated using ((select auth.uid()) = user_id);

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

-- Published to Supabase Realtime: the jobs, for frontends that follow their own rows with
-- postgres_changes (kept for existing subscribers; the private Broadcast topics of
-- 75_status_topics.sql are the cheaper and tighter path). Not published (issue 20):
-- vps_workers (each heartbeat updates its row, and every update of a published table is a
-- message to each subscriber that may see it; workers get pause, resume and cancel as
-- Broadcast `control` messages, 35_wakeups.sql, admins the `workers` topic) and job_events
-- (the history has no live subscriber; every row would be decoded for nothing).
-- Every Supabase project has the supabase_realtime publication.
alter publication supabase_realtime add table public.processing_queue;
