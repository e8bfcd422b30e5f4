// What the tests against a running stack share: its clients, documents, a worker acting
// through the worker RPCs, and two proxies that break the network on purpose. The stack is
// given by the environment (tests/client_js/test_js_client.py sets it from the test stack):
//   SUPABASE_URL, SUPABASE_ANON_KEY, SUPABASE_SERVICE_ROLE_KEY,
//   SUPAWORKER_TEST_USER_TOKEN, SUPAWORKER_TEST_OTHER_USER_TOKEN
// and, for watch.test.mjs, SUPAWORKER_TEST_OWNERLESS_JOBS: [{id, queue}, ...], jobs without an
// owner that pytest makes (no client can: a document always has one in the default schema).
import { createServer } from "node:http";
import { createConnection, createServer as createTcpServer } from "node:net";
import { randomUUID } from "node:crypto";
import { createClient } from "@supabase/supabase-js";

const names = [
  "SUPABASE_URL",
  "SUPABASE_ANON_KEY",
  "SUPABASE_SERVICE_ROLE_KEY",
  "SUPAWORKER_TEST_USER_TOKEN",
  "SUPAWORKER_TEST_OTHER_USER_TOKEN",
];
export const stack = names.every((name) => process.env[name])
  ? {
    url: process.env.SUPABASE_URL,
    anonKey: process.env.SUPABASE_ANON_KEY,
    serviceKey: process.env.SUPABASE_SERVICE_ROLE_KEY,
    userToken: process.env.SUPAWORKER_TEST_USER_TOKEN,
    otherToken: process.env.SUPAWORKER_TEST_OTHER_USER_TOKEN,
  }
  : null;
/** node:test's `skip` option: the stack tests say why they did not run. */
export const needsStack = stack ? false : `set ${names.join(", ")} (pytest tests/client_js does)`;

const quiet = { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false };
const opened = [];

/** Close every client's Realtime socket, so the test process can exit at once. */
export async function closeClients() {
  await Promise.all(opened.splice(0).map(async (client) => {
    await client.removeAllChannels();
    client.realtime.disconnect();
  }));
}

/** A signed-in user's client: the anon key and their token, for PostgREST and Realtime. */
export function userClient(token, url = stack.url, options = {}) {
  // accessToken: the token for every request and every Realtime (re)join (with
  // realtime.setAuth(token) alone, supabase-js rejoins with the anon key after a reconnect,
  // which the private jobs:<user_id> topic refuses).
  const client = createClient(url, stack.anonKey, { ...options, accessToken: async () => token });
  opened.push(client);
  return client;
}

export function serviceClient(url = stack.url, options = {}) {
  const client = createClient(url, stack.serviceKey, { ...options, auth: quiet });
  opened.push(client);
  return client;
}

export function userIdOf(token) {
  const body = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  return JSON.parse(Buffer.from(body, "base64").toString()).sub;
}

/** A document owned by the token's user, inserted as that user (RLS allows own rows). */
export async function createDocument(token, name = "node-client.txt") {
  const { data, error } = await userClient(token)
    .from("user_documents")
    .insert({ user_id: userIdOf(token), name, content: "hello from node" })
    .select("id")
    .single();
  if (error) throw new Error(`cannot create a document: ${JSON.stringify(error)}`);
  return data.id;
}

export const uniqueQueue = (prefix = "node") => `${prefix}-${randomUUID().slice(0, 8)}`;

async function call(client, name, args) {
  const { data, error } = await client.rpc(name, args);
  if (error) throw new Error(`${name}: ${JSON.stringify(error)}`);
  return data;
}

/** A worker made of the worker RPCs (service role): what `supaworker run` does, step by
 * step, so a test decides when each change happens. */
export async function fakeWorker(queue) {
  const service = serviceClient();
  const workerId = `node-test-${randomUUID().slice(0, 8)}`;
  await call(service, "register_worker", {
    p_worker_id: workerId,
    p_max_concurrent_jobs: 10,
    p_queues: [queue],
  });
  return {
    workerId,
    async claim() {
      const jobs = await call(service, "claim_next_job", {
        p_worker_id: workerId,
        p_limit: 1,
        p_queues: [queue],
      });
      if (jobs.length !== 1) throw new Error(`expected one job in ${queue}, got ${jobs.length}`);
      const job = jobs[0];
      const fence = { p_job_id: job.id, p_worker_id: workerId, p_attempt: job.attempt };
      return {
        job,
        start: () => call(service, "start_job", fence),
        progress: (percent, message) =>
          call(service, "report_progress", { ...fence, p_percent: percent, p_message: message }),
        complete: (result) => call(service, "complete_job", { ...fence, p_result: result }),
        fail: (error, retryable = false) =>
          call(service, "fail_job", { ...fence, p_error: error, p_retryable: retryable }),
      };
    },
    stop: () => call(service, "deregister_worker", { p_worker_id: workerId }),
  };
}

/**
 * An HTTP proxy in front of the stack that answers `failures` requests whose path matches with
 * `status` (a gateway in trouble), after letting the first `after` of them through, then
 * forwards everything. `requests` counts the matching requests it saw.
 */
export async function faultyProxy({ status = 503, failures = 2, match = "/rest/v1/rpc/", after = 0 } = {}) {
  const target = new URL(stack.url);
  const state = { requests: 0 };
  const server = createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    if (req.url.startsWith(match)) {
      state.requests += 1;
      if (state.requests > after && state.requests <= after + failures) {
        res.writeHead(status, { "Content-Type": "text/html" });
        res.end(`<html><body>${status} from the test proxy</body></html>`);
        return;
      }
    }
    const headers = { ...req.headers, host: target.host };
    delete headers["content-length"];
    const upstream = await fetch(new URL(req.url, target), {
      method: req.method,
      headers,
      body: chunks.length ? Buffer.concat(chunks) : undefined,
    });
    const outHeaders = Object.fromEntries(upstream.headers);
    delete outHeaders["content-encoding"];
    delete outHeaders["content-length"];
    res.writeHead(upstream.status, outHeaders);
    res.end(Buffer.from(await upstream.arrayBuffer()));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    state,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}

/** A TCP proxy to the stack whose `cut()` drops every open connection (a network blip):
 * new connections still go through. */
export async function cuttableProxy() {
  const target = new URL(stack.url);
  const sockets = new Set();
  const server = createTcpServer((client) => {
    const upstream = createConnection(Number(target.port), target.hostname);
    for (const [a, b] of [[client, upstream], [upstream, client]]) {
      sockets.add(a);
      a.on("error", () => b.destroy());
      a.on("close", () => {
        sockets.delete(a);
        b.destroy();
      });
      a.pipe(b);
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cut() {
      for (const socket of sockets) socket.destroy();
    },
    close() {
      for (const socket of sockets) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

/** A port nothing listens on (bound, then released). */
export async function closedPort() {
  const server = createTcpServer();
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = server.address().port;
  await new Promise((resolve) => server.close(resolve));
  return port;
}
