-- supaworker: users' job status and the dashboard's worker feed over Broadcast, on private
-- topics (issue 20): one message per owner and statement for the changes the owner sees.
-- Current definitions: supaworker/sql/schema/75_status_topics.sql.

-- ---------------------------------------------------------------------------------------
-- Job status for their owners, and the worker registry for queue admins, over Broadcast
-- (issue 20). Supabase recommends Broadcast from the database over postgres_changes: with
-- postgres_changes every change is checked against every subscriber's RLS (on one thread,
-- hosted), an anon-key holder gets an error frame for each change, and DELETE events skip
-- RLS (other users' job ids). Here each message goes to one private topic, read only by
-- those the policies below allow:
--  * `jobs:<user_id>`: event `job`, {type: INSERT|UPDATE|DELETE, records: [...]}: the
--    changes one statement made to that user's jobs that the owner sees, up to 50 jobs per
--    message (a bulk enqueue, a batched claim or completion is one message per owner and
--    statement, not one per job). A record is the job's id, owner, document, queue, status,
--    attempt, retry_count, progress, error_message, cancel_requested, assigned_to and
--    updated_at: not payload or result (a read gets those; every message is a row of
--    realtime.messages, WAL that hosted Realtime decodes too). DELETE records are {id}.
--    Sent for: every insert and delete; an update that changes what the owner sees: the
--    status (with `assigned` shown as the `pending` it was: a claim that does not start the
--    job, or the release of such a claim, sends nothing), progress, or cancel_requested.
--    Not for what only the queue needs (a fair-order tag swap, the attempt of a claim that
--    does not start, updated_at alone). Progress is already at most 4 updates a second per
--    job (the worker's ProgressForwarder coalesces, keeping the latest; report_progress is
--    the service role's only), so it is sent as it comes. Readable by that user and by
--    queue admins.
--  * `workers`: event `worker`, {type: INSERT|UPDATE, record (the vps_workers row)}, when a
--    worker registers or its status changes (never for a heartbeat); queue admins only.
-- Worker topics (`worker:<id>`, 35_wakeups.sql) have no policy: the service role only.
-- The postgres_changes path stays for existing subscribers: processing_queue stays in the
-- supabase_realtime publication (docs/architecture.md: which to use and why).

-- broadcast_job_changes(): AFTER INSERT / UPDATE / DELETE on processing_queue, FOR EACH
-- STATEMENT with the statement's transition tables (one trigger per event: a trigger with
-- transition tables takes no column list). Statement level because each realtime.send is a
-- subtransaction and an insert into realtime.messages: a statement that changes N jobs of
-- one owner pays once per 50, not N times (bench/realtime_cost.py, docs/benchmarks.md).
-- security definer: users' own inserts and cancels send too (realtime.send is invoker).
create function supaworker_private.broadcast_job_changes() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  v_jobs    public.processing_queue[];
  v_topic   text;
  v_payload jsonb;
begin
  -- Each event has only its own transition tables, so each branch reads only those.
  if tg_op = 'INSERT' then
    select pg_catalog.array_agg(n) into v_jobs from new_rows n where n.user_id is not null;
  elsif tg_op = 'UPDATE' then
    select pg_catalog.array_agg(n) into v_jobs
      from new_rows n join old_rows o on o.id = n.id
     where n.user_id is not null
       and (case n.status when 'assigned' then 'pending' else n.status end
              <> case o.status when 'assigned' then 'pending' else o.status end
            or n.progress_percent is distinct from o.progress_percent
            or n.progress_message is distinct from o.progress_message
            or n.cancel_requested <> o.cancel_requested);
  else
    select pg_catalog.array_agg(o) into v_jobs from old_rows o where o.user_id is not null;
  end if;
  if v_jobs is null then
    return null;  -- most statements: nothing the owner sees
  end if;
  for v_topic, v_payload in
    select 'jobs:' || x.user_id::text,
           jsonb_build_object('type', tg_op, 'records', jsonb_agg(x.record order by x.id))
      from (select j.user_id, j.id,
                   (pg_catalog.row_number() over (partition by j.user_id order by j.id) - 1)
                     / 50 as chunk,
                   case when tg_op = 'DELETE' then jsonb_build_object('id', j.id)
                   else jsonb_build_object(
                     'id', j.id, 'user_id', j.user_id, 'user_document_id', j.user_document_id,
                     'queue', j.queue, 'status', j.status, 'attempt', j.attempt,
                     'retry_count', j.retry_count, 'progress_percent', j.progress_percent,
                     'progress_message', j.progress_message, 'error_message', j.error_message,
                     'cancel_requested', j.cancel_requested, 'assigned_to', j.assigned_to,
                     'updated_at', j.updated_at) end as record
              from pg_catalog.unnest(v_jobs) j) x
     group by x.user_id, x.chunk
     order by x.user_id, x.chunk
  loop
    perform realtime.send(v_payload, 'job', v_topic, true);
  end loop;
  return null;
end $$;
comment on function supaworker_private.broadcast_job_changes() is
  'AFTER INSERT/UPDATE/DELETE statement trigger on processing_queue: Broadcast `job` {type, '
  'records} to the private topic jobs:<user_id>, one message per owner and statement (up to '
  '50 jobs each), for the changes the owner sees (the owner and queue admins read it).';

create trigger processing_queue_broadcast_insert after insert on public.processing_queue
  referencing new table as new_rows
  for each statement execute function supaworker_private.broadcast_job_changes();
create trigger processing_queue_broadcast_update after update on public.processing_queue
  referencing old table as old_rows new table as new_rows
  for each statement execute function supaworker_private.broadcast_job_changes();
create trigger processing_queue_broadcast_delete after delete on public.processing_queue
  referencing old table as old_rows
  for each statement execute function supaworker_private.broadcast_job_changes();

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

create trigger vps_workers_broadcast_insert after insert on public.vps_workers
  for each row execute function supaworker_private.broadcast_worker_change();
-- WHEN: a heartbeat (which may set an unchanged status) runs nothing.
create trigger vps_workers_broadcast_update after update of status on public.vps_workers
  for each row when (new.status is distinct from old.status)
  execute function supaworker_private.broadcast_worker_change();

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

revoke all on function supaworker_private.broadcast_job_changes(),
  supaworker_private.broadcast_worker_change()
  from public, anon, authenticated, service_role;

-- The schema this migration leaves (0012_schema_version.sql: every migration sets its number).
create or replace function public.supaworker_schema_version() returns integer
language sql
immutable
security definer
set search_path = ''
as $$ select 23 $$;
