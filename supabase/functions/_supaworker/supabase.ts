// The one place that builds supabase-js clients from the secrets Supabase injects.
import { createClient, type SupabaseClient } from "npm:@supabase/supabase-js@2";

import { HttpError } from "./http.ts";
import type { Caller } from "./auth.ts";
import { type JobLookup, PUBLIC_JOB_COLUMNS, type QueueApi } from "./jobs.ts";

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

/** The queue through PostgREST, with `client`'s identity. */
export function supabaseQueueApi(client: SupabaseClient): QueueApi {
  return {
    async enqueue(userDocumentId, priority) {
      const args: Record<string, unknown> = { p_user_document_id: userDocumentId };
      if (priority !== undefined) args.p_priority = priority;
      const { data, error, status } = await client.rpc("enqueue_job", args);
      return { data: data as Record<string, unknown> | null, error, status };
    },
    async findJob({ by, value }: JobLookup) {
      const { data, error, status } = await client
        .from("processing_queue")
        .select(PUBLIC_JOB_COLUMNS.join(","))
        .eq(by, value)
        .maybeSingle();
      return { data: data as Record<string, unknown> | null, error, status };
    },
  };
}

/** What the functions use in production: the queue as the calling user. */
export function callerQueueApi(caller: Caller): QueueApi {
  return supabaseQueueApi(callerClient(caller));
}
