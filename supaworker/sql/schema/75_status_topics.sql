-- supaworker, current schema: job status and the worker registry over Realtime Broadcast.
--
-- supaworker/sql/schema/ is what a reader opens: the schema as it stands after every migration
-- in supabase/migrations/ (what `supabase db push` applies; they stay as they are). Loaded in
-- file-name order into a fresh database, these files give the same schema as the migrations
-- (tests/sql/test_schema_definitions.py). To change the schema, edit the definition here AND
-- write a new migration (docs/architecture.md, "Changing the schema").

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
-- processing_queue is not in the supabase_realtime publication (0026, 00_tables.sql): these
-- topics are the only Realtime path of job status (docs/architecture.md: why).

-- broadcast_job_changes(): AFTER INSERT / UPDATE / DELETE on processing_queue, FOR EACH
-- STATEMENT with the statement's transition tables (one trigger per event: a trigger with
-- transition tables takes no column list). Statement level because each realtime.send is a
-- subtransaction and an insert into realtime.messages: a statement that changes N jobs of
-- one owner pays once per 50, not N times (bench/realtime_cost.py, docs/benchmarks.md).
-- security definer: users' own inserts and cancels send too (realtime.send is invoker).
create function supaworker_private.broadcast_job_changes() returns trigger
language plpgsql security definer set search_path = '' as $$
declare
  v_changes jsonb;  -- [{u: user_id, r: record}], in id order
  v_topic   text;
  v_payload jsonb;
begin
  -- Each event has only its own transition tables, so each branch reads only those. Only
  -- the columns sent are read (no row copies: the statement trigger's own cost is most of
  -- what the topic costs, measured in docs/benchmarks.md).
  if tg_op = 'INSERT' then
    select jsonb_agg(jsonb_build_object('u', n.user_id, 'r', jsonb_build_object(
                 'id', n.id, 'user_id', n.user_id, 'user_document_id', n.user_document_id,
                 'queue', n.queue, 'status', n.status, 'attempt', n.attempt,
                 'retry_count', n.retry_count, 'progress_percent', n.progress_percent,
                 'progress_message', n.progress_message, 'error_message', n.error_message,
                 'cancel_requested', n.cancel_requested, 'assigned_to', n.assigned_to,
                 'updated_at', n.updated_at)) order by n.id)
      into v_changes
      from new_rows n
     where n.user_id is not null;
  elsif tg_op = 'UPDATE' then
    select jsonb_agg(jsonb_build_object('u', n.user_id, 'r', jsonb_build_object(
                 'id', n.id, 'user_id', n.user_id, 'user_document_id', n.user_document_id,
                 'queue', n.queue, 'status', n.status, 'attempt', n.attempt,
                 'retry_count', n.retry_count, 'progress_percent', n.progress_percent,
                 'progress_message', n.progress_message, 'error_message', n.error_message,
                 'cancel_requested', n.cancel_requested, 'assigned_to', n.assigned_to,
                 'updated_at', n.updated_at)) order by n.id)
      into v_changes
      from new_rows n join old_rows o on o.id = n.id
     where n.user_id is not null
       and (case n.status when 'assigned' then 'pending' else n.status end
              <> case o.status when 'assigned' then 'pending' else o.status end
            or n.progress_percent is distinct from o.progress_percent
            or n.progress_message is distinct from o.progress_message
            or n.cancel_requested <> o.cancel_requested);
  else
    select jsonb_agg(jsonb_build_object('u', o.user_id, 'r', jsonb_build_object('id', o.id))
                     order by o.id)
      into v_changes
      from old_rows o
     where o.user_id is not null;
  end if;
  if v_changes is null then
    return null;  -- most statements: nothing the owner sees
  end if;
  if jsonb_array_length(v_changes) = 1 then
    -- The common case (one job per statement: start, progress, completion, cancel).
    perform realtime.send(
      jsonb_build_object('type', tg_op, 'records', jsonb_build_array(v_changes -> 0 -> 'r')),
      'job', 'jobs:' || (v_changes -> 0 ->> 'u'), true);
    return null;
  end if;
  for v_topic, v_payload in
    select 'jobs:' || x.u,
           jsonb_build_object('type', tg_op, 'records', jsonb_agg(x.r order by x.i))
      from (select c.value ->> 'u' as u, c.value -> 'r' as r, c.i,
                   (pg_catalog.row_number() over (partition by c.value ->> 'u' order by c.i)
                      - 1) / 50 as chunk
              from jsonb_array_elements(v_changes) with ordinality as c(value, i)) x
     group by x.u, x.chunk
     order by x.u, x.chunk
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
