// Input checks done in the function so that a typo is a clear 400 before any database work.
import { HttpError } from "./http.ts";

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const INT4_MIN = -2147483648;
const INT4_MAX = 2147483647;

export function isUuid(value: unknown): value is string {
  return typeof value === "string" && UUID.test(value);
}

/** A required UUID field; 400 names the field when it is missing or malformed. */
export function requireUuid(value: unknown, field: string): string {
  if (value === undefined || value === null || value === "") {
    throw new HttpError(400, "invalid_argument", `${field} is required.`);
  }
  if (!isUuid(value)) {
    throw new HttpError(400, "invalid_argument", `${field} must be a UUID.`);
  }
  return value.toLowerCase();
}

/**
 * An optional Postgres `int` field. Only the type is checked here; the allowed range of a
 * priority is the database's rule (enqueue_job raises 22023), so it is not repeated.
 */
export function optionalInt(value: unknown, field: string): number | undefined {
  if (value === undefined || value === null) return undefined;
  if (
    typeof value !== "number" || !Number.isInteger(value) || value < INT4_MIN || value > INT4_MAX
  ) {
    throw new HttpError(400, "invalid_argument", `${field} must be an integer.`);
  }
  return value;
}
