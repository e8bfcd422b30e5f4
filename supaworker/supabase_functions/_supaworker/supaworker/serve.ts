// Generated from clients/js/src/serve.ts by clients/js/scripts/sync.mjs: edit that file.
// The handler side of `supaworker run --handler-command "node worker.js"`: the worker starts
// this process once and speaks JSON lines with it (issue 17, "Handlers in any language").
//
//   worker -> stdin   {"type": "job", "job": {id, user_document_id, user_id, queue, payload,
//                      attempt, max_attempts, priority, created_at, ...}}
//                     {"type": "cancel", "job_id": "..."}
//   stdout -> worker  {"type": "progress", "job_id": "...", "percent": 0-100, "message": "..." | null}
//                     {"type": "result", "job_id": "...", "result": <any JSON>}
//                     {"type": "error", "job_id": "...", "message": "...", "permanent": false}
//
// Jobs run concurrently (the worker sends at most --concurrency at once). stdout carries only
// protocol lines: console.log/info/debug are sent to stderr while serve() runs, and the
// worker logs stderr. serve() resolves when stdin ends, once the jobs in flight have answered.

/** The job as the worker hands it over (a processing_queue row, possibly with more keys). */
export interface HandlerJob {
  id: string;
  user_document_id: string;
  user_id: string | null;
  queue: string;
  payload: Record<string, unknown>;
  attempt: number;
  max_attempts: number;
  priority: number;
  created_at: string;
  [key: string]: unknown;
}

export interface JobContext {
  /** Aborted when the worker cancels the job (cancel requested, or its timeout passed). The
   * handler should stop soon: the worker kills the process after a grace period. */
  readonly signal: AbortSignal;
  /** Report progress (0..100), shown on the job's row. */
  progress(percent: number, message?: string): void;
}

/** Its return value (JSON) is the job's result; a throw fails the attempt (retried unless
 * it is a PermanentError or has `permanent: true`). */
export type JobHandler = (job: HandlerJob, ctx: JobContext) => unknown;

/** Throw this to fail the job without retrying (bad input, not a passing failure). */
export class PermanentError extends Error {
  readonly permanent = true;
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "PermanentError";
  }
}

export interface ServeOptions {
  /** Protocol lines in (default: stdin of Node or Deno). */
  input?: AsyncIterable<Uint8Array | string>;
  /** One protocol line out, with its newline (default: stdout). Awaited in order. */
  output?: (line: string) => void | Promise<void>;
  /** A diagnostic line (default: stderr). */
  log?: (line: string) => void;
}

type Message = Record<string, unknown>;

export async function serve(handler: JobHandler, options: ServeOptions = {}): Promise<void> {
  const io = options.input && options.output ? null : standardIo();
  const input = options.input ?? io!.input;
  const output = options.output ?? io!.output;
  const log = options.log ?? io?.log ?? ((line: string) => console.error(line));
  const restoreConsole = options.output ? () => {} : consoleToStderr();

  // Lines go out one at a time, in order, whatever the jobs' timing.
  let writing: Promise<void> = Promise.resolve();
  const send = (message: Message) => {
    const line = `${JSON.stringify(message)}\n`;
    writing = writing.then(() => output(line)).catch((error) => log(`supaworker serve: cannot write: ${error}`));
    return writing;
  };

  const running = new Map<string, { controller: AbortController; done: Promise<void> }>();

  const start = (job: HandlerJob) => {
    const controller = new AbortController();
    let finished = false;
    const ctx: JobContext = {
      signal: controller.signal,
      progress(percent: number, message?: string) {
        if (typeof percent !== "number" || !(percent >= 0 && percent <= 100)) {
          throw new RangeError(`progress percent must be between 0 and 100, got ${percent}`);
        }
        if (finished) return; // the job has answered; a late report would name no job
        send({ type: "progress", job_id: job.id, percent, message: message ?? null });
      },
    };
    const done = (async () => {
      let answer: Message;
      try {
        const result = await handler(job, ctx);
        answer = resultMessage(job.id, result);
      } catch (error) {
        answer = {
          type: "error",
          job_id: job.id,
          message: errorText(error),
          permanent: isPermanent(error),
        };
      }
      finished = true;
      running.delete(job.id);
      await send(answer);
    })();
    running.set(job.id, { controller, done });
  };

  const receive = (line: string) => {
    if (line.trim() === "") return;
    let message: unknown;
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
        start(job as HandlerJob);
      }
    } else if (message.type === "cancel") {
      const entry = typeof message.job_id === "string" ? running.get(message.job_id) : undefined;
      if (entry) entry.controller.abort(new Error(`job ${message.job_id} was cancelled`));
      else log(`supaworker serve: cancel for a job that is not running: ${message.job_id}`);
    } else {
      log(`supaworker serve: ignoring a message of unknown type ${JSON.stringify(message.type)}`);
    }
  };

  try {
    for await (const line of lines(input)) receive(line);
    // stdin closed: the worker is stopping. Let the jobs in flight answer, then return.
    await Promise.all([...running.values()].map((entry) => entry.done));
    await writing;
  } finally {
    restoreConsole();
  }
}

