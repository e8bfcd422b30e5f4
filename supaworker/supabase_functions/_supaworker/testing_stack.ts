// Helpers for the integration tests (*integration_test.ts), which call the deployed-like
// functions through a running stack (`supaworker dev up`, or a hosted project) with
// supabase-js, as an app would. They run only when these variables are set:
//   SUPABASE_URL, SUPABASE_ANON_KEY       `eval "$(supaworker dev env)"`
//   SUPAWORKER_TEST_USER_TOKEN            `supaworker dev user a@example.test | tail -1`
//   SUPAWORKER_TEST_OTHER_USER_TOKEN      `supaworker dev user b@example.test | tail -1`
// (tests/functions/test_deno_integration.py sets them up against the test stack).
import { createClient, FunctionsHttpError, type SupabaseClient } from "npm:@supabase/supabase-js@2";

import { assert } from "./assert.ts";
import { decodeClaims } from "./auth.ts";

export interface StackEnv {
  url: string;
  anonKey: string;
  userToken: string;
  otherUserToken: string;
}

export function stackEnv(): StackEnv | null {
  const read = (name: string) => Deno.env.get(name) ?? "";
  const env = {
    url: read("SUPABASE_URL"),
    anonKey: read("SUPABASE_ANON_KEY"),
    userToken: read("SUPAWORKER_TEST_USER_TOKEN"),
    otherUserToken: read("SUPAWORKER_TEST_OTHER_USER_TOKEN"),
  };
  return Object.values(env).every(Boolean) ? env : null;
}

/** A supabase-js client for the anon key, signed in as `token` when one is given. */
export function clientFor(env: StackEnv, token?: string): SupabaseClient {
  return createClient(env.url, env.anonKey, {
    global: { headers: token ? { Authorization: `Bearer ${token}` } : {} },
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
}

/** A document owned by the token's user, inserted as that user (RLS allows own rows). */
export async function createDocument(env: StackEnv, token: string): Promise<string> {
  const userId = decodeClaims(token).sub;
  const { data, error } = await clientFor(env, token)
    .from("user_documents")
    .insert({ user_id: userId, name: "deno-integration.txt", content: "hello" })
    .select("id")
    .single();
  assert.ok(!error && data, `could not create a document: ${JSON.stringify(error)}`);
  return (data as { id: string }).id;
}

/** The status and JSON body of a failed `functions.invoke`. */
export async function httpFailure(error: unknown): Promise<{ status: number; body: unknown }> {
  assert.ok(error instanceof FunctionsHttpError, `expected an HTTP error, got ${error}`);
  const response = error.context as Response;
  return { status: response.status, body: await response.json() };
}
