"""The local stand-in for Supabase Realtime, served by the gateway at `/realtime/v1/websocket`.

Supabase Realtime (Elixir) cannot run here, so this package speaks its wire protocol and
reads changes the way it does, closely enough that realtime-py and supabase-js work unchanged:

* `protocol`  Phoenix serializers 1.0.0 (objects) and 2.0.0 (arrays, binary broadcasts)
* `auth`      `apikey` / `access_token` checks (JWT with `role` and `exp`, `sb_` keys)
* `socket`    one websocket: routing, heartbeats, bounded outbox
* `joining`   the checks of a join (quotas, token, private-channel RLS)
* `channel`   leave / access_token / broadcast / presence of one joined topic
* `bindings`  `postgres_changes` parameters and filters
* `poller`    the temporary wal2json slot over the `supabase_realtime` publication and
              `realtime.messages` (polled every `realtime_poll_interval_ms`, flat as hosted;
              `realtime_idle_multiplier` > 1 backs off while idle)
* `dispatch`  `apply_rls`: filters, per-subscriber RLS checks, payloads
* `checks`    the SQL those need; `database`: pool and catalog reads; `wal`: payload assembly
* `rest`      the REST broadcast API (`/realtime/v1/api/broadcast`)
* `authorization` private channels: RLS policies on `realtime.messages`
* `limits`    a plan's quotas and hosted's rate counters; `metrics`: `/realtime/v1/metrics`
* `server`    the aiohttp handlers and `setup_realtime(app, config)`
"""

from __future__ import annotations

from supaworker_local.realtime.server import setup_realtime

__all__ = ["setup_realtime"]
