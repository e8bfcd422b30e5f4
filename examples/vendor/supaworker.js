// supaworker's browser build (ESM), generated from clients/js/src by clients/js/scripts/sync.mjs: do not edit.
// clients/js/src/errors.ts
var TRANSIENT_STATUSES = /* @__PURE__ */ new Set([
  502,
  503,
  504
]);
var SupaworkerError = class _SupaworkerError extends Error {
  /** SQLSTATE or PostgREST code ("PT403", "22023", "PGRST301"); "" when the answer had none
   * (no answer at all, or a proxy's error page). */
  code;
  /** The HTTP status of the answer; 0 when there was no answer (refused connection, DNS,
   * aborted request). */
  status;
  details;
  hint;
  constructor(message, init = {}, options) {
    super(message, options);
    this.name = "SupaworkerError";
    this.code = init.code ?? "";
    this.status = init.status ?? 0;
    this.details = init.details ?? null;
    this.hint = init.hint ?? null;
  }
  /** A failure that may pass by itself: no answer, or 502/503/504. Everything else (a
   * refusal, a bad argument, a missing document) gives the same answer when repeated. */
  get transient() {
    return this.status === 0 || TRANSIENT_STATUSES.has(this.status);
  }
  /** From supabase-js's `{ error, status }`. */
  static fromPostgrest(error, status) {
    const message = error.message || `the database answered HTTP ${status}`;
    return new _SupaworkerError(message, {
      code: error.code ?? "",
      status,
      details: error.details ?? null,
      hint: error.hint ?? null
    });
  }
};
function invalidArgument(message) {
  return new SupaworkerError(message, {
    code: "22023",
    status: 400
  });
}

// clients/js/src/types.ts
var FINAL_STATUSES = /* @__PURE__ */ new Set([
  "completed",
  "failed",
  "cancelled"
]);

// clients/js/src/retry.ts
var DEFAULTS = {
  maxElapsedMs: 1e4,
  initialDelayMs: 200,
  maxDelayMs: 2e3
};
async function withRetry(attempt, retry, signal) {
  const policy = retry === false ? null : {
    ...DEFAULTS,
    ...retry
  };
  const started = Date.now();
  let delay = policy?.initialDelayMs ?? 0;
  for (; ; ) {
    try {
      return await attempt();
    } catch (error) {
      if (!policy || !(error instanceof SupaworkerError) || !error.transient) throw error;
      if (signal?.aborted) throw error;
      const wait = delay / 2 + Math.random() * (delay / 2);
      if (Date.now() - started + wait > policy.maxElapsedMs) throw error;
      await sleep(wait, signal);
      delay = Math.min(delay * 2, policy.maxDelayMs);
    }
  }
}
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, {
      once: true
    });
    function done() {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    }
  });
}

// clients/js/src/rpc.ts
function abortable(query, signal) {
  return signal ? query.abortSignal(signal) : query;
}
async function settle(query) {
  let reply;
  try {
    reply = await query;
  } catch (cause) {
    throw new SupaworkerError(String(cause), {
      status: 0
    }, {
      cause
    });
  }
  if (reply.error) throw SupaworkerError.fromPostgrest(reply.error, reply.status);
  return reply.data;
}
function rpc(supabase, name, args, options = {}) {
  return settle(abortable(supabase.rpc(name, args), options.signal));
}

