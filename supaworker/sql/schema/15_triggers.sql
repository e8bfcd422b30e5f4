-- supaworker, current schema: trigger functions and the triggers on the queue's tables.
--
-- supaworker/sql/schema/ is what a reader opens: the schema as it stands after every migration
-- in supabase/migrations/ (what `supabase db push` applies; they stay as they are). Loaded in
-- file-name order into a fresh database, these files give the same schema as the migrations
-- (tests/sql/test_schema_definitions.py). To change the schema, edit the definition here AND
-- write a new migration (docs/architecture.md, "Changing the schema").

-- touch_updated_at(): BEFORE UPDATE on processing_queue, vps_workers, queue_settings.
-- Keeps updated_at = now() on every update, whoever writes.
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

-- record_job_event(): AFTER INSERT, and AFTER UPDATE of status / cancel_requested, on
-- processing_queue. Appends exactly one job_events row per status change or new cancel
-- request (enqueued, requeued, assigned, started, completed, retry_scheduled, released,
-- snoozed, failed, cancel_requested, cancelled); the error message for retry_scheduled and
-- failed, "snoozed until <run_at>" for snoozed,
-- the worker for every event after enqueue. security definer: the history is written even
-- though no API role may insert into job_events. Progress updates write no event.
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
            when new.snooze_count > old.snooze_count then 'snoozed'
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
  elsif v_event = 'snoozed' then
    v_message := pg_catalog.format('snoozed until %s', new.run_at);
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
  'retry_scheduled, released, snoozed, failed, cancel_requested, cancelled).';

create trigger processing_queue_event_on_insert after insert on public.processing_queue
  for each row execute function supaworker_private.record_job_event();
create trigger processing_queue_event_on_update
  after update of status, cancel_requested on public.processing_queue
  for each row
  when (old.status is distinct from new.status
        or old.cancel_requested is distinct from new.cancel_requested)
  execute function supaworker_private.record_job_event();

-- forbid_update(): BEFORE UPDATE on job_events. Raises 42501 "<table> is append-only":
-- the history is never rewritten (rows go only with their job: purge, document deletion).
create function supaworker_private.forbid_update() returns trigger
language plpgsql set search_path = '' as $$
begin
  raise exception '% is append-only', tg_table_name using errcode = '42501';
end $$;
comment on function supaworker_private.forbid_update() is
  'BEFORE UPDATE trigger that keeps a history table append-only.';
create trigger job_events_append_only before update on public.job_events
  for each row execute function supaworker_private.forbid_update();

-- refuse_user_job_options(): BEFORE INSERT, and BEFORE UPDATE of payload, run_at,
-- requires, max_attempts, timeout_seconds, on processing_queue (migration 20261128001300,
-- security review S1).
-- enqueue_job is executable by `authenticated` (the enqueue-document edge function calls it
-- as the caller, so that the database decides ownership), and a user can call
-- /rest/v1/rpc/enqueue_job directly with every parameter. Only the document id, the priority
-- (clamped to -10..10) and the queue are meant for users; the other options belong to the
-- API server:
--   p_payload          handlers trust it as the server's input (paths, URLs, flags);
--   p_run_at (past)    jumps ahead of every job of the same priority;
--   p_requires         routes the job to one chosen worker (`supaworker.worker_id`);
--   p_max_attempts     100 attempts of a document that crashes its worker instead of 5;
--   p_timeout_seconds  a tiny timeout makes the thread executor abandon the handler thread;
--   p_concurrency_key, p_rate_limit_key  (migration 0018) another app's limits.
-- For anon/authenticated callers it raises PT403 "only the service role may set <options>"
-- on both paths into the row (INSERT of a new job, UPDATE that re-queues a finished one). A
-- default spelled out (`{}`, the default attempts, a start not in the past) passes, and so
-- does a value an UPDATE carries over unchanged. Privileged callers
-- (caller_is_privileged) always pass.
create function supaworker_private.refuse_user_job_options() returns trigger
language plpgsql set search_path = '' as $$
declare
  v_default_attempts integer;
  v_refused          text[] := '{}';
  v_insert           boolean := tg_op = 'INSERT';
begin
  if supaworker_private.caller_is_privileged() then
    return new;
  end if;
  select s.default_max_attempts into v_default_attempts from public.queue_settings s;

  if new.payload <> '{}'::jsonb and (v_insert or new.payload is distinct from old.payload) then
    v_refused := v_refused || 'p_payload'::text;
  end if;
  if new.run_at < now() and (v_insert or new.run_at is distinct from old.run_at) then
    v_refused := v_refused || 'p_run_at'::text;
  end if;
  if new.requires <> '{}'::jsonb and (v_insert or new.requires is distinct from old.requires) then
    v_refused := v_refused || 'p_requires'::text;
  end if;
  if new.max_attempts <> v_default_attempts
     and (v_insert or new.max_attempts is distinct from old.max_attempts) then
    v_refused := v_refused || 'p_max_attempts'::text;
  end if;
  if new.timeout_seconds is not null
     and (v_insert or new.timeout_seconds is distinct from old.timeout_seconds) then
    v_refused := v_refused || 'p_timeout_seconds'::text;
  end if;
  if new.concurrency_key is not null
     and (v_insert or new.concurrency_key is distinct from old.concurrency_key) then
    v_refused := v_refused || 'p_concurrency_key'::text;
  end if;
  if new.rate_limit_key is not null
     and (v_insert or new.rate_limit_key is distinct from old.rate_limit_key) then
    v_refused := v_refused || 'p_rate_limit_key'::text;
  end if;

  if cardinality(v_refused) > 0 then
    perform supaworker_private.raise_error('PT403',
      pg_catalog.format('only the service role may set %s',
                        pg_catalog.array_to_string(v_refused, ', ')),
      'Signed-in users pass p_user_document_id, p_priority (clamped to -10..10) and p_queue; '
      'enqueue from your API server with the service role key to set the other options.');
  end if;
  return new;
end $$;
comment on function supaworker_private.refuse_user_job_options() is
  'BEFORE INSERT/UPDATE trigger on processing_queue: for anon/authenticated callers, refuses '
  '(PT403) a payload, requires, max_attempts, timeout_seconds, concurrency_key or '
  'rate_limit_key other than the defaults, and '
  'a run_at in the past, unless the value is carried over unchanged by an UPDATE. '
  'Privileged callers (service_role, trusted SQL) pass.';

create trigger processing_queue_user_options
  before insert or update of payload, run_at, requires, max_attempts, timeout_seconds,
                             concurrency_key, rate_limit_key
  on public.processing_queue
  for each row execute function supaworker_private.refuse_user_job_options();
