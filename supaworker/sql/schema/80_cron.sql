-- supaworker, current schema: periodic maintenance with pg_cron, where it is installed.
--
-- supaworker/sql/schema/ is what a reader opens: the schema as it stands after every migration
-- in supabase/migrations/ (what `supabase db push` applies; they stay as they are). Loaded in
-- file-name order into a fresh database, these files give the same schema as the migrations
-- (tests/sql/test_schema_definitions.py). To change the schema, edit the definition here AND
-- write a new migration (docs/architecture.md, "Changing the schema").

-- The reaper also runs inside the claim (every rescue_interval), so the queue works without
-- pg_cron; the cron job covers the case where no worker is claiming. Where the cron schema is
-- absent (pg_cron not enabled) the block does nothing; enable pg_cron later and run the two
-- cron.schedule calls by hand. Like user_documents in 00_tables.sql, this conditional is
-- about the project (pg_cron or not), not about re-running.

do $$
begin
  if exists (select from pg_catalog.pg_namespace where nspname = 'cron') then
    perform cron.schedule('supaworker-reap-stale-jobs', '* * * * *',
                          'select public.reap_stale_jobs()');
    perform cron.schedule('supaworker-purge-finished-jobs', '17 3 * * *',
                          'select public.purge_finished_jobs()');
  else
    raise notice 'pg_cron is not enabled: supaworker maintenance jobs were not scheduled';
  end if;
end $$;
