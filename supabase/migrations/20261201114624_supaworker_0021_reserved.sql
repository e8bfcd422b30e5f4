-- supaworker: PLACEHOLDER for migration number 0021, which belongs to another branch that is
-- not on main yet. It changes nothing but the schema version; it exists only because
-- supaworker/schema.py refuses migrations not numbered 1..n, and this branch's own
-- migrations are 0022 and 0023. DELETE THIS FILE (and its copy in supabase/migrations/) when
-- the real 0021 is merged.

-- The schema this migration leaves (0012_schema_version.sql: every migration sets its number).
create or replace function public.supaworker_schema_version() returns integer
language sql
immutable
security definer
set search_path = ''
as $$ select 21 $$;
