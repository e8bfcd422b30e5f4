"""The `supaworker` command line. The only place that configures logging."""

from __future__ import annotations
