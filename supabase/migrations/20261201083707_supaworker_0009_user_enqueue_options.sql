-- supaworker: signed-in users enqueue with the API server's defaults (security review S1).
--
-- enqueue_job is executable by `authenticated`: the enqueue-document edge function calls it
-- as the caller, so that the database decides ownership. But a user also holds the public
-- anon key and their own token, and can call /rest/v1/rpc/enqueue_job directly with every
-- parameter. Only the document id, the priority (clamped to -10..10) and the queue are meant
-- for users; the other options belong to the API server:
--   p_payload          handlers trust it as the server's input (paths, URLs, flags);
--   p_run_at (past)    jumps ahead of every job of the same priority;
--   p_requires         routes the job to one chosen worker (`supaworker.worker_id`);
--   p_max_attempts     100 attempts of a document that crashes its worker instead of 5;
--   p_timeout_seconds  a tiny timeout makes the thread executor abandon the handler thread
--                      (it cannot be killed) on every attempt.
-- This trigger refuses them (PT403, HTTP 403) for anon/authenticated callers on both paths
-- into the row: the INSERT of a new job and the UPDATE that re-queues a finished one. A
-- default spelled out (`{}`, the default attempts, a start not in the past) is accepted, and
-- so is a value that a re-queue carries over unchanged (a queue admin's retry keeps the
-- server's payload). service_role requests and trusted SQL callers are not affected
-- (supaworker_private.caller_is_privileged).

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
  '(PT403) a payload, requires, max_attempts or timeout_seconds other than the defaults, and '
  'a run_at in the past, unless the value is carried over unchanged by an UPDATE. '
  'Privileged callers (service_role, trusted SQL) pass.';
revoke all on function supaworker_private.refuse_user_job_options()
  from public, anon, authenticated, service_role;

create trigger processing_queue_user_options
  before insert or update of payload, run_at, requires, max_attempts, timeout_seconds
  on public.processing_queue
  for each row execute function supaworker_private.refuse_user_job_options();
