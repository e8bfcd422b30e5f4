-- supaworker: users' job status and the dashboard's worker feed over Broadcast, on private
-- topics (issue 20). Current definitions: supaworker/sql/schema/75_status_topics.sql.

-- ---------------------------------------------------------------------------------------
-- Job status for their owners, and the worker registry for queue admins, over Broadcast
-- (issue 20). Supabase recommends Broadcast from the database over postgres_changes: with
-- postgres_changes every change is checked against every subscriber's RLS (on one thread,
-- hosted), an anon-key holder gets an error frame for each change, and DELETE events skip
-- RLS (other users' job ids). Here each message goes to one private topic, read only by
-- those the policies below allow:
--  * `jobs:<user_id>`: event `job`, {type: INSERT|UPDATE|DELETE, record (the job's id, owner,
--    document, queue, status, attempt, retry_count, progress, error_message,
--    cancel_requested, assigned_to, updated_at: not payload or result) or old_record {id}}, for every change of that user's jobs; readable by that user
--    and by queue admins. Progress is already at most 4 updates a second per job (the
--    worker's ProgressForwarder), so it is sent as it comes.
--  * `workers`: event `worker`, {type: INSERT|UPDATE, record (the vps_workers row)}, when a
--    worker registers or its status changes (never for a heartbeat); queue admins only.
-- Worker topics (`worker:<id>`, 35_wakeups.sql) have no policy: the service role only.
-- The postgres_changes path stays for existing subscribers: processing_queue stays in the
-- supabase_realtime publication (docs/architecture.md: which to use and why).

-- broadcast_job_change(): AFTER INSERT OR UPDATE OR DELETE on processing_queue.
create function supaworker_private.broadcast_job_change() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_op = 'DELETE' then
    if old.user_id is not null then
      perform realtime.send(
        jsonb_build_object('type', tg_op, 'old_record', jsonb_build_object('id', old.id)),
        'job', 'jobs:' || old.user_id::text, true);
    end if;
  elsif new.user_id is not null then
    -- What changes while a job runs, not its payload or result (a read gets those): each
    -- message is a row of realtime.messages, WAL that hosted Realtime decodes too.
    perform realtime.send(
      jsonb_build_object('type', tg_op, 'record', jsonb_build_object(
        'id', new.id, 'user_id', new.user_id, 'user_document_id', new.user_document_id,
        'queue', new.queue, 'status', new.status, 'attempt', new.attempt,
        'retry_count', new.retry_count, 'progress_percent', new.progress_percent,
        'progress_message', new.progress_message, 'error_message', new.error_message,
        'cancel_requested', new.cancel_requested, 'assigned_to', new.assigned_to,
        'updated_at', new.updated_at)),
      'job', 'jobs:' || new.user_id::text, true);
  end if;
  return null;
end $$;
comment on function supaworker_private.broadcast_job_change() is
  'AFTER INSERT/UPDATE/DELETE trigger on processing_queue: Broadcast `job` {type, record | '
  'old_record} to the private topic jobs:<user_id> (the owner and queue admins read it).';

create trigger processing_queue_broadcast after insert or update or delete
  on public.processing_queue
  for each row execute function supaworker_private.broadcast_job_change();

-- broadcast_worker_change(): AFTER INSERT, and AFTER UPDATE of status, on vps_workers.
create function supaworker_private.broadcast_worker_change() returns trigger
language plpgsql security definer set search_path = '' as $$
begin
  if tg_op = 'INSERT' or new.status is distinct from old.status then
    perform realtime.send(jsonb_build_object('type', tg_op, 'record', to_jsonb(new)),
                          'worker', 'workers', true);
  end if;
  return null;
end $$;
comment on function supaworker_private.broadcast_worker_change() is
  'AFTER INSERT/UPDATE OF status trigger on vps_workers: Broadcast `worker` {type, record} '
  'to the private topic workers (queue admins read it). Heartbeats send nothing.';

create trigger vps_workers_broadcast after insert or update of status on public.vps_workers
  for each row execute function supaworker_private.broadcast_worker_change();

-- Who may join (read) the topics: realtime.messages policies, checked by Realtime at join.
create policy supaworker_topics_read on realtime.messages for select to authenticated
  using (
    realtime.messages.extension = 'broadcast'
    and (realtime.topic() = 'jobs:' || (select auth.uid())::text
         or ((realtime.topic() like 'jobs:%' or realtime.topic() = 'workers')
             and (select supaworker_private.is_queue_admin())))
  );
comment on policy supaworker_topics_read on realtime.messages is
  'supaworker: jobs:<uid> for that user, jobs:* and workers for queue admins (read only).';

-- History (job_events) has no live subscriber: out of the publication (less to decode).
alter publication supabase_realtime drop table public.job_events;

revoke all on function supaworker_private.broadcast_job_change(),
  supaworker_private.broadcast_worker_change()
  from public, anon, authenticated, service_role;

-- The schema this migration leaves (0012_schema_version.sql: every migration sets its number).
create or replace function public.supaworker_schema_version() returns integer
language sql
immutable
security definer
set search_path = ''
as $$ select 15 $$;
