// Who is calling. The platform (or the local gateway) has already verified the JWT's
// signature when `verify_jwt = true`; this module only decides whether the token belongs to
// someone allowed to use the function. The decoded claims grant nothing by themselves: the
// database checks the same token again (PostgREST verifies it and RLS / the SQL functions
// use auth.uid()), so a forged token sent to a function with verify_jwt off still gets no data.
import { HttpError } from "./http.ts";

export interface Caller {
  /** The `Authorization` header to forward to PostgREST, exactly as received. */
  authorization: string;
  role: string;
  /** The user id (`sub`); absent for the service role. */
  userId?: string;
}

/** Roles that may call the functions: a signed-in user, or a backend holding the service key. */
const CALLER_ROLES = new Set(["authenticated", "service_role"]);

export function requireCaller(req: Request): Caller {
  const authorization = req.headers.get("Authorization") ?? "";
  const match = /^Bearer\s+(\S+)$/i.exec(authorization);
  if (!match) throw unauthorized("Missing bearer token in the Authorization header.");
  const claims = decodeClaims(match[1]);
  const role = typeof claims.role === "string" ? claims.role : "";
  const sub = typeof claims.sub === "string" && claims.sub ? claims.sub : undefined;
  if (!CALLER_ROLES.has(role) || (role === "authenticated" && !sub)) {
    // The anon key is a valid JWT too, but it identifies no one: ownership needs a user.
    throw unauthorized("Sign in first: the token is not a user's access token.");
  }
  return { authorization, role, userId: sub };
}

/** The payload of a compact JWS, without verifying it (see the module comment). */
export function decodeClaims(token: string): Record<string, unknown> {
  const parts = token.split(".");
  if (parts.length !== 3) throw unauthorized("The bearer token is not a JWT.");
  try {
    const claims: unknown = JSON.parse(new TextDecoder().decode(base64UrlDecode(parts[1])));
    if (typeof claims === "object" && claims !== null && !Array.isArray(claims)) {
      return claims as Record<string, unknown>;
    }
  } catch {
    // fall through: a payload that is not base64url JSON is as bad as a missing one
  }
  throw unauthorized("The bearer token is not a JWT.");
}

function base64UrlDecode(text: string): Uint8Array {
  const base64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const padded = base64 + "=".repeat((4 - (base64.length % 4)) % 4);
  return Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
}

function unauthorized(message: string): HttpError {
  return new HttpError(401, "unauthorized", message, { "WWW-Authenticate": "Bearer" });
}
