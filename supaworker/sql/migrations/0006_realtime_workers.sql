-- supaworker: publish the worker registry to Supabase Realtime.
--
-- Each worker subscribes to its own vps_workers row (filter worker_id=eq.<id>) so that a
-- pause or resume reaches it within about a second instead of at its next heartbeat; the
-- operator dashboard follows all rows. Only the service role (and queue admins, through
-- their policy) may select the table, so Realtime's per-subscriber RLS check delivers
-- nothing to ordinary users. Replica identity stays DEFAULT (primary key): subscribers
-- need the new row, which UPDATE events always carry.
alter publication supabase_realtime add table public.vps_workers;
