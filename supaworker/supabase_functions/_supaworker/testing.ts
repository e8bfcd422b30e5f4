// Test helpers (imported by *_test.ts only, so never part of a deployed function).
import type { DbResult, JobLookup, QueueApi } from "./jobs.ts";

function base64Url(text: string): string {
  const binary = String.fromCharCode(...new TextEncoder().encode(text));
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/** A token with the given claims and a dummy signature: the functions never check signatures
 * themselves (the platform does), so unit tests need only the shape. */
export function unsignedJwt(claims: Record<string, unknown>): string {
  const header = base64Url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  return `${header}.${base64Url(JSON.stringify(claims))}.c2lnbmF0dXJl`;
}

export const USER_ID = "7d3c9a52-64a6-4b8e-9f5e-1b2c3d4e5f60";
export const DOC_ID = "0b6f9d1e-2a3c-4d5e-8f90-a1b2c3d4e5f6";
export const JOB_ID = "c9b8a7d6-e5f4-4321-8765-0fedcba98765";
export const USER_TOKEN = unsignedJwt({ sub: USER_ID, role: "authenticated" });

export function request(
  path: string,
  init: RequestInit & { token?: string | null } = {},
): Request {
  const { token = USER_TOKEN, ...rest } = init;
  const headers = new Headers(rest.headers);
  if (token !== null) headers.set("Authorization", `Bearer ${token}`);
  return new Request(`http://functions.local${path}`, { ...rest, headers });
}

export const JOB_ROW: Record<string, unknown> = {
  id: JOB_ID,
  user_document_id: DOC_ID,
  user_id: USER_ID,
  queue: "default",
  status: "pending",
  priority: 0,
  payload: { internal: true },
  attempt: 0,
  assigned_to: null,
  progress_percent: null,
  progress_message: null,
  error_message: null,
  result: null,
  created_at: "2026-11-28T12:00:00Z",
};

type Reply = DbResult<Record<string, unknown>>;

/** A QueueApi that records its calls and answers with canned results. */
export class FakeQueue implements QueueApi {
  calls: Array<{ method: string; args: unknown[]; authorization: string }> = [];
  authorization = "";

  constructor(private readonly reply: Reply = { data: JOB_ROW, error: null, status: 200 }) {}

  enqueue(userDocumentId: string, priority?: number): Promise<Reply> {
    this.calls.push({
      method: "enqueue",
      args: [userDocumentId, priority],
      authorization: this.authorization,
    });
    return Promise.resolve(this.reply);
  }

  findJob(lookup: JobLookup): Promise<Reply> {
    this.calls.push({ method: "findJob", args: [lookup], authorization: this.authorization });
    return Promise.resolve(this.reply);
  }
}

export function dbError(code: string, status: number, hint: string | null = null): Reply {
  return { data: null, error: { code, message: `error ${code}`, details: null, hint }, status };
}
