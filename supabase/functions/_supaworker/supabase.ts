// The one place that builds supabase-js clients from the secrets Supabase injects.
import { createClient, type SupabaseClient } from "npm:@supabase/supabase-js@2";

import { HttpError } from "./http.ts";
import type { Caller } from "./auth.ts";
import type { DbResult, JobLookup, QueueApi } from "./jobs.ts";
import { enqueue, getJob, getJobForDocument, SupaworkerError } from "./supaworker/index.ts";

function env(name: string): string {
  const value = Deno.env.get(name);
  if (!value) {
    console.error(`${name} is not set`);
    throw new HttpError(500, "misconfigured", "The function is missing its configuration.");
  }
  return value;
}

/**
 * A client that acts as the caller: the anon key identifies the project and the caller's own
 * `Authorization` is forwarded, so PostgREST runs every query as that user under RLS.
 */
export function callerClient(caller: Caller): SupabaseClient {
  return createClient(env("SUPABASE_URL"), env("SUPABASE_ANON_KEY"), {
    global: { headers: { Authorization: caller.authorization } },
    // A function is stateless: no session to store, refresh or read from a URL.
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
}

/** The queue through the supaworker client (`_supaworker/supaworker/`, a copy of clients/js),
 * with `client`'s identity. Its errors become the DbResult the handlers map to HTTP. */
export function supabaseQueueApi(client: SupabaseClient): QueueApi {
  return {
    enqueue(userDocumentId, priority) {
      // A function has a few seconds, not the client's default 10 s of retries.
      const options = { retry: { maxElapsedMs: 3_000 }, ...(priority === undefined ? {} : { priority }) };
      return asResult(enqueue(client, userDocumentId, options));
    },
    findJob({ by, value }: JobLookup) {
      return asResult(by === "id" ? getJob(client, value) : getJobForDocument(client, value));
    },
  };
}

async function asResult(call: Promise<object | null>): Promise<DbResult<Record<string, unknown>>> {
  try {
    return { data: (await call) as Record<string, unknown> | null, error: null, status: 200 };
  } catch (error) {
    if (!(error instanceof SupaworkerError)) throw error;
    const { code, message, details, hint, status } = error;
    return { data: null, error: { code, message, details, hint }, status };
  }
}

/** What the functions use in production: the queue as the calling user. */
export function callerQueueApi(caller: Caller): QueueApi {
  return supabaseQueueApi(callerClient(caller));
}
