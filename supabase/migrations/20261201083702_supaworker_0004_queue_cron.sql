-- supaworker: periodic maintenance with pg_cron, where it is installed.
-- (The current schema, one file per concern: supaworker/sql/schema/.)
--
-- The reaper also runs opportunistically inside claim_next_job (every rescue_interval), so
-- the queue works without pg_cron; the cron job covers the case where no worker is claiming.
-- cron.schedule(job_name, ...) replaces a job of the same name, so this is idempotent.
-- Where the cron schema is absent (pg_cron not enabled) the block does nothing; enable
-- pg_cron later and re-run the two cron.schedule calls below by hand.

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
