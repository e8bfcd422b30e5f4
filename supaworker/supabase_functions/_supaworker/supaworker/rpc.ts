// Generated from clients/js/src/rpc.ts by clients/js/scripts/sync.mjs: edit that file.
// The two ways the client talks to PostgREST, with supabase-js's `{ data, error, status }`
// turned into a value or a SupaworkerError.
import type { SupabaseClient } from "npm:@supabase/supabase-js@2";

import { type PostgrestErrorLike, SupaworkerError } from "./errors.ts";

/** Any supabase-js 2 client: the anon key with a user's token (RLS decides what it sees and
 * may do), or the service role key (every job; the API server's options). Typed clients
 * (`SupabaseClient<Database>`) are accepted too: the queue's tables need not be in `Database`. */
// deno-lint-ignore no-explicit-any
export type AnySupabaseClient = SupabaseClient<any, any, any>;

export interface CallOptions {
  /** Aborts the HTTP request (the error then has status 0). */
  signal?: AbortSignal;
}

interface Reply {
  data: unknown;
  error: PostgrestErrorLike | null;
  status: number;
}

/** A supabase-js query builder that can still take an abort signal. */
export interface Abortable<Self> {
  abortSignal(signal: AbortSignal): Self;
}

/** `query.abortSignal(signal)` when there is a signal. */
export function abortable<Q extends Abortable<Q>>(query: Q, signal: AbortSignal | undefined): Q {
  return signal ? query.abortSignal(signal) : query;
}

/** Await a supabase-js query builder; its error (or a throw) becomes a SupaworkerError. */
export async function settle(query: PromiseLike<Reply>): Promise<unknown> {
  let reply: Reply;
  try {
    reply = await query;
  } catch (cause) {
    // supabase-js reports failures in `error`; a throw here is a bug or an abort surfacing
    // differently in some runtime. Either way there was no answer.
    throw new SupaworkerError(String(cause), { status: 0 }, { cause });
  }
  if (reply.error) throw SupaworkerError.fromPostgrest(reply.error, reply.status);
  return reply.data;
}

/** Call a SQL function through PostgREST (`/rest/v1/rpc/<name>`). */
export function rpc(
  supabase: AnySupabaseClient,
  name: string,
  args: Record<string, unknown>,
  options: CallOptions = {},
): Promise<unknown> {
  return settle(abortable(supabase.rpc(name, args), options.signal));
}