// clients/js/src/jobs.ts
function enqueueArgs(documentId, options) {
  const args = {
    p_user_document_id: documentId
  };
  if (options.priority !== void 0) args.p_priority = options.priority;
  if (options.queue !== void 0) args.p_queue = options.queue;
  if (options.payload !== void 0) args.p_payload = options.payload;
  if (options.maxAttempts !== void 0) args.p_max_attempts = options.maxAttempts;
  if (options.runAt !== void 0) {
    args.p_run_at = options.runAt instanceof Date ? options.runAt.toISOString() : options.runAt;
  }
  if (options.timeoutSeconds !== void 0) args.p_timeout_seconds = options.timeoutSeconds;
  if (options.requires !== void 0) args.p_requires = options.requires;
  if (options.concurrencyKey !== void 0) args.p_concurrency_key = options.concurrencyKey;
  if (options.rateLimitKey !== void 0) args.p_rate_limit_key = options.rateLimitKey;
  return args;
}
function enqueue(supabase, documentId, options = {}) {
  const { retry, signal, ...enqueueOptions } = options;
  const args = enqueueArgs(documentId, enqueueOptions);
  return withRetry(async () => await rpc(supabase, "enqueue_job", args, {
    signal
  }), retry, signal);
}
var ENQUEUE_JOBS_LIMIT = 1e4;
function enqueueJobsItem(documentId, options) {
  const args = enqueueArgs(documentId, options);
  return Object.fromEntries(Object.entries(args).map(([key, value]) => [
    key.slice(2),
    value
  ]));
}
async function enqueueMany(supabase, documents, options = {}) {
  const { chunkSize = ENQUEUE_JOBS_LIMIT, retry, signal, ...shared } = options;
  if (!Number.isInteger(chunkSize) || chunkSize < 1 || chunkSize > ENQUEUE_JOBS_LIMIT) {
    throw invalidArgument(`chunkSize must be an integer from 1 to ${ENQUEUE_JOBS_LIMIT}, got ${chunkSize}`);
  }
  const items = [
    ...documents
  ].map((item) => {
    if (typeof item === "string") return enqueueJobsItem(item, shared);
    const { documentId, ...own } = item;
    return enqueueJobsItem(documentId, {
      ...shared,
      ...own
    });
  });
  const jobs = [];
  for (let offset = 0; offset < items.length; offset += chunkSize) {
    const chunk = items.slice(offset, offset + chunkSize);
    try {
      const rows = await withRetry(async () => await rpc(supabase, "enqueue_jobs", {
        p_jobs: chunk
      }, {
        signal
      }), retry, signal);
      jobs.push(...rows);
    } catch (error) {
      throw offset === 0 ? error : shiftIndex(error, offset);
    }
  }
  return jobs;
}
function shiftIndex(error, offset) {
  if (!(error instanceof SupaworkerError)) return error;
  const message = error.message.replace(/^p_jobs\[(\d+)\]/, (_, i) => `p_jobs[${Number(i) + offset}]`);
  if (message === error.message) return error;
  const { code, status, details, hint } = error;
  return new SupaworkerError(message, {
    code,
    status,
    details,
    hint
  }, {
    cause: error
  });
}
async function getJob(supabase, jobId, options = {}) {
  const query = supabase.from("processing_queue").select("*").eq("id", jobId);
  return await settle(abortable(query, options.signal).maybeSingle());
}
async function getJobForDocument(supabase, documentId, options = {}) {
  const query = supabase.from("processing_queue").select("*").eq("user_document_id", documentId);
  return await settle(abortable(query, options.signal).maybeSingle());
}
async function listJobs(supabase, options = {}) {
  const limit = options.limit ?? 50;
  if (!Number.isInteger(limit) || limit < 1 || limit > 1e3) {
    throw invalidArgument(`limit must be between 1 and 1000, got ${limit}`);
  }
  let query = supabase.from("processing_queue").select("*");
  if (options.status !== void 0) {
    query = query.in("status", Array.isArray(options.status) ? options.status : [
      options.status
    ]);
  }
  if (options.queue !== void 0) query = query.eq("queue", options.queue);
  const ordered = query.order("created_at", {
    ascending: false
  }).limit(limit);
  return await settle(abortable(ordered, options.signal));
}
async function cancelJob(supabase, jobId, options = {}) {
  return await rpc(supabase, "cancel_job", {
    p_job_id: jobId
  }, options);
}

