-- supaworker: fewer index entries written per job (issue 20, write amplification).
--
-- Every byte of WAL is decoded by hosted Realtime (wal_level logical), and a status change is
-- a non-HOT update (status is indexed): it writes a new entry into every index of
-- processing_queue whose predicate the new row matches. bench/wal_cost.py measures where a
-- job's WAL goes, per relation (docs/benchmarks.md, "WAL per job"); this migration removes
-- index entries that no reader needs, and changes nothing a caller sees:
--  * processing_queue_user_id_idx (user_id, every row) and
--    processing_queue_active_by_owner_idx (user_id, status; pending/assigned/processing)
--    become one index, processing_queue_owner_status_idx (user_id, status) over every row.
--    Owners' reads (RLS user_id = auth.uid()) use its user_id prefix; the per-owner cap and
--    quota counts (status in ...) its (user_id, status) ranges, as before. A job wrote both
--    at enqueue and at its claim: one entry fewer at enqueue and one fewer per claim.
--  * job_events: its primary key becomes (job_id, id), which is the order job_history reads
--    and what the job_id foreign key's cascade looks up, so job_events_job_id_idx (job_id,
--    id) goes; job_events_user_id_idx (user_id, id) goes too: no supaworker reader lists a
--    user's events across jobs (job_history, `supaworker job`, the clients read one job's;
--    RLS still filters a user's own reads by user_id). id stays an identity, unique by
--    construction. Three index entries per event -> one.
-- On a large job_events the new primary key is built under the table's lock for the
-- length of this migration (writers of job_events, i.e. every status change, wait).
--
-- Rolling upgrades: nothing a worker or client calls changes.

create index processing_queue_owner_status_idx on public.processing_queue (user_id, status);
drop index public.processing_queue_user_id_idx;
drop index public.processing_queue_active_by_owner_idx;

alter table public.job_events drop constraint job_events_pkey;
alter table public.job_events add constraint job_events_pkey primary key (job_id, id);
drop index public.job_events_job_id_idx;
drop index public.job_events_user_id_idx;

-- The schema this migration leaves (0012_schema_version.sql: every migration sets its number).
create or replace function public.supaworker_schema_version() returns integer
language sql
immutable
security definer
set search_path = ''
as $$ select 27 $$;
