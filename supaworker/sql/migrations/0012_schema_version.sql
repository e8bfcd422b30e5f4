-- supaworker: the database says which supaworker schema it has.
--
-- `supaworker run` and the operator commands call this at start and refuse to work against
-- an older schema than the installed package needs (supaworker.schema.REQUIRED_VERSION); a
-- newer one is accepted, because a migration never breaks workers of the previous version
-- (docs/upgrading.md). Every later migration replaces this function with its own number.
create or replace function public.supaworker_schema_version() returns integer
language sql
immutable
security definer
set search_path = ''
as $$ select 12 $$;

comment on function public.supaworker_schema_version() is
  'The number of the newest supaworker migration applied to this database.';

revoke all on function public.supaworker_schema_version() from public, anon, authenticated;
grant execute on function public.supaworker_schema_version() to service_role;
