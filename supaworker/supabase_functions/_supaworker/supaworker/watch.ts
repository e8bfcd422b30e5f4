// Generated from clients/js/src/watch.ts by clients/js/scripts/sync.mjs: edit that file.
// Following one job until it ends: Realtime postgres_changes on its row, plus a fresh read
// whenever the subscription (re)starts. Realtime delivers nothing that happened while the
// socket was down, so without the read a job that finished during a reconnect would be
// watched forever. Reads and changes are merged by updated_at (set by a trigger on every
// update), so each version of the row is reported once, oldest first, and a late event
// never overwrites a newer read.
import { SupaworkerError } from "./errors.ts";
import { getJob } from "./jobs.ts";
import type { AnySupabaseClient } from "./rpc.ts";
import { FINAL_STATUSES, type Job } from "./types.ts";

/** Where a version of the job came from: a Realtime change, or a read (at the start and
 * after each (re)subscription). */
export type ChangeSource = "change" | "read";

export interface WatchOptions {
  /** Reject with code "aborted" when this aborts. */
  signal?: AbortSignal;
  /** Reject with code "timeout" after this long (default: no limit). */
  timeoutMs?: number;
  /** The Realtime channel's status as it changes: "SUBSCRIBED" (joined), "LIVE" (Realtime
   * confirmed the postgres_changes subscription: changes arrive from now on), both again
   * after each reconnect; "CHANNEL_ERROR", "TIMED_OUT", "CLOSED". For a "live" indicator;
   * the watch itself needs nothing from the caller. */
  onStatus?: (status: string) => void;
}

/**
 * Report every new version of job `jobId` to `onChange` and resolve with the job once it is
 * completed, failed or cancelled (at once if it already is).
 *
 * The client's identity decides what it may watch: a user's client (anon key + the user's
 * token; call `supabase.realtime.setAuth(token)` when the token is not from supabase.auth)
 * sees only their own jobs, and another user's job is rejected as PT404, like a missing one.
 */
export function watchJob(
  supabase: AnySupabaseClient,
  jobId: string,
  onChange?: (job: Job, source: ChangeSource) => void,
  options: WatchOptions = {},
): Promise<Job> {
  return new Promise<Job>((resolve, reject) => {
    let newest = -1;
    let done = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const topic = `supaworker-job-${jobId}-${Math.random().toString(36).slice(2, 10)}`;

    const finish = (outcome: { job: Job } | { error: unknown }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      // Leaving the channel is best effort: the outcome does not depend on it.
      supabase.removeChannel(channel).catch(() => {});
      if ("job" in outcome) resolve(outcome.job);
      else reject(outcome.error);
    };

    const offer = (job: Job, source: ChangeSource) => {
      if (done) return;
      const version = timestampMicros(job.updated_at);
      if (version <= newest) return; // already reported (or older than what was)
      newest = version;
      try {
        onChange?.(job, source);
      } catch (error) {
        finish({ error });
        return;
      }
      if (FINAL_STATUSES.has(job.status)) finish({ job });
    };

    const catchUp = async (first: boolean) => {
      try {
        const job = await getJob(supabase, jobId);
        if (job === null) {
          finish({
            error: new SupaworkerError(`job ${jobId} not found`, { code: "PT404", status: 404 }),
          });
        } else {
          offer(job, "read");
        }
      } catch (error) {
        // A read that fails for good (bad id, bad token) fails the watch; a transient one is
        // repeated by the next (re)subscription.
        if (first || !(error instanceof SupaworkerError && error.transient)) finish({ error });
      }
    };

    const onAbort = () =>
      finish({ error: new SupaworkerError(`watching job ${jobId} was aborted`, { code: "aborted" }) });
    if (options.signal?.aborted) {
      reject(new SupaworkerError(`watching job ${jobId} was aborted`, { code: "aborted" }));
      return;
    }
    options.signal?.addEventListener("abort", onAbort, { once: true });
    if (options.timeoutMs !== undefined) {
      timer = setTimeout(
        () =>
          finish({
            error: new SupaworkerError(`job ${jobId} did not end within ${options.timeoutMs} ms`, {
              code: "timeout",
            }),
          }),
        options.timeoutMs,
      );
    }

    const channel = supabase
      .channel(topic)
      .on(
        "postgres_changes",
        { event: "UPDATE", schema: "public", table: "processing_queue", filter: `id=eq.${jobId}` },
        (change) => offer(change.new as Job, "change"),
      )
      // Supabase Realtime confirms the postgres_changes subscription separately from the join;
      // changes are delivered from then on, so this is the read that closes the gap.
      .on("system", {}, (message: { extension?: string; status?: string }) => {
        if (done || message.extension !== "postgres_changes" || message.status !== "ok") return;
        void catchUp(false);
        options.onStatus?.("LIVE");
      })
      .subscribe((status) => {
        // realtime-js rejoins by itself after CHANNEL_ERROR / TIMED_OUT and a dropped
        // socket; every rejoin ends in SUBSCRIBED again, and then we read.
        if (done) return;
        if (status === "SUBSCRIBED") void catchUp(false);
        options.onStatus?.(status);
      });
    void catchUp(true);
  });
}

/**
 * Microseconds since the epoch of a Postgres timestamptz as PostgREST
 * ("2026-12-01T08:30:00.123456+00:00") or Realtime ("2026-12-01 08:30:00.123456+00") writes
 * it. Date.parse alone keeps milliseconds, and two updates within one millisecond must
 * still order.
 */
export function timestampMicros(ts: string): number {
  const m = /^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d(?::?\d\d)?)?$/.exec(ts);
  if (!m) return Date.parse(ts) * 1000;
  let zone = m[4] ?? "Z";
  if (/^[+-]\d\d$/.test(zone)) zone += ":00";
  else if (/^[+-]\d{4}$/.test(zone)) zone = `${zone.slice(0, 3)}:${zone.slice(3)}`;
  const fraction = Number(`${m[3] ?? ""}000000`.slice(0, 6));
  return Date.parse(`${m[1]}T${m[2]}${zone}`) * 1000 + fraction;
}
