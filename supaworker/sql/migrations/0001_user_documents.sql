-- supaworker 1/4: the documents that jobs are about.
--
-- Jobs reference public.user_documents(id) and take their owner from user_documents.user_id.
-- A fresh project gets the minimal table below; a project that already has its own
-- user_documents table keeps it exactly as it is (columns, grants, RLS policies): this file
-- then only checks that the two columns the queue relies on exist.

do $$
begin
  if to_regclass('public.user_documents') is null then
    create table public.user_documents (
      id           uuid primary key default gen_random_uuid(),
      user_id      uuid not null references auth.users (id) on delete cascade,
      name         text,
      storage_path text,
      content      text,  -- nullable: lets the demo ship a document's text without Storage
      created_at   timestamptz not null default now()
    );
    comment on table public.user_documents is
      'Documents owned by users (created by supaworker because the project had none). '
      'A processing_queue entry references one document; its owner is user_id.';

    create index user_documents_user_id_idx on public.user_documents (user_id);

    alter table public.user_documents enable row level security;

    -- Owners manage their own rows. `(select auth.uid())` is evaluated once per statement.
    create policy user_documents_select_own on public.user_documents
      for select to authenticated using ((select auth.uid()) = user_id);
    create policy user_documents_insert_own on public.user_documents
      for insert to authenticated with check ((select auth.uid()) = user_id);
    create policy user_documents_update_own on public.user_documents
      for update to authenticated
      using ((select auth.uid()) = user_id) with check ((select auth.uid()) = user_id);
    create policy user_documents_delete_own on public.user_documents
      for delete to authenticated using ((select auth.uid()) = user_id);

    -- Supabase's default privileges grant everything to anon and authenticated: start from
    -- nothing, then grant exactly what the policies above are meant to filter.
    revoke all on table public.user_documents from public, anon, authenticated, service_role;
    grant select, insert, update, delete on table public.user_documents to authenticated;
    grant select, insert, update, delete on table public.user_documents to service_role;
  else
    -- An application table: leave it alone, but fail early and clearly if the queue cannot
    -- work with it (the job's owner is read from user_documents.user_id).
    if not exists (
      select from pg_catalog.pg_attribute a
      where a.attrelid = 'public.user_documents'::regclass and a.attname = 'id'
        and a.atttypid = 'uuid'::regtype and not a.attisdropped
    ) or not exists (
      select from pg_catalog.pg_attribute a
      where a.attrelid = 'public.user_documents'::regclass and a.attname = 'user_id'
        and a.atttypid = 'uuid'::regtype and not a.attisdropped
    ) then
      raise exception 'public.user_documents exists but lacks "id uuid" or "user_id uuid"'
        using hint = 'supaworker needs user_documents(id uuid unique, user_id uuid); '
                     'add the columns or rename the existing table before migrating.';
    end if;
  end if;
end $$;
