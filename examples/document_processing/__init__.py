"""An example handler to copy (`handler.process_user_document`), its JavaScript twin for
`--handler-command` (`handler.mjs`, `supaworker demo --handler node`) and the sample documents
`supaworker demo` uploads. Installed as `supaworker_local.examples`."""

from __future__ import annotations
