// Generated from clients/js/src/errors.ts by clients/js/scripts/sync.mjs: edit that file.
// One error class for everything the client reports. The database's SQLSTATE is the
// contract (docs/architecture.md): 22023 invalid argument, PT403 not yours / server-only
// option, PT404 not found, PT409 wrong state, PT413 payload too large; PostgREST adds its
// own PGRSTxxx codes (PGRST301 bad JWT, ...). The client keeps the code as the database
// sent it instead of translating it, so `error.code === "PT403"` means what the SQL says.

/** The fields of a PostgREST error body (supabase-js's PostgrestError has this shape). */
export interface PostgrestErrorLike {
  code?: string | null;
  message?: string | null;
  details?: string | null;
  hint?: string | null;
}

/** HTTP answers that say "try again": a gateway or PostgREST without its database. */
const TRANSIENT_STATUSES = new Set([502, 503, 504]);

export class SupaworkerError extends Error {
  /** SQLSTATE or PostgREST code ("PT403", "22023", "PGRST301"); "" when the answer had none
   * (no answer at all, or a proxy's error page). */
  readonly code: string;
  /** The HTTP status of the answer; 0 when there was no answer (refused connection, DNS,
   * aborted request). */
  readonly status: number;
  readonly details: string | null;
  readonly hint: string | null;

  constructor(
    message: string,
    init: { code?: string; status?: number; details?: string | null; hint?: string | null } = {},
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "SupaworkerError";
    this.code = init.code ?? "";
    this.status = init.status ?? 0;
    this.details = init.details ?? null;
    this.hint = init.hint ?? null;
  }

  /** A failure that may pass by itself: no answer, or 502/503/504. Everything else (a
   * refusal, a bad argument, a missing document) gives the same answer when repeated. */
  get transient(): boolean {
    return this.status === 0 || TRANSIENT_STATUSES.has(this.status);
  }

  /** From supabase-js's `{ error, status }`. */
  static fromPostgrest(error: PostgrestErrorLike, status: number): SupaworkerError {
    const message = error.message || `the database answered HTTP ${status}`;
    return new SupaworkerError(message, {
      code: error.code ?? "",
      status,
      details: error.details ?? null,
      hint: error.hint ?? null,
    });
  }
}

/** The SQL's "invalid argument" for arguments the client checks before any call. */
export function invalidArgument(message: string): SupaworkerError {
  return new SupaworkerError(message, { code: "22023", status: 400 });
}
