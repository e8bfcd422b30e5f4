// Generated from clients/js/src/watch.ts by clients/js/scripts/sync.mjs: edit that file.
// Following one job until it ends: its owner's private Broadcast topic `jobs:<user_id>` (every
// change of that user's jobs, sent by the database; only the owner and queue admins may join
// it, by the RLS policy on realtime.messages), or a read every second for a job without an
// owner (no topic carries it), plus a fresh read whenever the subscription (re)starts.
// Realtime delivers nothing that happened while the socket was down, so without the read a
// job that finished during a reconnect would be watched forever. Reads and changes are merged by updated_at (set by a trigger on every
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
   * confirmed the subscription: changes arrive from now on), both again after each
   * reconnect; "CHANNEL_ERROR", "TIMED_OUT", "CLOSED". For a "live" indicator;
   * the watch itself needs nothing from the caller. "POLLING" for a job without an owner. */
  onStatus?: (status: string) => void;
  /** A job without an owner (enqueued by the service role for no user) has no topic: it is
   * read this often (default 1000 ms). */
  pollIntervalMs?: number;
}

/**
 * Report every new version of job `jobId` to `onChange` and resolve with the job once it is
 * completed, failed or cancelled (at once if it already is).
 *
 * The client's identity decides what it may watch: a user's client (anon key + the user's
 * token: signed in with supabase.auth, or `createClient(url, anonKey, { accessToken: async ()
 * => token })` for a token from elsewhere, so that Realtime rejoins with it after a reconnect)
 * sees only their own jobs, and another user's job is rejected as PT404, like a missing one.
 * Changes arrive on the owner's private Broadcast topic `jobs:<user_id>`, shared by all the
 * watches of that user's jobs on one client.
 */
