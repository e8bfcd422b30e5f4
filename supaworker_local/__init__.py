"""The local Supabase-compatible stack behind `supaworker dev` (real PostgreSQL, PostgREST,
Supabase CLI and Deno, plus a gateway that plays Kong's and Realtime's part)."""

from __future__ import annotations
