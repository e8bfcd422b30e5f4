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
  -- Per-owner limits (migration 0015; null: none).
  max_running_per_user integer check (max_running_per_user >= 1),
  max_pending_per_user integer check (max_pending_per_user >= 1),
  -- A saturated Data API pool postpones declaring workers dead (migration 0021): the
  -- tunable, then the reaper's own record of what it last saw (like last_rescue_at).
  max_rescue_postponement interval not null default interval '5 minutes'
                       check (max_rescue_postponement >= interval '0'),
  pool_saturated_at    timestamptz,
  pool_calm_since      timestamptz,
  constraint queue_settings_backoff_range check (backoff_max_seconds >= backoff_base_seconds)
);
comment on table public.queue_settings is
  'The queue''s tunables (exactly one row). dead_worker_horizon: a worker whose last heartbeat '
  'is older is dead and its jobs are rescued. rescue_interval: claim_next_job runs the reaper '
  'at most this often. backoff: delay = least(base * 2^(retry_count-1), max) * random [0.5, 1). '
  'timeout_grace: extra time after timeout_seconds before a running job counts as timed out. '
  'retention: purge_finished_jobs default age. max_running_per_user: at most this many jobs '
  'of one owner assigned/processing at once, over all workers (null: no cap). '
  'max_pending_per_user: enqueue refuses (PT429) an owner with this many pending, assigned '
  'or processing jobs (null: no quota). max_rescue_postponement: while the Data API '
  '(PostgREST) pool is saturated, and for one dead_worker_horizon after it is seen calm '
  'again, a worker counts as dead only when its heartbeat is older than dead_worker_horizon '
  '+ this (0: never postponed). pool_saturated_at / pool_calm_since: written by the reaper '
  '(the last pass that saw the pool saturated, the first that saw it calm after that).';

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
  -- Fair order across owners (migration 0014): the job's start tag within its
  -- (queue, priority), from supaworker_private.next_fair_tag; the claim orders by it.
  fair_tag         bigint not null default 0,
  -- The priority an end user chose (-10..10): it orders only that owner's own jobs.
  user_priority    integer not null default 0 check (user_priority between -10 and 10),
  -- The job's place in its owner's own order: its tag when it became pending. The claim's
  -- tag swaps (a user_priority filling a turn) leave it, so equal user_priority stays FIFO.
  owner_seq        bigint not null default 0,
  -- Limits the app chooses (migration 0018): the job counts against
  -- concurrency_limits / takes a token of rate_limits for these keys (null: none).
  concurrency_key  text check (length(concurrency_key) between 1 and 200),
  rate_limit_key   text check (length(rate_limit_key) between 1 and 200),
  -- Times a handler snoozed the job in this cycle (snooze_job, migration 0019): back
  -- to pending for a while without spending an attempt.
  snooze_count     integer not null default 0 check (snooze_count >= 0),
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

-- The claim: pending jobs of a queue in claim order (priority desc, fair_tag, created_at);
-- also next_fair_tag's probe for the first due tag of a (queue, priority).
create index processing_queue_claim_idx on public.processing_queue
  (queue, priority desc, fair_tag, created_at) where status = 'pending';
-- The reaper, heartbeats and free-slot counts: running jobs by owner.
create index processing_queue_running_idx on public.processing_queue (assigned_to)
  where status in ('assigned', 'processing');
-- An owner's jobs: RLS (owner reads, user_id = auth.uid()) on the user_id prefix; the
-- per-owner limits (migration 0015) on (user_id, status): the claim counts an owner's running
-- jobs (assigned/processing, at most the cap), enqueue its active ones (at most the quota).
-- One index over every row since migration 0027 (it was two: user_id, and (user_id, status)
-- over active rows), so a job's enqueue and claim each write one entry here instead of two.
create index processing_queue_owner_status_idx on public.processing_queue (user_id, status);
-- purge_finished_jobs and the throughput figures of queue_stats.
create index processing_queue_finished_idx on public.processing_queue (completed_at)
  where status in ('completed', 'failed', 'cancelled');
-- The claim's own order, for workers that serve every queue (migration 20261128001200:
-- without it such a worker read and sorted the whole pending backlog on every claim,
-- 64 ms at 10^5 pending in bench/growth.py, 0.7 ms with it).
create index processing_queue_claim_order_idx on public.processing_queue
  (priority desc, fair_tag, created_at) where status = 'pending';
-- The claim's choice within an owner's turn: that owner's best pending job of a (queue,
-- priority) by user_priority, then its own order (migration 0014).
create index processing_queue_owner_order_idx on public.processing_queue
  (queue, priority, user_id, user_priority desc, owner_seq) where status = 'pending';

