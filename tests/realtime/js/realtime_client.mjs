// supabase-js 2 (realtime-js, protocol 2.0.0, unchanged) against the local Realtime endpoint.
//
// Input: the env var RT_CONFIG, JSON:
//   {url, key, timeoutMs, clients: [{name, token?, channel, private?, subs: [{id, event, table, filter?}]}]}
// (`private: true` joins with `config: {private: true}`: RLS on realtime.messages decides.)
// Output, one JSON object per stdout line:
//   {client, status, error}            each subscribe() status (SUBSCRIBED, CHANNEL_ERROR, ...)
//   {ready: true}                      once every client's channel got "Subscribed to PostgreSQL"
//   {client, sub, eventType, new, old, table, errors}   each postgres_changes callback
//   {client, systemError}              a system message with status "error"
//   {client, broadcast}                a broadcast received (clients with `listen: true`)
// A client is ready when its postgres_changes are live, or when it is SUBSCRIBED if it has
// none. The line "send" on stdin makes every client with `send: {event, payload}` broadcast it.
// Runs until stdin closes (or timeoutMs passes, exit code 2).
// Node 20 needs `--experimental-websocket` for the global WebSocket realtime-js uses.
import { createClient } from '@supabase/supabase-js'

const config = JSON.parse(process.env.RT_CONFIG)
const emit = (record) => process.stdout.write(JSON.stringify(record) + '\n')
const clients = []
const channels = []
let waiting = config.clients.length
const markReady = () => {
  waiting -= 1
  if (waiting === 0) emit({ ready: true })
}

for (const spec of config.clients) {
  const supabase = createClient(config.url, config.key, {
    auth: { persistSession: false, autoRefreshToken: false },
  })
  if (spec.token) {
    // The documented way to give Realtime a user's JWT (RLS is checked with its claims).
    await supabase.realtime.setAuth(spec.token)
  }
  const channel = supabase.channel(
    spec.channel,
    spec.private ? { config: { private: true } } : undefined,
  )
  for (const sub of spec.subs) {
    const filter = { event: sub.event, schema: 'public', table: sub.table }
    if (sub.filter) filter.filter = sub.filter
    channel.on('postgres_changes', filter, (payload) =>
      emit({
        client: spec.name,
        sub: sub.id,
        eventType: payload.eventType,
        new: payload.new,
        old: payload.old,
        table: payload.table,
        errors: payload.errors,
      }),
    )
  }
  if (spec.listen) {
    channel.on('broadcast', { event: '*' }, (payload) =>
      emit({ client: spec.name, broadcast: payload }),
    )
  }
  let live = false
  channel.on('system', {}, (payload) => {
    if (payload.status === 'ok' && payload.message === 'Subscribed to PostgreSQL' && !live) {
      live = true
      markReady()
    } else if (payload.status === 'error') {
      emit({ client: spec.name, systemError: payload.message })
    }
  })
  channel.subscribe((status, err) => {
    emit({ client: spec.name, status, error: err ? String(err.message ?? err) : null })
    if (status === 'SUBSCRIBED' && spec.subs.length === 0) markReady()
  })
  clients.push(supabase)
  channels.push({ spec, channel })
}

const readline = await import('node:readline')
readline.createInterface({ input: process.stdin }).on('line', async (line) => {
  if (line.trim() !== 'send') return
  for (const { spec, channel } of channels) {
    if (spec.send) {
      const result = await channel.send({ type: 'broadcast', ...spec.send })
      emit({ client: spec.name, sent: result })
    }
  }
})

const stop = async (code) => {
  for (const supabase of clients) await supabase.removeAllChannels()
  process.exit(code)
}
process.stdin.on('end', () => stop(0))
setTimeout(() => {
  emit({ timeout: true })
  stop(2)
}, config.timeoutMs ?? 30000)
