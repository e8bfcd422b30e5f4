// PostgREST error -> HTTP error. The SQL functions raise SQLSTATEs that are the contract
// (docs/architecture.md); PostgREST already maps them to statuses, but the function maps the
// codes itself so its answer does not depend on PostgREST's fallbacks (unknown classes -> 400).
import { HttpError } from "./http.ts";

/** The fields of a PostgREST error body (supabase-js's PostgrestError has the same shape). */
export interface PostgrestErrorLike {
  code?: string | null;
  message?: string | null;
  details?: string | null;
  hint?: string | null;
}

interface Mapping {
  status: number;
  code: string;
}

const BY_SQLSTATE: Record<string, Mapping> = {
  PT403: { status: 403, code: "forbidden" },
  PT404: { status: 404, code: "not_found" },
  PT409: { status: 409, code: "conflict" },
  PT413: { status: 413, code: "payload_too_large" },
  "22023": { status: 400, code: "invalid_argument" },
  "22P02": { status: 400, code: "invalid_argument" }, // invalid text representation (uuid, int)
  "42501": { status: 403, code: "forbidden" }, // the role may not run the function / read the row
  PGRST301: { status: 401, code: "unauthorized" }, // JWT invalid or expired
  PGRST302: { status: 401, code: "unauthorized" }, // anonymous access is disabled
};

const GENERIC_MESSAGE = "The database could not handle the request.";

/**
 * Translate an error from a PostgREST call. `httpStatus` is the status PostgREST answered;
 * it decides the cases the code alone cannot (a 401 for an anonymous permission error).
 * Unknown failures become 502 with a generic message: they are the server's fault, and
 * their details can hold internals, so they are logged instead of returned.
 */
export function fromPostgrestError(error: PostgrestErrorLike, httpStatus?: number): HttpError {
  const sqlstate = error.code ?? "";
  const message = error.message || GENERIC_MESSAGE;
  if (httpStatus === 401) return new HttpError(401, "unauthorized", message);
  const known = BY_SQLSTATE[sqlstate];
  if (known) return new HttpError(known.status, known.code, withHint(message, error.hint));
  const custom = /^PT([1-5]\d\d)$/.exec(sqlstate);
  if (custom) return new HttpError(Number(custom[1]), "error", withHint(message, error.hint));
  console.error("unexpected database error", httpStatus, error);
  return new HttpError(502, "database_error", GENERIC_MESSAGE);
}

// The SQL functions put "what to fix" in the hint; a caller reading only `message` needs it.
function withHint(message: string, hint: string | null | undefined): string {
  return hint ? `${message} (${hint})` : message;
}
