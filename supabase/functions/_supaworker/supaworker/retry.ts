// Generated from clients/js/src/retry.ts by clients/js/scripts/sync.mjs: edit that file.
// Retrying transient failures (no answer, 502/503/504) within a bounded time. Only calls
// that are safe to repeat go through here: enqueue_job is idempotent per document (an active
// job is returned as is), and reads are reads.
import { SupaworkerError } from "./errors.ts";

export interface RetryOptions {
  /** Give up once this much time has passed since the first try (default 10 s). */
  maxElapsedMs?: number;
  /** First delay (default 200 ms); doubled after each try ... */
  initialDelayMs?: number;
  /** ... up to this (default 2 s). Each delay is drawn from [delay/2, delay) (jitter), so
   * many clients cut off together do not come back together. */
  maxDelayMs?: number;
}

const DEFAULTS: Required<RetryOptions> = {
  maxElapsedMs: 10_000,
  initialDelayMs: 200,
  maxDelayMs: 2_000,
};

/**
 * Run `attempt` until it succeeds, fails with a non-transient error, or the next try would
 * start after `maxElapsedMs`. `retry: false` tries once. The last error is thrown as is.
 */
export async function withRetry<T>(
  attempt: () => Promise<T>,
  retry: RetryOptions | false | undefined,
  signal?: AbortSignal,
): Promise<T> {
  const policy = retry === false ? null : { ...DEFAULTS, ...retry };
  const started = Date.now();
  let delay = policy?.initialDelayMs ?? 0;
  for (;;) {
    try {
      return await attempt();
    } catch (error) {
      if (!policy || !(error instanceof SupaworkerError) || !error.transient) throw error;
      if (signal?.aborted) throw error; // the caller's abort is not a network failure
      const wait = delay / 2 + Math.random() * (delay / 2);
      if (Date.now() - started + wait > policy.maxElapsedMs) throw error;
      await sleep(wait, signal);
      delay = Math.min(delay * 2, policy.maxDelayMs);
    }
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}
