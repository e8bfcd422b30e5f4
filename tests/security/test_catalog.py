"""Catalog checks of the security review, over every object the migrations create, so that a
function or table added later is held to the same rules without anyone listing it here.

(The grant matrix of the queue's tables and functions is tests/sql/test_permissions.py.)
"""

from __future__ import annotations

import re

import pytest

from tests.security.state import TABLES, Db

pytestmark = pytest.mark.stack

OUR_SCHEMAS = ("public", "supaworker_private")


def test_every_function_pins_its_search_path_and_definers_belong_to_postgres(
    admin_db: Db,
) -> None:
    rows = admin_db.execute(
        """
        select n.nspname || '.' || p.proname, p.prosecdef, p.proconfig,
               pg_get_userbyid(p.proowner), r.rolsuper
          from pg_proc p
          join pg_namespace n on n.oid = p.pronamespace
          join pg_roles r on r.oid = p.proowner
         where n.nspname = any(%s)
        """,
        (list(OUR_SCHEMAS),),
    ).fetchall()
    assert len(rows) >= 40, rows
    for name, definer, config, owner, superuser in rows:
        # search_path = '' everywhere: a definer function cannot be tricked into resolving
        # an object an attacker created earlier in the path (pg_temp, public).
        assert config == ['search_path=""'], name
        assert not superuser, f"{name} is owned by the superuser {owner}"
        if definer:
            assert owner == "postgres", (name, owner)


def test_no_dynamic_sql_in_any_function(admin_db: Db) -> None:
    """No EXECUTE of a built string anywhere: input can only ever be a bound value."""
    rows = admin_db.execute(
        "select n.nspname || '.' || p.proname, p.prosrc from pg_proc p"
        " join pg_namespace n on n.oid = p.pronamespace where n.nspname = any(%s)",
        (list(OUR_SCHEMAS),),
    ).fetchall()
    for name, source in rows:
        code = re.sub(r"--[^\n]*", "", str(source))  # comments may say "execute"
        code = re.sub(r"'(?:[^']|'')*'", "''", code)  # and so may string literals
        assert not re.search(r"\bexecute\b", code, re.IGNORECASE), name


def test_no_supaworker_table_is_published(admin_db: Db) -> None:
    """Realtime sends every DELETE of a published table to each of its postgres_changes
    subscribers, RLS skipped, reduced to the primary key: the ids of other users' jobs. So
    nothing of supaworker is published (0022, 0023, 0026); job status goes to private
    Broadcast topics (tests/security/test_status_topics.py)."""
    published = admin_db.execute(
        "select schemaname || '.' || tablename from pg_publication_tables"
        " where pubname = 'supabase_realtime'"
        " and (schemaname like 'supaworker%%' or tablename = any(%s))",
        (list(TABLES),),
    ).fetchall()
    assert published == []


def test_public_holds_only_tables_and_nothing_else_anon_could_read(admin_db: Db) -> None:
    """A view or materialized view would bypass RLS (it runs as its owner) and a sequence
    grant would leak row counts: `public` has neither for the API roles."""
    kinds = admin_db.execute(
        "select relname, relkind from pg_class where relnamespace = 'public'::regnamespace"
        " and relkind in ('v', 'm', 'f')"
    ).fetchall()
    assert kinds == []
    usable = admin_db.execute(
        "select c.relname, r from pg_class c, unnest(array['anon', 'authenticated']) r"
        " where c.relnamespace = 'public'::regnamespace and c.relkind = 'S'"
        " and (has_sequence_privilege(r, c.oid, 'usage')"
        "      or has_sequence_privilege(r, c.oid, 'select'))"
    ).fetchall()
    assert usable == []


def test_private_helpers_are_closed_except_the_policy_predicate(admin_db: Db) -> None:
    """No API role may execute a helper of supaworker_private, with one exception that RLS
    needs: is_queue_admin() is evaluated inside policies as the querying role. It only reads
    the caller's own JWT claims, and the schema has no USAGE, so it cannot be called by name."""
    rows = admin_db.execute(
        "select p.proname, r from pg_proc p, unnest(array['anon', 'authenticated',"
        " 'service_role']) r where p.pronamespace = 'supaworker_private'::regnamespace"
        " and has_function_privilege(r, p.oid, 'execute')"
    ).fetchall()
    assert rows == [("is_queue_admin", "authenticated")]
