// HTTP plumbing shared by every function: JSON responses that always carry the CORS headers,
// one error type that handlers throw, and a wrapper that turns it into `{error, message}`.
import { corsHeaders } from "npm:@supabase/supabase-js@2/cors";

export { corsHeaders };

/** An error the client should see: its HTTP status, a stable code and a sentence. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = "HttpError";
  }
}

export type Handler = (req: Request) => Promise<Response>;

export function jsonResponse(
  body: unknown,
  status = 200,
  headers: Record<string, string> = {},
): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...corsHeaders, ...headers, "Content-Type": "application/json" },
  });
}

export function errorResponse(error: HttpError): Response {
  return jsonResponse({ error: error.code, message: error.message }, error.status, error.headers);
}

/**
 * Wrap a handler with what every function needs: the CORS preflight answered as Supabase's
 * guide shows, 405 (with `Allow`) for other methods, and every thrown error turned into JSON.
 * Unexpected errors are logged (the function's log is the only place to debug them) and
 * answered with a 500 that does not leak internals.
 */
export function serve(methods: readonly string[], handler: Handler): Handler {
  const allow = [...methods, "OPTIONS"].join(", ");
  return async (req: Request): Promise<Response> => {
    if (req.method === "OPTIONS") {
      return new Response("ok", { headers: corsHeaders });
    }
    try {
      if (!methods.includes(req.method)) {
        throw new HttpError(405, "method_not_allowed", `Use ${methods.join(" or ")}.`, {
          Allow: allow,
        });
      }
      return await handler(req);
    } catch (error) {
      if (error instanceof HttpError) return errorResponse(error);
      console.error("unhandled error", error);
      return errorResponse(new HttpError(500, "internal_error", "Something went wrong."));
    }
  };
}

/** Largest request body a function reads; its inputs are an id and a number. */
export const MAX_BODY_BYTES = 16 * 1024;

/**
 * Read a JSON object body. 413 when larger than `maxBytes` (checked on the declared length
 * first, then on what actually arrived, since a chunked body declares none), 400 when it is
 * not a JSON object.
 */
export async function readJsonObject(
  req: Request,
  maxBytes = MAX_BODY_BYTES,
): Promise<Record<string, unknown>> {
  const declared = Number(req.headers.get("Content-Length") ?? "0");
  if (declared > maxBytes) throw tooLarge(maxBytes);
  const bytes = new Uint8Array(await req.arrayBuffer());
  if (bytes.byteLength > maxBytes) throw tooLarge(maxBytes);
  let body: unknown;
  try {
    body = JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    throw new HttpError(400, "invalid_body", "The request body must be a JSON object.");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body)) {
    throw new HttpError(400, "invalid_body", "The request body must be a JSON object.");
  }
  return body as Record<string, unknown>;
}

function tooLarge(maxBytes: number): HttpError {
  return new HttpError(
    413,
    "payload_too_large",
    `The request body is larger than ${maxBytes} bytes.`,
  );
}
