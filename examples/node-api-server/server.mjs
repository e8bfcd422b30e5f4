// The design's processing route in Node, done the queue way (no framework: node:http).
//
//   POST /documents/:id/process   -> 202 {"success": true, "status": "queued", "job_id": "..."}
//   GET  /documents/:id/process   -> 200 the document's job   (404 when it has none)
//   GET  /jobs/:id                -> 200 the job               (404 when the caller cannot see it)
//
// Before, the route ran processUserDocument() inside the request; now it queues the document
// and answers at once, and `supaworker run` on another machine does the work.
//
// Who the user is: their Supabase access token in `Authorization: Bearer <jwt>`. Each request
// gets a supabase-js client with the anon key and that header, so the database decides what
// the user may do (enqueue_job refuses other users' documents with PT403; RLS hides other
// users' jobs). The server holds no secret. (README.md here: the service-role variant.)
//
// Run:  eval "$(supaworker dev env)"; node examples/node-api-server/server.mjs --port 8080
// (Node 22+; on Node 20 add --experimental-websocket: supabase-js wants a WebSocket class.)
import { createServer } from "node:http";
import { parseArgs } from "node:util";

import { createClient } from "@supabase/supabase-js";
import { enqueue, getJob, getJobForDocument, SupaworkerError } from "supaworker";

const UUID = "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}";
const PROCESS = new RegExp(`^/documents/(${UUID})/process$`);
const JOB = new RegExp(`^/jobs/(${UUID})$`);
const MAX_BODY = 16 * 1024;
// What the route shows of a job: worker ids, fencing attempts and the payload stay internal.
const PUBLIC = ["id", "user_document_id", "status", "priority", "user_priority", "progress_percent",
  "progress_message", "result", "error_message", "retry_count", "max_attempts", "created_at",
  "updated_at", "started_at", "completed_at"];

const { values: args } = parseArgs({
  options: { port: { type: "string", default: process.env.PORT ?? "8080" }, host: { type: "string", default: "127.0.0.1" } },
});
const url = process.env.SUPABASE_URL;
const anonKey = process.env.SUPABASE_ANON_KEY ?? process.env.SUPABASE_PUBLISHABLE_KEY;
if (!url || !anonKey) {
  console.error("Set SUPABASE_URL and SUPABASE_ANON_KEY (eval \"$(supaworker dev env)\" locally)");
  process.exit(2);
}

class HttpError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** A client acting as the caller; no session of its own (one per request). */
function callerClient(req) {
  const authorization = req.headers.authorization ?? "";
  if (!/^Bearer \S+$/.test(authorization)) {
    throw new HttpError(401, "unauthorized", "Send the user's access token: Authorization: Bearer <jwt>");
  }
  return createClient(url, anonKey, {
    global: { headers: { Authorization: authorization } },
    auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
}

// The database's codes (SupaworkerError.code) -> this API's answers.
function fromQueueError(error) {
  if (!(error instanceof SupaworkerError)) throw error;
  const byCode = {
    PT403: [403, "forbidden"],
    PT404: [404, "not_found"],
    PT413: [413, "payload_too_large"],
    22023: [400, "invalid_argument"],
    "22P02": [400, "invalid_argument"],
    PGRST301: [401, "unauthorized"],
  };
  const known = byCode[error.code];
  if (known) return new HttpError(known[0], known[1], error.message);
  if (error.transient) return new HttpError(503, "queue_unavailable", "The queue is unreachable; try again.");
  console.error("unexpected queue error", error);
  return new HttpError(502, "queue_error", "The queue could not handle the request.");
}

async function readJson(req) {
  let size = 0;
  const chunks = [];
  for await (const chunk of req) {
    size += chunk.length;
    if (size > MAX_BODY) throw new HttpError(413, "payload_too_large", "The body is over 16 KiB.");
    chunks.push(chunk);
  }
  if (size === 0) return {};
  try {
    const body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    if (body && typeof body === "object" && !Array.isArray(body)) return body;
  } catch {
    // answered below
  }
  throw new HttpError(400, "invalid_body", "The body must be a JSON object.");
}

function publicJob(job) {
  return Object.fromEntries(PUBLIC.filter((key) => key in job).map((key) => [key, job[key]]));
}

async function route(req) {
  const path = new URL(req.url, "http://localhost").pathname;
  const doc = PROCESS.exec(path);
  const job = JOB.exec(path);
  if (req.method === "POST" && doc) {
    const supabase = callerClient(req);
    const body = await readJson(req);
    // Users may choose the priority (clamped to -10..10 by the database and stored as
    // user_priority: it orders only their own jobs) and the queue.
    const options = {};
    if (body.priority !== undefined) options.priority = body.priority;
    if (body.queue !== undefined) options.queue = body.queue;
    const queued = await enqueue(supabase, doc[1], options).catch((e) => { throw fromQueueError(e); });
    return [202, { success: true, status: "queued", job_id: queued.id }];
  }
  if (req.method === "GET" && (doc || job)) {
    const supabase = callerClient(req);
    const read = doc ? getJobForDocument(supabase, doc[1]) : getJob(supabase, job[1]);
    const found = await read.catch((e) => { throw fromQueueError(e); });
    if (!found) throw new HttpError(404, "not_found", "No job found for this caller.");
    return [200, publicJob(found)];
  }
  if (doc || job) throw new HttpError(405, "method_not_allowed", `${req.method} is not allowed here.`);
  throw new HttpError(404, "not_found", "No such route.");
}

const server = createServer(async (req, res) => {
  let status;
  let body;
  try {
    [status, body] = await route(req);
  } catch (error) {
    if (!(error instanceof HttpError)) {
      console.error("request failed", error);
      error = new HttpError(500, "internal_error", "The server failed.");
    }
    [status, body] = [error.status, { error: error.code, message: error.message }];
  }
  const data = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(data) });
  res.end(data);
});

server.listen(Number(args.port), args.host, () => {
  const { address, port } = server.address();
  console.log(`listening on http://${address}:${port}`);
});
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => server.close(() => process.exit(0)));
