-- supaworker 0026: processing_queue leaves the supabase_realtime publication (issue 20).
--
-- With the table published, Realtime sends every DELETE of a job (a purge, a deleted
-- document) to every postgres_changes subscriber of the table, RLS skipped and reduced to
-- the primary key: anyone holding the public anon key learns other users' job ids and when
-- they go. A publication cannot leave out one table's deletes (publish = '...' is per
-- publication, and hosted Realtime's wal2json decoding ignores row filters), so the table
-- leaves. Job status reaches its owner on the private Broadcast topic `jobs:<user_id>`
-- (0023); the dashboard reads jobs on a timer; watching a job without an owner polls.
--
-- Nothing of supaworker subscribes to the table any more. An app whose own frontend still
-- follows processing_queue with postgres_changes, and accepts the DELETE ids, can put it back
-- with a migration of its own: `alter publication supabase_realtime add table
-- public.processing_queue;` (docs/upgrading.md). Tolerant both ways: a project that already
-- took it out is left as it is.
do $$
begin
  if exists (select from pg_catalog.pg_publication_tables
              where pubname = 'supabase_realtime' and schemaname = 'public'
                and tablename = 'processing_queue') then
    alter publication supabase_realtime drop table public.processing_queue;
  end if;
end $$;

-- The schema this migration leaves (0012_schema_version.sql: every migration sets its number).
create or replace function public.supaworker_schema_version() returns integer
language sql
immutable
security definer
set search_path = ''
as $$ select 26 $$;
