// A small subset of node:assert/strict for the *_test.ts files. Not `node:assert` itself: run
// from the repository root, Deno resolves modules through the root package.json, whose
// node_modules has no @types/node, so `deno check` could not type it; `jsr:@std/assert`
// cannot be fetched here.

export class AssertionError extends Error {
  override name = "AssertionError";
}

function show(value: unknown): string {
  return Deno.inspect(value, { depth: 6, sorted: true });
}

function fail(message: string, detail?: string): never {
  throw new AssertionError(detail ? `${detail}: ${message}` : message);
}

function deepEqualValues(a: unknown, b: unknown): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const aKeys = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined);
  const bKeys = Object.keys(b).filter((k) => (b as Record<string, unknown>)[k] !== undefined);
  if (aKeys.length !== bKeys.length) return false;
  return aKeys.every((key) =>
    deepEqualValues((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key])
  );
}

function validate(error: unknown, check: (error: unknown) => boolean, detail?: string): void {
  if (!check(error)) fail(`unexpected error ${show(error)}`, detail);
}

/** Explicitly typed: TypeScript only honours `asserts` signatures declared this way. */
export interface Assert {
  ok(value: unknown, detail?: string): asserts value;
  equal(actual: unknown, expected: unknown, detail?: string): void;
  deepEqual(actual: unknown, expected: unknown, detail?: string): void;
  match(text: string, pattern: RegExp, detail?: string): void;
  doesNotMatch(text: string, pattern: RegExp, detail?: string): void;
  throws(fn: () => unknown, check: (error: unknown) => boolean, detail?: string): void;
  rejects(
    promise: Promise<unknown>,
    check: (error: unknown) => boolean,
    detail?: string,
  ): Promise<void>;
}

export const assert: Assert = {
  ok(value: unknown, detail?: string): asserts value {
    if (!value) fail(`expected a truthy value, got ${show(value)}`, detail);
  },
  equal(actual: unknown, expected: unknown, detail?: string): void {
    if (!Object.is(actual, expected)) fail(`${show(actual)} !== ${show(expected)}`, detail);
  },
  /** Structural equality; like node's, a key holding `undefined` counts as absent. */
  deepEqual(actual: unknown, expected: unknown, detail?: string): void {
    if (!deepEqualValues(actual, expected)) {
      fail(`${show(actual)} is not deeply equal to ${show(expected)}`, detail);
    }
  },
  match(text: string, pattern: RegExp, detail?: string): void {
    if (!pattern.test(text)) fail(`${show(text)} does not match ${pattern}`, detail);
  },
  doesNotMatch(text: string, pattern: RegExp, detail?: string): void {
    if (pattern.test(text)) fail(`${show(text)} matches ${pattern}`, detail);
  },
  throws(fn: () => unknown, check: (error: unknown) => boolean, detail?: string): void {
    try {
      fn();
    } catch (error) {
      return validate(error, check, detail);
    }
    fail("expected the function to throw", detail);
  },
  async rejects(
    promise: Promise<unknown>,
    check: (error: unknown) => boolean,
    detail?: string,
  ): Promise<void> {
    try {
      await promise;
    } catch (error) {
      return validate(error, check, detail);
    }
    fail("expected the promise to reject", detail);
  },
};