-- ---------------------------------------------------------------------------------------
-- owner_clock: the last fair-order tag given to each owner (migration 0014)
-- ---------------------------------------------------------------------------------------
-- Written only by next_fair_tag (enqueue and the new-cycle paths), so only one owner's own
-- concurrent enqueues ever contend on a row; the claim only reads uses_priority.
-- user_id is the nil uuid for jobs without an owner (they take turns like one more owner).
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
-- next_fair_tag's virtual time when no due job is pending: the highest tag of the level.
create index owner_clock_level_idx on supaworker_private.owner_clock
  (queue, priority, last_tag);
-- The claim's fast-path test: does any owner of these queues use user_priority?
create index owner_clock_uses_priority_idx on supaworker_private.owner_clock (queue)
  where uses_priority;
alter table supaworker_private.owner_clock enable row level security;
-- Concurrency keys (migration 0018): the claim counts a key's running jobs.
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

-- ---------------------------------------------------------------------------------------
-- job_events: append-only history, written by triggers on processing_queue
-- ---------------------------------------------------------------------------------------
create table public.job_events (
  id          bigint generated always as identity,
  job_id      uuid not null references public.processing_queue (id) on delete cascade,
  user_id     uuid,
  event       text not null check (event in (
                'enqueued', 'requeued', 'assigned', 'started', 'completed', 'retry_scheduled',
                'failed', 'cancel_requested', 'cancelled', 'released', 'snoozed')),
  from_status text,
  to_status   text,
  worker_id   text,
  attempt     integer,
  message     text,
  created_at  timestamptz not null default now(),
  -- (job_id, id): one job's events in order (job_history, owners' reads by job), and the
  -- cascade's lookup, in the one index the table has (migration 0027: a status change writes
  -- one index entry here, not three; id is an identity, unique by construction).
  constraint job_events_pkey primary key (job_id, id)
);
comment on table public.job_events is
  'Append-only history of processing_queue: one row per status change or cancel request, '
  'written by a trigger. Deleted only together with its job (purge, document deletion).';

-- ---------------------------------------------------------------------------------------
-- Row-level security
-- ---------------------------------------------------------------------------------------
-- job_error_details: what operators see of a failed attempt (issue 19)
-- processing_queue.error_message is read by the job's owner (RLS, Realtime): since issue 19
-- it holds only a safe message (the error class, or the text of an error the handler meant
-- for users). The full text (message and frames, secrets redacted by the worker) is kept
-- here, one row per failed attempt, readable by service_role and queue admins only: RLS is
-- on and its only policy is the queue-admin one (70_admin.sql), so an owner reads nothing.
create table public.job_error_details (
  job_id     uuid not null references public.processing_queue (id) on delete cascade,
  attempt    integer not null,
  detail     text not null check (length(detail) <= 20000),
  created_at timestamptz not null default now(),
  primary key (job_id, attempt)
);
comment on table public.job_error_details is
  'The operator-only text of failed attempts (error class, message, stack frames; redacted '
  'by the worker), one row per (job_id, attempt). Owners see processing_queue.error_message, '
  'a safe message, and never this table (RLS: service_role and queue admins only).';
alter table public.job_error_details enable row level security;

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
-- Replica identity: DEFAULT (primary key) for both tables, on purpose. processing_queue is
-- the hot table (claims, progress, completions): FULL would write the whole old row
-- (payload, result) to WAL on every update, for nobody now that it is not published; and
-- for an app that publishes it again (below), Realtime checks RLS and filters of INSERT and
-- UPDATE against the NEW row, which is always complete, and reduces a DELETE's old record to
-- the primary key on RLS tables whatever the identity. job_events is insert-only.
alter table public.processing_queue replica identity default;
alter table public.job_events replica identity default;

-- Nothing of supaworker is in the supabase_realtime publication (issue 20): Realtime would
-- send every DELETE of a published table to each of its postgres_changes subscribers, RLS
-- skipped (other users' job ids), and decode every change of the hot table for whoever
-- listens. Owners follow their jobs on private Broadcast topics (75_status_topics.sql),
-- workers hear wake-ups and control messages on theirs (35_wakeups.sql), admins the
-- `workers` topic. vps_workers left in 0022 (a heartbeat was a message), job_events in 0023,
-- processing_queue in 0026. An app may publish processing_queue again for its own
-- postgres_changes subscribers (docs/upgrading.md: what that costs and leaks).
