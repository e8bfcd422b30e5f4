"""Example handlers to copy: `supaworker.examples.documents:process_document`."""

from __future__ import annotations