function resultMessage(jobId: string, result: unknown): Message {
  const message = { type: "result", job_id: jobId, result: result === undefined ? null : result };
  try {
    JSON.stringify(message);
    return message;
  } catch (error) {
    // Repeating the attempt would produce the same value: fail for good.
    return {
      type: "error",
      job_id: jobId,
      message: `the handler's result is not JSON: ${errorText(error)}`,
      permanent: true,
    };
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function isPermanent(error: unknown): boolean {
  return isObject(error) && error.permanent === true;
}

function errorText(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

/** Split a byte or text stream into lines (without "\n" / "\r\n"). */
async function* lines(input: AsyncIterable<Uint8Array | string>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let buffer = "";
  for await (const chunk of input) {
    buffer += typeof chunk === "string" ? chunk : decoder.decode(chunk, { stream: true });
    let newline: number;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      yield buffer.slice(0, newline).replace(/\r$/, "");
      buffer = buffer.slice(newline + 1);
    }
  }
  buffer += decoder.decode();
  if (buffer !== "") yield buffer;
}

// -- stdin / stdout of Node or Deno, without importing either's modules (so this file also
//    loads, unused, in a browser bundle) --------------------------------------------------
interface NodeStream {
  write(chunk: string, callback: (error?: Error | null) => void): boolean;
}
interface NodeProcess {
  stdin: AsyncIterable<Uint8Array | string>;
  stdout: NodeStream;
  stderr: NodeStream;
}
interface DenoWriter {
  write(bytes: Uint8Array): Promise<number>;
  writeSync(bytes: Uint8Array): number;
}
interface DenoNamespace {
  stdin: { readable: AsyncIterable<Uint8Array> };
  stdout: DenoWriter;
  stderr: DenoWriter;
}

interface StandardIo {
  input: AsyncIterable<Uint8Array | string>;
  output: (line: string) => Promise<void>;
  log: (line: string) => void;
}

function standardIo(): StandardIo {
  const runtime = globalThis as { Deno?: DenoNamespace; process?: NodeProcess };
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
        let bytes = encoder.encode(`${line}\n`);
        while (bytes.length > 0) bytes = bytes.subarray(deno.stderr.writeSync(bytes));
      },
    };
  }
  if (runtime.process?.stdin) {
    const node = runtime.process;
    return {
      input: node.stdin,
      output: (line) =>
        new Promise((resolve, reject) =>
          node.stdout.write(line, (error) => (error ? reject(error) : resolve()))
        ),
      log: (line) => void node.stderr.write(`${line}\n`, () => {}),
    };
  }
  throw new Error("serve() needs stdin and stdout (Node or Deno); pass input and output");
}

/** While serving, console.log/info/debug write to stderr: stdout is the protocol's. */
function consoleToStderr(): () => void {
  const saved = { log: console.log, info: console.info, debug: console.debug };
  console.log = console.info = console.debug = (...args: unknown[]) => console.error(...args);
  return () => Object.assign(console, saved);
}