// clients/js/src/watch.ts
function watchJob(supabase, jobId, onChange, options = {}) {
  return new Promise((resolve, reject) => {
    let newest = -1;
    let latest = null;
    let done = false;
    let timer;
    let unsubscribe = () => {
    };
    const finish = (outcome) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      options.signal?.removeEventListener("abort", onAbort);
      unsubscribe();
      if ("job" in outcome) resolve(outcome.job);
      else reject(outcome.error);
    };
    const offer = (job, source) => {
      if (done) return;
      const version = timestampMicros(job.updated_at);
      if (version <= newest) return;
      newest = version;
      latest = job;
      try {
        onChange?.(job, source);
      } catch (error) {
        finish({
          error
        });
        return;
      }
      if (FINAL_STATUSES.has(job.status)) finish({
        job
      });
    };
    const catchUp = async (first, retry = true) => {
      try {
        const job = await getJob(supabase, jobId);
        if (job === null) {
          finish({
            error: new SupaworkerError(`job ${jobId} not found`, {
              code: "PT404",
              status: 404
            })
          });
        } else {
          offer(job, "read");
        }
        return job;
      } catch (error) {
        if (first || !(error instanceof SupaworkerError && error.transient)) finish({
          error
        });
        else if (retry && !done) setTimeout(() => void catchUp(false), 500);
        return null;
      }
    };
    const onAbort = () => finish({
      error: new SupaworkerError(`watching job ${jobId} was aborted`, {
        code: "aborted"
      })
    });
    if (options.signal?.aborted) {
      reject(new SupaworkerError(`watching job ${jobId} was aborted`, {
        code: "aborted"
      }));
      return;
    }
    options.signal?.addEventListener("abort", onAbort, {
      once: true
    });
    if (options.timeoutMs !== void 0) {
      timer = setTimeout(() => finish({
        error: new SupaworkerError(`job ${jobId} did not end within ${options.timeoutMs} ms`, {
          code: "timeout"
        })
      }), options.timeoutMs);
    }
    const follow = (owner) => {
      if (done) return;
      if (owner === null) {
        const interval = options.pollIntervalMs ?? 1e3;
        unsubscribe = pollRow(() => catchUp(false, false), interval, options.onStatus);
        return;
      }
      unsubscribe = followOwner(supabase, owner, {
        onJob: (change) => {
          if (change.id !== jobId || latest === null) return;
          if (!FINAL_STATUSES.has(change.status)) {
            offer({
              ...latest,
              ...change
            }, "change");
            return;
          }
          getJob(supabase, jobId).then((job) => offer(job ?? {
            ...latest,
            ...change
          }, "change"), () => offer({
            ...latest,
            ...change
          }, "change"));
        },
        onStatus: (status) => {
          if (done) return;
          if (status === "SUBSCRIBED") void catchUp(false);
          options.onStatus?.(status);
          if (status === "SUBSCRIBED") options.onStatus?.("LIVE");
        }
      });
    };
    void catchUp(true).then((job) => {
      if (job !== null) follow(job.user_id);
    });
  });
}
function pollRow(read, intervalMs, onStatus) {
  let live = true;
  let timer;
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
var ownerTopics = /* @__PURE__ */ new WeakMap();
function followOwner(supabase, owner, listener) {
  const topic = `jobs:${owner}`;
  let topics = ownerTopics.get(supabase);
  if (topics === void 0) {
    topics = /* @__PURE__ */ new Map();
    ownerTopics.set(supabase, topics);
  }
  let shared = topics.get(topic);
  if (shared === void 0) {
    const entry2 = {
      channel: supabase.channel(topic, {
        config: {
          private: true
        }
      }),
      listeners: /* @__PURE__ */ new Set(),
      status: null
    };
    entry2.channel.on("broadcast", {
      event: "job"
    }, (message) => {
      const payload = message.payload;
      if (!payload || payload.type === "DELETE") return;
      for (const job of payload.records ?? []) {
        for (const l of [
          ...entry2.listeners
        ]) l.onJob(job);
      }
    }).subscribe((status) => {
      entry2.status = status;
      for (const l of [
        ...entry2.listeners
      ]) l.onStatus(status);
    });
    topics.set(topic, entry2);
    shared = entry2;
  }
  shared.listeners.add(listener);
  if (shared.status === "SUBSCRIBED") listener.onStatus("SUBSCRIBED");
  const entry = shared;
  return () => {
    entry.listeners.delete(listener);
    if (entry.listeners.size > 0 || topics.get(topic) !== entry) return;
    topics.delete(topic);
    supabase.removeChannel(entry.channel).catch(() => {
    });
  };
}
function timestampMicros(ts) {
  const m = /^(\d{4}-\d\d-\d\d)[T ](\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d(?::?\d\d)?)?$/.exec(ts);
  if (!m) return Date.parse(ts) * 1e3;
  let zone = m[4] ?? "Z";
  if (/^[+-]\d\d$/.test(zone)) zone += ":00";
  else if (/^[+-]\d{4}$/.test(zone)) zone = `${zone.slice(0, 3)}:${zone.slice(3)}`;
  const fraction = Number(`${m[3] ?? ""}000000`.slice(0, 6));
  return Date.parse(`${m[1]}T${m[2]}${zone}`) * 1e3 + fraction;
}

// clients/js/src/admin.ts
async function adminQueueStats(supabase, options = {}) {
  return await rpc(supabase, "admin_queue_stats", {}, options);
}
async function adminRecentFailures(supabase, limit = 20, options = {}) {
  return await rpc(supabase, "admin_recent_failures", {
    p_limit: limit
  }, options);
}
async function adminRetryJob(supabase, jobId, options = {}) {
  return await rpc(supabase, "admin_retry_job", {
    p_job_id: jobId
  }, options);
}
async function adminCancelJob(supabase, jobId, options = {}) {
  return await rpc(supabase, "admin_cancel_job", {
    p_job_id: jobId
  }, options);
}
async function adminSetWorkerStatus(supabase, workerId, status, options = {}) {
  const args = {
    p_worker_id: workerId,
    p_status: status
  };
  return await rpc(supabase, "admin_set_worker_status", args, options);
}

// clients/js/src/serve.ts
var PermanentError = class extends Error {
  permanent = true;
  constructor(message, options) {
    super(message, options);
    this.name = "PermanentError";
  }
};
async function serve(handler, options = {}) {
  const io = options.input && options.output ? null : standardIo();
  const input = options.input ?? io.input;
  const output = options.output ?? io.output;
  const log = options.log ?? io?.log ?? ((line) => console.error(line));
  const restoreConsole = options.output ? () => {
  } : consoleToStderr();
  let writing = Promise.resolve();
  const send = (message) => {
    const line = `${JSON.stringify(message)}
`;
    writing = writing.then(() => output(line)).catch((error) => log(`supaworker serve: cannot write: ${error}`));
    return writing;
  };
  const running = /* @__PURE__ */ new Map();
  const start = (job) => {
    const controller = new AbortController();
    let finished = false;
    const ctx = {
      signal: controller.signal,
      progress(percent, message) {
        if (typeof percent !== "number" || !(percent >= 0 && percent <= 100)) {
          throw new RangeError(`progress percent must be between 0 and 100, got ${percent}`);
        }
        if (finished) return;
        send({
          type: "progress",
          job_id: job.id,
          percent,
          message: message ?? null
        });
      }
    };
    const done = (async () => {
      let answer;
      try {
        const result = await handler(job, ctx);
        answer = resultMessage(job.id, result);
      } catch (error) {
        answer = {
          type: "error",
          job_id: job.id,
          message: errorText(error),
          permanent: isPermanent(error)
        };
      }
      finished = true;
      running.delete(job.id);
      await send(answer);
    })();
    running.set(job.id, {
      controller,
      done
    });
  };
  const receive = (line) => {
    if (line.trim() === "") return;
    let message;
    try {
      message = JSON.parse(line);
    } catch {
      log(`supaworker serve: ignoring a line that is not JSON: ${line.slice(0, 200)}`);
      return;
    }
    if (!isObject(message)) {
      log(`supaworker serve: ignoring a message that is not an object: ${line.slice(0, 200)}`);
    } else if (message.type === "job") {
      const job = message.job;
      if (!isObject(job) || typeof job.id !== "string") {
        log(`supaworker serve: ignoring a job without an id: ${line.slice(0, 200)}`);
      } else if (running.has(job.id)) {
        log(`supaworker serve: job ${job.id} is already running; ignoring it`);
      } else {
        start(job);
      }
    } else if (message.type === "cancel") {
      const entry = typeof message.job_id === "string" ? running.get(message.job_id) : void 0;
      if (entry) entry.controller.abort(new Error(`job ${message.job_id} was cancelled`));
      else log(`supaworker serve: cancel for a job that is not running: ${message.job_id}`);
    } else {
      log(`supaworker serve: ignoring a message of unknown type ${JSON.stringify(message.type)}`);
    }
  };
  try {
    for await (const line of lines(input)) receive(line);
    await Promise.all([
      ...running.values()
    ].map((entry) => entry.done));
    await writing;
  } finally {
    restoreConsole();
  }
}
function resultMessage(jobId, result) {
  const message = {
    type: "result",
    job_id: jobId,
    result: result === void 0 ? null : result
  };
  try {
    JSON.stringify(message);
    return message;
  } catch (error) {
    return {
      type: "error",
      job_id: jobId,
      message: `the handler's result is not JSON: ${errorText(error)}`,
      permanent: true
    };
  }
}
function isObject(value) {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
function isPermanent(error) {
  return isObject(error) && error.permanent === true;
}
function errorText(error) {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}
async function* lines(input) {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of input) {
    buffer += typeof chunk === "string" ? chunk : decoder.decode(chunk, {
      stream: true
    });
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      yield buffer.slice(0, newline).replace(/\r$/, "");
      buffer = buffer.slice(newline + 1);
    }
  }
  buffer += decoder.decode();
  if (buffer !== "") yield buffer;
}
function standardIo() {
  const runtime = globalThis;
  const encoder = new TextEncoder();
  if (runtime.Deno) {
    const deno = runtime.Deno;
    return {
      input: deno.stdin.readable,
      async output(line) {
        let bytes = encoder.encode(line);
        while (bytes.length > 0) bytes = bytes.subarray(await deno.stdout.write(bytes));
      },
      log(line) {
        let bytes = encoder.encode(`${line}
`);
        while (bytes.length > 0) bytes = bytes.subarray(deno.stderr.writeSync(bytes));
      }
    };
  }
  if (runtime.process?.stdin) {
    const node = runtime.process;
    return {
      input: node.stdin,
      output: (line) => new Promise((resolve, reject) => node.stdout.write(line, (error) => error ? reject(error) : resolve())),
      log: (line) => void node.stderr.write(`${line}
`, () => {
      })
    };
  }
  throw new Error("serve() needs stdin and stdout (Node or Deno); pass input and output");
}
function consoleToStderr() {
  const saved = {
    log: console.log,
    info: console.info,
    debug: console.debug
  };
  console.log = console.info = console.debug = (...args) => console.error(...args);
  return () => Object.assign(console, saved);
}
export {
  ENQUEUE_JOBS_LIMIT,
  FINAL_STATUSES,
  PermanentError,
  SupaworkerError,
  adminCancelJob,
  adminQueueStats,
  adminRecentFailures,
  adminRetryJob,
  adminSetWorkerStatus,
  cancelJob,
  enqueue,
  enqueueArgs,
  enqueueJobsItem,
  enqueueMany,
  getJob,
  getJobForDocument,
  listJobs,
  serve,
  timestampMicros,
  watchJob
};