export function watchJob(
  supabase: AnySupabaseClient,
  jobId: string,
  onChange?: (job: Job, source: ChangeSource) => void,
  options: WatchOptions = {},
): Promise<Job> {
  return new Promise<Job>((resolve, reject) => {
    let newest = -1;
    let latest: Job | null = null; // the newest full row (a topic message carries a part)
    let done = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let unsubscribe: () => void = () => {};

    const finish = (outcome: { job: Job } | { error: unknown }) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      unsubscribe();
      if ("job" in outcome) resolve(outcome.job);
      else reject(outcome.error);
    };

    const offer = (job: Job, source: ChangeSource) => {
      if (done) return;
      const version = timestampMicros(job.updated_at);
      if (version <= newest) return; // already reported (or older than what was)
      newest = version;
      latest = job;
      try {
        onChange?.(job, source);
      } catch (error) {
        finish({ error });
        return;
      }
      if (FINAL_STATUSES.has(job.status)) finish({ job });
    };

    // `retry`: whether a transient failure is read again in 500 ms. On a Broadcast topic the
    // rejoin is the only moment that calls for a read; the poll of a job without an owner
    // reads again anyway, so it passes false (a retry chain per failed poll would multiply
    // the reads while PostgREST is in trouble).
    const catchUp = async (first: boolean, retry = true): Promise<Job | null> => {
      try {
        const job = await getJob(supabase, jobId);
        if (job === null) {
          finish({
            error: new SupaworkerError(`job ${jobId} not found`, { code: "PT404", status: 404 }),
          });
        } else {
          offer(job, "read");
        }
        return job;
      } catch (error) {
        // A read that fails for good (bad id, bad token) fails the watch; a transient one (a
        // pooled connection that died with the socket) is repeated (see `retry`).
        if (first || !(error instanceof SupaworkerError && error.transient)) finish({ error });
        else if (retry && !done) setTimeout(() => void catchUp(false), 500);
        return null;
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

    const follow = (owner: string | null) => {
      if (done) return;
      if (owner === null) {
        const interval = options.pollIntervalMs ?? 1000;
        unsubscribe = pollRow(() => catchUp(false, false), interval, options.onStatus);
        return;
      }
      unsubscribe = followOwner(supabase, owner, {
        onJob: (change) => {
          if (change.id !== jobId || latest === null) return;
          if (!FINAL_STATUSES.has(change.status)) {
            offer({ ...latest, ...change }, "change");
            return;
          }
          // The end: the message has no result, so the job is read in full (once per watch).
          getJob(supabase, jobId).then(
            (job) => offer(job ?? { ...(latest as Job), ...change }, "change"),
            () => offer({ ...(latest as Job), ...change }, "change"),
          );
        },
        onStatus: (status) => {
          if (done) return;
          if (status === "SUBSCRIBED") void catchUp(false);
          options.onStatus?.(status);
          if (status === "SUBSCRIBED") options.onStatus?.("LIVE");
        },
      });
    };
    void catchUp(true).then((job) => {
      if (job !== null) follow(job.user_id);
    });
  });
}

/** A job without an owner: no topic carries it (processing_queue is not published, so there is
 * no postgres_changes either), so it is read every `intervalMs` until the watch ends: one read
 * at a time, the next `intervalMs` after the last one ended, whatever its outcome. */
function pollRow(
  read: () => Promise<unknown>,
  intervalMs: number,
  onStatus?: (status: string) => void,
): () => void {
  let live = true;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const next = () => {
    timer = setTimeout(() => {
      if (!live) return;
      void read().finally(() => {
        if (live) next();
      });
    }, intervalMs);
  };
  onStatus?.("POLLING");
  next();
  return () => {
    live = false;
    clearTimeout(timer);
  };
}

/** What a `jobs:<user_id>` message carries of the job: what changes while it runs. */
type JobChange = Partial<Job> & Pick<Job, "id" | "status" | "updated_at">;

/** A `jobs:<user_id>` message: the jobs of that user one database statement changed. */
interface JobMessage {
  type?: "INSERT" | "UPDATE" | "DELETE";
  records?: JobChange[];
}

interface OwnerListener {
  onJob: (change: JobChange) => void;
  onStatus: (status: string) => void;
}

interface OwnerTopic {
  channel: ReturnType<AnySupabaseClient["channel"]>;
  listeners: Set<OwnerListener>;
  status: string | null;
}

// realtime-js keeps one channel per topic and client, so the watches of one user's jobs share
// the channel of `jobs:<user_id>`: joined by the first, left by the last.
const ownerTopics = new WeakMap<AnySupabaseClient, Map<string, OwnerTopic>>();

function followOwner(
  supabase: AnySupabaseClient,
  owner: string,
  listener: OwnerListener,
): () => void {
  const topic = `jobs:${owner}`;
  let topics = ownerTopics.get(supabase);
  if (topics === undefined) {
    topics = new Map();
    ownerTopics.set(supabase, topics);
  }
  let shared = topics.get(topic);
  if (shared === undefined) {
    const entry: OwnerTopic = {
      channel: supabase.channel(topic, { config: { private: true } }),
      listeners: new Set(),
      status: null,
    };
    entry.channel
      // One message per statement of the database: the changes it made to this user's jobs
      // (up to 50); a DELETE's records are {id} only and end no watch.
      .on("broadcast", { event: "job" }, (message: { payload?: JobMessage }) => {
        const payload = message.payload;
        if (!payload || payload.type === "DELETE") return;
        for (const job of payload.records ?? []) {
          for (const l of [...entry.listeners]) l.onJob(job);
        }
      })
      .subscribe((status) => {
        entry.status = status;
        for (const l of [...entry.listeners]) l.onStatus(status);
      });
    topics.set(topic, entry);
    shared = entry;
  }
  shared.listeners.add(listener);
  // Joining an already joined channel: this watch's catch-up read happens now.
  if (shared.status === "SUBSCRIBED") listener.onStatus("SUBSCRIBED");
  const entry = shared;
  return () => {
    entry.listeners.delete(listener);
    if (entry.listeners.size > 0 || topics.get(topic) !== entry) return;
    topics.delete(topic);
    supabase.removeChannel(entry.channel).catch(() => {});
  };
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
